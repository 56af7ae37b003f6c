"""Seconds per image, UNet evaluations and peak memory of inversion × editor pairs, at several batch sizes, in one run.

    python benchmarks/throughput.py                                   # tiny model, CPU, 512², 50 steps
    python benchmarks/throughput.py --model sd14_random --device cuda --batch-sizes 1 4 8
    python benchmarks/throughput.py --pairs ddim+direct ddim+p2p --extra editor.attention_outside_windows=fused

Each configuration runs as a real job (`launch.py`, metrics off) on the mini benchmark's samples, in a fresh process,
one after another, so the numbers are the ones rows record: inversion + editing seconds (VAE included, metrics and
start-up excluded), evaluations counted per latent, the per-sample peak memory (CUDA's allocator on a GPU, the
process's resident set on CPU). With batch_size > 1 each row holds an equal share of its group's seconds and
evaluations. The first group of every job is left out of the seconds (one-time costs: kernel selection, caches), so
run at least two groups' worth of samples. The job's wall time, start-up included, is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = ["ddim+direct", "ddim+p2p", "ddim+masactrl", "directinversion+direct", "nti+p2p"]


def run_job(pair: str, batch_size: int, args: argparse.Namespace, folder: Path) -> dict[str, float | str]:
    inversion, editor = pair.split("+")
    overrides = [
        f"inversion={inversion}", f"editor={editor}", f"model={args.model}", f"num_steps={args.steps}",
        f"batch_size={batch_size}", f"device={args.device}", "metrics=none", f"hydra.run.dir={folder}",
    ]  # fmt: skip
    if args.resolution:
        overrides.append(f"model.resolution={args.resolution}")
    if args.categories:
        overrides.append(f"dataset.categories=[{','.join(map(str, args.categories))}]")
    overrides += args.extra
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *overrides], capture_output=True, text=True, cwd=folder.parent,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )  # fmt: skip
    wall = time.perf_counter() - started
    results = folder / "results.jsonl"
    if done.returncode != 0 or not results.is_file():
        raise SystemExit(f"{pair} batch {batch_size} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    ok = [row for row in rows if row["status"] == "ok"]
    timed = ok[batch_size:] or ok  # the first group carries one-time costs
    return {
        "pair": pair,
        "batch": batch_size,
        "samples": len(ok),
        "s/image": statistics.mean(row["total_seconds"] for row in timed),
        "inversion s": statistics.mean(row["inversion_seconds"] for row in timed),
        "edit s": statistics.mean(row["edit_seconds"] for row in timed),
        "evals/image": float(statistics.mean(row["inversion_unet_evals"] + row["edit_unet_evals"] for row in ok)),
        "backward/image": float(
            statistics.mean(row["inversion_unet_backward_evals"] + row["edit_unet_backward_evals"] for row in ok)
        ),
        "peak MB": float(max(row["peak_memory_mb"] for row in ok)),
        "job wall s": wall,
        "memory": ok[0]["memory_kind"],
        "dtype": ok[0]["dtype"],
    }


def table(measured: list[dict[str, float | str]]) -> str:
    keys = list(measured[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for entry in measured:
        cells = [f"{value:.2f}" if isinstance(value, float) else str(value) for value in entry.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--categories", nargs="*", type=int, default=None, help="mini benchmark categories")
    parser.add_argument("--extra", nargs="*", default=[], help="more launch.py overrides for every job")
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = parser.parse_args()
    measured = []
    with tempfile.TemporaryDirectory(prefix="invbench-throughput-") as scratch:
        for pair in args.pairs:
            for batch_size in args.batch_sizes:
                folder = Path(scratch) / f"{pair}_b{batch_size}"
                measured.append(run_job(pair, batch_size, args, folder))
                print(json.dumps(measured[-1]), flush=True)
    print(table(measured))
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1))


if __name__ == "__main__":
    main()
