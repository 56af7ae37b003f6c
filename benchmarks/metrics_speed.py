"""Seconds per sample of the PIE-Bench metric suite on the bundled mini benchmark (512×512 images).

    python benchmarks/metrics_speed.py                     # tiny backbones, CPU
    python benchmarks/metrics_speed.py --backbones real --device cuda

Each sample's source image is scored against a perturbed copy of itself (edited) and itself (reconstruction), so
every metric runs, as in a job. The first sample is scored twice and its first timing dropped (one-time set-up).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

CONF = Path(__file__).resolve().parent.parent / "conf"


def measure(backbones: str = "tiny", device: str = "cpu") -> list[float]:
    from metrics import METRICS
    from pie_bench import edit_class_lookup, load_benchmark

    config = yaml.safe_load((CONF / "metrics" / "pie_bench.yaml").read_text()) | {"backbones": backbones}
    suite = METRICS.build(config)
    suite.load(torch.device(device))
    classes = edit_class_lookup(yaml.safe_load((CONF / "edit_classes" / "todinv.yaml").read_text()))
    samples = load_benchmark(None, classes).samples
    noise = np.random.default_rng(0)
    seconds = []
    for sample in [samples[0], *samples]:
        source = sample.read_image()
        edited = np.clip(source.astype(int) + noise.integers(-20, 20, source.shape), 0, 255).astype(np.uint8)
        started = time.perf_counter()
        suite.score(sample, edited, source, lossless=True)
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="tiny", choices=["auto", "real", "tiny"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    seconds = measure(args.backbones, args.device)
    print(f"metrics: {len(seconds)} samples, median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s")
    print("per sample:", " ".join(f"{s:.2f}" for s in seconds))


if __name__ == "__main__":
    main()
