"""Attention control for every editor: record and edit the UNet's self- and cross-attention per layer, per step and
per branch, through diffusers attention processors (no monkey-patching of attention classes, which is what breaks
the reference P2P code on every diffusers upgrade; pie-bench-protocol.md §6).

Layer map. `attention_sites` names every attention layer of a denoiser: its processor key (the diffusers module
path, e.g. `up_blocks.1.attentions.0.transformer_blocks.0.attn2`), where it sits (`down` / `mid` / `up` in a UNet,
`blocks` in a transformer), its kind — cross-attention (`attn2` of a UNet: queries from the image, keys from the
prompt), self-attention (`attn1`), or joint text+image attention (an MMDiT's: one sequence of image and text tokens,
`text_position` saying which come first) — and its resolution: the side of its image-token grid. With SD v1.x's
64×64 latents, down_blocks.k runs at 64 / 2^k (64, 32, 16), the mid block at 8, and up_blocks.k at 8 · 2^k.
At a joint site a controller reads P2P-style image→text maps and MasaCtrl/PnP-style image→image maps with
`image_to_text` and `image_to_image`.

Batch layout. Editors denoise B branches in one UNet call; branch 0 is the source branch. With classifier-free
guidance the batch is [unconditional × B, conditional × B] (see `DiffusionModel.guided_noise`), at guidance 1 only
the conditional half. Attention probabilities arrive as (rows · heads, queries, keys) and controllers see them as
(halves, B, heads, queries, keys), `halves` being 2 (uncond, cond) or 1 (cond).

Besides editing maps, controllers may change what a layer reads: `context` (keys and values: TODInv's per-level
prompts in cross-attention, `LevelConditioning`; the source branch's features in self-attention, MasaCtrl) or
`value_context` (cross-attention values only; StyleDiffusion, `ValueModulation`).
`AttentionStore` records maps for analysis and tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from invbench.errors import ConfigError
from invbench.models import NoiseParts

PLACES = ("down", "mid", "up")  # the order the blocks run in


SITE_KINDS = ("self", "cross", "joint")


@dataclass(frozen=True)
class AttentionSite:
    name: str  # processor key without the trailing ".processor"
    place: str  # down | mid | up (UNet blocks) | blocks (a transformer's)
    is_cross: bool
    resolution: int  # side of the image-token grid its queries come from (64, 32, 16, 8 for SD's UNet at 512²)
    kind: str = ""  # self | cross | joint; "" -> cross or self from is_cross
    text_position: str = ""  # joint: where the text tokens sit in the joint sequence, "first" or "last"

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", "cross" if self.is_cross else "self")
        if self.kind not in SITE_KINDS or (self.kind == "joint") != bool(self.text_position):
            raise ValueError(f"attention site {self.name}: kind {self.kind!r}, text_position {self.text_position!r}")

    @property
    def image_tokens(self) -> int:
        return self.resolution * self.resolution

    def image_rows(self, tokens: int) -> slice:
        """Where the image tokens are in a sequence of `tokens` (all of it but at a joint site)."""
        if self.kind != "joint":
            return slice(0, tokens)
        return (
            slice(tokens - self.image_tokens, tokens) if self.text_position == "first" else slice(0, self.image_tokens)
        )

    def text_rows(self, tokens: int) -> slice:
        """Where the text tokens are in the keys of a joint site's `tokens`-long sequence."""
        if self.kind != "joint":
            raise ValueError(f"{self.name} is {self.kind} attention: its keys are not split into text and image")
        text = tokens - self.image_tokens
        return slice(0, text) if self.text_position == "first" else slice(self.image_tokens, tokens)


