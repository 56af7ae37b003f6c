"""StyleDiffusion (Li et al., "StyleDiffusion: Prompt-Embedding Inversion for Text-Based Editing", seed 004 §3.3;
reference code sen-mao/StyleDiffusion `stylediffusion.py`, as PnPInversion runs it).

Contract: DDIM inversion with the source prompt (guidance 1) gives z*_0..z*_T and, at every step, the conditional
cross-attention maps of the layers at 1/`attention_map_divisor` of the latent side (16×16 for SD). Then, from
z̄_T = z*_T, for each denoising step i a mapping network M_i (initialised from M_{i−1}) turns the CLIP image tokens of
the source into (scale_i, shift_i), and cross-attention *values* of the conditional branch read
c ⊙ scale_i + shift_i while keys keep the text embedding c. M_i is trained with Adam, lr = learning_rate·(1 − i/100),
for at most ceil(inner_steps · e^(−0.1 i)) iterations on ‖DDIM(z̄_t, ω) − z*_{t−Δ}‖² (mean) plus the squared
difference (mean, summed over layers) between its attention maps and the DDIM-inversion maps of the same latent,
stopping early like NTI; z̄ then advances with the trained M_i. Editing: the source branch reads the mapped values
at every step, target branches (their own prompt, same scale and shift) for the first `target_value_steps` of the
steps (τ_v). The mapping network is the reference's: per step Conv1d(tokens → 2·77) → [Conv1d + BatchNorm + LeakyReLU]
→ Conv1d over the token axis, in training mode as in the reference.
The image encoder is CLIP ViT-B/16's vision tower (the reference's), or a tiny stand-in (metrics/backbone.py rules);
its tokens pass the final LayerNorm, as the reference's clip_util.py does. The PnPInversion run's Prompt-to-Prompt
settings are conf/editor/p2p_stylediffusion.yaml: PIE-Bench's StyleDiffusion row is
`inversion=stylediffusion editor=p2p_stylediffusion`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from invbench.attention import AttentionController, AttentionSite, ControllerGroup, ValueModulation, attention_control
from invbench.errors import InvbenchError
from invbench.hyperparameters import Count, Fraction, Guidance, NonNegative, Positive, Steps
from invbench.models import DiffusionModel
from inversions.base import (
    INVERSIONS,
    Inversion,
    InversionResult,
    StepHooks,
    guided_step_error,
    optimise,
)
from metrics.backbone import resolve_backbone, seeded
from pie_bench import Sample

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
TOKENS = 77


class _CrossMaps(AttentionController):
    """Keeps the conditional cross-attention maps of the chosen layers of the latest UNet call (with gradients)."""

    def __init__(self, resolution: int):
        self.resolution = resolution
        self.maps: list[torch.Tensor] = []

    def wants(self, site: AttentionSite) -> bool:
        return site.is_cross and site.place != "mid" and site.resolution == self.resolution

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        self.maps.append(probs[-1])
        return probs


def _mapping_network(image_tokens: int, seed: int) -> torch.nn.Module:
    channels = 2 * TOKENS  # scale and shift rows
    with seeded(seed):
        return torch.nn.Sequential(
            torch.nn.Conv1d(image_tokens, channels, kernel_size=1),
            torch.nn.Conv1d(channels, channels, kernel_size=1),
            torch.nn.BatchNorm1d(channels),
            torch.nn.LeakyReLU(),
            torch.nn.Conv1d(channels, channels, kernel_size=1),
        )


class ValueMapping(StepHooks):
    """Editing with StyleDiffusion's mapped value input: at step i the cross-attention values of the conditional half
    read c ⊙ scale_i + shift_i (keys keep c), in the source branch at every step and in the target branches for
    the steps before `target_until` (τ_v)."""

    def __init__(self, modulation: list[tuple[torch.Tensor, torch.Tensor]], target_until: int):
        self.modulation, self.target_until = modulation, target_until  # step -> (scale, shift), each (1, 77, D)

    def controllers(self, cond: torch.Tensor) -> list[ValueModulation]:
        return [_StepValues(self.modulation, self.target_until)]


class _StepValues(ValueModulation):
    def __init__(self, modulation: list[tuple[torch.Tensor, torch.Tensor]], target_until: int):
        super().__init__()
        self.modulation, self.target_until = modulation, target_until

    def begin_step(self, step: int) -> None:
        super().begin_step(step)
        self.scale, self.shift = self.modulation[step]
        self.targets = step < self.target_until


@INVERSIONS.register("stylediffusion")
@dataclass
class StyleDiffusion(Inversion):
    produces = frozenset({"controllers"})

    num_steps: Steps
    guidance_scale: Guidance
    inner_steps: Count
    learning_rate: Positive
    early_stop: NonNegative
    early_stop_growth: NonNegative
    attention_loss: bool
    attention_map_divisor: Steps
    target_value_steps: Fraction
    image_encoder: dict[str, Any]  # {backbone: auto|real|tiny, repo_id, path, tiny: {seed, config}}
    seed: Count

    def tuned_for_guidance(self) -> float | None:
        return self.guidance_scale

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps)
        uncond, source = model.encode_prompts(["", sample.source_prompt]).chunk(2)
        tokens = self._image_tokens(model, sample, source.shape[-1])
        side = image_latent.shape[-1]
        maps, values = _CrossMaps(side // self.attention_map_divisor), ValueModulation()
        control = ControllerGroup(maps, values)
        control.num_branches = 1
        trajectory, reference_maps = [image_latent], []
        with attention_control(model.denoiser, control, side), torch.no_grad():
            for t in reversed(schedule.timesteps):
                maps.maps = []
                trajectory.append(
                    schedule.inverse_step(model.predict_noise(trajectory[-1], t, source), t, trajectory[-1])
                )
                reference_maps.append(maps.maps)
        reference_maps.append(reference_maps[-1])  # as the reference: the last latent reuses the last maps
        network, modulation, iterations = None, [], []
        latent = trajectory[-1]
        with attention_control(model.denoiser, control, side):
            for i, t in enumerate(schedule.timesteps):
                network = _mapping_network(tokens.shape[1], self.seed) if network is None else copy.deepcopy(network)
                network.to(tokens.device).train()
                optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate * (1 - i / 100))
                goal = trajectory[self.num_steps - i - 1]
                with torch.no_grad():
                    values.scale = None
                    noise_uncond = model.predict_noise(latent, t, uncond)

                def loss() -> torch.Tensor:
                    values.scale, values.shift = network(tokens).split(TOKENS, dim=1)
                    maps.maps = []
                    noise_cond = model.predict_noise(latent, t, source)
                    value = guided_step_error(schedule, latent, t, noise_uncond, noise_cond, self.guidance_scale, goal)
                    if self.attention_loss:
                        value = value + sum(
                            F.mse_loss(a, b) for a, b in zip(maps.maps, reference_maps[self.num_steps - i])
                        )
                    return value

                taken = optimise(
                    optimizer,
                    loss,
                    math.ceil(self.inner_steps * math.exp(-0.1 * i)),
                    self.early_stop + i * self.early_stop_growth,
                )
                with torch.no_grad():
                    values.scale, values.shift = (x.detach() for x in network(tokens).split(TOKENS, dim=1))
                    modulation.append((values.scale, values.shift))
                    noise = model.guided_noise(latent, t, source, uncond, self.guidance_scale)
                    latent = schedule.step(noise, t, latent)
                iterations.append(taken)
        return InversionResult(
            schedule=schedule,
            latents=trajectory,
            # the reference's `i < NUM_DDIM_STEPS * tau_v`: every step below τ_v·N, so its ceiling (3 of 5 at 0.5)
            hooks=ValueMapping(modulation, math.ceil(self.target_value_steps * self.num_steps)),
            info={"optimisation_steps": sum(iterations), "optimisation_steps_per_timestep": iterations},
        )

    @torch.no_grad()
    def _image_tokens(self, model: DiffusionModel, sample: Sample, width: int) -> torch.Tensor:
        """CLIP vision tokens (1, tokens, width) of the source image, as the mapping networks' input."""
        from invbench.images import fit_square

        encoder = _load_image_encoder(self.image_encoder, width).network.to(model.device).eval()
        if encoder.config.hidden_size != width:
            raise InvbenchError(
                f"inversion.image_encoder: its tokens are {encoder.config.hidden_size} wide but the text embedding "
                f"of model '{model.name}' is {width} wide; StyleDiffusion needs them equal (CLIP ViT-B/16 with SD "
                "1.x). Use inversion.image_encoder.backbone=tiny with the tiny model."
            )
        image = torch.tensor(fit_square(sample.read_image(), model.resolution), device=model.device)
        pixels = image.permute(2, 0, 1)[None].float() / 255
        size = encoder.config.image_size
        pixels = TF.center_crop(TF.resize(pixels, [size], interpolation=TF.InterpolationMode.BICUBIC), [size])
        pixels = TF.normalize(pixels, CLIP_MEAN, CLIP_STD)
        # every token through the final LayerNorm, as the reference's clip_util.py VisionTransformer (ln_post on all
        # tokens, no projection); transformers applies post_layernorm to the pooled CLS token only
        return image_tokens(encoder, pixels).float()


def image_tokens(encoder, pixels: torch.Tensor) -> torch.Tensor:
    """CLIP vision tokens after the final LayerNorm (ln_post), CLS included: (batch, 1 + patches, width)."""
    final_norm = getattr(encoder, "vision_model", encoder).post_layernorm  # transformers 4 nests it, 5 does not
    return final_norm(encoder(pixel_values=pixels).last_hidden_state)


def _load_image_encoder(config: dict[str, Any], width: int):
    """The real CLIP vision tower, or a tiny random one as wide as the model's text embedding."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    def real():
        return CLIPVisionModel.from_pretrained(config.get("path") or config["repo_id"], local_files_only=True), str(
            config.get("path") or config["repo_id"]
        )

    def tiny():
        with seeded(config["tiny"]["seed"]):
            vision = CLIPVisionModel(CLIPVisionConfig(**config["tiny"]["config"], hidden_size=width))
        return vision, f"tiny random CLIP vision (seed {config['tiny']['seed']})"

    return resolve_backbone(
        config["backbone"],
        "StyleDiffusion image encoder (CLIP ViT-B/16)",
        real,
        tiny,
        f"Provide it with `hf download {config['repo_id']}` on a machine with network, or "
        "inversion.image_encoder.path=<folder>.",
    )
