"""Stable-Diffusion-architecture networks with random weights (UNet, KL-VAE, CLIP text encoders), built
deterministically from a `conf/model/*.yaml` of kind `random_init`. No download, no weight file.

Uses: the embedded tiny models (`model=tiny`, `model=sdxl_tiny`: toy widths, CPU) that the tests and the demo run,
and `model=sd14_random` (SD v1.4's exact architecture) that measures real-size seconds and memory where no weights
are available. Random weights give noise images: these models check plumbing, cost and metric code, never quality.
The "tame" rescaling (offline-lab.md §3) makes a random network behave like a trained one where our tests need it:
the UNet's output conv is scaled down so eps is smooth in z (DDIM inversion then reconstructs at guidance 1 and
drifts at 7.5, as with real SD), and the VAE scaling factor is set so that latents have unit variance.
Every network is built right after `torch.manual_seed(seed)`, so each is fixed by the config alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

HALF_PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@contextmanager
def construction_dtype(config: Mapping[str, Any]) -> Iterator[None]:
    """Build the networks of a half-precision random model (sd3_random, flux_random) in that precision. Their T5-XXL
    alone is 19 GB in float32, more than a CPU rehearsal's host memory, and 9.5 GB in bfloat16; built in float32 and
    cast afterwards, the model never fit. Float32 models (every embedded one) are built exactly as before."""
    dtype = HALF_PRECISIONS.get(config.get("dtype"))
    if dtype is None:
        yield
        return
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def random_unet(config: Mapping[str, Any], **architecture: Any):
    """The config's `unet` node (plus `architecture`), output conv scaled by `tame.unet_output_scale`."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(config["seed"])
    unet = UNet2DConditionModel(
        sample_size=latent_side(config), in_channels=4, out_channels=4, **architecture, **plain_config(config["unet"])
    )
    tame_output(unet.conv_out, config)
    return unet


def tame_output(layer: torch.nn.Module, config: Mapping[str, Any]) -> None:
    """Scale a denoiser's output layer by `tame.unet_output_scale`: a smooth prediction field (ε or velocity)."""
    with torch.no_grad():
        layer.weight.mul_(config["tame"]["unet_output_scale"])
        layer.bias.mul_(config["tame"]["unet_output_scale"])


def random_t5_encoder(config: Mapping[str, Any], node: Mapping[str, Any], tokenizer):
    """A T5 encoder of the config node `node`, reading the ids of `tokenizer` (SD3's and FLUX's third text model)."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(config["seed"])
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), **plain_config(node)))


def random_vae(config: Mapping[str, Any]):
    from diffusers import AutoencoderKL

    torch.manual_seed(config["seed"])
    architecture = {"latent_channels": 4, **plain_config(config["vae"])}  # SD3/FLUX configs set 16 and a shift_factor
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        sample_size=config["resolution"],
        scaling_factor=config["tame"]["vae_scaling_factor"],
        **architecture,
    )


def random_clip_text_encoder(config: Mapping[str, Any], node: Mapping[str, Any], tokenizer, projection: bool = False):
    """A CLIP text encoder of the config node `node`; `projection`: with the projected pooled output (SDXL's
    second encoder, CLIPTextModelWithProjection)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(config["seed"])
    encoder = CLIPTextModelWithProjection if projection else CLIPTextModel
    return encoder(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,  # the pooled output looks this id up
            pad_token_id=tokenizer.pad_token_id,
            **plain_config(node),
        )
    )


def latent_side(config: Mapping[str, Any]) -> int:
    return config["resolution"] // 2 ** (len(config["vae"]["block_out_channels"]) - 1)


def plain_config(node: Mapping[str, Any]) -> dict[str, Any]:
    """YAML lists -> tuples, as diffusers configs expect."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in node.items()}
