"""Diffusion models: the wrapper every method talks to, and the loaders behind `conf/model/*.yaml`.

Loaders never download: real checkpoints come from `model.path` (a local folder in diffusers layout) or from the
local Hugging Face cache, with `local_files_only=True`. A missing checkpoint is a `ModelNotAvailableError` that says
how to provide it; nothing falls back to another model.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invbench.ddim import DDIMSchedule
from invbench.errors import ConfigError, ModelNotAvailableError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


# Model families a configuration may name (conf/model/*.yaml `family`); methods declare which they support (their
# `families`), and a job pairing a method with a family it does not support is refused before any model loads.
# Only "sd" has a loader today; the others name what the next backbones are.
MODEL_FAMILIES = {
    "sd": "Stable Diffusion 1.x/2.x: UNet2DConditionModel, one CLIP text encoder, KL-VAE, ε-prediction on DDIM",
    "sdxl": "SDXL: UNet with two text encoders, pooled embeddings and time ids",
    "sd3": "Stable Diffusion 3: MMDiT joint attention, CLIP + T5, flow matching",
    "flux": "FLUX.1: MMDiT joint attention, CLIP + T5, flow matching with a guidance embedding",
}

# model.noise_parts with a step's embeddings bound: latents -> (ε_uncond or None at guidance 1, ε_cond)
NoiseParts = Callable[..., tuple[torch.Tensor | None, torch.Tensor]]


def classifier_free(
    noise_uncond: torch.Tensor | None, noise_cond: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """eps_u + w (eps_c - eps_u); eps_c when the unconditional half was not evaluated (w = 1)."""
    if noise_uncond is None:
        return noise_cond
    return noise_uncond + guidance_scale * (noise_cond - noise_uncond)


@dataclass
class DiffusionModel:
    """A latent text-to-image diffusion model (SD v1.x architecture) and the operations methods need."""

    name: str
    weights: str  # where the weights came from, recorded in every result row
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    resolution: int
    device: torch.device
    dtype: torch.dtype

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Per-token text embeddings, (len(prompts), 77, D), as SD v1.x conditions on them."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 H×W×3 image -> latent (1, 4, H/8, W/8): VAE posterior mean × scaling factor (as the reference), or
        with `generator` a sample of the posterior drawn from it (as diffusers' img2img pipelines encode)."""
        pixels = torch.tensor(image).permute(2, 0, 1)[None].to(self.device, self.dtype) / 127.5 - 1
        posterior = self.vae.encode(pixels).latent_dist
        latent = posterior.mean if generator is None else posterior.sample(generator)
        return latent * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, quantisation: str = "round") -> list[np.ndarray]:
        """Latents (B, 4, h, w) -> B uint8 H×W×3 images. `quantisation`: "round" to the nearest level, or
        "truncate" toward zero as the PIE-Bench reference does (`(image * 255).astype(np.uint8)` in its
        latent2image), which leaves about half the pixels one level lower."""
        pixels = self.vae.decode(latents.to(self.dtype) / self.vae.config.scaling_factor).sample
        pixels = (pixels.float() / 2 + 0.5).clamp(0, 1) * 255
        if quantisation == "round":
            pixels = pixels.round()
        elif quantisation != "truncate":
            raise ValueError(f"quantisation={quantisation!r}: use 'round' or 'truncate'")
        return list(pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())  # to uint8 truncates toward zero

    def predict_noise(self, latents: torch.Tensor, t: int, embeddings: torch.Tensor) -> torch.Tensor:
        """eps(z_t, t, c). Not wrapped in no_grad: optimisation-based inversions differentiate through it."""
        return self.unet(latents, t, encoder_hidden_states=embeddings).sample

    def schedule(self, num_steps: int, **changes: Any) -> DDIMSchedule:
        """The model's sampling schedule on `num_steps` steps (the SD family's: deterministic DDIM on its
        scheduler's grid), with `changes` to the scheduler config (e.g. a reference's steps_offset). Methods ask for it
        here and never build their own."""
        return DDIMSchedule({**self.scheduler_config, **changes}, num_steps)

    def noise_parts(
        self,
        latents: torch.Tensor,
        t: int,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        guidance_scale: float,
        cond_latents: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(eps_u, eps_c) for a batch of branches in one UNet call; at w = 1 only eps_c is evaluated (eps_u None).
        `cond_latents`: where the conditional half is evaluated, if not at `latents` (pix2pix-zero's guided copies)."""
        cond_latents = latents if cond_latents is None else cond_latents
        if guidance_scale == 1:
            return None, self.predict_noise(cond_latents, t, cond)
        noise_uncond, noise_cond = self.predict_noise(
            torch.cat([latents, cond_latents]), t, torch.cat([uncond, cond])
        ).chunk(2)
        return noise_uncond, noise_cond

    def guided_noise(
        self, latents: torch.Tensor, t: int, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        """Classifier-free guidance for a batch of branches: eps_u + w (eps_c - eps_u), one UNet call."""
        return classifier_free(*self.noise_parts(latents, t, cond, uncond, guidance_scale), guidance_scale)

    @torch.no_grad()
    def warm_up(self) -> None:
        """Run the shapes a job uses once (VAE round trip; UNet at batch 1, 2 and 4) so that one-time CUDA costs
        (kernel selection, cuBLAS/cuDNN handles) are not billed to the first sample's seconds."""
        pixels = np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)
        latent = self.encode_image(pixels)
        embeddings = self.encode_prompts([""])
        for batch in (1, 2, 4):
            self.predict_noise(latent.repeat(batch, 1, 1, 1), 999, embeddings.expand(batch, -1, -1))
        self.decode_latents(latent)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


ModelLoader = Callable[[Mapping[str, Any], torch.dtype], tuple[dict[str, Any], str]]


def _load_random_init(config: Mapping[str, Any], dtype: torch.dtype) -> tuple[dict[str, Any], str]:
    """Built in float32; load_model casts to `dtype` (checkpoints, unlike this, are read in `dtype` directly)."""
    from invbench.random_sd import build_random_components

    log.warning(
        "MODEL: '%s', a Stable-Diffusion-architecture model with RANDOM weights (seed %s), built from its config. "
        "Its images are noise: use it to check plumbing, cost and metric code, not editing quality. For real "
        "numbers use model=sd14 or model=sd15 (weights from the local Hugging Face cache or model.path).",
        config["name"],
        config["seed"],
    )
    return build_random_components(config), f"random-init {config['name']} (seed {config['seed']})"


def _load_stable_diffusion(config: Mapping[str, Any], dtype: torch.dtype) -> tuple[dict[str, Any], str]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = config.get("path") or config["repo_id"]
    if config.get("path") and not Path(config["path"]).is_dir():
        raise ModelNotAvailableError(
            f"model.path={config['path']} is not a folder. Point model.path at a Stable Diffusion checkpoint folder "
            "in diffusers layout (unet/, vae/, text_encoder/, tokenizer/), or unset it to use the Hugging Face cache."
        )
    options = {"local_files_only": True, "revision": config.get("revision")}
    # diffusers warns on every load unless low-memory loading is asked for only where accelerate provides it
    low_memory = importlib.util.find_spec("accelerate") is not None
    weights = {**options, "torch_dtype": dtype, "low_cpu_mem_usage": low_memory}
    try:
        components = {
            "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", **weights),
            "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", **weights),
            "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **weights),
            "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **options),
        }
    except OSError as error:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ModelNotAvailableError(
            f"model '{config['name']}' ({source}) is not available on this machine: {str(error).splitlines()[0]}\n"
            "invbench never downloads weights during a run. Provide them in one of these ways:\n"
            f"  1. on a machine with network: `hf download {config['repo_id']}` (fills the cache {HF_HUB_CACHE}; "
            "copy it to the cluster and set HF_HOME there), then rerun;\n"
            f"  2. pass a local diffusers-layout folder: model.path=/path/to/{config['repo_id'].split('/')[-1]};\n"
            "  3. or run the embedded tiny model (random weights, plumbing only): model=tiny."
        ) from None
    return components, f"{source}" + (f"@{config['revision']}" if config.get("revision") else "")


