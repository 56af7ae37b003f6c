"""The FLUX backbone (invbench/backbones/flux.py) on the embedded flux_tiny, and SD3's pretrained loader: packing,
conditioning layout, embedded guidance, FluxPipeline's schedule, loaders reading checkpoints in diffusers layout."""

import math

import numpy as np
import pytest
import torch
from conftest import conf_file, weights_digest

from invbench.backbones.flux import pack_latents, unpack_latents
from invbench.images import fit_square
from invbench.models import load_model
from metrics.cost import CostMeter

CPU = torch.device("cpu")
SCHEDULER = conf_file("scheduler/ddim.yaml")


@pytest.fixture(scope="module")
def flux_tiny():
    return load_model(conf_file("model/flux_tiny.yaml") | {"resolution": 64}, SCHEDULER, CPU)


@pytest.fixture(scope="module")
def flux_latent(flux_tiny, sample):
    return flux_tiny.encode_image(fit_square(sample.read_image(), 64))


def test_latents_pack_into_2x2_patch_tokens_and_back():
    latents = torch.arange(2 * 16 * 4 * 6, dtype=torch.float32).reshape(2, 16, 4, 6)
    tokens = pack_latents(latents)
    assert tokens.shape == (2, 2 * 3, 64)
    # token (row 1, column 2) holds channel c's 2×2 patch at rows 2-3, columns 4-5, channel-major
    assert torch.equal(tokens[0, 1 * 3 + 2, 4 * 5 : 4 * 6], latents[0, 5, 2:4, 4:6].reshape(-1))
    assert torch.equal(unpack_latents(tokens, 16, 4, 6), latents)


def test_conditioning_is_t5_tokens_then_the_pooled_clip_row(flux_tiny):
    backbone = flux_tiny.backbone
    prompts = ["", "a photo of a cat"]
    conditioning = flux_tiny.encode_prompts(prompts)
    assert conditioning.shape == (2, 32 + 1, 64)
    t5_ids = backbone.tokenizer_2(prompts, padding="max_length", max_length=32, return_tensors="pt").input_ids
    clip_ids = backbone.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    torch.testing.assert_close(conditioning[:, :32], backbone.text_encoder_2(t5_ids).last_hidden_state, rtol=0, atol=0)
    pooled = backbone.text_encoder(clip_ids).pooler_output
    torch.testing.assert_close(conditioning[:, -1, :32], pooled, rtol=0, atol=0)
    assert not conditioning[:, -1, 32:].any()  # zero padding to T5's width


def test_guidance_is_an_input_of_the_transformer_and_costs_one_evaluation(flux_tiny, flux_latent):
    assert flux_tiny.backbone.guidance_embedded
    conditioning = flux_tiny.encode_prompts(["", "a cat"])
    t = flux_tiny.schedule(10).timesteps[3]
    at_1 = flux_tiny.predict_noise(flux_latent, t, conditioning[1:], guidance=1.0)
    at_5 = flux_tiny.predict_noise(flux_latent, t, conditioning[1:], guidance=5.0)
    assert (at_1 - at_5).abs().max() > 1e-4  # the guidance embedding reaches the output
    meter = CostMeter(flux_tiny.denoiser, CPU)
    with meter.phase("guided"):
        uncond, cond = flux_tiny.noise_parts(flux_latent, t, conditioning[1:], conditioning[:1], 5.0)
    meter.close()
    assert uncond is None and torch.equal(cond, at_5) and meter.values["guided_unet_evals"] == 1


