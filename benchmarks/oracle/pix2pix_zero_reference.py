"""Regenerate the pix2pix-zero goldens of tests/test_oracle.py: run the PIE-Bench reference's
run_editing_pix2pix_zero.py (`ddim+pix2pix-zero`) on invbench's tiny model.

    python benchmarks/oracle/pix2pix_zero_reference.py <PnPInversion checkout or git dir> [--work /tmp/p2pzero-ref]

Prepares the reference's P2P path as patch_reference.py does (for utils/utils.py), adds models/pix2pix_zero/ and
run_editing_pix2pix_zero.py at REFERENCE_COMMIT with PATCHES (none changes the math) and calls the script's
edit_image_ddim_pix2pix_zero as its __main__ does (setup_seed(), guidance 7.5) with the tiny model in place of SD
v1.4: `from_pretrained` of its two pipelines returns the reference pipeline classes put together from the tiny
model's components and a scheduler with SD v1.4's scheduler settings, as the script then replaces it. Two
substitutions, no patch: the BLIP captioner (lavis, no weights offline) is a stub whose caption is the sample's
source prompt, invbench's documented stand-in; and the script's module-level `NUM_DDIM_STEPS` (read when called) is
set to STEPS. The tiny UNet's noise predictions have a standard deviation of ~0.03, not SD's 1, and the
reference's KL step of 20 on them diverges to NaN; the script's call gets lambda_kl=LAMBDA_KL (Z5), which keeps the
auto-correlation steps and a KL step that does not diverge. Keeps z_0, the trajectory, the source and target after
every editing step, the final latents and a crop of the saved edit, in tests/golden/oracle/pix2pix_zero/<case>.pt.
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
GOLDEN = REPO / "tests" / "golden" / "oracle" / "pix2pix_zero"
REFERENCE_COMMIT = "07f97f4"
STEPS = 10
LAMBDA_KL = 0.01
CROP = (slice(192, 320), slice(192, 320))
SAMPLES = ("121000000001", "623000000006")  # cat → tiger (a changed object), red → blue motorcycle (an attribute)

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        "models/pix2pix_zero/cross_attention.py",
        "from diffusers.models.attention import CrossAttention",
        "from diffusers.models.attention_processor import Attention as CrossAttention",
        1,
        "Z1: diffusers renamed CrossAttention to Attention (in diffusers.models.attention_processor)",
    ),
    (
        "models/pix2pix_zero/cross_attention.py",
        'if module_name == "CrossAttention":',
        'if module_name in ("CrossAttention", "Attention"):',
        1,
        "Z1: as above, where prep_unet looks for the layers by class name; without it no map is recorded",
    ),
    (
        "models/pix2pix_zero/edit_pipeline.py",
        "if module_name == \"CrossAttention\" and 'attn2' in name:",
        'if module_name in ("CrossAttention", "Attention") and \'attn2\' in name:',
        2,
        "Z1: as above, where the editing pipeline reads and guides the maps",
    ),
    (
        "models/pix2pix_zero/cross_attention.py",
        "attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length)",
        "attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)",
        1,
        "Z1: prepare_attention_mask now takes the batch size (the mask is None here either way)",
    ),
    (
        "models/pix2pix_zero/base_pipeline.py",
        "from diffusers.utils import deprecate, is_accelerate_available, logging, randn_tensor, replace_example_docstring",
        (
            "from diffusers.utils import deprecate, is_accelerate_available, logging, replace_example_docstring\n"
            "from diffusers.utils.torch_utils import randn_tensor"
        ),
        1,
        "Z2: randn_tensor moved to diffusers.utils.torch_utils",
    ),
    (
        "models/pix2pix_zero/scheduler.py",
        "from diffusers.utils import BaseOutput, randn_tensor",
        "from diffusers.utils import BaseOutput\nfrom diffusers.utils.torch_utils import randn_tensor",
        1,
        "Z2: as above",
    ),
    (
        "models/pix2pix_zero/base_pipeline.py",
        "from transformers import CLIPFeatureExtractor, CLIPTextModel, CLIPTokenizer",
        "from transformers import CLIPImageProcessor as CLIPFeatureExtractor, CLIPTextModel, CLIPTokenizer",
        1,
        "Z3: transformers removed CLIPFeatureExtractor (a type annotation here; no feature extractor is used)",
    ),
    (
        "models/pix2pix_zero/ddim_inv.py",
        "latents = x0_enc = 0.18215 * x0_enc",
        "latents = x0_enc = self.vae.config.scaling_factor * x0_enc",
        1,
        "Z4: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        "models/pix2pix_zero/base_pipeline.py",
        "latents = 1 / 0.18215 * latents",
        "latents = 1 / self.vae.config.scaling_factor * latents",
        1,
        "Z4: as above, for the decoder",
    ),
    (
        "run_editing_pix2pix_zero.py",
        "            num_inversion_steps=NUM_DDIM_STEPS,\n            img=image_gt\n        )",
        (
            "            num_inversion_steps=NUM_DDIM_STEPS,\n            img=image_gt,\n"
            f"            lambda_kl={LAMBDA_KL},\n        )"
        ),
        2,
        (
            f"Z5: lambda_kl={LAMBDA_KL} instead of the default 20, which diverges on the tiny model's small noise "
            "(a setting, passed as invbench's inversion.lambda_kl)"
        ),
    ),
]


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model, tiny_pipeline

    prepare_reference(
        __doc__, "cure-lab/PnPInversion", "/tmp/p2pzero-ref", REFERENCE_COMMIT,
        ("models/pix2pix_zero", "run_editing_pix2pix_zero.py"), ("models/pix2pix_zero",), PATCHES, with_p2p_path=True,
    )  # fmt: skip

    caption = [""]  # the stub captioner's answer: the current sample's source prompt

    class Captioner:
        def generate(self, inputs):
            return [caption[0]]

    lavis, lavis_models = types.ModuleType("lavis"), types.ModuleType("lavis.models")
    lavis_models.load_model_and_preprocess = lambda **_: (Captioner(), {"eval": lambda image: torch.zeros(3)}, None)
    sys.modules.update({"lavis": lavis, "lavis.models": lavis_models})

    from diffusers import DDIMScheduler
    from models.pix2pix_zero.base_pipeline import BasePipeline

    tiny = tiny_model()

    def from_pretrained(cls, *_, **__):  # SD v1.4's scheduler_config.json settings; the script replaces it anyway
        sd_scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        )
        return tiny_pipeline(tiny, sd_scheduler, cls)

    BasePipeline.from_pretrained = classmethod(from_pretrained)
    import run_editing_pix2pix_zero as reference

    reference.NUM_DDIM_STEPS = STEPS
    reference.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)

    seen: dict[str, list] = {}
    inversion_call = type(reference.pipe).__call__

    def invert(self, *a, **k):
        out = inversion_call(self, *a, **k)
        seen["trajectory"] = [latent.detach().clone() for latent in out[0]]
        return out

    type(reference.pipe).__call__ = invert
    scheduler = reference.edit_pipe.scheduler
    plain_step = scheduler.step

    def step(model_output, timestep, sample, *a, **k):
        out = plain_step(model_output, timestep, sample, *a, **k)
        seen["steps"].append(out.prev_sample.detach().clone())
        return out

    scheduler.step = step

    from pie_bench import edit_class_lookup, load_benchmark

    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    samples = {sample.id: sample for sample in mini.samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for sample_id in SAMPLES:
        sample = samples[sample_id]
        seen.update(steps=[])
        caption[0] = sample.source_prompt
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the script's setup_seed()
        shown = reference.edit_image_ddim_pix2pix_zero(
            image_path=str(sample.image_file),
            prompt_src=sample.source_prompt,
            prompt_tar=sample.target_prompt,
            guidance_scale=7.5,
        )
        assert len(seen["steps"]) == 2 * STEPS, len(seen["steps"])  # the reconstruction pass, then the edit
        sources, targets = torch.cat(seen["steps"][:STEPS]), torch.cat(seen["steps"][STEPS:])
        edited = np.asarray(shown)[:, 3 * 512 :]  # [instruction | source | reconstruction | edit]
        case = f"ddim_pix2pix_zero_{sample_id}"
        torch.save(
            {
                "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_pix2pix_zero.py, patches: P1-P6 "
                "of patch_reference.py, " + "; ".join(why.split(":")[0] for *_, why in PATCHES),
                "method": "ddim+pix2pix-zero",
                "sample": sample_id,
                "steps": STEPS,
                "lambda_kl": LAMBDA_KL,
                "trajectory": torch.cat(seen["trajectory"]),  # (steps + 1, 4, h, w): z_0 (a posterior sample) … z_T
                "sources": sources,  # (steps, 4, h, w): the reconstruction after every step
                "targets": targets,  # (steps, 4, h, w): the edit after every step
                "edited_image_crop": torch.from_numpy(edited[CROP].copy()),
            },
            GOLDEN / f"{case}.pt",
        )
        print("wrote", GOLDEN / f"{case}.pt", "max |z_T|", float(seen["trajectory"][-1].abs().max()))


if __name__ == "__main__":
    main()
