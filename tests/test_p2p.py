"""Attention control and Prompt-to-Prompt / P2Plus on the tiny model (8×8 latents, 10 steps)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import conf_file, relative_error

from editors import EDITORS, denoise_branches
from editors.p2p import LocalBlend
from editors.prompt_tokens import refinement_mapper, replacement_mapper, swap_compatible, token_positions
from invbench.attention import AttentionSite, AttentionStore, attention_sites
from inversions import INVERSIONS

STEPS = 10


@pytest.fixture(scope="module")
def inverted(tiny_model, sample):
    from invbench.images import fit_square

    latent = tiny_model.encode_image(fit_square(sample.read_image(), tiny_model.resolution))
    return INVERSIONS.build(conf_file("inversion/ddim.yaml") | {"num_steps": STEPS}).invert(tiny_model, latent, sample)


def editor(name: str, **overrides):
    config = conf_file("editor/p2p.yaml") | {"name": name}
    if name == "p2plus":
        config |= {"uncond_self_replace_steps": 0.5}
    return EDITORS.build(config | overrides)


def with_prompts(sample, source, target, blended=None):
    return dataclasses.replace(sample, source_prompt=source, target_prompt=target, blended_words=blended)


def spy(control):
    """Record the maps the controller hands back: seen[(step, site)] = (halves, branches, heads, queries, keys)."""
    seen, original = {}, control.attention

    def attention(site, probs):
        out = original(site, probs)
        seen[(control.step, site)] = out.clone()
        return out

    control.attention = attention
    return seen


def test_sites_map_module_names_to_resolution_levels(tiny_model):
    levels = {
        (s.name.split(".transformer_blocks")[0], s.is_cross): s.resolution
        for s in attention_sites(tiny_model.denoiser, 64)
    }
    assert levels[("down_blocks.1.attentions.0", True)] == 32 and levels[("down_blocks.2.attentions.0", False)] == 16
    assert levels[("mid_block.attentions.0", True)] == 8
    assert levels[("up_blocks.1.attentions.1", True)] == 16 and levels[("up_blocks.2.attentions.0", True)] == 32
    assert {s.place for s in attention_sites(tiny_model.denoiser, 64)} == {"down", "mid", "up"}


def test_cross_attention_maps_are_recorded_per_step_layer_and_branch(tiny_model, inverted):
    store = AttentionStore(num_branches=2, cross=True, self_attention=True)
    cond = tiny_model.encode_prompts(["a cat", "a dog"])
    controlled = denoise_branches(tiny_model, inverted, cond, 7.5, store)
    plain = denoise_branches(tiny_model, inverted, cond, 7.5)
    torch.testing.assert_close(controlled, plain, rtol=1e-4, atol=1e-5)  # recording changes nothing
    assert sorted(store.maps) == list(range(STEPS))
    cross_sites = [s for s in attention_sites(tiny_model.denoiser, 8) if s.is_cross]
    for site in cross_sites:
        maps = store.maps[3][site]
        assert maps.shape == (2, 2, site.resolution**2, 77)  # (uncond/cond, branches, queries, tokens)
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    site = next(s for s in store.maps[0] if not s.is_cross)
    assert store.maps[0][site].shape[-1] == site.resolution**2  # self-attention: queries x queries


@pytest.mark.parametrize("name", ["p2p", "p2plus"])
def test_identical_prompts_leave_the_target_equal_to_the_source(tiny_model, inverted, sample, name):
    same = with_prompts(sample, "a cat sitting on a mat", "a cat sitting on a mat", blended=("cat", "cat"))
    result = editor(name, reweight=None).edit(tiny_model, inverted, same)  # re-weighting would change the target
    torch.testing.assert_close(result.edited, result.reconstruction, rtol=0, atol=1e-5)
    assert result.info["local_blend"] is True


def test_replace_with_full_window_gives_the_target_the_source_cross_attention(tiny_model, inverted, sample):
    swapped = with_prompts(sample, "a cat sitting on a mat", "a dog sitting on a mat")
    edit = editor("p2p", controller="replace", cross_replace_steps=1.0, reweight=None)
    control, info = edit.build_control(tiny_model, inverted, swapped)
    assert info["controller"] == "replace"
    seen = spy(control)
    denoise_branches(
        tiny_model,
        inverted,
        tiny_model.encode_prompts(["a cat sitting on a mat", "a dog sitting on a mat"]),
        7.5,
        control,
    )
    cross = [(key, maps) for key, maps in seen.items() if key[1].is_cross]
    assert len(cross) == STEPS * sum(s.is_cross for s in attention_sites(tiny_model.denoiser, 8))
    for _, maps in cross:
        assert torch.equal(maps[-1, 1], maps[-1, 0])  # conditional half: target reads the source's maps
    # the unconditional half is untouched: there the branches' maps differ as their latents do
    assert max(float((maps[0, 1] - maps[0, 0]).abs().max()) for _, maps in cross) > 1e-4


def test_reweight_scales_exactly_the_chosen_token(tiny_model, inverted, sample):
    swapped = with_prompts(sample, "a cat sitting on a mat", "a dog sitting on a mat", blended=("cat", "dog"))
    edit = editor("p2p", controller="replace", cross_replace_steps=1.0, reweight=2.0, local_blend=False)
    control, info = edit.build_control(tiny_model, inverted, swapped)
    (dog,) = info["reweighted_tokens"]
    assert dog == token_positions(tiny_model.tokenizer, "a dog sitting on a mat", "dog")[0] == 2
    seen = spy(control)
    denoise_branches(
        tiny_model, inverted, tiny_model.encode_prompts([swapped.source_prompt, swapped.target_prompt]), 7.5, control
    )
    for (_, site), maps in seen.items():
        if site.is_cross:
            source, target = maps[-1, 0], maps[-1, 1]
            assert torch.equal(target[..., dog], source[..., dog] * 2)
            others = [i for i in range(77) if i != dog]
            assert torch.equal(target[..., others], source[..., others])


def test_local_blend_keeps_the_source_outside_the_mask():
    """Hand-made maps: both blended words attend to the top-left cell of a 4×4 map, so after the 3×3 max-pool the
    region is the top-left 2×2 cells, i.e. the top-left 4×4 of an 8×8 latent."""
    weights = torch.zeros(2, 77)
    weights[0, 2], weights[1, 3] = 1, 1  # source word at token 2, target word at token 3
    blend = LocalBlend(weights, start_step=2, threshold=0.3, map_resolution=4)
    site = AttentionSite("up_blocks.1.attentions.0.transformer_blocks.0.attn2", "up", True, 4)
    maps = torch.full((2, 1, 16, 77), 1 / 77)
    maps[0, 0, 0, 2] = maps[1, 0, 0, 3] = 0.5
    blend.record(site, maps)
    latents = torch.stack([torch.zeros(4, 8, 8), torch.ones(4, 8, 8)])
    assert torch.equal(blend(1, latents), latents)  # before the start step nothing happens
    blended = blend(2, latents)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:4, :4] = True
    assert torch.equal(blend.mask[1, 0], expected)
    assert torch.equal(blended[1][:, ~expected], latents[0][:, ~expected])  # outside: the source
    assert torch.equal(blended[1][:, expected], latents[1][:, expected])  # inside: the edit
    assert torch.equal(blended[0], latents[0])


def test_local_blend_runs_from_its_start_step(tiny_model, inverted, sample):
    swapped = with_prompts(sample, "a cat sitting on a mat", "a dog sitting on a mat", blended=("cat", "dog"))
    control, _ = editor("p2p").build_control(tiny_model, inverted, swapped)
    blend, applied = control.local_blend, []

    def tracking(step, latents):
        blend.mask = None
        out = blend(step, latents)
        if blend.mask is not None:  # a mask was computed and applied at this step
            applied.append(step)
        return out

    control.end_step = tracking
    denoise_branches(
        tiny_model, inverted, tiny_model.encode_prompts([swapped.source_prompt, swapped.target_prompt]), 7.5, control
    )
    assert applied == list(range(int(0.2 * STEPS), STEPS))  # from step int(0.2·steps) + 1 on (1-based)


def test_the_blend_records_the_target_maps_after_the_edit(tiny_model, inverted, sample):
    """The reference's store keeps a view of the maps that the edit then overwrites, so its blend sums the edited
    target maps. With replace over the whole window the target's edited maps are the source's: so are its sums."""
    swapped = with_prompts(sample, "a cat sitting on a mat", "a dog sitting on a mat", blended=("cat", "dog"))
    edit = editor("p2p", controller="replace", cross_replace_steps=1.0, reweight=None)
    control, _ = edit.build_control(tiny_model, inverted, swapped)
    denoise_branches(
        tiny_model, inverted, tiny_model.encode_prompts([swapped.source_prompt, swapped.target_prompt]), 7.5, control
    )
    for summed in control.local_blend.summed_maps.values():
        assert torch.equal(summed[1], summed[0])  # copies, summed in the same order: equal bit for bit


@pytest.mark.parametrize(
    ("blended", "blends", "reweighted", "says"),
    [
        (("cat", "tiger"), True, False, "the target blends with the source word's region only, not re-weighted"),
        (("lion", "dog"), True, True, "the target blends with the target word's region only"),
        (("lion", "tiger"), True, False, "the target is the source (no edit)"),
    ],
)
def test_missing_blended_words_behave_as_in_the_reference(
    tiny_model, inverted, sample, caplog, blended, blends, reweighted, says
):
    odd = with_prompts(sample, "a cat sitting on a mat", "a dog sitting on a mat", blended=blended)
    result = editor("p2p").edit(tiny_model, inverted, odd)
    assert result.info["local_blend"] is blends and says in result.info["blend_note"] and says in caplog.text
    assert ("reweighted_tokens" in result.info) is reweighted
    if blended == ("lion", "tiger"):  # both regions empty: every blend step puts the source into the target
        assert torch.equal(result.edited, result.reconstruction)  # x_src + 0 · (x_tgt − x_src) is x_src exactly
    else:
        assert relative_error(result.edited, result.reconstruction) > 1e-3


def test_an_empty_word_weight_gives_an_empty_region_and_the_union_keeps_the_other():
    weights = torch.zeros(2, 77)
    weights[0, 2] = 1  # the target word is missing: its row stays zero
    blend = LocalBlend(weights, start_step=0, threshold=0.3, map_resolution=4)
    site = AttentionSite("up_blocks.1.attentions.0.transformer_blocks.0.attn2", "up", True, 4)
    maps = torch.full((2, 1, 16, 77), 1 / 77)
    maps[0, 0, 0, 2] = 0.5
    blend.record(site, maps)
    blend(0, torch.zeros(2, 4, 8, 8))
    assert torch.equal(blend.mask[1], blend.mask[0]) and blend.mask[0].any() and not blend.mask[0].all()


def test_p2plus_replaces_unconditional_self_attention_in_its_window(tiny_model, inverted, sample):
    swapped = with_prompts(sample, "a cat sitting on a mat", "a dog sitting on a mat")
    control, _ = editor("p2plus", self_replace_steps=0.0).build_control(tiny_model, inverted, swapped)
    seen = spy(control)
    denoise_branches(
        tiny_model, inverted, tiny_model.encode_prompts([swapped.source_prompt, swapped.target_prompt]), 7.5, control
    )
    for (step, site), maps in seen.items():
        if not site.is_cross and site.resolution > 1:  # a 1×1 map is 1 whatever happens
            difference = float((maps[0, 1] - maps[0, 0]).abs().max())
            if step < STEPS // 2:  # τ_u = 0.5 of 10 steps: the target's maps are a copy of the source's
                assert difference == 0, (step, site)
            else:  # after it, they follow the target's own latent
                assert difference > 1e-6, (step, site)


def test_token_positions_and_refinement_alignment(tiny_model):
    tokenizer = tiny_model.tokenizer
    assert token_positions(tokenizer, "a photo of a cat", "cat") == [5]
    assert token_positions(tokenizer, "a cat and a cat", "cat") == [2, 5]
    assert token_positions(tokenizer, "a cat, sitting", "cat,") == [2, 3]  # the word's two tokens
    assert token_positions(tokenizer, "a  cat", "cat") == []  # a double space: the reference's count misses it
    assert token_positions(tokenizer, "a cat", "dog") == []
    mapper, alphas = refinement_mapper(tokenizer, "a cat", "a black cat")
    # target tokens: <start> a black cat <end>: "black" is new, the rest read their source token
    assert mapper[:5].tolist()[:2] == [0, 1] and mapper[3:5].tolist() == [2, 3]
    assert (
        alphas[:5].tolist() == [1, 1, 0, 1, 1] and alphas[5:].eq(1).all() and mapper[5:].tolist() == list(range(5, 77))
    )
    assert swap_compatible(tokenizer, "a cat", "a dog") and not swap_compatible(tokenizer, "a cat", "a black cat")


def test_forced_replace_on_incompatible_prompts_fails_the_sample_clearly(tiny_model, inverted, sample):
    from invbench.errors import InvbenchError

    with pytest.raises(InvbenchError, match="controller=refine or auto"):
        editor("p2p", controller="replace").edit(tiny_model, inverted, with_prompts(sample, "a cat", "a black cat"))


def test_a_source_branch_in_the_target_prompts_tokens_is_aligned_token_for_token(tiny_model, inverted, sample):
    """PTI tunes the source branch's embedding from the target prompt's: its tokens are the target's, so the
    branches align one to one and the blend reads the target word in both (not the source word's positions)."""
    swapped = with_prompts(sample, "a cat", "a black dog sitting", blended=("cat", "dog"))
    control, info = editor("p2p").build_control(
        tiny_model, dataclasses.replace(inverted, source_tokens="target"), swapped
    )
    mapper, alphas = control.refine
    assert torch.equal(mapper, torch.arange(77)) and bool(alphas.eq(1).all())
    weights = control.local_blend.word_weights
    assert weights[0].nonzero().flatten().tolist() == weights[1].nonzero().flatten().tolist() == [3]  # "dog"
    assert info["source_tokens"] == "target" and "blend_note" not in info
    plain, _ = editor("p2p").build_control(tiny_model, inverted, swapped)
    assert plain.local_blend.word_weights[0].nonzero().flatten().tolist() == [2]  # "cat" in the source prompt


def test_word_swap_mapper_as_the_reference(tiny_model):
    tokenizer = tiny_model.tokenizer
    identity = replacement_mapper(tokenizer, "a cat sitting", "a dog sitting")  # one token each: the identity
    assert torch.equal(identity, torch.eye(77))
    source, target = "a cat on a mat", "a zebraphone on a mat"  # zebraphone: 2 tokens, cat: 1
    assert len(token_positions(tokenizer, target, "zebraphone")) == 2
    mapper = replacement_mapper(tokenizer, source, target)
    assert mapper[2, 2] == mapper[2, 3] == 0.5  # the swapped word's tokens share the source token
    assert mapper[0, 0] == mapper[1, 1] == 1
    # past the last swapped word the reference maps target position j to itself, although the source's is j - 1
    assert mapper[4, 4] == mapper[5, 5] == 1 and mapper[3, 4] == 0
    with pytest.raises(ValueError, match="same number of words"):
        replacement_mapper(tokenizer, "a cat", "a black cat")


@pytest.mark.parametrize(
    ("rule", "source", "target", "mode"),
    [
        ("auto", "a cat sitting", "a dog sitting", "replace"),
        ("auto", "a cat", "a zebraphone", "refine"),  # tokens per word differ
        ("word_count", "a cat", "a zebraphone", "replace"),  # the edit-friendly run: as many words
        ("word_count", "a cat", "a black cat", "refine"),
        ("characters", "a cat ", "a dog", "replace"),  # the StyleDiffusion run: equal length once stripped
        ("characters", "a cat", "a tiger", "refine"),
        ("refine", "a cat", "a dog", "refine"),
    ],
)
def test_replace_or_refine_by_each_reference_rule(tiny_model, rule, source, target, mode):
    from editors.p2p import _controller_mode

    assert _controller_mode(rule, tiny_model.tokenizer, source, target) == mode


def test_windows_are_sized_on_the_whole_grid(tiny_model, inverted, sample):
    """Edit-friendly DDPM's reference sizes P2P's windows on its 50-step grid while running the 38 after the skip:
    the first int(0.4 · 51) = 20 run steps for cross-attention, int(0.6 · 50) = 30 for self-attention."""
    running_38_of_50 = dataclasses.replace(inverted, grid_steps=50)
    control, _ = editor("p2p").build_control(tiny_model, running_38_of_50, sample)
    assert (control.cross_replace_until, control.self_replace_until) == (20, 30)
    control, _ = editor("p2p").build_control(tiny_model, inverted, sample)  # no grid: the steps run (10)
    assert (control.cross_replace_until, control.self_replace_until) == (4, 6)


def test_fused_attention_outside_the_windows_gives_the_same_edit_with_fewer_maps(tiny_model, inverted, sample):
    """attention_outside_windows=fused: layers no window or blend reads run fused attention; the edit equals the
    materialised run to float rounding, and maps are computed only in the windows and the blend's layers."""
    counts = {}
    results = {}
    for mode in ("materialised", "fused"):
        p2p = editor("p2p", attention_outside_windows=mode)
        control, _ = p2p.build_control(tiny_model, inverted, sample)
        seen = []
        original = control.attention

        def attention(site, probs, original=original, seen=seen):
            seen.append((control.step, site))
            return original(site, probs)

        control.attention = attention
        cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
        results[mode] = denoise_branches(tiny_model, inverted, cond, p2p.guidance_scale, control)
        counts[mode] = seen
    torch.testing.assert_close(results["fused"], results["materialised"], rtol=0, atol=1e-4)
    late = [(step, site) for step, site in counts["fused"] if step >= 6]  # after both windows (4 and 6 of 10)
    assert late and all(site.is_cross and site.resolution == 2 for _, site in late)  # the blend's 16²-equivalent maps
    assert len(counts["fused"]) < len(counts["materialised"])
