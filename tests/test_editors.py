"""The direct editor and the inversion -> editor contract (per-step uncond and cond embeddings, latent offsets)."""

import dataclasses

import torch
from conftest import relative_error

from editors import EDITORS, denoise_branches
from inversions import INVERSIONS
from inversions.base import UnconditionalEmbeddings
from inversions.direct_inversion import LatentOffsets
from inversions.prompt_tuning import TunedPrompt
from metrics import CostMeter


def invert(model, latent, sample, steps=10):
    return INVERSIONS.build({"name": "ddim", "num_steps": steps, "guidance_scale": 1.0}).invert(model, latent, sample)


def test_target_prompt_changes_the_edit_but_not_the_reconstruction(tiny_model, sample, source_latent):
    editor = EDITORS.build({"name": "direct", "guidance_scale": 7.5})
    inversion = invert(tiny_model, source_latent, sample)
    edited = editor.edit(tiny_model, inversion, sample)
    same = editor.edit(tiny_model, inversion, dataclasses.replace(sample, target_prompt=sample.source_prompt))
    assert relative_error(edited.edited, edited.reconstruction) > 1e-3
    assert torch.allclose(edited.reconstruction, same.reconstruction, atol=1e-5)


def test_unet_evaluations_match_the_algorithm(tiny_model, sample, source_latent):
    meter = CostMeter(tiny_model.denoiser, tiny_model.device)
    try:
        with meter.phase("inversion"):
            inversion = invert(tiny_model, source_latent, sample, steps=7)
        with meter.phase("edit"):
            EDITORS.build({"name": "direct", "guidance_scale": 7.5}).edit(tiny_model, inversion, sample)
    finally:
        meter.close()
    # inversion: 1 conditional evaluation per step; edit: 2 branches x (uncond + cond) per step, one batched call
    assert (meter.values["inversion_unet_evals"], meter.values["inversion_unet_calls"]) == (7, 7)
    assert (meter.values["edit_unet_evals"], meter.values["edit_unet_calls"]) == (28, 7)


def test_per_step_uncond_embeddings_are_used(tiny_model, sample, source_latent):
    inversion = invert(tiny_model, source_latent, sample)
    cond = tiny_model.encode_prompts([sample.source_prompt])
    plain = denoise_branches(tiny_model, inversion, cond, 7.5)
    empty = tiny_model.encode_prompts([""])
    explicit = dataclasses.replace(inversion, hooks=UnconditionalEmbeddings([empty] * 10))
    # "" spelled out is the same computation as the default: bit-identical (same inputs, same kernels)
    assert torch.equal(denoise_branches(tiny_model, explicit, cond, 7.5), plain)
    other = dataclasses.replace(
        inversion, hooks=UnconditionalEmbeddings([tiny_model.encode_prompts(["a photo"])] * 10)
    )
    assert relative_error(denoise_branches(tiny_model, other, cond, 7.5), plain) > 1e-3


def test_per_step_cond_embeddings_replace_the_source_prompt_in_the_source_branch_only(
    tiny_model, sample, source_latent
):
    inversion = invert(tiny_model, source_latent, sample)
    cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
    tuned = tiny_model.encode_prompts(["a photo"])
    # PTI's hooks at η = 1: the targets keep their prompt (1·c + 0·c* is c exactly)
    tuned_hooks = TunedPrompt([tuned] * 10, eta=1.0)
    with_tuned = denoise_branches(tiny_model, dataclasses.replace(inversion, hooks=tuned_hooks), cond, 7.5)
    as_prompt = denoise_branches(tiny_model, inversion, torch.cat([tuned, cond[1:]]), 7.5)
    # Both pairs are the same computation on the same inputs and shapes (only other rows of the batch differ in
    # the second), so they agree bit for bit on any CPU.
    assert torch.equal(with_tuned, as_prompt)
    assert torch.equal(with_tuned[1:], denoise_branches(tiny_model, inversion, cond, 7.5)[1:])


def test_latent_offsets_put_the_source_branch_back_on_the_trajectory(tiny_model, sample, source_latent):
    """With offsets equal to each step's residual, the source branch lands on the inversion trajectory at every
    step, so it reconstructs the source latent even at guidance 7.5 (what DirectInversion relies on)."""
    inversion = invert(tiny_model, source_latent, sample)
    schedule, latents, steps = inversion.schedule, inversion.latents, inversion.schedule.num_steps
    cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
    uncond = tiny_model.encode_prompts([""])
    offsets = []
    for i, t in enumerate(schedule.timesteps):
        start = latents[steps - i]
        with torch.no_grad():
            noise = tiny_model.guided_noise(start, t, cond[:1], uncond, 7.5)
        offsets.append(latents[steps - i - 1] - schedule.step(noise, t, start))
    corrected = denoise_branches(
        tiny_model, dataclasses.replace(inversion, hooks=LatentOffsets(offsets, targets=None)), cond, 7.5
    )
    assert relative_error(corrected[:1], source_latent) < 1e-5
    uncorrected = denoise_branches(tiny_model, inversion, cond, 7.5)
    assert relative_error(uncorrected[:1], source_latent) > 0.05
    # offsets go to the source branch only; without attention sharing the target branch cannot see them
    assert torch.allclose(corrected[1:], uncorrected[1:], atol=1e-6)
