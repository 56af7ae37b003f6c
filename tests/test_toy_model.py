"""The embedded toy model (`model=toy`, trained by benchmarks/train_toy.py): its committed weights are the ones its
config and record name, it predicts noise like a trained ε-model, its training reproduces, and (ci_only) on the mini
benchmark at 512² it reconstructs photos, orders the inversions as the papers do, and runs every SD-family method at
its reference defaults without NaN."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import CONF, REPO, conf_file, run

from invbench.errors import ModelNotAvailableError
from invbench.models import load_model

sys.path.insert(0, str(REPO / "benchmarks"))
import train_toy

RECORD = json.loads((REPO / "invbench" / "embedded" / "toy.json").read_text())
WEIGHTS = REPO / "invbench" / "embedded" / "toy.safetensors"
# Relative spread of the mean of the first 20 losses of a phase: 1 vs 2 threads on this machine moved it by 2.2e-8
# (VAE) and 1.2e-8 (UNet). Another CPU may take other convolution kernels (AVX2 vs AVX-512), whose rounding differs
# more than a thread count's; 1e-4 leaves that room and still fails on any change of seed, data, order or schedule
# (they move the mean by percents).
REPLAY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def toy():
    return load_model(conf_file("model/toy.yaml"), conf_file("scheduler/ddim.yaml"), torch.device("cpu"))


def test_the_committed_weights_are_those_the_config_and_the_record_name():
    from invbench.digests import sha256

    config = conf_file("model/toy.yaml")
    weights = REPO / "invbench" / "embedded" / config["weights"]
    assert sha256(weights.read_bytes()) == config["sha256"] == RECORD["sha256"]
    assert weights.stat().st_size <= 20 * 2**20  # small enough to commit
    assert config["tame"]["vae_scaling_factor"] == pytest.approx(RECORD["vae_scaling_factor"], rel=1e-6)


def test_changed_weights_are_refused_with_what_to_do(tmp_path, monkeypatch):
    from invbench.backbones import weights as weights_module

    copy = tmp_path / "embedded"
    shutil.copytree(REPO / "invbench" / "embedded", copy)
    with open(copy / "toy.safetensors", "r+b") as f:  # one byte of a tensor changed
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(weights_module, "EMBEDDED_WEIGHTS", copy)
    with pytest.raises(ModelNotAvailableError, match="not the .* the config names"):
        load_model(conf_file("model/toy.yaml"), conf_file("scheduler/ddim.yaml"), torch.device("cpu"))


def test_its_noise_predictions_have_unit_spread_on_noised_latents(toy):
    """A trained ε-model predicts unit-variance noise; the random tiny model's spread is ~0.03."""
    from PIL import Image

    from pie_bench.dataset import BUNDLED_MINI_ROOT, IMAGES_FOLDER

    generator = torch.Generator().manual_seed(0)
    found = []
    for path in sorted((BUNDLED_MINI_ROOT / IMAGES_FOLDER).rglob("*.jpg"))[:3]:
        with torch.no_grad():
            latent = toy.encode_image(np.asarray(Image.open(path).convert("RGB")))
            text = toy.encode_prompts(["a photo"])
            schedule = toy.schedule(50)
            for t in (101, 501, 901):
                alpha = float(schedule.alpha_cumprod(t))
                noise = torch.randn(latent.shape, generator=generator)
                noised = alpha**0.5 * latent + (1 - alpha) ** 0.5 * noise
                found.append(float(toy.predict_noise(noised, t, text).std()))
    assert all(0.8 <= std <= 1.2 for std in found), found


@pytest.mark.ci_only  # about 1 min: 20 steps of each phase, from the photos
def test_the_training_reproduces_its_first_steps(tmp_path):
    """The committed run's first losses, replayed: the same seed draws the same crops, noise and initialisation; the
    UNet's phase starts from the committed VAE (each phase has its own generator). Tolerance: another CPU rounds
    convolutions differently and Adam carries that on (REPLAY_TOLERANCE)."""
    settings = train_toy.Settings(**{**RECORD["settings"], "vae_steps": 20, "unet_steps": 20})
    vae = train_toy.train(dataclasses.replace(settings, unet_steps=0), tmp_path / "vae", lambda line: None, False)
    unet = train_toy.train(settings, tmp_path / "unet", lambda line: None, False, vae_from=WEIGHTS)
    for phase, record in (("vae", vae), ("unet", unet)):
        replayed, committed = record["first_losses"][phase], RECORD["first_losses"][phase][:20]
        assert np.mean(replayed) == pytest.approx(np.mean(committed), rel=REPLAY_TOLERANCE), phase
    for losses in (vae["first_losses"]["vae"], unet["first_losses"]["unet"]):  # and they learn
        assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_the_default_job_runs_the_toy_model(tmp_path):
    code, output = run("launch.py", "num_steps=5", "dataset.categories=[1]", "metrics.backbones=tiny",
                       f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path, default_model=True)  # fmt: skip
    assert code == 0, output
    assert "TOY" in output and "model=tiny" not in output
    (row,) = [json.loads(line) for line in (tmp_path / "job" / "results.jsonl").read_text().splitlines()]
    assert row["model"] == "toy" and row["model_weights"].startswith("embedded toy toy")


