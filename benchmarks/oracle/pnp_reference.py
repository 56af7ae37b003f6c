"""Regenerate the PnP goldens of tests/test_oracle.py: run the PIE-Bench reference's run_editing_pnp.py on invbench's
tiny model.

    python benchmarks/oracle/pnp_reference.py <PnPInversion checkout or git dir> [--work /tmp/pnp-ref]

Copies run_editing_pnp.py and utils/ at REFERENCE_COMMIT outside this repository, applies PATCHES (each must apply
exactly once; none changes the math), then calls its edit_image_ddim_PnP and edit_image_directinversion_PnP as its
__main__ does (setup_seed(), guidance 7.5) with the tiny model in place of SD v1.5: its Preprocess and PNP objects are
given the tiny model's VAE, text encoder, tokenizer and UNet and SD's scheduler settings (steps_offset 1) instead of
loading them from the Hub in their constructors. 5 steps instead of 50: features injected for int(5 · 0.8) = 4 steps,
attention for int(5 · 0.5) = 2. Keeps, per case, the inversion's z_0 and z_T, the latents the script passes as the
source of each step, the target's latents after every step, and a crop of the saved edit, in
tests/golden/oracle/pnp/<method>_<sample>.pt. About 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = REPO / "tests" / "golden" / "oracle" / "pnp"
REFERENCE_COMMIT = "07f97f4"
STEPS = 5
SAMPLES = ("121000000001", "623000000006")
METHODS = ("ddim+pnp", "directinversion+pnp")
CROP = (slice(192, 320), slice(192, 320))

# (old text, new text, how many times the old text occurs, why)
PATCHES = [
    (
        (
            'toy_scheduler = DDIMScheduler.from_pretrained(model_key, subfolder="scheduler")\n'
            "toy_scheduler.set_timesteps(NUM_DDIM_STEPS)\n\n"
            "timesteps_to_save, num_inference_steps = get_timesteps(toy_scheduler, num_inference_steps=NUM_DDIM_STEPS,\n"
            "                                                           strength=1.0,\n"
            "                                                           device=device)\n"
            "model = Preprocess(device, model_key=model_key)\n"
            "pnp = PNP(model_key)\n"
        ),
        "model = pnp = None  # the oracle sets both: the tiny model's components, not SD v1.5 from the Hub\n",
        1,
        (
            "Q1: the module loads SD v1.5 from the Hub when imported (and builds an unused scheduler); the oracle builds "
            "the two objects from the tiny model"
        ),
    ),
    (
        'for i, t in enumerate(self.scheduler.timesteps, desc="Sampling"):',
        "for i, t in enumerate(self.scheduler.timesteps):",
        1,
        (
            "Q2: the committed script passes tqdm's desc= to enumerate, a TypeError before the first step; the runs "
            "behind the published numbers cannot have had it"
        ),
    ),
    (
        "0.18215",
        "self.vae.config.scaling_factor",
        3,
        "Q3: the VAE's scaling factor was hard-coded for SD's VAE (the tiny model's is 4.0)",
    ),
    (
        (
            "    for res in up_res_dict:\n"
            "        for block in up_res_dict[res]:\n"
            "            module = model.unet.up_blocks[res].attentions[block].transformer_blocks[0].attn1\n"
        ),
        (
            "    for res in up_res_dict:\n"
            "        for block in up_res_dict[res]:\n"
            "            if block >= len(getattr(model.unet.up_blocks[res], 'attentions', None) or []): continue\n"
            "            module = model.unet.up_blocks[res].attentions[block].transformer_blocks[0].attn1\n"
        ),
        1,
        (
            "Q4: the layer indices are SD 1.x's (3 attention layers per decoder level, 2 per encoder level); the tiny "
            "UNet has 2 and 1 and none at 64x64, so layers it lacks are skipped (here and in Q5, Q6)"
        ),
    ),
    (
        (
            "    for res in down_res_dict:\n"
            "        for block in down_res_dict[res]:\n"
            "            module = model.unet.down_blocks[res].attentions[block].transformer_blocks[0].attn1\n"
        ),
        (
            "    for res in down_res_dict:\n"
            "        for block in down_res_dict[res]:\n"
            "            if block >= len(getattr(model.unet.down_blocks[res], 'attentions', None) or []): continue\n"
            "            module = model.unet.down_blocks[res].attentions[block].transformer_blocks[0].attn1\n"
        ),
        1,
        "Q5: as Q4, for the encoder",
    ),
    (
        (
            "    for res in res_dict:\n"
            "        for block in res_dict[res]:\n"
            "            module = model.unet.up_blocks[res].attentions[block].transformer_blocks[0].attn1\n"
        ),
        (
            "    for res in res_dict:\n"
            "        for block in res_dict[res]:\n"
            "            if block >= len(getattr(model.unet.up_blocks[res], 'attentions', None) or []): continue\n"
            "            module = model.unet.up_blocks[res].attentions[block].transformer_blocks[0].attn1\n"
        ),
        1,
        "Q6: as Q4, for the injected layers",
    ),
    (
        'def get_text_embeds(self, prompt, negative_prompt, device="cuda"):',
        'def get_text_embeds(self, prompt, negative_prompt, device="cpu"):',
        1,
        "Q7: the inversion's text encoding defaults to CUDA and its caller does not pass a device",
    ),
]


def patch(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for old, new, count, why in PATCHES:
        found = text.count(old)
        if found != count:
            raise SystemExit(f"patch {why.split(':')[0]} expects {old[:60]!r} {count} times, found it {found} times")
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a clone (or git dir) of github.com/cure-lab/PnPInversion")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pnp-ref"))
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from patch_reference import extract

    args.work.mkdir(parents=True, exist_ok=True)
    extract(args.source, REFERENCE_COMMIT, args.work, ("run_editing_pnp.py", "utils"))
    patch(args.work / "run_editing_pnp.py")
    (args.work / "utils" / "__init__.py").touch()
    sys.path[:0] = [str(args.work), str(REPO)]

    import run_editing_pnp as reference
    from common import conf, tiny_model
    from diffusers import DDIMScheduler

    from pie_bench import edit_class_lookup, load_benchmark

    scheduler_config = conf("scheduler/ddim")  # steps_offset 1, as SD v1.5's scheduler_config.json
    tiny = tiny_model(scheduler_config)
    reference.NUM_DDIM_STEPS, reference.device = STEPS, torch.device("cpu")

    def given_tiny_model(cls):
        built = cls.__new__(cls)
        torch.nn.Module.__init__(built)
        built.device = torch.device("cpu")
        built.vae, built.tokenizer, built.text_encoder, built.unet = (
            tiny.vae,
            tiny.tokenizer,
            tiny.backbone.text_encoder,
            tiny.denoiser,
        )
        built.scheduler = DDIMScheduler(**scheduler_config)
        return built

    reference.model = given_tiny_model(reference.Preprocess)
    reference.pnp = given_tiny_model(reference.PNP)
    reference.pnp.scheduler.set_timesteps(STEPS)
    reference.pnp.n_timesteps = STEPS

    seen: dict[str, list] = {}
    original_step = reference.PNP.denoise_step

    def denoise_step(self, x, t, guidance_scale, noisy_latent):
        seen["sources"].append(noisy_latent.detach().clone())
        out = original_step(self, x, t, guidance_scale, noisy_latent)
        seen["targets"].append(out.detach().clone())
        return out

    reference.PNP.denoise_step = denoise_step
    original_inversion = reference.Preprocess.ddim_inversion

    def ddim_inversion(self, cond, latent):
        seen["inversion"] = original_inversion(self, cond, latent)
        return seen["inversion"]

    reference.Preprocess.ddim_inversion = ddim_inversion
    reference.txt_draw = lambda text, target_size=(512, 512): np.zeros((target_size[1], target_size[0], 3), np.uint8)

    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    samples = {sample.id: sample for sample in mini.samples}
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for method in METHODS:
        for sample_id in SAMPLES:
            sample = samples[sample_id]
            seen.update(sources=[], targets=[])
            torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)  # the script's setup_seed()
            run = reference.edit_image_ddim_PnP if method == "ddim+pnp" else reference.edit_image_directinversion_PnP
            shown = run(
                image_path=str(sample.image_file),
                prompt_src=sample.source_prompt,
                prompt_tar=sample.target_prompt,
                guidance_scale=7.5,
            )
            edited = np.asarray(shown)[:, 3 * 512 :]  # the script saves [instruction | source | reconstruction | edit]
            name = f"{method.replace('+', '_')}_{sample_id}"
            torch.save(
                {
                    "reference": f"cure-lab/PnPInversion@{REFERENCE_COMMIT}, run_editing_pnp.py, patches: "
                    + "; ".join(why.split(":")[0] for *_, why in PATCHES),
                    "method": method,
                    "sample": sample_id,
                    "steps": STEPS,
                    "z0": seen["inversion"][0].clone(),
                    "zT": seen["inversion"][-1].clone(),
                    "sources": torch.cat(seen["sources"]),  # (steps, 4, h, w): the latent each step reads features of
                    "targets": torch.cat(seen["targets"]),  # (steps, 4, h, w): the target after each step
                    "edited_image_crop": torch.from_numpy(edited[CROP].copy()),
                },
                GOLDEN / f"{name}.pt",
            )
            print("wrote", GOLDEN / f"{name}.pt")


if __name__ == "__main__":
    main()
