"""The SDXL backbone (invbench/backbones/sdxl.py) on the embedded sdxl_tiny: its conditioning layout, its loaders,
the DDIM invariants, every method that declares the family, and launch.py end to end."""

import pytest
import torch
from conftest import FAST, conf_file, relative_error, run, weights_digest
from omegaconf import OmegaConf

from editors import EDITORS
from invbench.images import fit_square
from invbench.models import load_model
from invbench.results import read_rows
from inversions import INVERSIONS

CPU = torch.device("cpu")
SCHEDULER = conf_file("scheduler/ddim.yaml")
STEPS = 4


@pytest.fixture(scope="module")
def sdxl_tiny():
    return load_model(conf_file("model/sdxl_tiny.yaml") | {"resolution": 64}, SCHEDULER, CPU)


@pytest.fixture(scope="module")
def sdxl_latent(sdxl_tiny, sample):
    return sdxl_tiny.encode_image(fit_square(sample.read_image(), 64))


def test_conditioning_is_both_encoders_tokens_then_the_pooled_row(sdxl_tiny):
    backbone = sdxl_tiny.backbone
    conditioning = sdxl_tiny.encode_prompts(["", "a photo of a cat"])
    assert conditioning.shape == (2, 78, 32 + 48)  # 77 token rows of D1 + D2, one pooled row
    prompts = ["", "a photo of a cat"]
    ids = sdxl_tiny.tokenizer(prompts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    first = backbone.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    second = backbone.text_encoder_2(ids, output_hidden_states=True)
    assert torch.equal(conditioning[:, :77, :32], first)  # same batch, same kernels: bit for bit
    assert torch.equal(conditioning[:, :77, 32:], second.hidden_states[-2])
    assert torch.equal(conditioning[:, 77, :48], second.text_embeds) and not conditioning[:, 77, 48:].any()
    assert sdxl_tiny.family == "sdxl" and backbone.time_ids.tolist() == [[64, 64, 0, 0, 64, 64]]


def test_the_denoiser_reads_tokens_pooled_embedding_and_time_ids(sdxl_tiny, sdxl_latent):
    conditioning = sdxl_tiny.encode_prompts(["a photo of a cat"])
    noise = sdxl_tiny.predict_noise(sdxl_latent, 501, conditioning)
    pooled_moved = conditioning.clone()
    pooled_moved[:, 77, :48] += 1.0
    tokens_moved = conditioning.clone()
    tokens_moved[:, :77] += 1.0
    for changed in (pooled_moved, tokens_moved):
        assert relative_error(sdxl_tiny.predict_noise(sdxl_latent, 501, changed), noise) > 1e-3
    added = sdxl_tiny.denoiser.add_embedding.linear_1.in_features
    assert added == 48 + 6 * 8  # pooled projection + six time ids of 8 sinusoidal channels, as SDXL's 1280 + 6·256


def test_sdxl_tiny_is_deterministic_and_the_pretrained_loader_reads_its_folder(sdxl_tiny, tmp_path, sdxl_latent):
    again = load_model(conf_file("model/sdxl_tiny.yaml") | {"resolution": 64}, SCHEDULER, CPU)
    for name, module in again.backbone.modules().items():
        assert weights_digest(module) == weights_digest(sdxl_tiny.backbone.modules()[name])
    parts = sdxl_tiny.backbone
    for name, part in (
        ("unet", parts.denoiser),
        ("vae", parts.vae),
        ("text_encoder", parts.text_encoder),
        ("text_encoder_2", parts.text_encoder_2),
        ("tokenizer", parts.tokenizer),
        ("tokenizer_2", parts.tokenizer_2),
    ):
        part.save_pretrained(tmp_path / name)
    loaded = load_model(conf_file("model/sdxl.yaml") | {"path": str(tmp_path), "resolution": 64}, SCHEDULER, CPU)
    assert loaded.family == "sdxl" and loaded.weights == str(tmp_path)
    prompts = ["a photo of a cat"]
    assert torch.equal(loaded.encode_prompts(prompts), sdxl_tiny.encode_prompts(prompts))
    conditioning = sdxl_tiny.encode_prompts(prompts)
    assert torch.equal(
        loaded.predict_noise(sdxl_latent, 981, conditioning), sdxl_tiny.predict_noise(sdxl_latent, 981, conditioning)
    )


def test_ddim_inversion_reconstructs_at_guidance_1_and_drifts_at_7_5(sdxl_tiny, sdxl_latent, sample):
    """As tests/test_ddim.py on the SD tiny model (and real SD): the invariant that makes inversion methods matter."""
    inverted = INVERSIONS.build({"name": "ddim", "num_steps": 10, "guidance_scale": 1.0}).invert(
        sdxl_tiny, sdxl_latent, sample
    )
    errors = {}
    for guidance in (1.0, 7.5):
        direct = EDITORS.build({"name": "direct", "guidance_scale": guidance})
        errors[guidance] = relative_error(direct.edit(sdxl_tiny, inverted, sample).reconstruction, sdxl_latent)
    assert errors[1.0] < 0.1 and errors[7.5] > 3 * errors[1.0], errors


def declared(registry, axis: str) -> list[str]:
    names = sorted(path.stem for path in conf_file.__globals__["CONF"].joinpath(axis).glob("*.yaml"))
    return [name for name in names if "sdxl" in registry.get(_config(axis, name)["name"]).families]


def _config(axis: str, name: str, **overrides) -> dict:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_file.__globals__["CONF"]), version_base=None):
        job = compose("config", [f"{axis}={name}", f"num_steps={STEPS}", *[f"{k}={v}" for k, v in overrides.items()]])
    return OmegaConf.to_container(job[axis], resolve=True)


