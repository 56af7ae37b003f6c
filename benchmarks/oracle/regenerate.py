"""Regenerate the reference goldens of tests/test_oracle.py: run the PIE-Bench reference's own code on invbench's
tiny model and keep, compactly, what it computed.

    python benchmarks/oracle/regenerate.py <PnPInversion checkout or git dir> [--work /tmp/invbench-oracle]

Steps: patch_reference.py copies the reference's P2P path at REFERENCE_COMMIT and patches it for API drift only;
reference_run.py runs each case below in its own process, as run_editing_p2p.py calls P2PEditor; this script keeps
z*_0 and z*_T, the method's per-step state (NTI's nulls and Adam steps; DirectInversion's source-row offsets),
the edit's latents after its first blend step and at the end, and a 128x128 crop of the saved edit, in
tests/golden/oracle/<case>.pt (float32; about 0.5 MB each). About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = REPO / "tests" / "golden" / "oracle"
sys.path.insert(0, str(HERE))

from patch_reference import PATCHES, REFERENCE_COMMIT

STEPS = 5  # P2PEditor(num_ddim_steps=5): every P2P window is still non-empty (cross 2, self 3, blend from step 2)
# case -> (reference method, sample, LocalBlend threshold or None for the reference's 0.3)
CASES = {
    "ddim_p2p_121000000001": ("ddim+p2p", "121000000001", None),  # change object: cat -> tiger
    "ddim_p2p_623000000006": ("ddim+p2p", "623000000006", None),  # aligned attribute word: red -> blue motorcycle
    # the tiny model's flat attention passes 0.3 everywhere; at 0.87 the blend masks are partial, so the case shows
    # which maps the blend reads (the reference's: the target's after the edit)
    "ddim_p2p_623000000006_blend087": ("ddim+p2p", "623000000006", 0.87),
    "nti_p2p_121000000001": ("null-text-inversion+p2p", "121000000001", None),
    "nti_p2p_623000000006": ("null-text-inversion+p2p", "623000000006", None),
    "directinversion_p2p_121000000001": ("directinversion+p2p", "121000000001", None),
    "directinversion_p2p_623000000006": ("directinversion+p2p", "623000000006", None),
    "npi_p2p_121000000001": ("negative-prompt-inversion+p2p", "121000000001", None),
    "npi_p2p_623000000006": ("negative-prompt-inversion+p2p", "623000000006", None),
    "proxedit_p2p_121000000001": ("negative-prompt-inversion+proximal-guidance", "121000000001", None),
    "proxedit_p2p_623000000006": ("negative-prompt-inversion+proximal-guidance", "623000000006", None),
    "proxedit_nti_p2p_121000000001": ("null-text-inversion+proximal-guidance", "121000000001", None),
}
CROP = (slice(192, 320), slice(192, 320))  # the middle 128x128 of the 512x512 edit


def compact(run: dict, threshold: float | None) -> dict:
    first_blend_step = int(0.2 * run["steps"])  # LocalBlend's start_blend: it blends after steps > this count
    extra = run["extra"]
    state: dict = {}
    if run["method"].startswith(("null-text", "negative-prompt")):
        state["nulls"] = torch.cat(extra)  # (steps, 77, D): NTI's tuned nulls, NPI's source-prompt embedding
        state["adam_steps"] = run["adam_steps"]
    elif run["method"].startswith("directinversion"):
        # (steps, 4, h, w): the source row's offsets, the ones the edit adds (the target row's are computed, unused)
        state["offsets"] = torch.cat([offset[:1] for offset in extra])
    return {
        "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_p2p.py arguments, patches: "
        + "; ".join(why.split(":")[0] for _, _, _, why in PATCHES)
        + ", P0",
        "method": run["method"],
        "sample": run["sample"],
        "steps": run["steps"],
        "blend_threshold": threshold,
        "z0": run["trajectory"][0],
        "zT": run["trajectory"][-1],
        **state,
        "after_first_blend_step": run["edit_steps"][first_blend_step],
        "edited_latents": run["edited_latents"],  # (2, 4, h, w): source branch, target branch
        "edited_image_crop": torch.from_numpy(run["edited_image"][CROP].copy()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a clone (or git dir) of github.com/cure-lab/PnPInversion")
    parser.add_argument("--work", type=Path, default=Path("/tmp/invbench-oracle"))
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    reference = args.work / "reference"
    subprocess.run([sys.executable, str(HERE / "patch_reference.py"), str(args.source), str(reference)], check=True)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case in args.cases:
        method, sample, threshold = CASES[case]
        raw = args.work / f"{case}.raw.pt"
        command = [sys.executable, str(HERE / "reference_run.py"), "--reference", str(reference), "--method", method]
        command += ["--sample", sample, "--steps", str(STEPS), "--out", str(raw)]
        if threshold is not None:
            command += ["--blend-threshold", str(threshold)]
        subprocess.run(command, check=True)
        torch.save(compact(torch.load(raw, weights_only=False), threshold), GOLDEN / f"{case}.pt")
        print("wrote", GOLDEN / f"{case}.pt")


if __name__ == "__main__":
    main()
