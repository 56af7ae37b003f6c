"""Run the PIE-Bench reference's Prompt-to-Prompt path (a copy prepared by patch_reference.py) on invbench's tiny model,
exactly as its run_editing_p2p.py calls P2PEditor, and save what it computed.

    python benchmarks/oracle/reference_run.py --reference <patched copy> --method ddim+p2p --sample 121000000001 \
        --steps 5 --out <file.pt> [--blend-threshold 0.87]

Runs in its own process: the reference replaces the attention forward of the UNet's modules. Runtime adapters (no
reference computation is replaced):
  * StableDiffusionPipeline.from_pretrained, which P2PEditor calls for SD v1.4, builds a StableDiffusionPipeline from
    the tiny model's parts and the scheduler P2PEditor built. It must be the real pipeline class: its constructor
    rewrites the scheduler's steps_offset to 1 (diffusers has done so since 0.3, 0.10.0 included), which puts the
    reference on the grid 981 ... 1 although its hand-built scheduler says 0;
  * txt_draw (the caption panel of its output composite; old font APIs) returns a blank panel;
  * recorders wrap load_512, the inversion, the per-step diffusion functions, latent2image and Adam;
  * --blend-threshold sets LocalBlend's threshold (not reachable through make_controller), to exercise the blend on
    the tiny model, whose nearly flat attention passes the reference's 0.3 everywhere.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
# the reference's P2PEditor methods this script runs (the PIE-Bench rows of run_editing_p2p.py)
METHODS = [
    "ddim+p2p",
    "null-text-inversion+p2p",
    "negative-prompt-inversion+p2p",
    "directinversion+p2p",
    "negative-prompt-inversion+proximal-guidance",
    "null-text-inversion+proximal-guidance",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--sample", required=True)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--blend-threshold", type=float, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    sys.path[:0] = [str(args.reference), str(REPO)]

    import models.p2p.attention_control as control  # the reference's modules
    import models.p2p.p2p_guidance_forward as forward
    import models.p2p.proximal_guidance_forward as proximal
    import models.p2p_editor as editor
    from common import tiny_model, tiny_pipeline
    from models.p2p import inversion

    from pie_bench import BUNDLED_MINI_ROOT

    tiny = tiny_model()
    seen: dict[str, list] = defaultdict(list)

    editor.StableDiffusionPipeline = types.SimpleNamespace(
        from_pretrained=lambda name, scheduler: tiny_pipeline(tiny, scheduler)
    )
    editor.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)
    record(editor, "load_512", lambda out, *a, **k: seen["image"].append(np.array(out)))
    record(
        editor,
        "latent2image",
        lambda out, *a, **k: (seen["decoded_latents"].append(k["latents"].clone()), seen["images"].append(out)),
    )
    for name in ("NullInversion", "DirectInversion", "NegativePromptInversion"):
        record(getattr(inversion, name), "invert", lambda out, *a, **k: seen["inversion"].append(out))
    for module, name in (
        (forward, "p2p_guidance_diffusion_step"),
        (forward, "direct_inversion_p2p_guidance_diffusion_step"),
        (proximal, "proximal_guidance_diffusion_step"),
    ):
        record(module, name, lambda out, *a, **k: seen["steps"].append(out.detach().clone()))
    if args.blend_threshold is not None:
        threshold = args.blend_threshold
        original_init = control.LocalBlend.__init__

        def blend_init(self, *a, **k):
            original_init(self, *a, **k)
            self.th = (threshold, threshold)

        control.LocalBlend.__init__ = blend_init

    class CountedAdam(torch.optim.Adam):
        def step(self, *a, **k):
            seen["adam_steps"].append(1)
            return super().step(*a, **k)

    inversion.Adam = CountedAdam

    item = json.loads((BUNDLED_MINI_ROOT / "mapping_file.json").read_text())[args.sample]
    source = item["original_prompt"].replace("[", "").replace("]", "")
    target = item["editing_prompt"].replace("[", "").replace("]", "")
    blended = item["blended_word"].split(" ") if item["blended_word"] != "" else []
    p2p = editor.P2PEditor([args.method], torch.device("cpu"), num_ddim_steps=args.steps)
    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # run_editing_p2p.py's setup_seed
    p2p(  # the arguments of run_editing_p2p.py
        args.method,
        image_path=str(BUNDLED_MINI_ROOT / "annotation_images" / item["image_path"]),
        prompt_src=source,
        prompt_tar=target,
        guidance_scale=7.5,
        cross_replace_steps=0.4,
        self_replace_steps=0.6,
        blend_word=(((blended[0],), (blended[1],))) if len(blended) else None,
        eq_params={"words": (blended[1],), "values": (2,)} if len(blended) else None,
        proximal="l0",
        quantile=0.75,
        use_inversion_guidance=True,
        recon_lr=1,
        recon_t=400,
    )
    _, _, trajectory, extra = seen["inversion"][0]
    result = {
        "method": args.method,
        "sample": args.sample,
        "steps": args.steps,
        "blend_threshold": args.blend_threshold,
        "trajectory": [latent.detach().clone() for latent in trajectory],  # z*_0 .. z*_T
        # NTI: the per-step null embeddings; DirectInversion: the per-step offsets of both rows; DDIM: ""
        "extra": [tensor.detach().clone() for tensor in extra] if isinstance(extra, list) else extra,
        "adam_steps": len(seen["adam_steps"]),
        "edit_steps": seen["steps"][-args.steps :],  # the edit run's latents after each step (source, target)
        "edited_latents": seen["decoded_latents"][-1].clone(),
        "edited_image": np.asarray(seen["images"][-1][-1]),  # what the reference saves as the edit
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, args.out)
    print(f"reference {args.method} {args.sample}: {args.steps} steps -> {args.out}")


def record(owner, name, store) -> None:
    """Wrap owner.name so that `store(result, *args, **kwargs)` sees every call's result."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        store(out, *args, **kwargs)
        return out

    setattr(owner, name, wrapped)


if __name__ == "__main__":
    main()
