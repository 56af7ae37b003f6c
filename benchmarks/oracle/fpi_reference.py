"""Regenerate the FPI goldens of tests/test_oracle.py: run FPI's official code (dvirsamuel/FPI, archived, the code of
Meiri et al., "Fixed-point Inversion for Text-to-image diffusion models", arXiv 2312.12540 v1) on invbench's tiny
model, as its main.py runs it.

    python benchmarks/oracle/fpi_reference.py <FPI checkout or git dir> [--work /tmp/fpi-ref]

Copies inversion.py and StableDiffusionPipelineWithDDIMInversion.py at REFERENCE_COMMIT, applies PATCHES (imports that
moved, none of the math) and calls what main.py calls, with the tiny model's parts in place of SD v1.4 and SD's
scheduler configuration: the prompt-aware adjustment (StableDiffusionImg2ImgPipeline at strength 0.05 and guidance 2
with the source prompt, on its default 50-step grid), `MyInvertFixedPoint.invert` (20 fixed-point iterations per
step at guidance 2) at STEPS steps, and the reconstruction at guidance 2. `easydict`, which the code imports for its
return values, is a small stand-in (a dict with attribute access), and the pipeline's execution device is the CPU
(diffusers finds it through `components`, which expects an image encoder the reference's classes predate). Keeps the posterior sample, the adjusted latent,
the latent after every inversion step and the reconstruction's final latent, in tests/golden/oracle/fpi/<case>.pt.
About a minute on 2 cores.
"""

from __future__ import annotations

import random
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = REPO / "tests" / "golden" / "oracle" / "fpi"
REFERENCE_COMMIT = "0100d59"
STEPS = 10
GUIDANCE_SCALE, NUM_ITER, STRENGTH = 2, 20, 0.05  # main.py's
SAMPLES = ("121000000001",)

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        name,
        (
            "from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_pix2pix_zero import "
            "Pix2PixInversionPipelineOutput"
        ),
        (
            "from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_stable_diffusion_pix2pix_zero import "
            "Pix2PixInversionPipelineOutput"
        ),
        1,
        "F1: diffusers moved the pix2pix-zero pipeline (its output class is a return type here) to deprecated/",
    )
    for name in ("inversion.py", "StableDiffusionPipelineWithDDIMInversion.py")
] + [
    (
        "StableDiffusionPipelineWithDDIMInversion.py",
        (
            "        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,\n"
            "                         requires_safety_checker)"
        ),
        (
            "        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,\n"
            "                         requires_safety_checker=requires_safety_checker)"
        ),
        1,
        (
            "F2: StableDiffusionPipeline now takes an image encoder before requires_safety_checker, which the positional "
            "call would fill"
        ),
    )
]


class EasyDict(dict):
    """easydict's EasyDict as the reference uses it: a dict whose keys read as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model

    prepare_reference(
        __doc__, "dvirsamuel/FPI", "/tmp/fpi-ref", REFERENCE_COMMIT,
        ("inversion.py", "StableDiffusionPipelineWithDDIMInversion.py"), (), PATCHES,
    )  # fmt: skip
    torch.set_num_threads(2)
    sys.modules["easydict"] = types.SimpleNamespace(EasyDict=EasyDict)

    from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline
    from inversion import MyInvertFixedPoint

    from pie_bench import edit_class_lookup, load_benchmark

    # diffusers' device lookup walks `components`, which today expects an image encoder in the pipeline's signature;
    # the reference's subclasses predate it. Everything runs on the CPU here.
    MyInvertFixedPoint._execution_device = property(lambda self: torch.device("cpu"))
    tiny = tiny_model()
    parts = {
        "vae": tiny.vae,
        "text_encoder": tiny.backbone.text_encoder,
        "tokenizer": tiny.tokenizer,
        "unet": tiny.denoiser,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    scheduler_config = conf("scheduler/ddim")  # SD v1.4's scheduler_config.json settings (steps_offset 1)
    pipe = MyInvertFixedPoint(scheduler=DDIMScheduler(**scheduler_config), **parts)
    pipe2 = StableDiffusionImg2ImgPipeline(scheduler=DDIMScheduler(**scheduler_config), **parts)
    seen: dict[str, list] = {"posterior": [], "steps": []}
    encode = tiny.vae.encode

    def encoded(*args, **kwargs):
        out = encode(*args, **kwargs)
        sample = out.latent_dist.sample

        def kept(generator=None):
            drawn = sample(generator)
            seen["posterior"].append(drawn.detach().clone())
            return drawn

        out.latent_dist.sample = kept
        return out

    optimize = MyInvertFixedPoint.optimize

    def recorded(self, *args, **kwargs):
        out = optimize(self, *args, **kwargs)
        seen["steps"].append(out.detach().clone())
        return out

    MyInvertFixedPoint.optimize = recorded
    samples = {s.id: s for s in load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv"))).samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for sample_id in SAMPLES:
        sample = samples[sample_id]
        for kept in seen.values():
            kept.clear()
        from PIL import Image

        real_image = Image.open(sample.image_file).convert("RGB")  # PIE-Bench images are 512² already
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the run's seed, as invbench seeds a sample
        tiny.vae.encode = encoded
        with torch.no_grad():  # main.py's calls
            new_latents = pipe2(
                prompt=sample.source_prompt,
                image=real_image,
                strength=STRENGTH,
                guidance_scale=GUIDANCE_SCALE,
                output_type="latent",
            ).images
            tiny.vae.encode = encode
            latent = pipe.invert(
                sample.source_prompt,
                latents=new_latents,
                num_inference_steps=STEPS,
                guidance_scale=GUIDANCE_SCALE,
                num_iter=NUM_ITER,
            ).latents
            reconstruction = pipe(
                prompt=[sample.source_prompt],
                latents=latent,
                guidance_scale=GUIDANCE_SCALE,
                num_inference_steps=STEPS,
                output_type="pil",
            ).latents
        inverse_timesteps = [int(t) for t in pipe.inverse_scheduler.timesteps]
        case = f"fpi_{sample_id}"
        torch.save(
            {
                "reference": f"dvirsamuel/FPI@{REFERENCE_COMMIT}, main.py's calls (img2img adjustment, "
                "MyInvertFixedPoint.invert, the reconstruction), patches: F1, F2",
                "sample": sample_id,
                "steps": STEPS,
                "inverse_timesteps": inverse_timesteps,
                "posterior_sample": seen["posterior"][0] * tiny.vae.config.scaling_factor,
                "adjusted": new_latents,  # the image latent after the prompt-aware adjustment
                "trajectory": torch.cat([new_latents, *seen["steps"]]),  # (steps + 1, 4, h, w)
                "reconstruction": reconstruction,
            },
            GOLDEN / f"{case}.pt",
        )
        print("wrote", GOLDEN / f"{case}.pt", "inverse grid", inverse_timesteps)


if __name__ == "__main__":
    main()
