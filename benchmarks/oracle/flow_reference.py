"""Regenerate the flow-matching goldens of tests/test_oracle.py: the official sampling code of RF-Solver, FireFlow,
UniEdit-Flow and FlowEdit run on invbench's embedded flux_tiny (and sd3_tiny for FlowEdit's SD3 path).

    python benchmarks/oracle/flow_reference.py --rf-solver <RF-Solver-Edit> --fireflow <FireFlow> \\
        --uniedit <UniEdit-Flow> --flowedit <FlowEdit> --diffusers <diffusers> [--work /tmp/flow-ref]

Each argument is a clone (or git dir) of wangjiangshan0725/RF-Solver-Edit, HolmesShuan/FireFlow-Fast-Inversion-of-
Rectified-Flow-for-Image-Semantic-Editing, DSL-Lab/UniEdit-Flow, fallenshock/FlowEdit and huggingface/diffusers (for
RF-Inversion's community pipeline, the authors' code); the files used are taken at the commits below, outside this
repository.

- RF-Solver, FireFlow, UniEdit-Flow ship BFL's FLUX code: their `flux/sampling.py` (the solvers: `denoise`,
  `denoise_rf_solver`, `denoise_fireflow`, `edit_uniedit`; `get_schedule`; `prepare`, `unpack`) runs unchanged, called
  as their edit.py calls it, with two substitutions for what is not here: the BFL `Flux` model is flux_tiny's diffusers
  FluxTransformer2DModel behind BFL's call signature (the same network: diffusers' port takes packed tokens, sigma
  timesteps and the guidance value, as BFL's), and their T5/CLIP embedders are flux_tiny's encoders (invbench's prompt
  encoding: T5 tokens, CLIP pooled). `inject` is 0: the value sharing itself lives in BFL's layers.py, which runs
  BFL's own attention; invbench's sharing is tested apart (tests/test_flow_methods.py). The imports of BFL's model
  classes, used as type hints only, are removed (P1).
- FlowEdit runs its FlowEdit_utils.py unchanged except for one API drift (P2): since diffusers 0.31 FluxPipeline's
  `vae_scale_factor` is 8 (it was 16, FlowEdit asks for 0.30), so its image size is the latent side times it, not
  half of that. Its pipelines are diffusers' FluxPipeline and StableDiffusion3Pipeline on the tiny models' parts.
- RF-Inversion's `RFInversionFluxPipeline` runs unpatched on flux_tiny's parts, as its README example (invert from
  the image with gamma 0.5, then edit with eta 0.9 over the first quarter of the steps), seed 0 before it.

All on sample 121000000001 (cat -> tiger) at 64×64, float32, CPU; 6 steps (UniEdit: 10, so round(0.6 · 10) = 6;
FlowEdit: T = 8, n_max = 6). T5 reads 512 tokens on FLUX and 256 on SD3, as the pipelines do. Writes
tests/golden/oracle/flow/<case>.pt. About 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDEN = REPO / "tests" / "golden" / "oracle" / "flow"
COMMITS = {
    "rf_inversion": ("58eb52c080", "examples/community/pipeline_flux_rf_inversion.py"),
    "rf_solver": ("3388e29", "FLUX_Image_Edit/src/flux/sampling.py"),
    "fireflow": ("98588a6", "src/flux/sampling.py"),
    "uniedit": ("69f7e81", "UniEdit-Flow_FLUX/src/flux/sampling.py"),
    "flowedit": ("457f402", "FlowEdit_utils.py"),
}
SAMPLE = "121000000001"
RESOLUTION, STEPS, UNIEDIT_STEPS, FLOWEDIT_STEPS, FLOWEDIT_MAX = 64, 6, 10, 8, 6
BFL_MODEL_IMPORTS = ("from .model import Flux\n", "from .modules.conditioner import HFEmbedder\n")


def reference_module(name: str, source: Path, work: Path) -> types.ModuleType:
    """The reference file at its commit, written under `work` and imported (BFL's model imports dropped: P1)."""
    import subprocess

    commit, path = COMMITS[name]
    text = subprocess.run(
        ["git", "-C", str(source), "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    if name == "rf_inversion":
        pass  # runs unpatched
    elif name != "flowedit":
        for line in BFL_MODEL_IMPORTS:  # P1: type hints only
            if text.count(line) != 1:
                raise SystemExit(f"P1 expects {line!r} once in {path}")
            text = text.replace(line, "Flux = HFEmbedder = object\n" if "model" in line else "")
    else:
        old = "orig_height, orig_width = x_src.shape[2]*pipe.vae_scale_factor//2, x_src.shape[3]*pipe.vae_scale_factor//2"
        if text.count(old) != 1:
            raise SystemExit("P2 expects FlowEditFLUX's image size once")
        text = text.replace(old, old.replace("//2", ""))  # P2: FluxPipeline.vae_scale_factor is 8 since 0.31
    file = work / f"{name}_reference.py"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text, encoding="utf-8")
    module = types.ModuleType(f"{name}_reference")
    module.__file__ = str(file)
    exec(compile(text, str(file), "exec"), module.__dict__)  # noqa: S102  (the reference's own code, by design)
    return module


class BFLSignature:
    """flux_tiny's diffusers transformer called as BFL's Flux.forward (packed tokens, ids, sigma timesteps)."""

    def __init__(self, transformer: torch.nn.Module):
        self.transformer = transformer

    def __call__(self, img, img_ids, txt, txt_ids, y, timesteps, guidance, info):
        velocity = self.transformer(
            hidden_states=img,
            encoder_hidden_states=txt,
            pooled_projections=y,
            timestep=timesteps,
            img_ids=img_ids[0],
            txt_ids=txt_ids[0],
            guidance=guidance,
        ).sample
        return velocity, info


def embedders(model):
    """BFL's HFEmbedder pair (T5 tokens, CLIP pooled) as flux_tiny encodes prompts."""
    pooled = model.backbone.pooled_size

    def t5(prompts):
        return model.encode_prompts(prompts)[:, :-1]

    def clip(prompts):
        return model.encode_prompts(prompts)[:, -1, :pooled]

    return t5, clip


@torch.no_grad()
def bfl_cases(model, latent, sample, modules) -> dict[str, dict]:
    t5, clip = embedders(model)
    transformer = BFLSignature(model.denoiser)
    cases = {}
    solvers = {
        "flow": modules["fireflow"].denoise,  # FireFlow's `denoise`: the plain Euler ("reflow") strategy
        "rf_solver": modules["rf_solver"].denoise,  # RF-Solver's `denoise` is its second-order solver
        "fireflow": modules["fireflow"].denoise_fireflow,
    }
    for name, denoise in solvers.items():
        sampling = modules["fireflow"]
        source = sampling.prepare(t5, clip, latent, prompt=sample.source_prompt)
        target = sampling.prepare(t5, clip, latent, prompt=sample.target_prompt)
        timesteps = sampling.get_schedule(STEPS, source["img"].shape[1], shift=True)
        info = {"inject_step": 0}
        noise, info = denoise(transformer, **source, timesteps=timesteps, guidance=1, inverse=True, info=info)
        target["img"] = noise
        edited, _ = denoise(transformer, **target, timesteps=timesteps, guidance=2, inverse=False, info=info)
        cases[name] = {
            "noise": sampling.unpack(noise, RESOLUTION, RESOLUTION),
            "edited": sampling.unpack(edited, RESOLUTION, RESOLUTION),
            "sigmas": timesteps,
        }
    # UniEdit-Flow, as its edit.py's uniedit strategy: invert with "" at guidance 1, edit with both prompts
    uniedit = modules["uniedit"]
    empty = uniedit.prepare(t5, clip, latent, prompt="")
    target = uniedit.prepare(t5, clip, latent, prompt=sample.target_prompt)
    source = uniedit.prepare(t5, clip, latent, prompt=sample.source_prompt)
    target.update(src_txt=source["txt"], src_txt_ids=source["txt_ids"], src_vec=source["vec"])
    timesteps = uniedit.get_schedule(UNIEDIT_STEPS, empty["img"].shape[1], shift=True)
    info = {"inject_step": 0, "alpha": 0.6, "omega": 5.0, "zero_init": False}
    noise, info = uniedit.edit_uniedit(transformer, **empty, timesteps=timesteps, inverse=True, info=info, guidance=1)
    target["img"] = noise
    edited, _ = uniedit.edit_uniedit(transformer, **target, timesteps=timesteps, inverse=False, info=info, guidance=1)
    cases["uniedit"] = {
        "noise": uniedit.unpack(noise, RESOLUTION, RESOLUTION),
        "edited": uniedit.unpack(edited, RESOLUTION, RESOLUTION),
        "sigmas": timesteps,
    }
    return cases


@torch.no_grad()
def flowedit_cases(flux, sd3, sample, flowedit) -> dict[str, dict]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline

    from invbench.images import fit_square

    cases = {}
    parts = flux.backbone
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**parts.flow_config),
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        text_encoder_2=parts.text_encoder_2,
        tokenizer_2=parts.tokenizer_2,
        transformer=parts.denoiser,
    )
    latent = flux.encode_image(fit_square(sample.read_image(), RESOLUTION))
    torch.manual_seed(0)
    edited = flowedit.FlowEditFLUX(
        pipe, pipe.scheduler, latent, sample.source_prompt, sample.target_prompt, "",
        T_steps=FLOWEDIT_STEPS, n_avg=1, src_guidance_scale=1.5, tar_guidance_scale=5.5, n_min=0, n_max=FLOWEDIT_MAX,
    )  # fmt: skip
    cases["flowedit_flux"] = {"source": latent, "edited": edited}
    parts = sd3.backbone
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**parts.flow_config),
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        text_encoder_2=parts.text_encoder_2,
        tokenizer_2=parts.tokenizer_2,
        text_encoder_3=parts.text_encoder_3,
        tokenizer_3=parts.tokenizer_3,
        transformer=parts.denoiser,
    )
    latent = sd3.encode_image(fit_square(sample.read_image(), RESOLUTION))
    torch.manual_seed(0)
    edited = flowedit.FlowEditSD3(
        pipe, pipe.scheduler, latent, sample.source_prompt, sample.target_prompt, "",
        T_steps=FLOWEDIT_STEPS, n_avg=1, src_guidance_scale=3.5, tar_guidance_scale=13.5, n_min=0, n_max=FLOWEDIT_MAX,
    )  # fmt: skip
    cases["flowedit_sd3"] = {"source": latent, "edited": edited}
    return cases


