"""Throughput settings. Several samples per denoiser call (`batch_size`): every method that batches gives each sample
what it gives alone, to float rounding; what cannot batch runs one sample at a time; rows say their batch and share
its cost equally. The fast path (`precision`): autocast around the denoiser only, recorded in rows and hashes."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import sys

import pytest
import torch
from conftest import conf_file, read_pixels, relative_error, run

from editors import EDITORS
from editors.base import batchable
from invbench.images import fit_square
from invbench.results import read_rows
from inversions import INVERSIONS
from inversions.base import StepHooks

STEPS = 4
BATCHING = {  # each inversion that batches, with the settings that exercise its per-sample parts
    "ddim": {"name": "ddim", "num_steps": STEPS, "guidance_scale": 1.0},
    "ddim_guided": {"name": "ddim", "num_steps": STEPS, "guidance_scale": 7.5},
    "npi": {"name": "npi", "num_steps": STEPS},
    "directinversion": conf_file("inversion/directinversion.yaml") | {"num_steps": STEPS},
    "directinversion_targets": conf_file("inversion/directinversion.yaml")
    | {"num_steps": STEPS, "offset_branches": "source_and_target"},
}


@pytest.fixture(scope="module")
def four(tiny_model, mini):
    """Four samples with different images and prompts, and their source latents."""
    samples = [sample for sample in mini.samples][:4]
    assert len({sample.source_prompt for sample in samples}) == 4
    latents = [tiny_model.encode_image(fit_square(s.read_image(), tiny_model.resolution)) for s in samples]
    return samples, latents


@pytest.mark.parametrize("name", sorted(BATCHING))
def test_batch_of_four_equals_each_sample_alone(tiny_model, four, name):
    samples, latents = four
    inversion = INVERSIONS.build(BATCHING[name])
    assert inversion.batches
    together = inversion.invert_batch(tiny_model, latents, samples)
    alone = [inversion.invert(tiny_model, latent, sample) for latent, sample in zip(latents, samples)]
    for batched, single in zip(together, alone):
        assert batched.state() == single.state() and batched.info == single.info
        for a, b in zip(batched.latents, single.latents, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # latents of std ~1; batch rows round apart
    editor = EDITORS.build(conf_file("editor/direct.yaml"))
    assert batchable(together)
    edited = editor.edit_batch(tiny_model, together, samples)
    for batched, inverted, sample in zip(edited, alone, samples):
        single = editor.edit(tiny_model, inverted, sample)
        torch.testing.assert_close(batched.edited, single.edited, rtol=0, atol=1e-4)
        torch.testing.assert_close(batched.reconstruction, single.reconstruction, rtol=0, atol=1e-4)
    # the samples really differ, so a batch that mixed them up would fail above
    assert (edited[0].edited - edited[1].edited).abs().max() > 1e-2


@pytest.mark.parametrize("inversion_name", ["ddim_guided", "directinversion"])
@pytest.mark.parametrize("editor_name", ["p2p", "p2plus", "masactrl"])
def test_editors_with_a_controller_per_sample_batch_as_each_sample_alone(
    tiny_model, four, compose, editor_name, inversion_name
):
    """Each sample's controller sees and changes its own rows only: P2P's maps and local blend, P2Plus's
    unconditional half, MasaCtrl's source keys and values."""
    from omegaconf import OmegaConf

    editor = EDITORS.build(OmegaConf.to_container(compose(f"editor={editor_name}").editor, resolve=True))
    assert editor.batches
    samples, latents = four
    samples = [editor.prepare_sample(sample) for sample in samples]
    inverted = INVERSIONS.build(BATCHING[inversion_name]).invert_batch(tiny_model, latents, samples)
    together = editor.edit_batch(tiny_model, inverted, samples)
    for batched, inversion, sample in zip(together, inverted, samples):
        single = editor.edit(tiny_model, inversion, sample)
        assert batched.info == single.info
        torch.testing.assert_close(batched.edited, single.edited, rtol=0, atol=1e-4)
        torch.testing.assert_close(batched.reconstruction, single.reconstruction, rtol=0, atol=1e-4)
    assert (together[0].edited - together[1].edited).abs().max() > 1e-2


