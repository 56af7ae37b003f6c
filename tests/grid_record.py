"""The grid record: what every inversion × editor pair of tests/test_grid.py's grid writes (the SHA-256 of its edited
and reconstructed images' pixels, its UNet evaluation counts and its methods' reported info), kept in
tests/golden/grid_record.json so that a refactor of the core can prove that no output changed.

Image bits depend on the CPU's float kernels, so the record also keeps a kernel fingerprint: the SHA-256 of a fixed
tiny-model computation (a guided UNet call, a DDIM step and a VAE decode, single-threaded as the grid's jobs run).
Where this machine's fingerprint equals the record's, every hash must match bit for bit; elsewhere only the
CPU-independent parts (the pairs, their status and their evaluation counts) are compared, and the test says so.
That those are CPU-independent was checked, not assumed: on an Intel Xeon whose fingerprint differs from the
recorder's, with every job at 2 threads instead of 1 (other reduction orders, as another CPU's kernels), all 240
pairs had the recorded statuses and counts, the optimisation-based inversions' early stops included.

    INVBENCH_RECORD_GRID=1 python -m pytest tests/test_grid.py -m ci_only -k grid_runs   # rewrite the record

Rewrite it only in a commit that changes an output on purpose, and say why there.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
import yaml

RECORD = Path(__file__).parent / "golden" / "grid_record.json"
COUNTS = ("inversion_unet_evals", "edit_unet_evals", "inversion_unet_backward_evals", "edit_unet_backward_evals")


def sha256(path: Path) -> str:
    """SHA-256 of an image's decoded pixels (and shape): the same for any PNG encoding of them."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def kernel_fingerprint() -> str:
    """SHA-256 of a fixed computation on the tiny model, single-threaded: equal on two machines only where their float
    kernels give the same bits, which is when image hashes can be compared."""
    from conftest import conf_file

    from invbench.ddim import DDIMSchedule
    from invbench.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model(conf_file("model/tiny.yaml") | {"resolution": 64}, conf_file("scheduler/ddim.yaml"),
                           torch.device("cpu"))  # fmt: skip
        latent = torch.linspace(-2, 2, 4 * 8 * 8).reshape(1, 4, 8, 8)
        cond = model.encode_prompts(["a photo of a cat"])
        uncond = model.encode_prompts([""])
        with torch.no_grad():
            noise = model.guided_noise(latent, 501, cond, uncond, 7.5)
            stepped = DDIMSchedule(model.scheduler_config, 2).step(noise, 501, latent)
            pixels = model.vae.decode(stepped / model.vae.config.scaling_factor).sample
        digest = hashlib.sha256()
        for tensor in (noise, stepped, pixels):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()
    finally:
        torch.set_num_threads(threads)


def pair_of(job: Path) -> str:
    """'inversion config+editor config' of a sweep's job folder, from the overrides Hydra saved."""
    chosen = dict(item.split("=", 1) for item in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
    return f"{chosen['inversion']}+{chosen['editor']}"


def grid_outputs(sweeps: list[Path]) -> dict[str, dict]:
    outputs = {}
    for job in sorted(path.parent for sweep in sweeps for path in sweep.glob("*/results.jsonl")):
        (row,) = [json.loads(line) for line in (job / "results.jsonl").read_text().splitlines() if line.strip()]
        outputs[pair_of(job)] = {
            "status": row["status"],
            **{key: row[key] for key in COUNTS},
            "inversion_info": row["inversion_info"],
            "edit_info": row["edit_info"],
            "edited_sha256": sha256(job / row["edited_image"]),
            "reconstruction_sha256": sha256(job / row["reconstruction_image"]),
        }
    return outputs


def check_against_record(sweeps: list[Path]) -> str:
    """Compare the grid's outputs with the record (or rewrite it under INVBENCH_RECORD_GRID=1); returns what was
    compared, for the test's report."""
    outputs, fingerprint = grid_outputs(sweeps), kernel_fingerprint()
    if os.environ.get("INVBENCH_RECORD_GRID"):
        RECORD.write_text(
            json.dumps(
                {"kernel_fingerprint": fingerprint, "recorded_on": platform.processor() or platform.machine(),
                 "torch": torch.__version__, "pairs": outputs},
                indent=1, sort_keys=True,
            ) + "\n"
        )  # fmt: skip
    record = json.loads(RECORD.read_text())
    assert sorted(outputs) == sorted(record["pairs"]), "the grid's pairs differ from the record's"
    independent = ("status", *COUNTS)
    changed = {
        pair: {key: (record["pairs"][pair][key], value[key]) for key in independent if value[key] != record["pairs"][pair][key]}
        for pair, value in outputs.items()
    }  # fmt: skip
    changed = {pair: keys for pair, keys in changed.items() if keys}
    assert not changed, f"status or evaluation counts differ from the record (recorded, now): {changed}"
    if fingerprint != record["kernel_fingerprint"]:
        return (f"bit-for-bit part not compared: this CPU's float kernels differ from the recorder's "
                f"({record['recorded_on']}, torch {record['torch']}); statuses and counts equal")  # fmt: skip
    different = sorted(pair for pair, value in outputs.items() if value != record["pairs"][pair])
    assert not different, f"outputs differ from the record bit for bit in {len(different)} pairs: {different}"
    return f"all {len(outputs)} pairs equal to the record bit for bit"
