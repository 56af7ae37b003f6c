"""Inversions shared by a sweep's jobs (orchestration/inversion_cache.py): a reused inversion gives a computed one's
outputs, rows say which it was and keep their method's cost, a damaged entry is computed again, and editors that
observe the inversion never share it."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from conftest import FAST, conf_file, image_equal, read_pixels, run

from editors import EDITORS
from invbench.results import read_rows
from invbench.runtime import random_state, restore_random_state
from orchestration.inversion_cache import CACHE_FOLDER, cache_key


def test_a_restored_random_state_draws_the_same_numbers_from_every_generator():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = random_state()
    first = (torch.randn(4), np.random.rand(4), random.random())
    restore_random_state(state)
    again = (torch.randn(4), np.random.rand(4), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def test_the_key_changes_with_whatever_changes_the_inversion(sample):
    defining = {"model": {"name": "tiny"}, "inversion": {"name": "ddim", "num_steps": 10}, "seed": 1, "device": "cpu"}
    key = cache_key(defining, "abc", sample)
    assert key == cache_key(dict(defining), "abc", dataclasses.replace(sample))
    changed = [
        cache_key(defining | {"seed": 2}, "abc", sample),
        cache_key(defining | {"inversion": {"name": "ddim", "num_steps": 20}}, "abc", sample),
        cache_key(defining | {"device": "cuda:0"}, "abc", sample),
        cache_key(defining, "abd", sample),  # other image bytes
        cache_key(defining, "abc", dataclasses.replace(sample, source_prompt="")),  # MasaCtrl's prepared sample
    ]
    assert len({key, *changed}) == 6


def test_an_entry_is_used_only_under_its_own_key_and_stale_partials_go(tmp_path, caplog):
    import os
    import time

    from orchestration.inversion_cache import InversionCache

    cache = InversionCache(tmp_path, torch.device("cpu"))
    cache.store("one", {"inverted": torch.ones(3)})
    assert torch.equal(cache.load("one")["inverted"], torch.ones(3)) and cache.load("one")["key"] == "one"
    os.replace(tmp_path / "one.pt", tmp_path / "two.pt")  # another key's file holding this entry
    assert cache.load("two") is None and "holds the entry of key one, not its own" in caplog.text
    (tmp_path / "two.pt").write_bytes(b"damaged")
    assert cache.load("two") is None  # unreadable: computed again, never fatal
    stale, fresh = tmp_path / ".x.pt.1.partial", tmp_path / ".y.pt.2.partial"
    stale.write_bytes(b""), fresh.write_bytes(b"")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert cache.remove_stale_partials() == [stale] and fresh.exists()  # a live writer's file is kept


def test_editors_that_observe_the_inversion_never_share_it():
    assert EDITORS.build(conf_file("editor/rf_edit.yaml") | {"guidance_scale": 2.0}).observes_inversion()
    assert not EDITORS.build(conf_file("editor/p2p.yaml")).observes_inversion()


@pytest.mark.ci_only  # about 40 s on 2 cores; .ci/run runs it
def test_a_sweep_inverts_each_sample_once_and_its_outputs_equal_unshared_ones(tmp_path):
    common = ("-m", "inversion=ddim", "editor=direct,p2p", *FAST, "dataset.categories=[1]")
    code, output = run("launch.py", *common, f"hydra.sweep.dir={tmp_path}/shared", cwd=tmp_path)
    assert code == 0, output
    code, output = run(
        "launch.py", *common, "inversion_cache=false", f"hydra.sweep.dir={tmp_path}/alone", cwd=tmp_path
    )
    assert code == 0, output
    assert len(list((tmp_path / "shared" / CACHE_FOLDER).glob("*.pt"))) == 1  # one sample, one inversion
    assert not (tmp_path / "alone" / CACHE_FOLDER).exists()
    for job in ("0_ddim+direct_cat1", "1_ddim+p2p_cat1"):
        (shared,) = read_rows(tmp_path / "shared" / job / "results.jsonl")
        (alone,) = read_rows(tmp_path / "alone" / job / "results.jsonl")
        assert shared["inversion_reused"] == (job.startswith("1_")) and not alone["inversion_reused"]
        assert shared["inversion_unet_evals"] == alone["inversion_unet_evals"] == 10  # the method's cost, kept
        for image in ("edited", "reconstruction"):
            name = shared[f"{image}_image"]
            assert image_equal(tmp_path / "shared" / job / name, tmp_path / "alone" / job / name)
    (computed,) = read_rows(tmp_path / "shared" / "0_ddim+direct_cat1" / "results.jsonl")
    (reused,) = read_rows(tmp_path / "shared" / "1_ddim+p2p_cat1" / "results.jsonl")
    assert reused["inversion_seconds"] == computed["inversion_seconds"]
    # a damaged entry is computed again, never fatal: a later job of the sweep folder that needs the same inversion
    (entry,) = (tmp_path / "shared" / CACHE_FOLDER).glob("*.pt")
    entry.write_bytes(b"not a torch file")
    later = ("-m", "inversion=ddim", "editor=p2plus", *FAST, "dataset.categories=[1]")
    code, output = run("launch.py", *later, f"hydra.sweep.dir={tmp_path}/shared", cwd=tmp_path)
    assert code == 0 and "is unreadable" in output, output
    (row,) = read_rows(tmp_path / "shared" / "0_ddim+p2plus_cat1" / "results.jsonl")
    assert row["status"] == "ok" and not row["inversion_reused"]
    assert torch.load(entry, weights_only=False)["computed_in"] == "0_ddim+p2plus_cat1"  # stored again


@pytest.mark.ci_only  # about 40 s on 2 cores; .ci/run runs it
def test_a_batched_sweep_stores_and_reuses_each_sample_of_a_group(tmp_path):
    """batch_size=2: the first job inverts its group in one call and stores each sample's inversion on its own, named
    after the job that computed it; the next job loads the whole group and edits as the unbatched sweep does."""
    common = ("-m", "inversion=ddim", "editor=direct,p2p", *FAST, "dataset.categories=[1,6]")
    for name, size in (("batched", 2), ("single", 1)):
        code, output = run("launch.py", *common, f"batch_size={size}", f"hydra.sweep.dir={tmp_path}/{name}",
                           cwd=tmp_path)  # fmt: skip
        assert code == 0, output
    entries = sorted((tmp_path / "batched" / CACHE_FOLDER).glob("*.pt"))
    assert len(entries) == 2  # two samples, stored one by one
    for entry in entries:
        stored = torch.load(entry, weights_only=False)
        assert stored["computed_in"] == "0_ddim+direct_cat1+6"
        assert stored["inverted"].latents[0].shape[0] == 1  # its own sample, not the group
    computed = read_rows(tmp_path / "batched" / "0_ddim+direct_cat1+6" / "results.jsonl")
    reused = read_rows(tmp_path / "batched" / "1_ddim+p2p_cat1+6" / "results.jsonl")
    single = read_rows(tmp_path / "single" / "1_ddim+p2p_cat1+6" / "results.jsonl")
    assert [row["inversion_reused"] for row in computed + reused] == [False, False, True, True]
    assert [row["batch_size"] for row in reused] == [2, 2]
    for row, alone in zip(reused, single, strict=True):
        assert row["inversion_unet_evals"] == alone["inversion_unet_evals"] == 10  # the method's cost, kept
        for image in ("edited_image", "reconstruction_image"):
            difference = abs(read_pixels(tmp_path / "batched" / "1_ddim+p2p_cat1+6" / row[image])
                             - read_pixels(tmp_path / "single" / "1_ddim+p2p_cat1+6" / alone[image]))  # fmt: skip
            assert difference.max() <= 1, image  # batch rows round apart by float rounding only
