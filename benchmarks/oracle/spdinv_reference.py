"""Regenerate the SPDInv goldens of tests/test_oracle.py: run SPDInv's official P2P script (leeruibin/SPDInv,
run_SPDInv_P2P.py) on invbench's tiny model.

    python benchmarks/oracle/spdinv_reference.py <SPDInv checkout or git dir> [--work /tmp/spdinv-ref]

Copies `run_SPDInv_P2P.py`, `P2P/` and `utils/` at REFERENCE_COMMIT outside this repository, applies PATCHES (API
drift and the tiny UNet's layout, none changes the math), and calls `P2P_inversion_and_edit` as its `__main__` does
(K 25, lr 1e-3, threshold 5e-6, guidance 7.5, the sample's blended words for the local blend and ×2 on the target's;
the function's own defaults otherwise: refine, cross 0.8, self 0.6, inversion guidance on) at STEPS steps.
`StableDiffusionPipeline.from_pretrained` returns a real StableDiffusionPipeline of the tiny model's parts with the
script's scheduler (whose steps_offset the pipeline sets to 1, as for SD v1.4). Keeps z_0, the SPDInv trajectory,
the AdamW iterations per step, the latents (source, target) after every editing step, in
tests/golden/oracle/spdinv/<case>.pt. About a minute on 2 cores.
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
GOLDEN = REPO / "tests" / "golden" / "oracle" / "spdinv"
REFERENCE_COMMIT = "00c9a8c"
STEPS = 5
CASES = {"spdinv_p2p_121000000001": "121000000001", "spdinv_p2p_623000000006": "623000000006"}

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        "P2P/ptp_utils.py",
        "if net_.__class__.__name__ == 'CrossAttention':",
        "if net_.__class__.__name__ in ('CrossAttention', 'Attention'):",
        1,
        "S1: diffusers renamed CrossAttention to Attention; without this no layer is hooked",
    ),
    (
        "P2P/ptp_utils.py",
        "        def forward(x, context=None, mask=None, **kwargs):\n",
        (
            "        def forward(x, context=None, mask=None, **kwargs):\n"
            "            context = kwargs.pop('encoder_hidden_states', context)\n"
            "            mask = kwargs.pop('attention_mask', mask)\n"
        ),
        1,
        "S2: diffusers now calls attention with encoder_hidden_states= / attention_mask= keywords",
    ),
    ("P2P/ptp_utils.py", "self.reshape_heads_to_batch_dim(", "self.head_to_batch_dim(", 3, "S3: renamed in diffusers"),
    ("P2P/ptp_utils.py", "self.reshape_batch_dim_to_heads(", "self.batch_to_head_dim(", 1, "S3: renamed in diffusers"),
    (
        "P2P/ptp_utils.py",
        "latents = 1 / 0.18215 * latents\n",
        "latents = 1 / vae.config.scaling_factor * latents\n",
        1,
        "S4: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        "P2P/SPDInv.py",
        "0.18215",
        "self.model.vae.config.scaling_factor",
        2,
        "S4: as above, in the inversion's encoder and decoder",
    ),
    ("P2P/ptp_utils.py", "from tqdm.notebook import tqdm", "from tqdm import tqdm", 1, "S5: no notebook widgets"),
    ("P2P/SPDInv.py", "from tqdm.notebook import tqdm", "from tqdm import tqdm", 1, "S5: no notebook widgets"),
    ("run_SPDInv_P2P.py", "from tqdm.notebook import tqdm", "from tqdm import tqdm", 1, "S5: no notebook widgets"),
    (
        "utils/control_utils.py",
        'maps = attention_store["down_cross"][2:4] + attention_store["up_cross"][:3]',
        (
            'maps = [item for item in attention_store["down_cross"] + attention_store["up_cross"] '
            "if item.shape[1] == 16 ** 2]"
        ),
        1,
        (
            "S6: the blend takes the 16x16 cross-attention maps, which these indices pick in SD 1.x but not in the tiny "
            "UNet (as P6 of patch_reference.py)"
        ),
    ),
]


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model, tiny_pipeline

    args = prepare_reference(
        __doc__, "leeruibin/SPDInv", "/tmp/spdinv-ref", REFERENCE_COMMIT,
        ("P2P", "utils", "run_SPDInv_P2P.py"), ("P2P", "utils"), PATCHES,
    )  # fmt: skip
    sys.modules["cv2"] = types.ModuleType("cv2")  # ptp_utils.py draws captions with it, never on this path

    import run_SPDInv_P2P as reference
    from P2P import SPDInv, ptp_utils

    from pie_bench import edit_class_lookup, load_benchmark

    tiny = tiny_model()
    reference.StableDiffusionPipeline = types.SimpleNamespace(
        from_pretrained=lambda name, scheduler: tiny_pipeline(tiny, scheduler)
    )
    seen: dict = {}
    spd_loop = SPDInv.SourcePromptDisentanglementInversion.SPD_loop

    def record_loop(self, latent):
        trajectory = spd_loop(self, latent)
        seen["trajectory"] = torch.cat(trajectory)
        return trajectory

    SPDInv.SourcePromptDisentanglementInversion.SPD_loop = record_loop
    adamw_step = torch.optim.AdamW.step

    def count_step(self, *a, **k):
        seen["adamw_steps"] += 1
        return adamw_step(self, *a, **k)

    torch.optim.AdamW.step = count_step
    diffusion_step = ptp_utils.diffusion_step

    def record_step(*a, **k):
        latents = diffusion_step(*a, **k)
        seen["steps"].append(latents.clone())
        return latents

    reference.ptp_utils.diffusion_step = record_step

    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    samples = {sample.id: sample for sample in mini.samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case, sample_id in CASES.items():
        sample = samples[sample_id]
        source_word, target_word = sample.blended_words
        seen.update(steps=[], adamw_steps=0)
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)
        reference.P2P_inversion_and_edit(
            image_path=str(sample.image_file),
            prompt_src=sample.source_prompt,
            prompt_tar=sample.target_prompt,
            output_dir=str(args.work / "out"),
            guidance_scale=7.5,
            blend_word=((source_word,), (target_word,)),
            eq_params={"words": (target_word,), "values": (2.0,)},
            K_round=25,
            num_of_ddim_steps=STEPS,
            learning_rate=0.001,
            delta_threshold=5e-6,
            enable_threshold=True,
        )
        torch.save(
            {
                "reference": f"leeruibin/SPDInv@{REFERENCE_COMMIT}, run_SPDInv_P2P.py, patches: "
                + "; ".join(why.split(":")[0] for *_, why in PATCHES),
                "sample": sample_id,
                "steps": STEPS,
                "cross_replace_steps": 0.8,  # P2P_inversion_and_edit's default
                "trajectory": seen["trajectory"],  # (steps + 1, 4, h, w): z_0, then the SPDInv latents
                "adamw_steps": seen["adamw_steps"],
                "steps_latents": torch.stack(seen["steps"]),  # (steps, 2, 4, h, w): source, target per step
            },
            GOLDEN / f"{case}.pt",
        )
        print("wrote", GOLDEN / f"{case}.pt", "AdamW steps", seen["adamw_steps"])


if __name__ == "__main__":
    main()
