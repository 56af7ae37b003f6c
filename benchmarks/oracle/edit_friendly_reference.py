"""Regenerate the edit-friendly goldens of tests/test_oracle.py: run the PIE-Bench reference's
run_editing_edit_friendly_p2p.py on invbench's tiny model.

    python benchmarks/oracle/edit_friendly_reference.py <PnPInversion checkout or git dir> [--work /tmp/ef-ref]

Copies `run_editing_edit_friendly_p2p.py`, `models/edit_friendly_ddm/` and `utils/` at REFERENCE_COMMIT outside this
repository, applies PATCHES (API drift only, none changes the math) and calls its `edit_image_EF` as its `__main__`
does (setup_seed(), source guidance 1, target 7.5, cross 0.4, self 0.6). The script loads SD v1.4 when imported:
`StableDiffusionPipeline.from_pretrained` returns a real StableDiffusionPipeline put together from the tiny model's
parts, and `DDIMScheduler.from_config` SD v1.4's scheduler configuration (steps_offset 1). NUM_DDIM_STEPS and SKIP,
module constants, are set to STEPS and the skip invbench's `${scaled_steps:12,50}` gives at STEPS. Three samples: two
whose prompts have as many words (the reference's AttentionReplace) and one whose do not (AttentionRefine). Keeps
z_0, the noisy trajectory x_t, the noise maps z_t, the latents (source, target) after every editing step and at the
end, in tests/golden/oracle/edit_friendly/<case>.pt. About 30 s on 2 cores.
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
GOLDEN = REPO / "tests" / "golden" / "oracle" / "edit_friendly"
REFERENCE_COMMIT = "07f97f4"
STEPS = 10
SKIP = 2  # round(12 * 10 / 50), invbench's scaled_steps
CASES = {  # a changed object and an aligned attribute word (word swap), an added object (refine)
    "edit_friendly_p2p_121000000001": "121000000001",
    "edit_friendly_p2p_623000000006": "623000000006",
    "edit_friendly_p2p_224000000002": "224000000002",
}

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        "models/edit_friendly_ddm/ptp_utils.py",
        "if net_.__class__.__name__ == 'CrossAttention':",
        "if net_.__class__.__name__ in ('CrossAttention', 'Attention'):",
        1,
        "E1: diffusers renamed CrossAttention to Attention; without this no layer is hooked",
    ),
    (
        "models/edit_friendly_ddm/ptp_utils.py",
        "        def forward(x, context=None, mask=None):\n",
        (
            "        def forward(x, context=None, mask=None, **kwargs):\n"
            "            context = kwargs.pop('encoder_hidden_states', context)\n"
            "            mask = kwargs.pop('attention_mask', mask)\n"
        ),
        1,
        "E2: diffusers now calls attention with encoder_hidden_states= / attention_mask= keywords",
    ),
    (
        "models/edit_friendly_ddm/ptp_utils.py",
        "self.reshape_heads_to_batch_dim(",
        "self.head_to_batch_dim(",
        3,
        "E3: renamed in diffusers",
    ),
    (
        "models/edit_friendly_ddm/ptp_utils.py",
        "self.reshape_batch_dim_to_heads(",
        "self.batch_to_head_dim(",
        1,
        "E3: renamed in diffusers",
    ),
    (
        "run_editing_edit_friendly_p2p.py",
        "0.18215",
        "ldm_stable.vae.config.scaling_factor",
        4,
        "E4: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
]


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model, tiny_pipeline

    prepare_reference(
        __doc__, "cure-lab/PnPInversion", "/tmp/ef-ref", REFERENCE_COMMIT,
        ("models/edit_friendly_ddm", "utils", "models/p2p", "run_editing_edit_friendly_p2p.py"),
        ("models", "models/edit_friendly_ddm", "models/p2p", "utils"), PATCHES,
    )  # fmt: skip
    sys.modules["cv2"] = types.ModuleType("cv2")  # ptp_utils.py draws captions with it, never on this path

    import diffusers

    from pie_bench import edit_class_lookup, load_benchmark

    tiny = tiny_model()
    sd14_scheduler = {  # CompVis/stable-diffusion-v1-4's scheduler/scheduler_config.json
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "num_train_timesteps": 1000,
    }

    real_pipeline, real_scheduler = diffusers.StableDiffusionPipeline, diffusers.DDIMScheduler

    diffusers.StableDiffusionPipeline = types.SimpleNamespace(
        from_pretrained=lambda name, **k: tiny_pipeline(tiny, real_scheduler(**sd14_scheduler), real_pipeline)
    )
    diffusers.DDIMScheduler = types.SimpleNamespace(from_config=lambda *a, **k: real_scheduler(**sd14_scheduler))
    try:
        import run_editing_edit_friendly_p2p as reference
    finally:
        diffusers.StableDiffusionPipeline, diffusers.DDIMScheduler = real_pipeline, real_scheduler
    from models.edit_friendly_ddm import inversion_utils, ptp_classes

    reference.NUM_DDIM_STEPS, reference.SKIP = STEPS, SKIP
    reference.ldm_stable.scheduler.set_timesteps(STEPS)
    reference.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)

    seen: dict = {}
    forward_process = inversion_utils.inversion_forward_process

    def record_forward(*args, **kwargs):
        wt, zs, wts = forward_process(*args, **kwargs)
        seen.update(z0=args[1].clone(), zs=zs.clone(), xts=wts.clone())
        return wt, zs, wts

    reference.inversion_forward_process = record_forward
    step_callback = ptp_classes.AttentionControlEdit.step_callback

    def record_step(self, x_t):
        x_t = step_callback(self, x_t)
        seen["steps"].append(x_t.clone())
        return x_t

    ptp_classes.AttentionControlEdit.step_callback = record_step

    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    samples = {sample.id: sample for sample in mini.samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case, sample_id in CASES.items():
        sample = samples[sample_id]
        seen.update(steps=[])
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the script's setup_seed()
        reference.edit_image_EF(
            "edit-friendly-inversion+p2p",
            image_path=str(sample.image_file),
            prompt_src=sample.source_prompt,
            prompt_tar=sample.target_prompt,
            source_guidance_scale=1,
            target_guidance_scale=7.5,
            cross_replace_steps=0.4,
            self_replace_steps=0.6,
        )
        torch.save(
            {
                "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_edit_friendly_p2p.py, patches: "
                + "; ".join(why.split(":")[0] for *_, why in PATCHES),
                "sample": sample_id,
                "steps": STEPS,
                "skip": SKIP,
                "z0": seen["z0"],
                "xts": seen["xts"],  # (steps + 1, 4, h, w): x_0 and the noisy x_t, t ascending
                "zs": seen["zs"],  # (steps, 4, h, w): the noise maps, t ascending (zs[0], the last step's, is zero)
                "steps_latents": torch.stack(seen["steps"]),  # (steps - skip, 2, 4, h, w): source, target per step
            },
            GOLDEN / f"{case}.pt",
        )
        print("wrote", GOLDEN / f"{case}.pt")


if __name__ == "__main__":
    main()
