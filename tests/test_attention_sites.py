"""Attention sites of every denoiser: kinds (self, cross, joint), image-token grids, the text/image split of joint
attention, and attention control on SD3's joint attention agreeing with diffusers' own processor."""

import pytest
import torch

from invbench.attention import (
    AttentionController,
    AttentionSite,
    attention_control,
    attention_sites,
    image_to_image,
    image_to_text,
)


def test_unet_sites_are_self_and_cross_attention(tiny_model):
    sites = attention_sites(tiny_model.denoiser, 8)
    assert {site.kind for site in sites} == {"self", "cross"}
    for site in sites:
        assert site.kind == ("cross" if site.name.endswith("attn2") else "self") and site.is_cross == (
            site.kind == "cross"
        )
        assert site.text_position == ""


def test_the_split_of_a_joint_sequence():
    """A 2×2 image-token grid (4 image tokens) and 3 text tokens, text first (FLUX) or last (SD3)."""
    probs = torch.arange(49.0).view(1, 7, 7)
    first = AttentionSite("transformer_blocks.0.attn", "blocks", False, 2, kind="joint", text_position="first")
    torch.testing.assert_close(image_to_text(first, probs), probs[:, 3:, :3], rtol=0, atol=0)
    torch.testing.assert_close(image_to_image(first, probs), probs[:, 3:, 3:], rtol=0, atol=0)
    last = AttentionSite("transformer_blocks.0.attn", "blocks", False, 2, kind="joint", text_position="last")
    torch.testing.assert_close(image_to_text(last, probs), probs[:, :4, 4:], rtol=0, atol=0)
    torch.testing.assert_close(image_to_image(last, probs), probs[:, :4, :4], rtol=0, atol=0)
    cross = AttentionSite("up_blocks.1.attentions.0.transformer_blocks.0.attn2", "up", True, 2)
    assert image_to_text(cross, probs) is probs
    with pytest.raises(ValueError, match="cross-attention"):
        image_to_image(cross, probs)
    with pytest.raises(ValueError, match="text_position"):
        AttentionSite("x", "blocks", False, 2, kind="joint")


def tiny_sd3():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16,
    ).eval()  # fmt: skip


def sd3_inputs(batch: int = 2, text: int = 5):
    generator = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(batch, 4, 8, 8, generator=generator),
        "encoder_hidden_states": torch.randn(batch, text, 16, generator=generator),
        "pooled_projections": torch.randn(batch, 16, generator=generator),
        "timestep": torch.tensor([500.0] * batch),
    }


class Recorder(AttentionController):
    def __init__(self, replace_with_uniform: bool = False):
        self.maps, self.uniform = {}, replace_with_uniform

    def attention(self, site, probs):
        self.maps[site] = probs.detach().clone()
        return torch.full_like(probs, 1 / probs.shape[-1]) if self.uniform else probs


@torch.no_grad()
def test_sd3_sites_are_joint_with_text_last_and_control_matches_diffusers():
    transformer, inputs = tiny_sd3(), sd3_inputs()
    sites = attention_sites(transformer, 8)
    assert [site.name for site in sites] == ["transformer_blocks.0.attn", "transformer_blocks.1.attn"]
    assert all(s.kind == "joint" and s.text_position == "last" and s.resolution == 4 for s in sites)
    stock = transformer(**inputs).sample
    recorder = Recorder()
    recorder.num_branches = 2
    with attention_control(transformer, recorder, 8):
        controlled = transformer(**inputs).sample
    torch.testing.assert_close(controlled, stock, rtol=1e-4, atol=1e-5)  # explicit softmax vs fused kernel
    for site, probs in recorder.maps.items():
        assert probs.shape == (1, 2, 2, 16 + 5, 16 + 5)  # (halves, branches, heads, queries, keys)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=0, atol=1e-5)
        assert image_to_text(site, probs).shape == (1, 2, 2, 16, 5)
        assert image_to_image(site, probs).shape == (1, 2, 2, 16, 16)
    assert transformer(**inputs).sample.equal(stock)  # the stock processors are back
    uniform = Recorder(replace_with_uniform=True)
    uniform.num_branches = 2
    with attention_control(transformer, uniform, 8):
        edited = transformer(**inputs).sample
    assert float((edited - stock).abs().max()) > 1e-3  # the maps the controller returns are the ones used


@torch.no_grad()
def test_flux_sites_put_text_first_and_control_matches_diffusers():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    flux = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4),
    ).eval()  # fmt: skip
    sites = attention_sites(flux, 8)  # 8×8 latents, packed into a 4×4 grid of 2×2 patches
    assert {site.name for site in sites} == {"transformer_blocks.0.attn", "single_transformer_blocks.0.attn"}
    assert all(s.kind == "joint" and s.text_position == "first" and s.resolution == 4 for s in sites)
    generator = torch.Generator().manual_seed(1)
    rows, columns = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    inputs = {
        "hidden_states": torch.randn(2, 16, 16, generator=generator),
        "encoder_hidden_states": torch.randn(2, 5, 16, generator=generator),
        "pooled_projections": torch.randn(2, 16, generator=generator),
        "timestep": torch.tensor([0.5, 0.5]),
        "img_ids": torch.stack([torch.zeros_like(rows), rows, columns], -1).reshape(-1, 3).float(),
        "txt_ids": torch.zeros(5, 3),
    }
    stock = flux(**inputs).sample
    recorder = Recorder()
    recorder.num_branches = 2
    with attention_control(flux, recorder, 8):
        controlled = flux(**inputs).sample
    torch.testing.assert_close(controlled, stock, rtol=1e-4, atol=1e-5)  # explicit softmax vs fused kernel
    for site, probs in recorder.maps.items():
        assert probs.shape == (1, 2, 2, 5 + 16, 5 + 16)  # (halves, branches, heads, queries, keys), text first
        assert image_to_text(site, probs).shape == (1, 2, 2, 16, 5)
    assert flux(**inputs).sample.equal(stock)  # the stock processors are back

    class ZeroValues(AttentionController):
        def wants(self, site):
            return False

        def values(self, site, value):
            return torch.zeros_like(value) if site.name.startswith("single") else value

    with attention_control(flux, ZeroValues(), 8):
        edited = flux(**inputs).sample
    assert float((edited - stock).abs().max()) > 1e-4  # the values the controller returns are the ones used