def _mini(tmp_path, name: str, *overrides: str) -> pd.DataFrame:
    folder = tmp_path / name
    code, output = run("launch.py", "model=toy", "metrics.backbones=tiny", *overrides, f"hydra.run.dir={folder}",
                       cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    rows = pd.DataFrame([json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()])
    assert (rows["status"] == "ok").all(), rows[["sample_id", "status"]]
    return rows


@pytest.fixture(scope="module")
def mini_reconstructions(tmp_path_factory) -> dict[str, float]:
    """Mean reconstruction PSNR on the mini benchmark at 512², 50 steps: the VAE round trip and DDIM at guidance 1
    on all ten samples; DDIM, DirectInversion and NTI at guidance 7.5 on three (NTI's optimisation costs about a
    minute a sample here)."""
    tmp_path = tmp_path_factory.mktemp("mini")
    subset = "dataset.categories=[1,2,7]"
    runs = {
        "vae": ("inversion=none", "editor=direct"),
        "ddim_1": ("inversion=ddim", "editor=direct", "guidance_scale=1"),
        "ddim": ("inversion=ddim", "editor=direct", subset),
        "directinversion": ("inversion=directinversion", "editor=direct", subset),
        "nti": ("inversion=nti", "editor=p2p", subset),
    }
    return {name: _mini(tmp_path, name, *overrides)["reconstruction_psnr"].mean() for name, overrides in runs.items()}


@pytest.mark.ci_only  # the runs of mini_reconstructions: about 7 min
def test_its_vae_round_trip_reaches_25_db_on_the_mini_benchmark(mini_reconstructions):
    assert mini_reconstructions["vae"] >= 25.0


@pytest.mark.ci_only
def test_ddim_inversion_at_guidance_1_reconstructs_at_20_db(mini_reconstructions):
    assert mini_reconstructions["ddim_1"] >= 20.0


@pytest.mark.ci_only
def test_directinversion_and_nti_reconstruct_better_than_ddim_at_guidance_7_5(mini_reconstructions):
    """The ordering the papers report: DDIM inversion drifts under classifier-free guidance; DirectInversion's
    offsets and NTI's optimised null embeddings correct it."""
    assert mini_reconstructions["directinversion"] > mini_reconstructions["ddim"]
    assert mini_reconstructions["nti"] > mini_reconstructions["ddim"]


@pytest.mark.ci_only  # about 4 min: one sample at 128², every SD-family method at its reference defaults
def test_every_sd_method_runs_at_its_reference_defaults_without_nan(tmp_path):
    from orchestration.catalog import valid_pairs

    pairs, _ = valid_pairs("toy")
    inversions = sorted({inversion for inversion, _ in pairs})
    editors = sorted({editor for _, editor in pairs})
    jobs = []  # each inversion with an editor it pairs with, each editor with an inversion it pairs with
    for inversion in inversions:
        partners = [editor for candidate, editor in pairs if candidate == inversion]
        jobs.append((inversion, "direct" if "direct" in partners else partners[0]))
    for editor in editors:
        partners = [inversion for inversion, candidate in pairs if candidate == editor]
        if not any(pair[1] == editor for pair in jobs):
            jobs.append(("ddim" if "ddim" in partners else partners[0], editor))
    by_editor: dict[str, list[str]] = {}
    for inversion, editor in jobs:
        by_editor.setdefault(editor, []).append(inversion)
    for editor, its_inversions in sorted(by_editor.items()):  # one sweep per editor: only pairs that compose
        sweep = tmp_path / editor
        _code, output = run("launch.py", "-m", "model=toy", "model.resolution=128", "metrics.backbones=tiny",
                            "dataset.categories=[1]", f"inversion={','.join(its_inversions)}", f"editor={editor}",
                            f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
        # a variant's rows carry its method's name (pix2pix_zero_aligned says pix2pix_zero): count job folders
        folders = sorted(path.parent for path in sweep.glob("*/results.jsonl"))
        assert len(folders) == len(its_inversions), (editor, its_inversions, output[-3000:])
        for folder in folders:
            (row,) = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
            assert row["status"] == "ok", (folder.name, row.get("error"))
            for column in ("reconstruction_psnr", "psnr_unedit_part", "clip_similarity_target_image"):
                assert math.isfinite(row[column]), (folder.name, column)


def test_the_toy_model_is_sd_architecture_at_toy_width():
    toy, tiny = (yaml.safe_load((CONF / "model" / f"{name}.yaml").read_text()) for name in ("toy", "tiny"))
    assert toy["family"] == tiny["family"] == "sd"
    assert toy["unet"] == tiny["unet"] and toy["text_encoder"] == tiny["text_encoder"]
