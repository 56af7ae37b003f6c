"""CLIP similarity (Hessel et al., "CLIPScore", EMNLP 2021) as the PIE-Bench reference computes it: torchmetrics'
`CLIPScore` with `openai/clip-vit-large-patch14`, i.e. max(100 · cos(E_a, E_b), 0), one call per image.

Two compatibility fixes, both without pinning anything (offline-lab.md §4d):
- transformers 5 returns a `BaseModelOutputWithPooling` from `get_image_features` / `get_text_features`, where
  torchmetrics expects the projected tensor; `_ProjectedFeatures` hands it `.pooler_output`.
- torchmetrics accepts only hub ids as strings, so the model and processor come in through its callable form,
  loaded from the local cache (or built tiny) by us.
Images go through CLIP's PIL-based processor (resize shorter side to 224 bicubic, centre crop), the processor the
reference's transformers 4 used; transformers 5 would otherwise pick its torchvision one, which resizes differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metrics.backbone import RANDOM_WEIGHTS_MARK, Backbone, described, resolve_backbone, seeded


class _ProjectedFeatures(torch.nn.Module):
    """A CLIPModel whose feature getters return tensors under transformers 4 and 5 alike."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    @property
    def config(self):
        return self.clip.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.clip.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.clip.get_text_features(*args, **kwargs))


def _tensor(output) -> torch.Tensor:
    return output if torch.is_tensor(output) else output.pooler_output


class ClipSimilarity:
    def __init__(self, clip: torch.nn.Module, processor: Any, device: torch.device):
        from torchmetrics.multimodal import CLIPScore

        wrapped = _ProjectedFeatures(clip.eval().requires_grad_(False))
        self.metric = CLIPScore(model_name_or_path=lambda: (wrapped, processor)).to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, a: np.ndarray | str, b: np.ndarray | str) -> float:
        """Score of an image (uint8 H×W×3) or text against another image or text."""
        self.metric.update(self._as_input(a), self._as_input(b))
        score = self.metric.compute().item()
        self.metric.reset()
        return score

    def _as_input(self, value: np.ndarray | str) -> torch.Tensor | str:
        if isinstance(value, str):
            return value
        return torch.tensor(value, device=self.device).permute(2, 0, 1)


def _pil_image_processor_class():
    import transformers

    # transformers 5 names the PIL backend CLIPImageProcessorPil; in transformers 4 CLIPImageProcessor is PIL-based
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def load_clip(config: Mapping[str, Any], mode: str) -> Backbone:
    """(CLIPModel, CLIPProcessor) from `config.path` or the local Hugging Face cache, or the tiny stand-in."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    def real():
        source = config.get("path") or config["repo_id"]
        if config.get("path") and not Path(source).is_dir():
            raise FileNotFoundError(f"metrics.clip.path={source} is not a folder")
        clip = CLIPModel.from_pretrained(source, local_files_only=True)
        processor = CLIPProcessor(
            image_processor=_pil_image_processor_class().from_pretrained(source, local_files_only=True),
            tokenizer=CLIPTokenizer.from_pretrained(source, local_files_only=True),
        )
        return (clip, processor), described(str(source), getattr(clip.config, RANDOM_WEIGHTS_MARK, False))

    def tiny():
        from invbench.tokenizer import build_clip_tokenizer

        tiny_config = config["tiny"]["config"]
        with seeded(config["tiny"]["seed"]):
            clip = CLIPModel(
                CLIPConfig(
                    text_config=tiny_config["text"],
                    vision_config=tiny_config["vision"],
                    projection_dim=tiny_config["projection_dim"],
                )
            )
        processor = CLIPProcessor(image_processor=_pil_image_processor_class()(), tokenizer=build_clip_tokenizer())
        return (clip, processor), f"tiny random CLIP (seed {config['tiny']['seed']})"

    return resolve_backbone(
        mode,
        "CLIP (ViT-L/14)",
        real,
        tiny,
        f"Provide it with `hf download {config['repo_id']}` on a machine with network (then copy the Hugging Face "
        "cache), or metrics.clip.path=<folder with the model and processor files>.",
    )
