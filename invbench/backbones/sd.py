"""Stable Diffusion 1.x/2.x: UNet2DConditionModel conditioned on one CLIP text encoder's token embeddings, KL-VAE,
ε-prediction (Rombach et al., CVPR 2022; diffusers' StableDiffusionPipeline is the reference call).

Conditioning: the text encoder's last hidden state, (N, 77, D) (D = 768 for SD 1.x), as SD conditions on it.
Kinds: `stable_diffusion` (a checkpoint in diffusers layout from model.path or the local Hugging Face cache, never
downloaded), `random_init` (the architecture in the config with random weights: model=tiny, model=sd14_random) and
`embedded` (that architecture with weights committed in invbench/embedded/: model=toy, benchmarks/train_toy.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from invbench.backbones.base import Backbone, register
from invbench.backbones.weights import embedded_state, pretrained_parts, random_model_warning


@register("sd")
class StableDiffusion(Backbone):
    kinds = ("stable_diffusion", "random_init", "embedded")

    def __init__(self, denoiser: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module, tokenizer):
        self.denoiser, self.vae, self.text_encoder, self.tokenizer = denoiser, vae, text_encoder, tokenizer

    @classmethod
    def load(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        if config["kind"] in ("random_init", "embedded"):
            from invbench.random_sd import random_clip_text_encoder, random_unet, random_vae
            from invbench.tokenizer import build_clip_tokenizer

            if config["kind"] == "embedded":  # the architecture, then the committed weights in place of its init
                state, weights = embedded_state(config)
            else:
                weights = random_model_warning(config, "a Stable-Diffusion-architecture", "model=sd14 or model=sd15")
            tokenizer = build_clip_tokenizer()
            unet = random_unet(config, cross_attention_dim=config["text_encoder"]["hidden_size"])
            encoder = random_clip_text_encoder(config, config["text_encoder"], tokenizer)
            vae = random_vae(config)
            if config["kind"] == "embedded":
                for name, network in (("unet", unet), ("vae", vae), ("text_encoder", encoder)):
                    network.load_state_dict(state[name], strict=True)
            return cls(unet, vae, encoder, tokenizer), weights
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        parts, weights = pretrained_parts(
            config,
            dtype,
            {
                "unet": UNet2DConditionModel,
                "vae": AutoencoderKL,
                "text_encoder": CLIPTextModel,
                "tokenizer": CLIPTokenizer,
            },
        )
        return cls(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"]), weights

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"denoiser": self.denoiser, "vae": self.vae, "text_encoder": self.text_encoder}

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(device))[0].to(dtype)

    def predict_noise(self, latents: torch.Tensor, t: int, conditioning: torch.Tensor, guidance=None) -> torch.Tensor:
        return self.denoiser(latents, t, encoder_hidden_states=conditioning).sample
