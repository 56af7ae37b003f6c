"""The SD3 backbone (invbench/backbones/sd3.py) on the embedded sd3_tiny: conditioning layout, the 16-channel VAE
with its shift, the flow-matching schedule, plain flow inversion's first-order error, and launch.py end to end."""

import itertools

import pytest
import torch
from conftest import FAST, conf_file, relative_error, run

from editors import EDITORS
from invbench.flow_matching import FlowMatchSchedule
from invbench.images import fit_square
from invbench.models import load_model
from invbench.results import read_rows
from inversions import INVERSIONS


@pytest.fixture(scope="module")
def sd3_tiny():
    return load_model(
        conf_file("model/sd3_tiny.yaml") | {"resolution": 64}, conf_file("scheduler/ddim.yaml"), torch.device("cpu")
    )


@pytest.fixture(scope="module")
def sd3_latent(sd3_tiny, sample):
    return sd3_tiny.encode_image(fit_square(sample.read_image(), 64))


def test_conditioning_is_clip_tokens_then_t5_tokens_then_the_pooled_row(sd3_tiny):
    backbone = sd3_tiny.backbone
    prompts = ["", "a photo of a cat"]
    conditioning = sd3_tiny.encode_prompts(prompts)
    assert conditioning.shape == (2, 77 + 32 + 1, 96)
    ids = sd3_tiny.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    first = backbone.text_encoder(ids, output_hidden_states=True)
    second = backbone.text_encoder_2(ids, output_hidden_states=True)
    torch.testing.assert_close(conditioning[:, :77, :32], first.hidden_states[-2], rtol=0, atol=0)
    torch.testing.assert_close(conditioning[:, :77, 32:80], second.hidden_states[-2], rtol=0, atol=0)
    assert not conditioning[:, :77, 80:].any() and not conditioning[:, -1, 80:].any()  # zero padding to T5's width
    pooled = torch.cat([first.text_embeds, second.text_embeds], dim=-1)
    torch.testing.assert_close(conditioning[:, -1, :80], pooled, rtol=0, atol=0)


def test_the_vae_has_16_channels_and_stores_shifted_latents(sd3_tiny, sample):
    image = fit_square(sample.read_image(), 64)
    latent = sd3_tiny.encode_image(image)
    assert latent.shape == (1, 16, 8, 8) and sd3_tiny.vae.config.shift_factor == pytest.approx(0.0609)
    pixels = torch.tensor(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        mean = sd3_tiny.vae.encode(pixels).latent_dist.mean
    torch.testing.assert_close(latent, (mean - 0.0609) * 4.0, rtol=0, atol=1e-5)


def test_flow_inversion_error_is_first_order_and_guidance_drifts(sd3_tiny, sd3_latent, sample):
    """Measured on sd3_tiny: 2.2e-3, 7.9e-4, 3.9e-4 at 5, 10, 20 steps (the first halving of the step does more than
    halve the error: the shifted grid's steps are uneven; then 2.0×) and 0.04 at guidance 7.5."""
    assert isinstance(sd3_tiny.schedule(10), FlowMatchSchedule) and sd3_tiny.schedule(10).timesteps[0] == 1000.0
    errors = []
    for steps in (5, 10, 20):
        inverted = INVERSIONS.build({"name": "flow", "num_steps": steps, "guidance_scale": 1.0}).invert(
            sd3_tiny, sd3_latent, sample
        )
        result = EDITORS.build({"name": "direct", "guidance_scale": 1.0}).edit(sd3_tiny, inverted, sample)
        errors.append(relative_error(result.reconstruction, sd3_latent))
    assert errors[0] < 0.01
    for coarse, fine in itertools.pairwise(errors):
        assert 1.5 < coarse / fine < 3.2, errors  # first order: half the step, about half the error
    guided = EDITORS.build({"name": "direct", "guidance_scale": 7.5}).edit(sd3_tiny, inverted, sample)
    assert relative_error(guided.reconstruction, sd3_latent) > 10 * errors[-1]
    assert relative_error(guided.edited, guided.reconstruction) > 1e-3


@pytest.mark.ci_only  # about 20 s on 2 cores; .ci/run runs it
def test_launch_runs_flow_inversion_and_direct_on_sd3_tiny_and_refuses_eps_methods(tmp_path):
    code, output = run(
        "launch.py", *FAST, "model=sd3_tiny", "inversion=flow", "editor=direct", "dataset.categories=[1]",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "an SD3-architecture model with RANDOM weights" in output
    (row,) = read_rows(tmp_path / "run" / "results.jsonl")
    assert row["status"] == "ok" and row["model"] == "sd3_tiny" and row["inversion"] == "flow"
    # flow's own 25 steps (RF-Solver-Edit's); 2 branches × 2 halves of classifier-free guidance at 7.5
    assert row["inversion_unet_evals"] == 25 and row["edit_unet_evals"] == 100
    code, output = run(
        "launch.py", *FAST, "model=sd3_tiny", "inversion=ddim", f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert code == 2 and "inversion=ddim works on the model families ['sd', 'sdxl'], but model=sd3_tiny" in output


def test_a_half_precision_random_model_is_built_in_that_precision(monkeypatch):
    """Built in float32 and cast afterwards, sd3_random's T5-XXL (19 GB in float32) never fit in 24 GB of host memory:
    a bfloat16 random model's networks are constructed in bfloat16, and the default dtype is restored afterwards."""
    from invbench import random_sd

    seen, original = [], random_sd.random_t5_encoder

    def spy(*args, **kwargs):
        seen.append(torch.get_default_dtype())
        return original(*args, **kwargs)

    monkeypatch.setattr(random_sd, "random_t5_encoder", spy)
    config = conf_file("model/sd3_tiny.yaml") | {"resolution": 64, "dtype": "bfloat16", "seed": 7}
    model = load_model(config, conf_file("scheduler/ddim.yaml"), torch.device("cpu"))
    assert seen == [torch.bfloat16] and torch.get_default_dtype() == torch.float32
    assert {p.dtype for p in model.backbone.denoiser.parameters()} == {torch.bfloat16}
