"""Structure distance (Tumanyan et al., "Splicing ViT Features for Semantic Appearance Transfer", CVPR 2022; the
PIE-Bench structure metric of Ju et al., ICLR 2024).

Definition (pie-bench-protocol.md §2.3): resize the image so its shorter side is 224 (longer side at most 480),
ImageNet-normalise, run DINO ViT-B/8, take the keys of the last block's self-attention (all heads joined, CLS token
included), build their cosine self-similarity matrix (785 × 785 at 224²) and return the mean squared difference
between the two images' matrices. Whole image, no mask. Symmetric, 0 for identical images.

The reference feeds 0–255 values to the normalisation (it never divides by 255) and resizes tensors without
antialiasing (torchvision ≤ 0.16's default); `input_255` and `antialias` reproduce or correct that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from metrics.backbone import RANDOM_WEIGHTS_MARK, Backbone, described, resolve_backbone, seeded

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Module-name endings of the attention key projection: transformers 5 (`attention.k_proj`) and 4
# (`attention.attention.key`); looking modules up by suffix works with both (offline-lab.md §4c).
KEY_PROJECTION_SUFFIXES = ("attention.k_proj", "attention.attention.key")


def key_projections(vit: torch.nn.Module) -> list[torch.nn.Module]:
    """The key projection of every transformer block, in depth order."""
    modules = [module for name, module in vit.named_modules() if name.endswith(KEY_PROJECTION_SUFFIXES)]
    if not modules:
        raise TypeError(f"{type(vit).__name__} has no module named *{' or *'.join(KEY_PROJECTION_SUFFIXES)}")
    return modules


class StructureDistance:
    def __init__(
        self,
        vit: torch.nn.Module,
        layer: int,
        short_side: int,
        max_size: int,
        input_255: bool,
        antialias: bool,
        device: torch.device,
    ):
        self.vit = vit.to(device).eval().requires_grad_(False)
        self.keys_module = key_projections(vit)[layer]
        self.short_side, self.max_size = short_side, max_size
        self.input_255, self.antialias = input_255, antialias
        self.device = device

    @torch.no_grad()
    def self_similarity(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H×W×3 -> (tokens, tokens) cosine self-similarity of the chosen block's keys."""
        pixels = torch.tensor(image, device=self.device).permute(2, 0, 1)[None].float()
        if not self.input_255:
            pixels = pixels / 255
        pixels = TF.resize(pixels, [self.short_side], max_size=self.max_size, antialias=self.antialias)
        pixels = TF.normalize(pixels, IMAGENET_MEAN, IMAGENET_STD)
        captured: list[torch.Tensor] = []
        hook = self.keys_module.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            self.vit(pixel_values=pixels, interpolate_pos_encoding=True)
        finally:
            hook.remove()
        keys = captured[0][0]  # (tokens, heads * head_dim): heads already joined, as the reference joins them
        norms = keys.norm(dim=-1, keepdim=True)
        return (keys @ keys.T) / (norms @ norms.T).clamp(min=1e-8)

    def __call__(self, image_a: np.ndarray | torch.Tensor, image_b: np.ndarray) -> float:
        """The distance between two images; `image_a` may be given as its `self_similarity` (computed once for a
        source scored against many edits)."""
        first = image_a if isinstance(image_a, torch.Tensor) else self.self_similarity(image_a)
        return F.mse_loss(first, self.self_similarity(image_b)).item()


def load_dino(config: Mapping[str, Any], mode: str) -> Backbone:
    """DINO ViT from `config.path` or the local Hugging Face cache (`config.repo_id`), or the tiny stand-in."""
    from transformers import ViTConfig, ViTModel

    def real():
        source = config.get("path") or config["repo_id"]
        if config.get("path") and not Path(source).is_dir():
            raise FileNotFoundError(f"metrics.structure.path={source} is not a folder")
        # DINO was trained with LayerNorm eps 1e-6; the Hugging Face conversion's config says 1e-12.
        vit = ViTModel.from_pretrained(
            source, local_files_only=True, add_pooling_layer=False, layer_norm_eps=config["layer_norm_eps"]
        )
        return vit, described(str(source), getattr(vit.config, RANDOM_WEIGHTS_MARK, False))

    def tiny():
        with seeded(config["tiny"]["seed"]):
            vit = ViTModel(ViTConfig(**config["tiny"]["config"]), add_pooling_layer=False)
        return vit, f"tiny random ViT/{vit.config.patch_size} (seed {config['tiny']['seed']})"

    return resolve_backbone(
        mode,
        "structure-distance (DINO ViT-B/8)",
        real,
        tiny,
        f"Provide it with `hf download {config['repo_id']}` on a machine with network (then copy the Hugging Face "
        "cache), or metrics.structure.path=<folder with config.json and weights>.",
    )
