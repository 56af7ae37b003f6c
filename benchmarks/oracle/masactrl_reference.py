"""Regenerate the MasaCtrl goldens of tests/test_oracle.py: run the PIE-Bench reference's run_editing_masactrl.py on
invbench's tiny model.

    python benchmarks/oracle/masactrl_reference.py <PnPInversion checkout or git dir> [--work /tmp/masactrl-ref]

Needs `einops` (pip install einops), which the reference imports. Prepares the reference's P2P path as
patch_reference.py does (its DirectInversion is the one `directinversion+masactrl` uses), adds models/masactrl/ and
run_editing_masactrl.py at REFERENCE_COMMIT with PATCHES (none changes the math), and calls MasaCtrlEditor as the
script's __main__ does (setup_seed(), guidance 7.5, step 4) with the tiny model in place of SD v1.4: its pipeline is
the reference's MasaCtrlPipeline put together from the tiny model's components and the script's own DDIM scheduler.
8 steps instead of 50. The tiny UNet has 7 transformer blocks, so the reference's layer 10 controls none of them:
one case keeps it (the "" source prompt, the inversion and the plain two-branch run), the others start at layer 4
(the decoder's blocks) so that the mutual self-attention acts. Keeps z_0, z_T, the target after every step and the
final latents (source, target) and a crop of the saved edit, in tests/golden/oracle/masactrl/<case>.pt. About a
minute on 2 cores.
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
GOLDEN = REPO / "tests" / "golden" / "oracle" / "masactrl"
REFERENCE_COMMIT = "07f97f4"
STEPS = 8
CROP = (slice(192, 320), slice(192, 320))
# case -> (reference method, sample, layer the control starts at)
CASES = {
    "ddim_masactrl_121000000001_layer10": ("ddim+masactrl", "121000000001", 10),
    "ddim_masactrl_121000000001_layer4": ("ddim+masactrl", "121000000001", 4),
    "ddim_masactrl_623000000006_layer4": ("ddim+masactrl", "623000000006", 4),
    "directinversion_masactrl_121000000001_layer4": ("directinversion+masactrl", "121000000001", 4),
}

# (file, old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        "models/masactrl/diffuser_utils.py",
        "0.18215",
        "self.vae.config.scaling_factor",
        3,
        "M1: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        "run_editing_masactrl.py",
        "                            latents=start_code,\n                            guidance_scale=guidance_scale)",
        (
            "                            latents=start_code,\n                            guidance_scale=guidance_scale,\n"
            "                            num_inference_steps=self.num_ddim_steps)"
        ),
        1,
        (
            "M2: the MasaCtrl run relies on the pipeline's default of 50 steps, which is the script's num_ddim_steps; the "
            "oracle runs fewer, so it passes num_ddim_steps (the same call at 50)"
        ),
    ),
    (
        "run_editing_masactrl.py",
        (
            "                            guidance_scale=guidance_scale,\n"
            "                            noise_loss_list=noise_loss_list)"
        ),
        (
            "                            guidance_scale=guidance_scale,\n"
            "                            noise_loss_list=noise_loss_list,\n"
            "                            num_inference_steps=self.num_ddim_steps)"
        ),
        1,
        "M2: as above, for directinversion+masactrl",
    ),
]


def main() -> None:
    sys.path.insert(0, str(HERE))
    from common import conf, prepare_reference, tiny_model, tiny_pipeline

    prepare_reference(
        __doc__, "cure-lab/PnPInversion", "/tmp/masactrl-ref", REFERENCE_COMMIT,
        ("models/masactrl", "run_editing_masactrl.py"), ("models/masactrl",), PATCHES, with_p2p_path=True,
    )  # fmt: skip
    sys.modules["cv2"] = types.ModuleType("cv2")  # imported by masactrl_utils.py, never used on this path

    import run_editing_masactrl as reference
    from diffusers import DDIMScheduler
    from models.masactrl.diffuser_utils import MasaCtrlPipeline

    from pie_bench import edit_class_lookup, load_benchmark

    tiny = tiny_model()
    reference.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)

    def editor_with_tiny_model():  # MasaCtrlEditor.__init__, with the tiny model's components
        editor = reference.MasaCtrlEditor.__new__(reference.MasaCtrlEditor)
        editor.device, editor.method_list, editor.num_ddim_steps = torch.device("cpu"), list(METHODS), STEPS
        editor.scheduler = DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
        )
        editor.model = tiny_pipeline(tiny, editor.scheduler, MasaCtrlPipeline)
        editor.model.scheduler.set_timesteps(STEPS)
        return editor

    seen: dict[str, list] = {}
    original_step, original_invert = MasaCtrlPipeline.step, MasaCtrlPipeline.invert
    original_decode = MasaCtrlPipeline.latent2image

    def step(self, model_output, timestep, x, *a, **k):
        out = original_step(self, model_output, timestep, x, *a, **k)
        if x.shape[0] == 2:  # the MasaCtrl run (source, target), not the target-only run before it
            seen["targets"].append(out[0][1:].clone())
        return out

    def invert(self, *a, **k):
        out = original_invert(self, *a, **k)
        seen["trajectory"] = out[1]
        return out

    def latent2image(self, latents, return_type="np"):
        if latents.shape[0] == 2:
            seen["final"] = latents.detach().clone()
        return original_decode(self, latents, return_type)

    MasaCtrlPipeline.step, MasaCtrlPipeline.invert, MasaCtrlPipeline.latent2image = step, invert, latent2image
    original_direct = reference.DirectInversion.invert

    def direct_invert(self, *a, **k):
        out = original_direct(self, *a, **k)
        seen["trajectory"] = out[2]
        return out

    reference.DirectInversion.invert = direct_invert

    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    samples = {sample.id: sample for sample in mini.samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for case, (method, sample_id, layer) in CASES.items():
        sample = samples[sample_id]
        seen.update(targets=[])
        editor = editor_with_tiny_model()
        torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the script's setup_seed()
        shown = editor(
            method,
            image_path=str(sample.image_file),
            prompt_src=sample.source_prompt,
            prompt_tar=sample.target_prompt,
            guidance_scale=7.5,
            step=4,
            layper=layer,
        )
        edited = np.asarray(shown)[:, 3 * 512 :]  # [instruction | source | reconstruction | edit]
        torch.save(
            {
                "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_masactrl.py, patches: P1-P6 of "
                "patch_reference.py, " + "; ".join(why.split(":")[0] for *_, why in PATCHES),
                "method": method,
                "sample": sample_id,
                "steps": STEPS,
                "start_layer": layer,
                "z0": seen["trajectory"][0].clone(),
                "zT": seen["trajectory"][-1].clone(),
                "targets": torch.cat(seen["targets"]),  # (steps, 4, h, w): the target after every step
                "final": seen["final"],  # (2, 4, h, w): source, target
                "edited_image_crop": torch.from_numpy(edited[CROP].copy()),
            },
            GOLDEN / f"{case}.pt",
        )
        print("wrote", GOLDEN / f"{case}.pt")


METHODS = ("ddim+masactrl", "directinversion+masactrl")

if __name__ == "__main__":
    main()
