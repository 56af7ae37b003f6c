"""Stable Diffusion 3 (Esser et al., "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis",
ICML 2024; diffusers' StableDiffusion3Pipeline is the reference call): an MMDiT (SD3Transformer2DModel) with joint
text+image attention, conditioned on two CLIP encoders and T5, a 16-channel VAE with scaling and shift, and
rectified flow: the transformer predicts the velocity v = ε − x_0 on a flow-matching sigma grid (invbench/
flow_matching.py), so methods written for ε on DDIM do not apply; methods declare `sd3` where they work.

Conditioning, (N, 77 + T + 1, D_T5), as the pipeline's `prompt_embeds` and `pooled_prompt_embeds`: rows 0..76 are
both CLIP encoders' penultimate hidden states side by side, zero-padded to T5's width; the next T rows are T5's last
hidden state; the last row carries both CLIP pooled projections (zero-padded). One tensor per prompt, as on SDXL.
Kinds: `stable_diffusion_3` (model=sd3: a local diffusers-layout checkpoint or the HF cache, never downloaded; its T5
tokenizer is the checkpoint's) and `random_init` (model=sd3_tiny, model=sd3_random). The random models' "T5" reads
token ids of the CLIP tokenizer (no T5 sentencepiece model is available offline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from invbench.backbones.base import Backbone, register
from invbench.backbones.weights import pretrained_parts, random_model_warning
from invbench.flow_matching import FlowMatchSchedule

CLIP_TOKENS = 77


@register("sd3")
class StableDiffusion3(Backbone):
    kinds = ("stable_diffusion_3", "random_init")
    text_encoders = (
        ("CLIP", "tokenizer", CLIP_TOKENS),
        ("OpenCLIP", "tokenizer_2", CLIP_TOKENS),
        ("T5", "tokenizer_3", "t5_tokens"),
    )

    def __init__(self, denoiser, vae, encoders, tokenizers, t5_tokens: int, flow_config: Mapping[str, Any]):
        self.denoiser, self.vae = denoiser, vae
        self.text_encoder, self.text_encoder_2, self.text_encoder_3 = encoders
        self.tokenizer, self.tokenizer_2, self.tokenizer_3 = tokenizers
        self.t5_tokens, self.flow_config = t5_tokens, dict(flow_config)
        self.pooled_size = sum(encoder.config.projection_dim for encoder in encoders[:2])

    @classmethod
    def load(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        if config["kind"] == "stable_diffusion_3":
            return cls._pretrained(config, dtype)
        from diffusers import SD3Transformer2DModel

        from invbench.random_sd import (
            construction_dtype,
            latent_side,
            plain_config,
            random_clip_text_encoder,
            random_t5_encoder,
            random_vae,
            tame_output,
        )
        from invbench.tokenizer import build_clip_tokenizer

        weights = random_model_warning(config, "an SD3-architecture", "model=sd3")
        with construction_dtype(config):
            tokenizer = build_clip_tokenizer()
            first, second, t5 = config["text_encoder"], config["text_encoder_2"], config["text_encoder_3"]
            torch.manual_seed(config["seed"])
            transformer = SD3Transformer2DModel(
                sample_size=latent_side(config),
                in_channels=config["vae"]["latent_channels"],
                out_channels=config["vae"]["latent_channels"],
                joint_attention_dim=t5["d_model"],
                pooled_projection_dim=first["projection_dim"] + second["projection_dim"],
                **plain_config(config["transformer"]),
            )
            tame_output(transformer.proj_out, config)  # as model=tiny's UNet: a smooth velocity field
            encoders = [random_clip_text_encoder(config, node, tokenizer, projection=True) for node in (first, second)]
            encoders.append(random_t5_encoder(config, t5, tokenizer))
            tokenizers = (tokenizer, tokenizer, tokenizer)
            flow = config["scheduler"]
            vae = random_vae(config)
        return cls(transformer, vae, encoders, tokenizers, config["t5_tokens"], flow), weights

    @classmethod
    def _pretrained(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        classes = {
            "transformer": SD3Transformer2DModel,
            "vae": AutoencoderKL,
            "text_encoder": CLIPTextModelWithProjection,
            "text_encoder_2": CLIPTextModelWithProjection,
            "text_encoder_3": T5EncoderModel,
            "tokenizer": AutoTokenizer,
            "tokenizer_2": AutoTokenizer,
            "tokenizer_3": AutoTokenizer,
            "scheduler": FlowMatchEulerDiscreteScheduler,
        }
        parts, weights = pretrained_parts(config, dtype, classes)
        encoders = [parts[f"text_encoder{suffix}"] for suffix in ("", "_2", "_3")]
        tokenizers = [parts[f"tokenizer{suffix}"] for suffix in ("", "_2", "_3")]
        flow = dict(parts["scheduler"].config)
        return cls(parts["transformer"], parts["vae"], encoders, tokenizers, config["t5_tokens"], flow), weights

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "denoiser": self.denoiser,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
            "text_encoder_3": self.text_encoder_3,
        }

    def schedule(self, scheduler_config: Mapping[str, Any], num_steps: int) -> FlowMatchSchedule:
        """The flow-matching grid of the model's own scheduler config (the DDIM `scheduler` group does not apply)."""
        return FlowMatchSchedule(self.flow_config, num_steps)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        def ids(tokenizer, length: int) -> torch.Tensor:
            tokens = tokenizer(
                list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
            )
            return tokens.input_ids.to(device)

        clip_hidden, pooled = [], []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            output = encoder(ids(tokenizer, CLIP_TOKENS), output_hidden_states=True)
            clip_hidden.append(output.hidden_states[-2])
            pooled.append(output.text_embeds)
        t5 = self.text_encoder_3(ids(self.tokenizer_3, self.t5_tokens)).last_hidden_state
        width = t5.shape[-1]
        clip = F.pad(torch.cat(clip_hidden, dim=-1), (0, width - sum(h.shape[-1] for h in clip_hidden)))
        pooled_row = F.pad(torch.cat(pooled, dim=-1), (0, width - self.pooled_size))[:, None]
        return torch.cat([clip, t5, pooled_row], dim=1).to(dtype)

    def predict_noise(
        self, latents: torch.Tensor, t: float, conditioning: torch.Tensor, guidance=None
    ) -> torch.Tensor:
        """The velocity v(x_σ, t, c) (SD3 predicts velocity, not ε; the flow schedule's step expects it)."""
        timestep = torch.full((len(latents),), float(t), device=latents.device)
        pooled = conditioning[:, -1, : self.pooled_size]
        return self.denoiser(latents, conditioning[:, :-1], pooled, timestep).sample
