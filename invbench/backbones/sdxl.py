"""Stable Diffusion XL (Podell et al., "SDXL: Improving Latent Diffusion Models for High-Resolution Image
Synthesis", ICLR 2024; diffusers' StableDiffusionXLPipeline is the reference call): a UNet conditioned on two CLIP
text encoders' token embeddings, the second encoder's pooled projection and six size/crop "time ids"; KL-VAE;
ε-prediction on SD's noise schedule, so DDIM and every ε-based inversion apply unchanged.

Conditioning, (N, 78, D1 + D2): rows 0..76 are the penultimate hidden states of both encoders side by side (as the
pipeline builds `prompt_embeds`), row 77 carries the pooled projection (`pooled_prompt_embeds`, P ≤ D1 + D2 values,
zero-padded). Keeping it one tensor means every method's per-branch concatenation, null-text optimisation or
interpolation treats token and pooled embeddings alike. The time ids are the model's own: original size = target
size = the model resolution, crop (0, 0), as the pipeline's defaults for an unconditioned crop.
Differences from the pipeline: "" is encoded like any prompt (the pipeline substitutes zeros for an empty negative
prompt when `force_zeros_for_empty_prompt`), since inversions such as null-text optimise from the encoded "" as on SD.
Kinds: `stable_diffusion_xl` (local diffusers-layout checkpoint or HF cache, never downloaded) and `random_init`
(model=sdxl_tiny).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from invbench.backbones.base import Backbone, register
from invbench.backbones.weights import pretrained_parts, random_model_warning

TOKENS = 77  # rows of token embeddings; the pooled row follows


@register("sdxl")
class StableDiffusionXL(Backbone):
    kinds = ("stable_diffusion_xl", "random_init")
    text_encoders = (("CLIP", "tokenizer", TOKENS), ("OpenCLIP", "tokenizer_2", TOKENS))

    def __init__(self, denoiser, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, resolution: int):
        self.denoiser, self.vae = denoiser, vae
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.pooled_size = text_encoder_2.config.projection_dim
        # (original height, original width, crop top, crop left, target height, target width)
        self.time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]])

    @classmethod
    def load(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        resolution = config["resolution"]
        if config["kind"] == "random_init":
            from invbench.random_sd import construction_dtype, random_clip_text_encoder, random_unet, random_vae
            from invbench.tokenizer import build_clip_tokenizer

            weights = random_model_warning(config, "an SDXL-architecture", "model=sdxl")
            tokenizer = build_clip_tokenizer()
            first, second = config["text_encoder"], config["text_encoder_2"]
            with construction_dtype(config):  # model.dtype=bfloat16: built at half the size, as sd3_random
                unet = random_unet(
                    config,
                    cross_attention_dim=first["hidden_size"] + second["hidden_size"],
                    addition_embed_type="text_time",
                    projection_class_embeddings_input_dim=second["projection_dim"]
                    + 6 * config["unet"]["addition_time_embed_dim"],
                )
                encoders = [random_clip_text_encoder(config, first, tokenizer)]
                encoders.append(random_clip_text_encoder(config, second, tokenizer, projection=True))
                vae = random_vae(config)
            return cls(unet, vae, *encoders, tokenizer, tokenizer, resolution), weights
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        classes = {
            "unet": UNet2DConditionModel,
            "vae": AutoencoderKL,
            "text_encoder": CLIPTextModel,
            "text_encoder_2": CLIPTextModelWithProjection,
            "tokenizer": CLIPTokenizer,
            "tokenizer_2": CLIPTokenizer,
        }
        parts, weights = pretrained_parts(config, dtype, classes)
        names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
        return cls(parts["unet"], *(parts[name] for name in names), resolution), weights

    def modules(self) -> dict[str, torch.nn.Module]:
        return {
            "denoiser": self.denoiser,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "text_encoder_2": self.text_encoder_2,
        }

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        hidden = []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(
                list(prompts), padding="max_length", max_length=TOKENS, truncation=True, return_tensors="pt"
            ).input_ids
            output = encoder(ids.to(device), output_hidden_states=True)
            hidden.append(output.hidden_states[-2])
        tokens = torch.cat(hidden, dim=-1)
        pooled = F.pad(output.text_embeds, (0, tokens.shape[-1] - self.pooled_size))
        return torch.cat([tokens, pooled[:, None]], dim=1).to(dtype)

    def predict_noise(self, latents: torch.Tensor, t: int, conditioning: torch.Tensor, guidance=None) -> torch.Tensor:
        time_ids = self.time_ids.to(latents.device, latents.dtype).expand(len(latents), -1)
        added = {"text_embeds": conditioning[:, TOKENS, : self.pooled_size], "time_ids": time_ids}
        return self.denoiser(
            latents, t, encoder_hidden_states=conditioning[:, :TOKENS], added_cond_kwargs=added
        ).sample
