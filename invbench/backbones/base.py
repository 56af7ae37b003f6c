"""The backbone contract (see invbench/backbones/__init__.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from invbench.ddim import DDIMSchedule
from invbench.errors import ConfigError


class Backbone(ABC):
    """A model family's components and the operations that depend on them.

    Conditioning: `encode_prompts` returns one tensor (N, L, D) per batch of prompts, laid out by the backbone
    (SD: the text encoder's L = 77 token embeddings; SDXL: both encoders' tokens plus a row carrying the pooled
    embedding). Methods treat it as an opaque per-prompt tensor: they concatenate rows per branch, expand, interpolate
    and optimise it, and every such operation applies to all of it; only `predict_noise` reads the layout.
    """

    family: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]  # the `kind` values of conf/model/*.yaml this family loads

    denoiser: torch.nn.Module  # the network whose evaluations are counted (CostMeter) and whose attention is edited
    vae: torch.nn.Module
    tokenizer: Any  # the (first) CLIP tokenizer: token positions of prompts, for token-level editors

    @classmethod
    @abstractmethod
    def load(cls, config: Mapping[str, Any], dtype: torch.dtype) -> tuple[Backbone, str]:
        """The backbone described by a conf/model/*.yaml node of one of `kinds`, and where its weights came from.
        Pretrained weights are read in `dtype` from local files only; random ones are built in float32, or in their
        half precision (invbench/random_sd.py construction_dtype)."""

    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every network, by name (moved to the job's device and dtype, frozen)."""

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The conditioning of each prompt, (len(prompts), L, D)."""

    def noise_like(self, latents: torch.Tensor) -> torch.Tensor:
        """Gaussian noise of the latents' shape, drawn from the global generator in the layout the family's pipeline
        draws it (so that seeded references and invbench draw the same numbers). Default: the latents' own."""
        return torch.randn_like(latents)

    def schedule(self, scheduler_config: Mapping[str, Any], num_steps: int) -> DDIMSchedule:
        """The family's sampling schedule on `num_steps` steps. Default: deterministic DDIM (ε-prediction)."""
        return DDIMSchedule(scheduler_config, num_steps)

    # The text encoders a prompt goes through: (name, the tokenizer's subfolder in a diffusers checkpoint, the tokens
    # the pipeline gives it: a number or the conf/model key holding it). Every family's reference pipeline cuts a
    # longer prompt to that many tokens (tokenizer(..., max_length, truncation=True)), and so does invbench.
    text_encoders: ClassVar[tuple[tuple[str, str, int | str], ...]] = (("CLIP", "tokenizer", 77),)

    @classmethod
    def prompt_tokenizers(cls, config: Mapping[str, Any]) -> list[tuple[str, Any, int]]:
        """(encoder name, tokenizer, tokens it reads) for each of `text_encoders`, without loading any network, so
        that prompts can be checked before the model loads. A checkpoint's tokenizer that is not on this machine is
        left out (loading the model then says what is missing)."""
        found = []
        for name, subfolder, length in cls.text_encoders:
            tokens = int(config[length]) if isinstance(length, str) else length
            if config["kind"] in ("random_init", "embedded"):
                from invbench.tokenizer import build_clip_tokenizer

                tokenizer = build_clip_tokenizer()  # the random models' encoders (their "T5" too) read CLIP's ids
            else:
                from transformers import AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(
                        config.get("path") or config["repo_id"],
                        subfolder=subfolder,
                        local_files_only=True,
                        revision=config.get("revision"),
                    )
                except (OSError, ValueError):
                    continue
            found.append((name, tokenizer, tokens))
        return found

    # Whether guidance is an input of the denoiser (FLUX.1-dev's distilled guidance) rather than a combination of a
    # conditional and an unconditional evaluation (classifier-free guidance)
    guidance_embedded: bool = False

    @abstractmethod
    def predict_noise(
        self, latents: torch.Tensor, t: float, conditioning: torch.Tensor, guidance: float | None = None
    ) -> torch.Tensor:
        """The denoiser's ε(z_t, t, c) (flow families: the velocity) for a batch; differentiable (optimisation-based
        inversions need gradients). `guidance`: the embedded guidance where `guidance_embedded` (None: the model's
        default), ignored elsewhere."""


BACKBONES: dict[str, type[Backbone]] = {}


def register(family: str) -> Callable[[type[Backbone]], type[Backbone]]:
    def add(cls: type[Backbone]) -> type[Backbone]:
        if family in BACKBONES:
            raise ValueError(f"model family '{family}' has two backbones")
        BACKBONES[family] = cls
        cls.family = family
        return cls

    return add


def backbone_class(config: Mapping[str, Any]) -> type[Backbone]:
    """The backbone of a conf/model/*.yaml node, with a message naming the file and field when there is none."""
    where = f"conf/model/{config['name']}.yaml"
    family = config.get("family", "sd")
    if family not in BACKBONES:
        raise ConfigError(
            f"{where}: family '{family}' has no backbone in this version (available: {sorted(BACKBONES)}); "
            "set family to one of them"
        )
    cls = BACKBONES[family]
    if config["kind"] not in cls.kinds:
        raise ConfigError(
            f"{where}: kind '{config['kind']}' is not one of {sorted(cls.kinds)} (the kinds family '{family}' loads)"
        )
    return cls