def test_schedule_is_bfl_get_schedule_for_the_token_count(flux_tiny):
    """BFL's get_schedule (used by RF-Solver and FireFlow): linspace(1, 0, N + 1) through
    exp(μ) / (exp(μ) + 1/t − 1), μ linear in the image-token count from (256, 0.5) to (4096, 1.15)."""
    steps, tokens = 8, (64 // 8 // 2) ** 2
    mu = 0.5 + (tokens - 256) * (1.15 - 0.5) / (4096 - 256)
    grid = np.linspace(1, 0, steps + 1)[:-1]
    expected = [math.exp(mu) / (math.exp(mu) + 1 / t - 1) for t in grid]
    schedule = flux_tiny.schedule(steps)
    sigmas = [float(schedule.sigma(t)) for t in schedule.timesteps]
    assert sigmas == pytest.approx(expected, abs=1e-6) and float(schedule.next_sigma(schedule.timesteps[-1])) == 0


def test_flux_tiny_is_deterministic_and_the_pretrained_loader_reads_its_folder(flux_tiny, flux_latent, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    again = load_model(conf_file("model/flux_tiny.yaml") | {"resolution": 64}, SCHEDULER, CPU)
    for name, module in again.backbone.modules().items():
        assert weights_digest(module) == weights_digest(flux_tiny.backbone.modules()[name])
    parts = flux_tiny.backbone
    for name, part in (
        ("transformer", parts.denoiser),
        ("vae", parts.vae),
        ("text_encoder", parts.text_encoder),
        ("text_encoder_2", parts.text_encoder_2),
        ("tokenizer", parts.tokenizer),
        ("tokenizer_2", parts.tokenizer_2),
        ("scheduler", FlowMatchEulerDiscreteScheduler(**conf_file("model/flux_tiny.yaml")["scheduler"])),
    ):
        part.save_pretrained(tmp_path / name)
    config = conf_file("model/flux.yaml") | {"path": str(tmp_path), "resolution": 64, "dtype": "float32"}
    loaded = load_model(config | {"t5_tokens": 32}, SCHEDULER, CPU)
    assert loaded.family == "flux" and loaded.weights == str(tmp_path) and loaded.backbone.guidance_embedded
    conditioning = flux_tiny.encode_prompts(["a photo of a cat"])
    assert torch.equal(loaded.encode_prompts(["a photo of a cat"]), conditioning)
    assert loaded.schedule(8).timesteps == flux_tiny.schedule(8).timesteps
    t = flux_tiny.schedule(8).timesteps[2]
    # the loaded transformer's weights are equal (digests) but laid out anew: kernels may round differently (3e-8)
    expected = flux_tiny.predict_noise(flux_latent, t, conditioning)
    torch.testing.assert_close(loaded.predict_noise(flux_latent, t, conditioning), expected, rtol=0, atol=1e-6)


def test_sd3_pretrained_loader_reads_a_diffusers_folder(tmp_path, sample):
    from diffusers import FlowMatchEulerDiscreteScheduler

    tiny_config = conf_file("model/sd3_tiny.yaml") | {"resolution": 64}
    sd3_tiny = load_model(tiny_config, SCHEDULER, CPU)
    parts = sd3_tiny.backbone
    for name, part in (
        ("transformer", parts.denoiser),
        ("vae", parts.vae),
        ("text_encoder", parts.text_encoder),
        ("text_encoder_2", parts.text_encoder_2),
        ("text_encoder_3", parts.text_encoder_3),
        ("tokenizer", parts.tokenizer),
        ("tokenizer_2", parts.tokenizer_2),
        ("tokenizer_3", parts.tokenizer_3),
        ("scheduler", FlowMatchEulerDiscreteScheduler(**tiny_config["scheduler"])),
    ):
        part.save_pretrained(tmp_path / name)
    config = conf_file("model/sd3.yaml") | {"path": str(tmp_path), "resolution": 64, "dtype": "float32"}
    loaded = load_model(config | {"t5_tokens": 32}, SCHEDULER, CPU)
    assert loaded.family == "sd3" and not loaded.backbone.guidance_embedded
    latent = sd3_tiny.encode_image(fit_square(sample.read_image(), 64))
    conditioning = sd3_tiny.encode_prompts(["a photo of a cat"])
    assert torch.equal(loaded.encode_prompts(["a photo of a cat"]), conditioning)
    expected = sd3_tiny.predict_noise(latent, 500.0, conditioning)
    torch.testing.assert_close(loaded.predict_noise(latent, 500.0, conditioning), expected, rtol=0, atol=1e-6)


def test_a_missing_flux_checkpoint_says_how_to_provide_it(tmp_path):
    from invbench.errors import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="hf download black-forest-labs/FLUX.1-dev"):
        load_model(conf_file("model/flux.yaml") | {"dtype": "float32"}, SCHEDULER, CPU)
