"""FLUX.1 (Black Forest Labs, 2024; diffusers' FluxPipeline is the reference call): an MMDiT (FluxTransformer2DModel)
with double-stream joint attention blocks (text tokens first) and single-stream blocks, conditioned on T5 tokens and
CLIP-L's pooled output; a 16-channel VAE with scaling and shift; rectified flow with a resolution-dependent shifted
sigma grid. FLUX.1-dev is guidance-distilled: guidance is an input of the transformer (`guidance_embedded`), so a
method's `guidance_scale` on FLUX-dev is that embedded guidance (as in the RF-Solver, FireFlow, RF-Inversion and
FlowEdit code) and costs one evaluation per branch, never an unconditional one. FLUX.1-schnell has no guidance input
and uses classifier-free guidance semantics like SD3.

Latents (B, 16, h, w) are packed into 2×2 patches, (B, h/2 · w/2, 64) tokens, for the transformer, with position ids
(0, row, column) on the h/2 × w/2 token grid, and unpacked after it: methods see (B, 16, h, w) as on every family.
Conditioning, (N, T + 1, D_T5): the T5 encoder's last hidden state (T tokens), then one row carrying CLIP's pooled
output zero-padded to T5's width. One tensor per prompt, as on SDXL and SD3.
Schedule: FluxPipeline's: sigmas linspace(1, 1/N, N), shifted by μ = calculate_shift(h/2 · w/2) where the scheduler
config has `use_dynamic_shifting` (dev; schnell: unshifted) — equal to BFL's get_schedule, which the RF-Solver and
FireFlow code use.
Kinds: `flux` (model=flux, model=flux_schnell: local diffusers-layout checkpoint or HF cache, never downloaded) and
`random_init` (model=flux_tiny; model=flux_random, FLUX.1-dev's architecture for real-size cost). The random models'
"T5" reads token ids of the CLIP tokenizer (no T5 sentencepiece model is available offline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from invbench.backbones.base import Backbone, register
from invbench.backbones.weights import pretrained_parts, random_model_warning
from invbench.flow_matching import FlowMatchSchedule

CLIP_TOKENS = 77


@register("flux")
class Flux(Backbone):
    kinds = ("flux", "random_init")
    text_encoders = (("CLIP", "tokenizer", CLIP_TOKENS), ("T5", "tokenizer_2", "t5_tokens"))

    def __init__(self, denoiser, vae, encoders, tokenizers, config: Mapping[str, Any], flow_config: Mapping[str, Any]):
        self.denoiser, self.vae = denoiser, vae
        self.text_encoder, self.text_encoder_2 = encoders  # CLIP-L (pooled), T5
        self.tokenizer, self.tokenizer_2 = tokenizers
        self.t5_tokens, self.flow_config = config["t5_tokens"], dict(flow_config)
        self.default_guidance = float(config["guidance"])
        self.guidance_embedded = bool(denoiser.config.guidance_embeds)
        self.pooled_size = self.text_encoder.config.hidden_size
        self.latent_side = config["resolution"] // 2 ** (len(vae.config.block_out_channels) - 1)

    @classmethod
    def load(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        if config["kind"] == "flux":
            return cls._pretrained(config, dtype)
        from diffusers import FluxTransformer2DModel

        from invbench.random_sd import (
            construction_dtype,
            plain_config,
            random_clip_text_encoder,
            random_t5_encoder,
            random_vae,
            tame_output,
        )
        from invbench.tokenizer import build_clip_tokenizer

        weights = random_model_warning(config, "a FLUX.1-architecture", "model=flux")
        with construction_dtype(config):
            tokenizer = build_clip_tokenizer()
            clip, t5 = config["text_encoder"], config["text_encoder_2"]
            torch.manual_seed(config["seed"])
            transformer = FluxTransformer2DModel(
                in_channels=4 * config["vae"]["latent_channels"],  # 2×2 packed latents
                joint_attention_dim=t5["d_model"],
                pooled_projection_dim=clip["hidden_size"],
                **plain_config(config["transformer"]),
            )
            tame_output(transformer.proj_out, config)  # as model=tiny's UNet: a smooth velocity field
            encoders = [random_clip_text_encoder(config, clip, tokenizer)]
            encoders.append(random_t5_encoder(config, t5, tokenizer))
            vae = random_vae(config)
        backbone = cls(transformer, vae, encoders, (tokenizer, tokenizer), config, config["scheduler"])
        return backbone, weights

    @classmethod
    def _pretrained(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        classes = {
            "transformer": FluxTransformer2DModel,
            "vae": AutoencoderKL,
            "text_encoder": CLIPTextModel,
            "text_encoder_2": T5EncoderModel,
            "tokenizer": AutoTokenizer,
            "tokenizer_2": AutoTokenizer,
            "scheduler": FlowMatchEulerDiscreteScheduler,
        }
        parts, weights = pretrained_parts(config, dtype, classes)
        encoders = (parts["text_encoder"], parts["text_encoder_2"])
        tokenizers = (parts["tokenizer"], parts["tokenizer_2"])
        flow = dict(parts["scheduler"].config)
        return cls(parts["transformer"], parts["vae"], encoders, tokenizers, config, flow), weights

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "denoiser": self.denoiser,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
        }

    def schedule(self, scheduler_config: Mapping[str, Any], num_steps: int) -> FlowMatchSchedule:
        """FluxPipeline's grid for this model's resolution (the DDIM `scheduler` group does not apply)."""
        mu = None
        if self.flow_config.get("use_dynamic_shifting"):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            flow = self.flow_config
            image_tokens = (self.latent_side // 2) ** 2
            mu = calculate_shift(
                image_tokens,
                flow["base_image_seq_len"],
                flow["max_image_seq_len"],
                flow["base_shift"],
                flow["max_shift"],
            )
        sigmas = np.linspace(1.0, 1 / max(num_steps, 1), max(num_steps, 1))
        return FlowMatchSchedule(self.flow_config, num_steps, mu=mu, sigmas=sigmas)

    def noise_like(self, latents: torch.Tensor) -> torch.Tensor:
        """Drawn as packed tokens, as FluxPipeline and the FLUX methods' code draw it, then unpacked."""
        return unpack_latents(torch.randn_like(pack_latents(latents)), *latents.shape[1:])

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        def ids(tokenizer, length: int) -> torch.Tensor:
            tokens = tokenizer(
                list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
            )
            return tokens.input_ids.to(device)

        pooled = self.text_encoder(ids(self.tokenizer, CLIP_TOKENS)).pooler_output
        t5 = self.text_encoder_2(ids(self.tokenizer_2, self.t5_tokens)).last_hidden_state
        pooled_row = F.pad(pooled, (0, t5.shape[-1] - self.pooled_size))[:, None]
        return torch.cat([t5, pooled_row], dim=1).to(dtype)

    def predict_noise(
        self, latents: torch.Tensor, t: float, conditioning: torch.Tensor, guidance: float | None = None
    ) -> torch.Tensor:
        """The velocity v(x_σ, t, c) at embedded guidance `guidance` (None: the model's default; ignored by a model
        without a guidance input)."""
        batch, channels, height, width = latents.shape
        packed = pack_latents(latents)
        rows, columns = torch.meshgrid(torch.arange(height // 2), torch.arange(width // 2), indexing="ij")
        image_ids = torch.stack([torch.zeros_like(rows), rows, columns], dim=-1).reshape(-1, 3)
        text_ids = torch.zeros(conditioning.shape[1] - 1, 3)
        options = {}
        if self.guidance_embedded:
            value = self.default_guidance if guidance is None else guidance
            options["guidance"] = torch.full((batch,), float(value), device=latents.device, dtype=torch.float32)
        velocity = self.denoiser(
            hidden_states=packed,
            encoder_hidden_states=conditioning[:, :-1],
            pooled_projections=conditioning[:, -1, : self.pooled_size],
            timestep=torch.full((batch,), float(t) / 1000, device=latents.device, dtype=latents.dtype),
            img_ids=image_ids.to(latents.device, latents.dtype),
            txt_ids=text_ids.to(latents.device, latents.dtype),
            **options,
        ).sample
        return unpack_latents(velocity, channels, height, width)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 · w/2, 4C): 2×2 patches as tokens, row-major (FluxPipeline._pack_latents)."""
    batch, channels, height, width = latents.shape
    patches = latents.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_latents(tokens: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack_latents`."""
    patches = tokens.view(len(tokens), height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(len(tokens), channels, height, width)