@pytest.mark.parametrize("editor_name", ["direct", "p2p_edit_friendly"])
def test_edit_friendly_ddpm_batches_with_each_sample_drawing_its_own_run_noise(tiny_model, four, compose, editor_name):
    """Edit-friendly DDPM draws noise: in a batch each sample draws what it draws alone from the same seed, its noise
    maps drive its own rows of the shared step, and the generator ends where a single run leaves it."""
    from omegaconf import OmegaConf

    samples, latents = four
    inversion = INVERSIONS.build(conf_file("inversion/edit_friendly.yaml") | {"num_steps": STEPS, "skip": 1})
    editor = EDITORS.build(OmegaConf.to_container(compose(f"editor={editor_name}").editor, resolve=True))
    samples = [editor.prepare_sample(sample) for sample in samples]
    torch.manual_seed(7)
    together = inversion.invert_batch(tiny_model, latents, samples)
    after_batch = torch.randn(3)
    assert batchable(together) and together[0].state() == {"step"}
    edited = editor.edit_batch(tiny_model, together, samples)
    for k, (latent, sample) in enumerate(zip(latents, samples)):
        torch.manual_seed(7)
        single = inversion.invert(tiny_model, latent, sample)
        torch.testing.assert_close(torch.randn(3), after_batch, rtol=0, atol=0)
        for a, b in zip(together[k].latents, single.latents, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        for a, b in zip(together[k].hooks.noise_maps, single.hooks.noise_maps, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)  # divided by the posterior σ
        alone = editor.edit(tiny_model, single, sample)
        assert edited[k].info == alone.info
        torch.testing.assert_close(edited[k].edited, alone.edited, rtol=0, atol=1e-4)
        torch.testing.assert_close(edited[k].reconstruction, alone.reconstruction, rtol=0, atol=1e-4)
    assert (edited[0].edited - edited[1].edited).abs().max() > 1e-2


def test_inversions_with_controllers_or_their_own_step_are_edited_one_at_a_time(tiny_model, four):
    samples, latents = four
    plain = INVERSIONS.build(BATCHING["ddim"]).invert_batch(tiny_model, latents[:2], samples[:2])

    class Frozen(StepHooks):  # a method with its own reverse step (here: none)
        def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
            return latents

    own_step = dataclasses.replace(plain[1], hooks=Frozen())
    assert not batchable([plain[0], own_step])
    _first, second = EDITORS.build(conf_file("editor/direct.yaml")).edit_batch(
        tiny_model, [plain[0], own_step], samples[:2]
    )
    assert torch.equal(second.edited, own_step.noise_latent)  # its own step ran: it was edited alone


@pytest.mark.ci_only  # three jobs, ~35 s on 2 cores
def test_a_batched_job_writes_the_images_and_counts_of_the_unbatched_one(tmp_path):
    """launch.py with batch_size=4 on the 10 mini samples: groups of 4, 4 and 2, every image within one level of the
    batch_size=1 run's (float rounding), the same evaluations per sample, and seconds shared equally in a group."""
    common = ["inversion=directinversion", "model.resolution=64", "num_steps=3", "metrics=none"]
    for size in (1, 4):
        code, output = run("launch.py", *common, f"batch_size={size}", f"hydra.run.dir=b{size}", cwd=tmp_path)
        assert code == 0, output
    single, batched = (read_rows(tmp_path / f"b{size}" / "results.jsonl") for size in (1, 4))
    assert [row["batch_size"] for row in batched] == [4] * 8 + [2] * 2
    assert [row["batch_size"] for row in single] == [1] * 10
    for a, b in zip(single, batched, strict=True):
        assert a["sample_id"] == b["sample_id"] and b["status"] == "ok"
        for key in ("inversion_unet_evals", "edit_unet_evals"):
            assert a[key] == b[key], key
        for image in ("edited_image", "reconstruction_image"):
            difference = abs(read_pixels(tmp_path / "b1" / a[image]) - read_pixels(tmp_path / "b4" / b[image]))
            assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (a["sample_id"], image)
    first_group = batched[:4]
    assert len({row["total_seconds"] for row in first_group}) == 1
    # DirectInversion calls the denoiser once per DDIM step and once per offset step, for the whole group: 6 / 4
    assert single[0]["inversion_unet_calls"] == 6 and first_group[0]["inversion_unet_calls"] == 1.5

    code, output = run("launch.py", *common, "editor=pnp", "batch_size=4", "hydra.run.dir=pnp", cwd=tmp_path)
    assert code == 0 and "editor=pnp does not batch samples; they run one at a time" in output, output
    assert {row["batch_size"] for row in read_rows(tmp_path / "pnp" / "results.jsonl")} == {1}


def test_autocast_wraps_the_denoiser_only_and_returns_the_model_dtype(tiny_model, source_latent):
    cond = tiny_model.encode_prompts(["a cat"])
    reference = tiny_model.predict_noise(source_latent, 501, cond)
    try:
        tiny_model.autocast_dtype = torch.bfloat16
        fast = tiny_model.predict_noise(source_latent, 501, cond)
    finally:
        tiny_model.autocast_dtype = None
    assert fast.dtype == reference.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: close, and not equal
    assert 1e-4 < relative_error(fast, reference) < 5e-2


def test_the_fast_path_is_another_configuration_recorded_in_every_row(tmp_path):
    common = ["editor=p2p", "model.resolution=64", "num_steps=3", "metrics=none", "dataset.categories=[1]"]
    for precision in ("reference", "bfloat16"):
        code, output = run("launch.py", *common, f"precision={precision}", f"hydra.run.dir={precision}", cwd=tmp_path)
        assert code == 0, output
    reference, fast = (read_rows(tmp_path / name / "results.jsonl") for name in ("reference", "bfloat16"))
    assert {row["precision"] for row in reference} == {"reference"} and {row["precision"] for row in fast} == {
        "bfloat16"
    }
    assert reference[0]["config_hash"] != fast[0]["config_hash"]
    assert reference[0]["hparams"]["editor"]["attention_outside_windows"] == "materialised"
    assert fast[0]["hparams"]["editor"]["attention_outside_windows"] == "fused"  # P2P's maps only where read
    assert all(row["status"] == "ok" for row in fast)
    code, output = run("launch.py", *common, "precision=fp8", "hydra.run.dir=bad", cwd=tmp_path)
    assert code == 2 and "precision='fp8'" in output, output


FAULTS_OF_A_REALLOCATION = """
import resource, sys, torch
from invbench.runtime import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # a 64 MB tensor filled and freed, again and again, as one step's attention maps
    before = faults()
    torch.ones(16, 1024, 1024)
print(faults() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_kept_freed_memory_is_reused_without_page_faults():
    """A job's process keeps freed memory: a tensor as large as a 512² attention map, allocated again and again, soon
    reuses pages it has (the heap settles after a few rounds) instead of faulting 16,384 fresh ones in each time
    (what made explicit attention 2.8× slower)."""
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", FAULTS_OF_A_REALLOCATION, mode], check=True, text=True, capture_output=True
            ).stdout
        )
        for mode in ("default", "kept")
    }
    # glibc's default maps it afresh each time: 16,384 faults of 4 kB pages (fewer where transparent huge pages
    # back it); kept, the settled heap faults (almost) none
    assert faults["default"] > 0
    assert faults["kept"] * 16 < faults["default"]
