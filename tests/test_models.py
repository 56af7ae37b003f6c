"""Model loading: the offline tokenizer, the deterministic tiny model, real checkpoints from local folders only."""

import pytest
import torch
from conftest import conf_file, weights_digest

from invbench.errors import ConfigError, ModelNotAvailableError
from invbench.images import fit_square
from invbench.models import load_model
from invbench.registry import Registry
from inversions import INVERSIONS

CPU = torch.device("cpu")
SCHEDULER = conf_file("scheduler/ddim.yaml")


def test_tokenizer_matches_openai_clip_ids(tiny_model):
    assert tiny_model.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tiny_model.tokenizer.pad_token == "<|endoftext|>" and tiny_model.tokenizer.model_max_length == 77


def test_tiny_model_is_deterministic_and_tame(tiny_model, sample):
    again = load_model(conf_file("model/tiny.yaml") | {"resolution": 64}, SCHEDULER, CPU)
    for name, module in again.backbone.modules().items():
        assert weights_digest(module) == weights_digest(tiny_model.backbone.modules()[name])
    latent = tiny_model.encode_image(fit_square(sample.read_image(), 64))
    assert latent.shape == (1, 4, 8, 8)
    assert 0.5 < float(latent.std()) < 2.0  # tame VAE scaling: unit-variance latents, as SD's 0.18215 gives
    embeddings = tiny_model.encode_prompts(["", "a cat"])
    assert embeddings.shape == (2, 77, 32)


def test_missing_stable_diffusion_says_how_to_provide_it():
    config = conf_file("model/sd14.yaml") | {"repo_id": "invbench-tests/never-cached-sd"}
    with pytest.raises(ModelNotAvailableError) as error:
        load_model(config, SCHEDULER, CPU)
    message = str(error.value)
    for hint in (
        "'sd14'",
        "invbench-tests/never-cached-sd",
        "never downloads",
        "hf download",
        "model.path=",
        "model=tiny",
    ):
        assert hint in message


def test_model_path_that_is_not_a_folder(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="model.path=.* is not a folder"):
        load_model(conf_file("model/sd15.yaml") | {"path": str(tmp_path / "nope")}, SCHEDULER, CPU)


def test_stable_diffusion_loader_reads_a_local_diffusers_folder(tmp_path, tiny_model, sample):
    """The real-checkpoint code path, exercised with the tiny weights saved in diffusers layout."""
    parts = tiny_model.backbone
    for name, part in (("unet", parts.denoiser), ("vae", parts.vae), ("text_encoder", parts.text_encoder)):
        part.save_pretrained(tmp_path / name)
    parts.tokenizer.save_pretrained(tmp_path / "tokenizer")
    loaded = load_model(conf_file("model/sd14.yaml") | {"path": str(tmp_path), "resolution": 64}, SCHEDULER, CPU)
    assert loaded.name == "sd14" and loaded.weights == str(tmp_path)
    for name, module in loaded.backbone.modules().items():
        assert weights_digest(module) == weights_digest(tiny_model.backbone.modules()[name])
    latent = loaded.encode_image(fit_square(sample.read_image(), 64))
    ddim = INVERSIONS.build({"name": "ddim", "num_steps": 5, "guidance_scale": 1.0})
    assert torch.equal(
        ddim.invert(loaded, latent, sample).noise_latent, ddim.invert(tiny_model, latent, sample).noise_latent
    )


def test_unknown_model_kind_and_dtype():
    with pytest.raises(ConfigError, match="kind 'onnx'"):
        load_model(conf_file("model/tiny.yaml") | {"kind": "onnx"}, SCHEDULER, CPU)
    with pytest.raises(ConfigError, match="model.dtype='fp8'"):
        load_model(conf_file("model/tiny.yaml") | {"dtype": "fp8"}, SCHEDULER, CPU)


def test_registry_lookup_and_hyperparameter_checks():
    assert INVERSIONS.get("DDIM").name == "ddim"  # names are case-insensitive
    with pytest.raises(ConfigError, match="unknown inversion 'nope'. Available: aidi_plain, ddim, directinversion"):
        INVERSIONS.get("nope")
    with pytest.raises(ConfigError, match=r"conf/inversion/ddim.yaml: unknown hyperparameter\(s\) \['lr'\]"):
        INVERSIONS.build({"name": "ddim", "num_steps": 5, "guidance_scale": 1.0, "lr": 0.1})
    with pytest.raises(ConfigError, match=r"missing hyperparameter\(s\) \['guidance_scale'\]"):
        INVERSIONS.build({"name": "ddim", "num_steps": 5})
    assert isinstance(INVERSIONS.build({"name": "ddim", "num_steps": 5, "guidance_scale": 1}).guidance_scale, float)
    registry = Registry("editor")
    registry.register("x")(type("X", (), {}))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("X")(type("Y", (), {}))


def test_warm_up_runs_the_job_shapes(tiny_model):
    from metrics import CostMeter

    meter = CostMeter(tiny_model.denoiser, tiny_model.device)
    with meter.phase("warm_up"):
        tiny_model.warm_up()
    with meter.phase("batched"):
        tiny_model.warm_up(batches=(1, 16), backward=False)
    meter.close()
    # batches 1, 2 and 4, then one batch-1 forward whose output is differentiated
    assert meter.values["warm_up_unet_calls"] == 4 and meter.values["warm_up_unet_evals"] == 1 + 2 + 4 + 1
    assert meter.values["warm_up_unet_backward_evals"] == 1
    assert meter.values["batched_unet_evals"] == 1 + 16 and meter.values["batched_unet_backward_evals"] == 0


def test_decoding_rounds_or_truncates_as_the_reference(tiny_model, source_latent):
    """The reference's latent2image truncates ((image * 255).astype(np.uint8)); rounding is one level higher on
    the pixels whose fraction is at least one half."""
    import numpy as np

    rounded = tiny_model.decode_latents(source_latent)[0].astype(int)
    truncated = tiny_model.decode_latents(source_latent, "truncate")[0].astype(int)
    with torch.no_grad():
        pixels = tiny_model.vae.decode(source_latent / tiny_model.vae.config.scaling_factor).sample
    values = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(truncated, np.floor(values).astype(int))  # the same float ops, then toward zero
    assert set(np.unique(rounded - truncated)) <= {0, 1}
    assert 0.3 < (rounded != truncated).mean() < 0.7  # about half of the pixels (48% in the oracle run)
    with pytest.raises(ValueError, match="quantisation='nearest'"):
        tiny_model.decode_latents(source_latent, "nearest")


def test_a_vae_with_a_shift_factor_centres_its_latents(tiny_model, sample):
    """SD3's and FLUX's VAEs store latents as (z − shift) · scale; SD's have no shift (None) and are untouched."""
    image = fit_square(sample.read_image(), 64)
    assert tiny_model.vae.config.shift_factor is None
    plain = tiny_model.encode_image(image)
    tiny_model.vae.register_to_config(shift_factor=0.5)
    try:
        shifted = tiny_model.encode_image(image)
        decoded = tiny_model.decode_latents(shifted)[0]
    finally:
        tiny_model.vae.register_to_config(shift_factor=None)
    torch.testing.assert_close(shifted, plain - 0.5 * tiny_model.vae.config.scaling_factor, rtol=0, atol=1e-5)
    difference = decoded.astype(int) - tiny_model.decode_latents(plain)[0].astype(int)
    assert abs(difference).max() <= 1  # the same image, up to rounding at a quantisation level
