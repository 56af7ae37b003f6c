"""Diffusion models: the wrapper every method talks to, and `load_model`, which builds a `conf/model/*.yaml` with its
family's backbone (invbench/backbones/).

Loaders never download: real checkpoints come from `model.path` (a local folder in diffusers layout) or from the
local Hugging Face cache, with `local_files_only=True`. A missing checkpoint is a `ModelNotAvailableError` that says
how to provide it; nothing falls back to another model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from invbench.backbones import Backbone, backbone_class
from invbench.ddim import DDIMSchedule
from invbench.errors import ConfigError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


# Model families a configuration may name (conf/model/*.yaml `family`); methods declare which they support (their
# `families`), and a job pairing a method with a family it does not support is refused before any model loads.
# Each family with a backbone in invbench/backbones/ can be loaded; the others name what the next backbones are.
MODEL_FAMILIES = {
    "sd": "Stable Diffusion 1.x/2.x: UNet2DConditionModel, one CLIP text encoder, KL-VAE, ε-prediction on DDIM",
    "sdxl": "SDXL: UNet with two text encoders, pooled embeddings and time ids",
    "sd3": "Stable Diffusion 3: MMDiT joint attention, CLIP + T5, flow matching",
    "flux": "FLUX.1: MMDiT joint attention (text first), T5 + CLIP pooled, flow matching, embedded guidance (dev)",
}

# The families whose denoiser is an ε-predicting UNet with self- and cross-attention over prompt tokens, on SD's
# noise schedule: a method that only encodes prompts, evaluates ε and edits UNet attention works on all of them.
EPSILON_UNETS = frozenset({"sd", "sdxl"})

# The rectified-flow transformers (velocity prediction on a flow-matching sigma grid): flow methods work on both.
FLOW_TRANSFORMERS = frozenset({"sd3", "flux"})

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
    """A latent text-to-image diffusion model of any family and the operations methods need. The family's
    `backbone` (invbench/backbones/) encodes prompts and evaluates the denoiser; everything here is shared."""

    name: str
    weights: str  # where the weights came from, recorded in every result row
    backbone: Backbone
    scheduler_config: dict[str, Any]
    resolution: int
    device: torch.device
    dtype: torch.dtype
    autocast_dtype: torch.dtype | None = None
    """The GPU fast path (`precision` bfloat16 / float16): denoiser calls run under autocast to this dtype and their
    output returns in `dtype`, so schedules and optimisers keep their precision. None: the model's dtype throughout."""

    @property
    def family(self) -> str:
        return self.backbone.family

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network methods evaluate (a UNet or a transformer): cost meters and attention controllers hook it."""
        return self.backbone.denoiser

    @property
    def vae(self) -> torch.nn.Module:
        return self.backbone.vae

    @property
    def tokenizer(self) -> Any:
        return self.backbone.tokenizer

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """The conditioning of each prompt, (len(prompts), L, D) in the family's layout (SD 1.x: the 77 token
        embeddings); methods treat it as one tensor per prompt (invbench/backbones/base.py)."""
        return self.backbone.encode_prompts(prompts, self.device, self.dtype)

    @torch.no_grad()
    def encode_image(
        self, image: np.ndarray, generator: torch.Generator | None = None, noise_dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """uint8 H×W×3 image -> latent (1, 4, H/8, W/8): VAE posterior mean × scaling factor (as the reference), or
        with `generator` a sample of the posterior drawn from it (as diffusers' img2img pipelines encode), its noise
        drawn in `noise_dtype` if given (early diffusers drew float32 whatever the model's dtype), else the model's."""
        pixels = torch.tensor(image).permute(2, 0, 1)[None].to(self.device, self.dtype) / 127.5 - 1
        posterior = self.vae.encode(pixels).latent_dist
        if generator is None:
            latent = posterior.mean
        elif noise_dtype is None:
            latent = posterior.sample(generator)
        else:
            noise = torch.randn(posterior.mean.shape, generator=generator, device=self.device, dtype=noise_dtype)
            latent = posterior.mean + posterior.std * noise.to(posterior.mean.dtype)
        shift = getattr(self.vae.config, "shift_factor", None)  # SD3/FLUX VAEs centre their latents; SD's do not
        return (
            latent * self.vae.config.scaling_factor
            if shift is None
            else (latent - shift) * self.vae.config.scaling_factor
        )

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, quantisation: str = "round") -> list[np.ndarray]:
        """Latents (B, 4, h, w) -> B uint8 H×W×3 images. `quantisation`: "round" to the nearest level, or
        "truncate" toward zero as the PIE-Bench reference does (`(image * 255).astype(np.uint8)` in its
        latent2image), which leaves about half the pixels one level lower."""
        latents = latents.to(self.dtype) / self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None)
        pixels = self.vae.decode(latents if shift is None else latents + shift).sample
        pixels = (pixels.float() / 2 + 0.5).clamp(0, 1) * 255
        if quantisation == "round":
            pixels = pixels.round()
        elif quantisation != "truncate":
            raise ValueError(f"quantisation={quantisation!r}: use 'round' or 'truncate'")
        return list(pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())  # to uint8 truncates toward zero

    def predict_noise(
        self, latents: torch.Tensor, t: int, embeddings: torch.Tensor, guidance: float | None = None
    ) -> torch.Tensor:
        """eps(z_t, t, c) (flow families: the velocity). Not wrapped in no_grad: optimisation-based inversions
        differentiate through it. `guidance`: the embedded guidance of a guidance-distilled model (FLUX.1-dev)."""
        if self.autocast_dtype is None:
            return self.backbone.predict_noise(latents, t, embeddings, guidance)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            prediction = self.backbone.predict_noise(latents, t, embeddings, guidance)
        return prediction.to(self.dtype)

    def noise_like(self, latents: torch.Tensor) -> torch.Tensor:
        """Seeded Gaussian noise shaped as `latents`, in the layout the family's pipeline draws it."""
        return self.backbone.noise_like(latents)

    def schedule(self, num_steps: int, **changes: Any) -> DDIMSchedule:
        """The model's sampling schedule on `num_steps` steps, as its family's backbone defines it (SD, SDXL:
        deterministic DDIM on the scheduler's grid), with `changes` to the scheduler config (e.g. a reference's
        steps_offset). Methods ask for it here and never build their own."""
        return self.backbone.schedule({**self.scheduler_config, **changes}, num_steps)

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
        `cond_latents`: where the conditional half is evaluated, if not at `latents` (pix2pix-zero's guided copies).
        On a guidance-distilled model (FLUX.1-dev) w is the transformer's guidance input: one evaluation, eps_u None."""
        cond_latents = latents if cond_latents is None else cond_latents
        if self.backbone.guidance_embedded:
            return None, self.predict_noise(cond_latents, t, cond, guidance=guidance_scale)
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

    def warm_up(self, batches: Sequence[int] = (1, 2, 4), backward: bool = True) -> None:
        """Run the shapes a job uses once (VAE round trip; the denoiser at each of `batches` latents, and with
        `backward` one batch-1 backward pass as optimisation-based inversions take) so that one-time CUDA costs
        (kernel selection, cuBLAS/cuDNN handles, autograd's buffers) are not billed to the first sample's seconds."""
        pixels = np.zeros((self.resolution, self.resolution, 3), dtype=np.uint8)
        latent = self.encode_image(pixels)
        embeddings = self.encode_prompts([""])
        with torch.no_grad():
            for batch in batches:
                self.predict_noise(latent.repeat(batch, 1, 1, 1), 999, embeddings.expand(batch, -1, -1))
            self.decode_latents(latent)
        if backward:
            tuned = embeddings.detach().clone().requires_grad_(True)
            self.predict_noise(latent, 999, tuned).float().square().mean().backward()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def load_model(
    model_config: Mapping[str, Any], scheduler_config: Mapping[str, Any], device: torch.device
) -> DiffusionModel:
    """Build the model described by a plain-dict `conf/model/*.yaml` node, with its family's backbone."""
    backbone_type = backbone_class(model_config)
    if model_config["dtype"] not in DTYPES:
        raise ConfigError(f"model.dtype='{model_config['dtype']}' is not one of {sorted(DTYPES)}")
    dtype = DTYPES[model_config["dtype"]]
    backbone, weights = backbone_type.load(model_config, dtype)
    for module in backbone.modules().values():
        module.to(device).eval().requires_grad_(False)
        if module.dtype != dtype:
            module.to(dtype)
    return DiffusionModel(
        name=model_config["name"],
        weights=weights,
        backbone=backbone,
        scheduler_config=dict(scheduler_config),
        resolution=model_config["resolution"],
        device=device,
        dtype=dtype,
    )
