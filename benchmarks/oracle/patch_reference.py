"""Prepare a runnable copy of the PIE-Bench reference's Prompt-to-Prompt path (cure-lab/PnPInversion) for the oracle.

    python benchmarks/oracle/patch_reference.py <PnPInversion checkout or git dir> <output folder> [--commit 07f97f4]

Copies the files of the P2P path (models/p2p/*, models/p2p_editor.py, utils/*) at the given commit into the output
folder, outside this repository, and patches them for API drift only, never their math. Every patch is listed in
PATCHES with why it is needed; each must apply exactly once, so a different reference version fails loudly.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

REFERENCE_COMMIT = "07f97f4"
FILES_UNDER = ("models/p2p", "utils")
FILES = ("models/p2p_editor.py",)

# (file, old text, new text, why)
PATCHES = [
    (
        "models/p2p/attention_control.py",
        "if net_.__class__.__name__ == 'CrossAttention':",
        "if net_.__class__.__name__ in ('CrossAttention', 'Attention'):",
        "P1: diffusers renamed CrossAttention to Attention; without this no layer is hooked",
    ),
    (
        "models/p2p/attention_control.py",
        "        def forward(x, context=None, mask=None, **kwargs):\n",
        (
            "        def forward(x, context=None, mask=None, **kwargs):\n"
            "            context = kwargs.pop('encoder_hidden_states', context)\n"
            "            mask = kwargs.pop('attention_mask', mask)\n"
        ),
        (
            "P2: diffusers now calls attention with encoder_hidden_states= / attention_mask=; without this the context "
            "stays None and cross-attention silently becomes self-attention"
        ),
    ),
    (
        "models/p2p/attention_control.py",
        "self.reshape_heads_to_batch_dim(",
        "self.head_to_batch_dim(",
        "P3: renamed in diffusers (three calls)",
    ),
    (
        "models/p2p/attention_control.py",
        "self.reshape_batch_dim_to_heads(",
        "self.batch_to_head_dim(",
        "P3: renamed in diffusers",
    ),
    (
        "models/p2p/attention_control.py",
        'device="cuda"',
        'device="cpu"',
        "P4: the controllers default to CUDA and make_controller does not pass its device to all of them",
    ),
    (
        "utils/utils.py",
        "latents = 1 / 0.18215 * latents.detach()",
        "latents = 1 / model.config.scaling_factor * latents.detach()",
        "P5: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        "utils/utils.py",
        "latents = latents * 0.18215",
        "latents = latents * model.config.scaling_factor",
        "P5: as above, for the encoder",
    ),
    (
        "models/p2p/attention_control.py",
        'maps = attention_store["down_cross"][2:4] + attention_store["up_cross"][:3]',
        (
            'maps = [item for item in attention_store["down_cross"] + attention_store["up_cross"] '
            "if item.shape[1] == 16 ** 2]"
        ),
        (
            "P6: the blend takes the 16x16 cross-attention maps, which these indices pick in SD 1.x; in the tiny UNet "
            "(one attention per level) they would pick a 32x32 map and cut it into 16x16 tiles"
        ),
    ),
]
# How many times each patch's old text occurs in the reference at REFERENCE_COMMIT
EXPECTED_COUNTS = {2: 3, 4: 6}


def extract(source: Path, commit: str, out: Path, paths: tuple[str, ...] = FILES_UNDER + FILES) -> None:
    """The reference's Python files under `paths` at `commit`, one by one (a full archive of that commit fails on a
    missing blob)."""
    listed = subprocess.run(
        ["git", "-C", str(source), "ls-tree", "-r", "--name-only", commit, *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if not name.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "-C", str(source), "show", f"{commit}:{name}"], capture_output=True, text=True, check=True
        ).stdout
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text, encoding="utf-8")


def patch(out: Path) -> list[str]:
    applied = []
    for number, (name, old, new, why) in enumerate(PATCHES):
        path = out / name
        text = path.read_text(encoding="utf-8")
        found = text.count(old)
        if found != EXPECTED_COUNTS.get(number, 1):
            raise SystemExit(f"patch {why.split(':')[0]} expects {old!r} in {name}, found it {found} times")
        path.write_text(text.replace(old, new), encoding="utf-8")
        applied.append(f"{name}: {why}")
    for package in ("models", "models/p2p", "utils"):  # P0: the reference runs from its root without packages
        (out / package / "__init__.py").touch()
    applied.append("P0: empty __init__.py in models/, models/p2p/, utils/ so that they import as packages")
    return applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a clone (or git dir) of github.com/cure-lab/PnPInversion")
    parser.add_argument("out", type=Path, help="where the patched copy goes (outside this repository)")
    parser.add_argument("--commit", default=REFERENCE_COMMIT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extract(args.source, args.commit, args.out)
    for line in patch(args.out):
        print("patched", line)


if __name__ == "__main__":
    main()