def image_to_text(site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
    """(…, queries, keys) maps -> how image tokens attend to text tokens (P2P's cross-attention maps): the maps
    themselves at a cross-attention site, the image-query × text-key block at a joint one."""
    if site.kind == "cross":
        return probs
    return probs[..., site.image_rows(probs.shape[-2]), site.text_rows(probs.shape[-1])]


def image_to_image(site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
    """(…, queries, keys) maps -> how image tokens attend to image tokens (MasaCtrl's and PnP's self-attention):
    the maps themselves at a self-attention site, the image × image block at a joint one."""
    if site.kind == "cross":
        raise ValueError(f"{site.name} is cross-attention: its keys are text tokens")
    rows = site.image_rows(probs.shape[-1])
    return probs[..., site.image_rows(probs.shape[-2]), rows]


def attention_sites(denoiser: torch.nn.Module, latent_side: int) -> list[AttentionSite]:
    """Every attention layer of `denoiser` with its place, kind and image-token grid, in module order;
    `forward_order` sorts a UNet's as they run. UNets (SD, SDXL): `attn1` self-, `attn2` cross-attention. MMDiT
    transformers (SD3, FLUX): joint text+image attention in `transformer_blocks.N.attn` (SD3 puts the text tokens
    last, FLUX first) and FLUX's single-stream blocks; SD3.5's image-only `attn2` is self-attention."""
    if not hasattr(denoiser, "down_blocks"):
        return _transformer_sites(denoiser, latent_side)
    unet = denoiser
    num_down, num_up = len(unet.down_blocks), len(unet.up_blocks)
    sites = []
    for key in unet.attn_processors:
        name = key.removesuffix(".processor")
        parts = name.split(".")
        if parts[0] == "down_blocks":
            place, resolution = "down", latent_side // 2 ** int(parts[1])
        elif parts[0] == "up_blocks":
            place, resolution = "up", latent_side // 2 ** (num_up - 1 - int(parts[1]))
        elif parts[0] == "mid_block":
            place, resolution = "mid", latent_side // 2 ** (num_down - 1)
        else:
            raise ValueError(f"attention layer '{name}' is outside the down/mid/up blocks of a UNet2DConditionModel")
        sites.append(AttentionSite(name, place, is_cross=parts[-1] == "attn2", resolution=resolution))
    return sites


def _transformer_sites(transformer: torch.nn.Module, latent_side: int) -> list[AttentionSite]:
    flux = "Flux" in type(transformer).__name__
    # FLUX's transformer sees latents packed in 2×2 patches (patch_size 1 on the packed tokens)
    grid = latent_side // 2 if flux else latent_side // transformer.config.patch_size
    text_position = "first" if flux else "last"
    sites = []
    for key in transformer.attn_processors:
        name = key.removesuffix(".processor")
        if name.split(".")[0] not in ("transformer_blocks", "single_transformer_blocks"):
            raise ValueError(f"attention layer '{name}' is outside the transformer blocks of an MMDiT")
        if name.endswith(".attn2"):
            sites.append(AttentionSite(name, "blocks", is_cross=False, resolution=grid))
        else:
            sites.append(AttentionSite(name, "blocks", False, grid, kind="joint", text_position=text_position))
    return sites


def forward_order(sites: list[AttentionSite]) -> list[AttentionSite]:
    """The sites in the order the UNet calls them: down blocks, mid block, up blocks."""
    return sorted(sites, key=lambda site: PLACES.index(site.place) if site.place in PLACES else 0)  # stable


def copy_source_rows(rows: torch.Tensor, branches: int) -> torch.Tensor:
    """(halves · branches, ...) -> every branch of each half replaced by that half's source row (branch 0)."""
    grouped = rows.view(-1, branches, *rows.shape[1:])
    return grouped[:, :1].expand_as(grouped).reshape(rows.shape)


class LargestTensor:
    """The largest tensor attention control materialised or was handed since `reset`: the maps a controller sees
    (which fused attention never builds), and what it returns as a layer's context or values. That is what a method's
    attention control costs in memory on top of the denoiser's own, and what grows with resolution (a 512² image's
    self-attention maps are 4,096 × 4,096 per head); rows record it per sample (`largest_attention_map_mb`)."""

    def __init__(self) -> None:
        self.bytes = 0

    def note(self, tensor: torch.Tensor) -> torch.Tensor:
        self.bytes = max(self.bytes, tensor.numel() * tensor.element_size())
        return tensor

    def reset(self) -> None:
        self.bytes = 0


LARGEST_CONTROLLED = LargestTensor()


class AttentionController:
    """Base class: sees (and may replace) every attention map of the layers it `wants`, step by step.

    The sampler calls `begin_step(i)` before the UNet call of denoising step i, then `before_step(i, latents,
    noise_parts)`, which may return changed latents to step from, then `step_noise_parts(noise_parts)` for the
    evaluation the step takes, and `end_step(i, latents)` after the latents of that step are computed (and after any
    inversion offset was added), which may return changed latents.
    """

    num_branches: int = 1
    step: int = 0

    def wants(self, site: AttentionSite) -> bool:
        """Whether `attention` must see this layer's maps (other layers run PyTorch's fused attention)."""
        return True

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        """probs: (halves, branches, heads, queries, keys), rows summing to 1; return the maps to use."""
        return probs

    def context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        """What the layer reads keys and values from: the prompt embeddings (rows, 77, D) of a cross-attention
        layer, the image features (rows, queries, C) of a self-attention layer (MasaCtrl's mutual attention)."""
        return context

    def value_context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        """The embeddings a cross-attention layer reads its values from (keys keep `context`)."""
        return context

    def values(self, site: AttentionSite, value: torch.Tensor) -> torch.Tensor:
        """The values a FLUX attention layer attends over, (rows, tokens, heads, head_dim) with the text tokens
        first, rows as the maps' (halves · branches): RF-Edit's and FireFlow's value injection."""
        return value

    def begin_step(self, step: int) -> None:
        self.step = step

    def before_step(self, step: int, latents: torch.Tensor, noise_parts: NoiseParts) -> torch.Tensor:
        """`noise_parts(latents)` evaluates the UNet with the step's embeddings, under this controller."""
        return latents

    def step_noise_parts(self, noise_parts: NoiseParts) -> NoiseParts:
        """The UNet evaluation the step takes (model.noise_parts with the step's embeddings, which also accepts
        `cond_latents=`). Default: unchanged."""
        return noise_parts

    def end_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        return latents


class AttentionStore(AttentionController):
    """Records attention maps (per step, per layer, per branch, averaged over heads) of the layers it is asked to."""

    def __init__(self, num_branches: int, cross: bool = True, self_attention: bool = False, max_resolution: int = 32):
        self.num_branches = num_branches
        self.kinds = {True: cross, False: self_attention}
        self.max_resolution = max_resolution
        # maps[step][site] = (halves, branches, queries, keys), head-averaged
        self.maps: dict[int, dict[AttentionSite, torch.Tensor]] = defaultdict(dict)

    def wants(self, site: AttentionSite) -> bool:
        return self.kinds[site.is_cross] and site.resolution <= self.max_resolution

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        self.maps[self.step][site] = probs.mean(dim=2).detach()
        return probs


class ControllerGroup(AttentionController):
    """Several controllers on the same layers, applied in order (e.g. per-level prompts, then Prompt-to-Prompt)."""

    def __init__(self, *controllers: AttentionController):
        self.controllers = controllers

    @property
    def num_branches(self) -> int:
        return self.controllers[0].num_branches

    @num_branches.setter
    def num_branches(self, value: int) -> None:
        for controller in self.controllers:
            controller.num_branches = value

    def wants(self, site: AttentionSite) -> bool:
        return any(controller.wants(site) for controller in self.controllers)

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        for controller in self.controllers:
            if controller.wants(site):
                probs = controller.attention(site, probs)
        return probs

    def context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        for controller in self.controllers:
            context = controller.context(site, context)
        return context

    def value_context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        for controller in self.controllers:
            context = controller.value_context(site, context)
        return context

    def begin_step(self, step: int) -> None:
        super().begin_step(step)
        for controller in self.controllers:
            controller.begin_step(step)

    def before_step(self, step: int, latents: torch.Tensor, noise_parts: NoiseParts) -> torch.Tensor:
        for controller in self.controllers:
            latents = controller.before_step(step, latents, noise_parts)
        return latents

    def step_noise_parts(self, noise_parts: NoiseParts) -> NoiseParts:
        for controller in self.controllers:
            noise_parts = controller.step_noise_parts(noise_parts)
        return noise_parts

    def end_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        for controller in self.controllers:
            latents = controller.end_step(step, latents)
        return latents


class PerSampleControllers(AttentionController):
    """Several samples' controllers in one denoiser call: the batch holds each sample's `branches` branches in turn
    (in each half of guidance), and each controller sees, and may change, its own sample's rows only. Controllers
    that change the latents before a step or the step's evaluation (guidance by gradient) do not batch this way."""

    def __init__(self, controllers: list[AttentionController], branches: int):
        changing = [c for c in controllers if type(c).before_step is not AttentionController.before_step
                    or type(c).step_noise_parts is not AttentionController.step_noise_parts]  # fmt: skip
        if changing:
            raise ValueError(f"{type(changing[0]).__name__} changes the step's latents or evaluation: it cannot batch")
        self.controllers, self.branches = controllers, branches
        for controller in controllers:
            controller.num_branches = branches

    @property
    def num_branches(self) -> int:
        return self.branches * len(self.controllers)

    @num_branches.setter
    def num_branches(self, value: int) -> None:
        if value != self.branches * len(self.controllers):
            raise ValueError(f"{value} branches for {len(self.controllers)} samples of {self.branches}")

    def _split(self, rows: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
        """(halves · samples · branches, ...) along `dim` -> each sample's (halves · branches, ...)."""
        samples = len(self.controllers)
        shape = rows.shape
        grouped = rows.reshape(*shape[:dim], -1, samples, self.branches, *shape[dim + 1 :])
        return [grouped.select(dim + 1, k).reshape(*shape[:dim], -1, *shape[dim + 1 :]) for k in range(samples)]

    def _join(self, parts: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
        shape = parts[0].shape
        stacked = torch.stack(
            [part.reshape(*shape[:dim], -1, self.branches, *shape[dim + 1 :]) for part in parts], dim + 1
        )
        return stacked.reshape(*shape[:dim], -1, *shape[dim + 1 :])

    def wants(self, site: AttentionSite) -> bool:
        return any(controller.wants(site) for controller in self.controllers)

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        # each sample's maps as a view of the batch's, (halves, branches, ...): no copy of maps that can be GBs
        per_sample = probs.view(probs.shape[0], len(self.controllers), self.branches, *probs.shape[2:])
        for k, controller in enumerate(self.controllers):
            if controller.wants(site):
                own = per_sample[:, k]
                changed = controller.attention(site, own)
                if changed is not own:
                    own.copy_(changed)
        return probs

    def context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        parts = self._split(context)
        return self._join([c.context(site, part) for c, part in zip(self.controllers, parts)])

    def value_context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        parts = self._split(context)
        return self._join([c.value_context(site, part) for c, part in zip(self.controllers, parts)])

    def values(self, site: AttentionSite, value: torch.Tensor) -> torch.Tensor:
        parts = self._split(value)
        return self._join([c.values(site, part) for c, part in zip(self.controllers, parts)])

    def begin_step(self, step: int) -> None:
        super().begin_step(step)
        for controller in self.controllers:
            controller.begin_step(step)

    def end_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        rows = latents.split(self.branches)
        return torch.cat([c.end_step(step, part) for c, part in zip(self.controllers, rows)])


class LevelConditioning(AttentionController):
    """Per-resolution prompt embeddings (TODInv's extended P* space): cross-attention layers at a resolution listed
    in `embeddings` read the conditional rows from there instead of the prompt embedding the UNet was called with."""

    def __init__(self, embeddings: dict[int, torch.Tensor] | None = None):
        self.embeddings = embeddings or {}  # resolution -> (branches, 77, D) for the conditional half

    def wants(self, site: AttentionSite) -> bool:
        return False

    def context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        if not site.is_cross or site.resolution not in self.embeddings:
            return context
        level = self.embeddings[site.resolution].to(context.dtype)
        return torch.cat([context[: context.shape[0] - level.shape[0]], level])


class ValueModulation(AttentionController):
    """StyleDiffusion's value-input mapping: in the conditional half, cross-attention values read c ⊙ scale + shift
    instead of the prompt embedding c (keys keep c) — in the source branch always, in target branches only while
    `targets` is true. `scale`/`shift` (1, 77, D) are set per step; None switches the modulation off."""

    def __init__(self):
        self.scale: torch.Tensor | None = None
        self.shift: torch.Tensor | None = None
        self.targets = False

    def wants(self, site: AttentionSite) -> bool:
        return False

    def value_context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        if not site.is_cross or self.scale is None:
            return context
        cond = context[context.shape[0] - self.num_branches :]
        modulated = cond * self.scale.to(cond.dtype) + self.shift.to(cond.dtype)
        if not self.targets:
            modulated = torch.cat([modulated[:1], cond[1:]])
        return torch.cat([context[: context.shape[0] - self.num_branches], modulated])


class _ControlledProcessor:
    """diffusers' AttnProcessor with the attention probabilities passed through a controller."""

    def __init__(self, site: AttentionSite, controller: AttentionController):
        self.site, self.controller = site, controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
            raise ConfigError(
                f"{self.site.name}: attention control handles SD v1.x-style transformer attention only (no spatial "
                "or group norm, 3-d hidden states); this model's UNet has another kind"
            )
        batch, tokens, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        context = LARGEST_CONTROLLED.note(self.controller.context(self.site, context))
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        value_context = context if encoder_hidden_states is None else self.controller.value_context(self.site, context)
        projections = (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(value_context))
        query, key, value = (attn.head_to_batch_dim(x) for x in projections)
        if self.controller.wants(self.site):
            probs = LARGEST_CONTROLLED.note(attn.get_attention_scores(query, key, attention_mask))
            rows, heads = probs.shape[0], attn.heads
            branches = self.controller.num_branches
            grouped = probs.view(rows // heads // branches, branches, heads, *probs.shape[1:])
            probs = self.controller.attention(self.site, grouped).reshape(probs.shape)
            out = torch.bmm(probs.to(value.dtype), value)
        else:
            mask = None if attention_mask is None else attention_mask.view(batch * attn.heads, 1, -1)
            out = F.scaled_dot_product_attention(
                query[:, None], key[:, None], value[:, None], attn_mask=mask, scale=attn.scale
            )[:, 0]
        out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


class _ControlledJointProcessor:
    """SD3's joint attention (diffusers' JointAttnProcessor2_0: image and text tokens projected separately, attended
    as one sequence, image first) with the maps over the whole sequence passed through a controller, which reads
    its image→text and image→image blocks with `image_to_text` / `image_to_image`."""

    def __init__(self, site: AttentionSite, controller: AttentionController):
        self.site, self.controller = site, controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        batch, image_tokens = hidden_states.shape[0], hidden_states.shape[1]

        def heads(x: torch.Tensor) -> torch.Tensor:  # (batch, tokens, heads · d) -> (batch, heads, tokens, d)
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        query, key, value = (heads(f(hidden_states)) for f in (attn.to_q, attn.to_k, attn.to_v))
        query = query if attn.norm_q is None else attn.norm_q(query)
        key = key if attn.norm_k is None else attn.norm_k(key)
        if encoder_hidden_states is not None:
            projections = (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj)
            text_query, text_key, text_value = (heads(f(encoder_hidden_states)) for f in projections)
            text_query = text_query if attn.norm_added_q is None else attn.norm_added_q(text_query)
            text_key = text_key if attn.norm_added_k is None else attn.norm_added_k(text_key)
            query, key = torch.cat([query, text_query], dim=2), torch.cat([key, text_key], dim=2)
            value = torch.cat([value, text_value], dim=2)
        if self.controller.wants(self.site):
            probs = LARGEST_CONTROLLED.note((query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(dim=-1))
            branches = self.controller.num_branches
            grouped = probs.view(batch // branches, branches, *probs.shape[1:])
            out = self.controller.attention(self.site, grouped).reshape(probs.shape).to(value.dtype) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1]).to(query.dtype)
        out, text_out = out[:, :image_tokens], out[:, image_tokens:]
        out = attn.to_out[1](attn.to_out[0](out))
        if encoder_hidden_states is None:
            return out
        return out, (text_out if attn.context_pre_only else attn.to_add_out(text_out))


class _ControlledFluxProcessor:
    """FLUX's attention (diffusers' FluxAttnProcessor: text tokens first; double-stream blocks project image and
    text tokens separately, single-stream blocks get the joint sequence; rotary embedding on queries and keys only)
    with the values passed through the controller's `values` and the maps through its `attention` where it wants
    them."""

    def __init__(self, site: AttentionSite, controller: AttentionController):
        self.site, self.controller = site, controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb

        def heads(x: torch.Tensor) -> torch.Tensor:  # (batch, tokens, heads · d) -> (batch, tokens, heads, d)
            return x.unflatten(-1, (-1, attn.head_dim))

        query, key = attn.norm_q(heads(attn.to_q(hidden_states))), attn.norm_k(heads(attn.to_k(hidden_states)))
        value = heads(attn.to_v(hidden_states))
        if encoder_hidden_states is not None:
            text_query = attn.norm_added_q(heads(attn.add_q_proj(encoder_hidden_states)))
            text_key = attn.norm_added_k(heads(attn.add_k_proj(encoder_hidden_states)))
            query, key = torch.cat([text_query, query], dim=1), torch.cat([text_key, key], dim=1)
            value = torch.cat([heads(attn.add_v_proj(encoder_hidden_states)), value], dim=1)
        value = LARGEST_CONTROLLED.note(self.controller.values(self.site, value))
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # (batch, heads, tokens, d)
        if self.controller.wants(self.site):
            probs = LARGEST_CONTROLLED.note((query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(dim=-1))
            branches = self.controller.num_branches
            grouped = probs.view(len(probs) // branches, branches, *probs.shape[1:])
            out = self.controller.attention(self.site, grouped).reshape(probs.shape).to(value.dtype) @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out  # single-stream: the block projects it with its MLP stream
        text_out, out = out.split([encoder_hidden_states.shape[1], out.shape[1] - encoder_hidden_states.shape[1]], 1)
        return attn.to_out[1](attn.to_out[0](out)), attn.to_add_out(text_out)


def _controlled(site: AttentionSite, controller: AttentionController):
    if site.kind != "joint":
        return _ControlledProcessor(site, controller)
    if site.text_position == "last":
        return _ControlledJointProcessor(site, controller)
    return _ControlledFluxProcessor(site, controller)


@contextmanager
def attention_control(
    denoiser: torch.nn.Module, controller: AttentionController, latent_side: int
) -> Iterator[list[AttentionSite]]:
    """Route every attention layer of `denoiser` through `controller` inside the block; restores the processors
    after."""
    original = denoiser.attn_processors
    sites = attention_sites(denoiser, latent_side)
    denoiser.set_attn_processor({f"{site.name}.processor": _controlled(site, controller) for site in sites})
    try:
        yield sites
    finally:
        denoiser.set_attn_processor(original)