MODEL_LOADERS: dict[str, ModelLoader] = {"random_init": _load_random_init, "stable_diffusion": _load_stable_diffusion}


def load_model(
    model_config: Mapping[str, Any], scheduler_config: Mapping[str, Any], device: torch.device
) -> DiffusionModel:
    """Build the model described by a plain-dict `conf/model/*.yaml` node."""
    kind = model_config["kind"]
    if kind not in MODEL_LOADERS:
        raise ConfigError(
            f"conf/model/{model_config['name']}.yaml: kind '{kind}' is not one of {sorted(MODEL_LOADERS)}"
        )
    if model_config["dtype"] not in DTYPES:
        raise ConfigError(f"model.dtype='{model_config['dtype']}' is not one of {sorted(DTYPES)}")
    dtype = DTYPES[model_config["dtype"]]
    components, weights = MODEL_LOADERS[kind](model_config, dtype)
    for name in ("unet", "vae", "text_encoder"):
        module = components[name].to(device).eval().requires_grad_(False)
        if module.dtype != dtype:
            module.to(dtype)
    return DiffusionModel(
        name=model_config["name"],
        weights=weights,
        scheduler_config=dict(scheduler_config),
        resolution=model_config["resolution"],
        device=device,
        dtype=dtype,
        **components,
    )
