"""What the oracle scripts share: invbench's configurations and tiny model, a real StableDiffusionPipeline put together
from its parts (its constructor sets the scheduler's steps_offset to 1, as every reference run gets it), and patches
that must each apply exactly as often as expected, so that another reference version fails loudly."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


def conf(name: str) -> dict[str, Any]:
    """conf/<name>.yaml as a plain dict."""
    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / f"{name}.yaml"))


def tiny_model(scheduler: dict[str, Any] | None = None):
    from invbench.models import load_model

    return load_model(conf("model/tiny"), scheduler or conf("scheduler/ddim"), torch.device("cpu"))


def tiny_pipeline(tiny, scheduler, pipeline_class=None):
    """`pipeline_class` (StableDiffusionPipeline or a reference's subclass of it) of the tiny model's parts."""
    if pipeline_class is None:
        from diffusers import StableDiffusionPipeline as pipeline_class
    return pipeline_class(
        vae=tiny.vae,
        text_encoder=tiny.backbone.text_encoder,
        tokenizer=tiny.tokenizer,
        unet=tiny.denoiser,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def apply_patches(work: Path, patches: Iterable[tuple[str, str, str, int, str]]) -> None:
    """Each (file, old text, new text, occurrences, why): the old text must occur exactly that often."""
    for name, old, new, count, why in patches:
        path = work / name
        text = path.read_text(encoding="utf-8")
        if text.count(old) != count:
            raise SystemExit(f"patch {why.split(':')[0]} expects {old[:60]!r} {count} times in {name}")
        path.write_text(text.replace(old, new), encoding="utf-8")


def prepare_reference(
    doc: str,
    repository: str,
    default_work: str,
    commit: str,
    paths: tuple[str, ...],
    packages: tuple[str, ...],
    patches: Iterable[tuple[str, str, str, int, str]],
    with_p2p_path: bool = False,
):
    """What every oracle script does first: parse its command line (a checkout or git dir of `repository`, and
    --work), copy the reference's `paths` at `commit` into the work folder (after PnPInversion's P2P path, patched by
    patch_reference.py, when `with_p2p_path`), add empty __init__.py files to `packages`, apply `patches` and put
    the copy and this repository first on sys.path. Returns the parsed arguments."""
    import argparse
    import subprocess
    import sys

    from patch_reference import extract

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("source", type=Path, help=f"a clone (or git dir) of github.com/{repository}")
    parser.add_argument("--work", type=Path, default=Path(default_work))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if with_p2p_path:
        script = Path(__file__).with_name("patch_reference.py")
        subprocess.run([sys.executable, str(script), str(args.source), str(args.work)], check=True)
    extract(args.source, commit, args.work, paths)
    for package in packages:
        (args.work / package / "__init__.py").touch()
    apply_patches(args.work, patches)
    sys.path[:0] = [str(args.work), str(REPO)]
    return args
