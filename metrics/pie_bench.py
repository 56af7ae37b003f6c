"""The PIE-Bench evaluation protocol (Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of
Code", ICLR 2024; reference `evaluation/evaluate.py`, summarised in pie-bench-protocol.md §2).

Per sample, against the original source image and the sample's 512×512 edit mask (1-pixel frame included):
  structure_distance                       DINO key self-similarity distance, whole image
  {psnr,lpips,mse,ssim}_unedit_part        on both images × (1 - mask); NaN when nothing is unedited
  clip_similarity_source_image             source image vs source prompt (brackets stripped)
  clip_similarity_target_image             edited image vs target prompt          ("CLIP whole")
  clip_similarity_target_image_edit_part   edited image × mask vs target prompt   ("CLIP edited")
and, when the source-branch reconstruction is given, reconstruction_{psnr,lpips,mse,ssim} over the whole image.

`reference_compat` (default on, so that numbers sit next to published tables) reproduces the reference's quirks that
move numbers: the edited image is scored after the JPEG quality-75 round trip the reference's 2048×512 composite
went through, DINO gets 0–255 inputs, and its resize does not antialias. Off, images are scored losslessly and DINO
sees [0, 1] inputs with an antialiased resize (the corrected protocol; not comparable with published numbers).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from invbench.digests import sha256
from invbench.images import fit_square
from metrics.backbone import Backbone
from metrics.background import PIXEL_METRICS, pixel_metrics, unedited_part_metrics
from metrics.clip_similarity import ClipSimilarity, load_clip
from metrics.perceptual import load_lpips
from metrics.structure_distance import StructureDistance, load_dino
from metrics.suite import METRICS, MetricSuite
from pie_bench import PIE_MASK_SHAPE, Sample

log = logging.getLogger(__name__)

REFERENCE_JPEG_QUALITY = 75  # PIL's default; the reference saves its composites with `.save("<id>.jpg")`


def reference_jpeg_round_trip(panels: list[np.ndarray]) -> list[np.ndarray]:
    """The panels as the reference's evaluation reads them back: laid side by side as in its composite, saved as
    JPEG at PIL's defaults and decoded. Panel edges fall on JPEG block boundaries (multiples of 16 px), and chroma
    upsampling only reads the left neighbour, so each panel decodes exactly as it would in the full composite."""
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=REFERENCE_JPEG_QUALITY)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return np.split(decoded, len(panels), axis=1)


SOURCE_FEATURES_BUDGET_MB = 1024  # 2.4 MB per source at DINO's 785 tokens: ~400 sources


class SourceFeatures:
    """The source-side features of the samples this process scored: DINO's self-similarity of the source image and
    its CLIP score against the source prompt, which do not depend on the method. A sweep scores every sample once per
    job; they are computed once, keyed by the image's bytes and the prompt, until `budget_mb` is used (then new
    sources are computed each time: a sweep's jobs visit samples in the same order, so keeping the first ones helps
    every later job, where evicting old ones would help none)."""

    def __init__(self, budget_mb: float):
        self.budget_bytes, self.used_bytes = budget_mb * 2**20, 0
        self._features: dict[tuple[str, str], tuple[torch.Tensor, float]] = {}

    def get(self, image: np.ndarray, prompt: str, compute: Any) -> tuple[torch.Tensor, float]:
        key = (sha256(image.tobytes()) + str(image.shape), prompt)
        if key in self._features:
            return self._features[key]
        features = compute()
        size = features[0].numel() * features[0].element_size()
        if self.used_bytes + size <= self.budget_bytes:
            self._features[key], self.used_bytes = features, self.used_bytes + size
        return features


def _short(backbone: Backbone) -> str:
    return backbone.description if backbone.real else "tiny"


@METRICS.register("pie_bench")
@dataclass
class PieBenchMetrics(MetricSuite):
    reference_compat: bool
    backbones: Literal["auto", "real", "tiny"]
    structure: dict[str, Any]
    clip: dict[str, Any]
    lpips: dict[str, Any]
    _loaded: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _sources: SourceFeatures = field(
        default_factory=lambda: SourceFeatures(SOURCE_FEATURES_BUDGET_MB), init=False, repr=False
    )

    def load(self, device: torch.device) -> None:
        dino = load_dino(self.structure, self.backbones)
        clip = load_clip(self.clip, self.backbones)
        lpips_network = load_lpips(self.lpips, self.backbones)
        self._loaded = {
            "structure": StructureDistance(
                dino.network,
                layer=self.structure["layer"],
                short_side=self.structure["short_side"],
                max_size=self.structure["max_size"],
                input_255=self.reference_compat,
                antialias=not self.reference_compat,
                device=device,
            ),
            "clip": ClipSimilarity(*clip.network, device=device),
            "lpips": lpips_network.network.to(device).eval().requires_grad_(False),
            "setup": (
                f"pie_bench/{'reference' if self.reference_compat else 'corrected'} "
                f"dino={_short(dino)} clip={_short(clip)} lpips={_short(lpips_network)}"
            ),
        }
        log.info(
            "metrics: %s; backbones: %s | %s | %s",
            self.setup,
            dino.description,
            clip.description,
            lpips_network.description,
        )

    @property
    def setup(self) -> str:
        return self._loaded["setup"]

    @property
    def image_quantisation(self) -> str:
        return "truncate" if self.reference_compat else "round"  # the reference's latent2image truncates

    def score(
        self, sample: Sample, edited: np.ndarray, reconstruction: np.ndarray | None, lossless: bool
    ) -> dict[str, Any]:
        # a sample without a mask (dataset=folder) is scored at PIE-Bench's size; its region metrics are NaN
        mask = sample.mask() if sample.has_mask else None
        size = PIE_MASK_SHAPE[0]
        source = fit_square(sample.read_image(), size)  # PIE-Bench images are already 512²: then unchanged
        values: dict[str, Any] = {}
        if edited.shape[:2] != (size, size):
            values["metrics_resized_from"] = edited.shape[0]
            edited = fit_square(edited, size)
            reconstruction = None if reconstruction is None else fit_square(reconstruction, size)
        if self.reference_compat and lossless:
            panels = [source, edited] if reconstruction is None else [source, reconstruction, edited]
            *_, reconstruction_read, edited = reference_jpeg_round_trip(panels)
            reconstruction = None if reconstruction is None else reconstruction_read

        structure, clip, lpips_network = self._loaded["structure"], self._loaded["clip"], self._loaded["lpips"]
        source_similarity, source_clip = self._sources.get(
            source,
            sample.source_prompt,
            lambda: (structure.self_similarity(source), clip(source, sample.source_prompt)),
        )
        values["structure_distance"] = structure(source_similarity, edited)
        if mask is None:
            values.update({f"{name}_unedit_part": math.nan for name in PIXEL_METRICS})
            values["metrics_note"] = "no edit mask: the unedited- and edited-region metrics are NaN"
        else:
            values.update(unedited_part_metrics(source, edited, mask, lpips_network))
        values["clip_similarity_source_image"] = source_clip
        values["clip_similarity_target_image"] = clip(edited, sample.target_prompt)
        values["clip_similarity_target_image_edit_part"] = (
            clip(edited * mask[..., None].astype(np.uint8), sample.target_prompt)
            if mask is not None and mask.any()
            else math.nan
        )
        if reconstruction is not None:
            whole = pixel_metrics(source, reconstruction, lpips_network)
            values.update({f"reconstruction_{name}": value for name, value in whole.items()})
        return values