@torch.no_grad()
def rf_inversion_case(flux, sample, reference) -> dict[str, dict]:
    """The community pipeline's README example at 6 steps: invert(gamma=0.5) from "" at guidance 0, then the
    controlled reverse ODE (start 0, stop 0.25: the first step, eta 0.9) at guidance 3.5, seed 0 before both."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from PIL import Image

    from invbench.images import fit_square

    parts = flux.backbone
    pipe = reference.RFInversionFluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**parts.flow_config),
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        text_encoder_2=parts.text_encoder_2,
        tokenizer_2=parts.tokenizer_2,
        transformer=parts.denoiser,
    )
    image = Image.fromarray(fit_square(sample.read_image(), RESOLUTION))
    torch.manual_seed(0)
    inverted, image_latents, image_ids = pipe.invert(
        image=image, source_prompt="", source_guidance_scale=0.0, num_inversion_steps=STEPS, gamma=0.5,
        height=RESOLUTION, width=RESOLUTION, dtype=torch.float32,
    )  # fmt: skip
    edited = pipe(
        prompt=sample.target_prompt, inverted_latents=inverted, image_latents=image_latents,
        latent_image_ids=image_ids, start_timestep=0, stop_timestep=0.25, num_inference_steps=STEPS, eta=0.9,
        guidance_scale=3.5, height=RESOLUTION, width=RESOLUTION, output_type="latent",
    ).images  # fmt: skip

    def unpacked(latents):
        return pipe._unpack_latents(latents, RESOLUTION, RESOLUTION, pipe.vae_scale_factor)

    return {
        "rf_inversion": {
            "source": unpacked(image_latents),
            "noise": unpacked(inverted),
            "edited": unpacked(edited),
        }
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("rf-solver", "fireflow", "uniedit", "flowedit", "diffusers"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/flow-ref"))
    args = parser.parse_args()
    sys.path[:0] = [str(HERE), str(REPO)]
    from common import conf

    from invbench.images import fit_square
    from invbench.models import load_model
    from pie_bench import edit_class_lookup, load_benchmark

    sources = {"rf_solver": args.rf_solver, "fireflow": args.fireflow, "uniedit": args.uniedit}
    modules = {name: reference_module(name, path, args.work) for name, path in sources.items()}
    flowedit = reference_module("flowedit", args.flowedit, args.work)
    rf_inversion = reference_module("rf_inversion", args.diffusers, args.work)
    cpu = torch.device("cpu")
    flux = load_model(conf("model/flux_tiny") | {"resolution": RESOLUTION, "t5_tokens": 512}, {}, cpu)
    sd3 = load_model(conf("model/sd3_tiny") | {"resolution": RESOLUTION, "t5_tokens": 256}, {}, cpu)
    mini = load_benchmark(None, edit_class_lookup(conf("edit_classes/todinv")))
    sample = next(s for s in mini.samples if s.id == SAMPLE)
    latent = flux.encode_image(fit_square(sample.read_image(), RESOLUTION))
    cases = bfl_cases(flux, latent, sample, modules) | flowedit_cases(flux, sd3, sample, flowedit)
    cases |= rf_inversion_case(flux, sample, rf_inversion)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, values in cases.items():
        key = "flowedit" if name.startswith("flowedit") else "fireflow" if name == "flow" else name
        values |= {"sample": SAMPLE, "reference": f"{COMMITS[key][1]} at {COMMITS[key][0]}"}
        torch.save(values, GOLDEN / f"{name}.pt")
        print("wrote", GOLDEN / f"{name}.pt")


if __name__ == "__main__":
    main()