# Exact inversions reconstruct through the direct editor on SDXL as on SD; the others only have to run.
EXACT = {"directinversion": 1e-4, "edict": 1e-4, "spdinv": 0.2}


@pytest.mark.ci_only  # about 40 s for all on 2 cores; .ci/run runs it
@pytest.mark.parametrize("name", declared(INVERSIONS, "inversion"))
def test_every_inversion_declaring_sdxl_runs_on_it(name, sdxl_tiny, sdxl_latent, sample):
    from orchestration.compatibility import incompatibilities

    overrides = {"inversion.lambda_kl": 0.01} if name.startswith("pix2pix_zero") else {}  # 20 overflows the tiny model
    inversion = INVERSIONS.build(_config("inversion", name, **overrides))
    editor = EDITORS.build(_config("editor", "direct"))
    if incompatibilities(inversion, editor):
        editor = EDITORS.build(
            _config("editor", "direct", **{"editor.guidance_scale": inversion.tuned_for_guidance()})
        )
    result = inversion.invert(
        sdxl_tiny, inversion.encode_source(sdxl_tiny, fit_square(sample.read_image(), 64)), sample
    )
    edit = editor.edit(sdxl_tiny, result, editor.prepare_sample(sample))
    assert torch.isfinite(edit.edited).all() and torch.isfinite(edit.reconstruction).all()
    if name in EXACT:
        assert relative_error(edit.reconstruction, result.latents[0]) < EXACT[name]


@pytest.mark.ci_only  # about 15 s for all on 2 cores; .ci/run runs it
@pytest.mark.parametrize("name", declared(EDITORS, "editor"))
def test_every_editor_declaring_sdxl_edits_a_ddim_inversion_on_it(name, sdxl_tiny, sdxl_latent, sample):
    editor = EDITORS.build(_config("editor", name))
    inversion = INVERSIONS.build(_config("inversion", "ddim"))
    seen = editor.prepare_sample(sample)
    edit = editor.edit(sdxl_tiny, inversion.invert(sdxl_tiny, sdxl_latent, seen), seen)
    assert edit.edited.shape == sdxl_latent.shape and torch.isfinite(edit.edited).all()
    assert relative_error(edit.edited, edit.reconstruction) > 1e-4  # the target prompt moved the edit


def test_a_method_without_sdxl_is_refused_before_the_model_loads(tmp_path):
    code, output = run(
        "launch.py",
        *FAST,
        "model=sdxl_tiny",
        "inversion=todinv",
        "editor=p2p",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert code == 2 and "Traceback" not in output, output
    assert "inversion=todinv works on the model families ['sd'], but model=sdxl_tiny is of family 'sdxl'" in output
    assert "RANDOM weights" not in output  # refused from the configuration, before any model was built


@pytest.mark.ci_only  # about 60 s on 2 cores; .ci/run runs it
def test_launch_runs_ddim_with_four_editors_and_nti_on_sdxl_tiny(tmp_path):
    sweep = tmp_path / "sweep"
    code, output = run(
        "launch.py", "-m", *FAST, "model=sdxl_tiny", "inversion=ddim,nti", "editor=direct,p2p,masactrl,pnp",
        "dataset.categories=[1]", f"hydra.run.dir={tmp_path}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "an SDXL-architecture model with RANDOM weights" in output
    folders = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(folders) == 8
    for folder in folders:
        (row,) = read_rows(folder / "results.jsonl")
        assert row["status"] == "ok" and row["model"] == "sdxl_tiny", (folder.name, row.get("error"))
        assert (folder / row["edited_image"]).is_file()
