"""Stable-Diffusion-architecture models with random weights (UNet, KL-VAE, CLIP text encoder), built
deterministically from a `conf/model/*.yaml` of kind `random_init`. No download, no weight file.

Two uses: the embedded tiny model (`model=tiny`, toy widths, CPU) that the tests and the demo run, and
`model=sd14_random` (SD v1.4's exact architecture) that measures real-size seconds and memory where no weights are
available. Random weights give noise images: these models check plumbing, cost and metric code, never quality.
The "tame" rescaling (offline-lab.md §3) makes a random network behave like a trained one where our tests need it:
the UNet's output conv is scaled down so eps is smooth in z (DDIM inversion then reconstructs at guidance 1 and
drifts at 7.5, as with real SD), and the VAE scaling factor is set so that latents have unit variance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from invbench.tokenizer import build_clip_tokenizer


def build_random_components(config: Mapping[str, Any]) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_clip_tokenizer()
    latent_size = config["resolution"] // 2 ** (len(config["vae"]["block_out_channels"]) - 1)

    torch.manual_seed(config["seed"])
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=config["text_encoder"]["hidden_size"],
        **_plain(config["unet"]),
    )
    with torch.no_grad():
        unet.conv_out.weight.mul_(config["tame"]["unet_output_scale"])
        unet.conv_out.bias.mul_(config["tame"]["unet_output_scale"])

    torch.manual_seed(config["seed"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=config["resolution"],
        scaling_factor=config["tame"]["vae_scaling_factor"],
        **_plain(config["vae"]),
    )

    torch.manual_seed(config["seed"])
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,  # the pooled output looks this id up
            pad_token_id=tokenizer.pad_token_id,
            **_plain(config["text_encoder"]),
        )
    )
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


def _plain(node: Mapping[str, Any]) -> dict[str, Any]:
    """YAML lists -> tuples, as diffusers configs expect."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in node.items()}
