"""The job runner: rows, resume, failures that do not stop a job, configuration guard, determinism."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, REPO, image_equal, read_pixels, run
from PIL import Image

from invbench.errors import ConfigError, ModelNotAvailableError
from invbench.job_folder import FolderInUseError
from invbench.results import read_rows
from orchestration.runner import NoSampleSucceeded, run_job
from pie_bench.dataset import BUNDLED_MINI_ROOT

ROW_FIELDS = {
    "sample_id",
    "category",
    "edit_class",
    "source_prompt",
    "target_prompt",
    "inversion",
    "editor",
    "model",
    "model_weights",
    "config_hash",
    "hparams",
    "seed",
    "inversion_seconds",
    "edit_seconds",
    "total_seconds",
    "inversion_unet_evals",
    "edit_unet_evals",
    "inversion_reused",
    "batch_size",
    "precision",
    "peak_memory_mb",
    "memory_kind",
    "status",
    "error",
    "edited_image",
    "reconstruction_image",
}


@pytest.fixture
def two_samples(compose):
    return compose(*FAST, "dataset.categories=[1,6]")


def test_rows_and_images(two_samples, tmp_path):
    rows = run_job(two_samples, tmp_path)
    assert list(rows["status"]) == ["ok", "ok"] and list(rows["editing_type"]) == [1, 6]
    stored = read_rows(tmp_path / "results.jsonl")
    assert ROW_FIELDS <= set(stored[0])
    first = stored[0]
    assert first["model"] == "tiny" and "random-init" in first["model_weights"]
    assert first["inversion_unet_evals"] == 10 and first["edit_unet_evals"] == 40
    assert first["hparams"]["editor"] == {"name": "direct", "guidance_scale": 7.5}
    assert first["edit_class"] == "global" and first["error"] is None
    for column in ("edited_image", "reconstruction_image"):
        assert (tmp_path / first[column]).is_file() and first[column].endswith(".png")
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config_hash"] == first["config_hash"] and record["environment"]["torch"]
    assert "| ddim | direct | tiny |" in (tmp_path / "summary.md").read_text()


def test_resume_skips_finished_samples_and_loses_none(two_samples, tmp_path, capsys):
    run_job(two_samples, tmp_path)
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][:40])  # as if killed while writing the second row
    rows = run_job(two_samples, tmp_path)
    assert "(1 already done before this run)" in capsys.readouterr().out
    stored = path.read_text().splitlines(keepends=True)
    assert len(stored) == 2 and stored[0] == lines[0]  # the finished row is kept as it was; only the other is redone
    assert list(rows["status"]) == ["ok", "ok"]
    run_job(two_samples, tmp_path)
    assert len(read_rows(path)) == 2  # nothing left to do: nothing appended


def test_damage_inside_results_jsonl_never_blocks_resume_or_aggregate(two_samples, tmp_path):
    job = tmp_path / "job"
    run_job(two_samples, job)
    path = job / "results.jsonl"
    first, second = path.read_text().splitlines(keepends=True)
    path.write_text(first + "\n" + second[:50] + "\n")  # a blank line, and a row cut short then a newline
    rows = run_job(two_samples, job)  # resumes: the cut sample runs again
    assert list(rows["status"]) == ["ok", "ok"] and len(read_rows(path)) == 2
    code, output = run("aggregate.py", str(job), "--out", str(tmp_path / "tables"), "--no-figures", cwd=tmp_path)
    assert code == 0, output
    assert "skipped 2 unreadable line(s)" in output and f"{path}:2: blank line" in output
    assert f"{path}:3: not JSON" in output
    assert "| ddim | direct |" in output


def mini_copy(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(BUNDLED_MINI_ROOT, root)
    return root


def test_missing_image_fails_that_sample_only(compose, tmp_path):
    root = mini_copy(tmp_path)
    mapping = json.loads((root / "mapping_file.json").read_text())
    (root / "annotation_images" / mapping["121000000001"]["image_path"]).unlink()
    rows = run_job(compose(*FAST, f"dataset.root={root}", "dataset.categories=[1,6,7]"), tmp_path / "out")
    status = dict(zip(rows["sample_id"], rows["status"]))
    assert status == {"121000000001": "failed", "623000000006": "ok", "723000000007": "ok"}
    error = rows.set_index("sample_id").loc["121000000001", "error"]
    assert error.startswith("FileNotFoundError: mapping_file.json: sample '121000000001', field 'image_path' (")
    assert "image not found. Fix: put the image there, or correct image_path." in error


def test_a_bad_sample_or_a_failing_batch_never_costs_the_others_their_results(compose, tmp_path, monkeypatch):
    from inversions.ddim import DDIMInversion

    root = mini_copy(tmp_path)
    mapping = json.loads((root / "mapping_file.json").read_text())
    (root / "annotation_images" / mapping["121000000001"]["image_path"]).unlink()
    settings = (*FAST[:2], "metrics=none", f"dataset.root={root}", "dataset.categories=[1,6,7,8]", "batch_size=4")
    rows = run_job(compose(*settings), tmp_path / "missing").set_index("sample_id")
    assert rows.loc["121000000001", "status"] == "failed" and rows.loc["121000000001", "error"].startswith(
        "FileNotFoundError"
    )
    ok = rows.drop("121000000001")
    assert (ok["status"] == "ok").all() and (ok["batch_size"] == 3).all()  # the other three, batched

    def broken(self, model, latents, samples):
        if len(samples) > 1:
            raise RuntimeError("out of memory")
        return original(self, model, latents, samples)

    original = DDIMInversion.invert_batch
    monkeypatch.setattr(DDIMInversion, "invert_batch", broken)
    rows = run_job(compose(*settings), tmp_path / "fallback").set_index("sample_id")
    assert (rows.drop("121000000001")["status"] == "ok").all() and (rows["batch_size"] == 1).all()


def test_mapping_paths_never_leave_the_job_folder_or_overwrite_a_source(compose, tmp_path):
    root = mini_copy(tmp_path)
    mapping = json.loads((root / "mapping_file.json").read_text())
    cat = mapping["121000000001"]
    elsewhere = tmp_path / "x"
    elsewhere.mkdir()
    shutil.copy(root / "annotation_images" / cat["image_path"], elsewhere / "evil.jpg")
    source_png = elsewhere / "src.png"
    Image.open(elsewhere / "evil.jpg").save(source_png)
    source_bytes = source_png.read_bytes()
    mapping = {
        "121000000001": cat,
        "991000000001": {**cat, "image_path": "../../x/evil.jpg"},  # today: written to <out>/x/evil.png
        "991000000002": {**cat, "image_path": str(source_png)},  # today: the edit overwrites this very source
        "991000000003": {**cat},  # the same output file as the first sample
    }
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    out = tmp_path / "out"
    rows = run_job(compose(*FAST, f"dataset.root={root}"), out / "job").set_index("sample_id")
    assert rows["status"].to_dict() == {
        "121000000001": "ok",
        "991000000001": "failed",
        "991000000002": "failed",
        "991000000003": "failed",
    }
    assert "field 'image_path': '../../x/evil.jpg' contains '..'" in rows.loc["991000000001", "error"]
    assert "is absolute" in rows.loc["991000000002", "error"]
    assert "same output file" in rows.loc["991000000003", "error"]
    assert source_png.read_bytes() == source_bytes
    assert [path.name for path in out.iterdir()] == ["job"]  # nothing written next to the job folder
    assert sorted(p.name for p in elsewhere.iterdir()) == ["evil.jpg", "src.png"]
    assert len(list((out / "job" / "edited").rglob("*.png"))) == 1


def test_a_diverged_method_fails_its_sample_instead_of_scoring_nan(compose, tmp_path):
    # pix2pix-zero's KL step of 20 (the reference's, for SD's unit-variance noise) diverges on the tiny model
    with pytest.raises(NoSampleSucceeded, match="all 1 samples of this job failed"):  # the job exits non-zero
        run_job(compose(*FAST, "inversion=pix2pix_zero", "dataset.categories=[1]"), tmp_path)
    (row,) = read_rows(tmp_path / "results.jsonl")
    assert row["status"] == "failed"
    assert "inversion=pix2pix_zero produced" in row["error"] and "non-finite latent values" in row["error"]
    assert not (tmp_path / "edited").exists()  # nothing written that a gallery or score.py could pick up


def test_invalid_sample_is_recorded_and_retried_after_a_fix(compose, tmp_path):
    root = mini_copy(tmp_path)
    mapping_file = root / "mapping_file.json"
    mapping = json.loads(mapping_file.read_text())
    good_mask = mapping["623000000006"]["mask"]
    mapping["623000000006"]["mask"] = good_mask[:-1]
    mapping_file.write_text(json.dumps(mapping))
    config = compose(*FAST, f"dataset.root={root}", "dataset.categories=[1,6]")
    rows = run_job(config, tmp_path / "out").set_index("sample_id")
    assert rows.loc["121000000001", "status"] == "ok"
    assert rows.loc["623000000006", "status"] == "failed"
    assert "field 'mask'" in rows.loc["623000000006", "error"]
    mapping["623000000006"]["mask"] = good_mask
    mapping_file.write_text(json.dumps(mapping))
    rows = run_job(config, tmp_path / "out").set_index("sample_id")
    assert set(rows["status"]) == {"ok"}


def test_other_configuration_in_the_same_folder_is_refused_naming_the_keys(compose, tmp_path):
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
    refusal = "already holds results with another config_hash .* hydra.run.dir="
    with pytest.raises(ConfigError, match=refusal) as refused:
        run_job(compose(*FAST, "dataset.categories=[6]", "editor.guidance_scale=5", "seed=7"), tmp_path)
    assert "What differs: editor.guidance_scale: 7.5 -> 5.0; seed: 1234 -> 7." in str(refused.value)
    with pytest.raises(ConfigError, match="What differs: metrics.reference_compat: True -> False"):
        run_job(compose(*FAST, "dataset.categories=[6]", "metrics.reference_compat=false"), tmp_path)
    run_job(compose(*FAST, "dataset.categories=[1]"), tmp_path)  # another selection, same configuration: fine


def test_rows_record_their_code_and_libraries_and_a_resume_with_others_is_refused(compose, tmp_path):
    from invbench.provenance import code_version, library_versions

    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
    (row,) = read_rows(tmp_path / "results.jsonl")
    assert row["code_version"] == code_version() and row["library_versions"] == library_versions()
    assert set(row["library_versions"]) == {"torch", "diffusers", "transformers", "Pillow", "numpy"}
    assert len(row["code_version"]["source_sha256"]) == 64
    path = tmp_path / "results.jsonl"
    older = {**row, "code_version": {**row["code_version"], "source_sha256": "0" * 64, "git_commit": "a" * 40,
                                     "git_dirty": False},
             "library_versions": {**row["library_versions"], "Pillow": "9.0.0"}}  # fmt: skip
    path.write_text(json.dumps(older) + "\n")  # as if written by other code with another Pillow
    with pytest.raises(ConfigError, match="other code or libraries") as refused:
        run_job(compose(*FAST, "dataset.categories=[1,6]"), tmp_path)
    message = str(refused.value)
    assert "invbench's code: 0.1.0, commit aaaaaaaaaaaa, source 000000000000 ->" in message
    assert f"Pillow 9.0.0 -> {library_versions()['Pillow']}" in message and "resume_with_other_code=true" in message
    rows = run_job(compose(*FAST, "dataset.categories=[1,6]", "resume_with_other_code=true"), tmp_path)
    new = rows.set_index("sample_id").loc["121000000001"]
    assert any("Pillow 9.0.0" in line for line in new["resumed_with_other_code"])
    record = json.loads((tmp_path / "run.json").read_text())
    assert [start["samples_done_before"] for start in record["starts"]] == [0, 1]
    assert record["environment"]["source_sha256"] == code_version()["source_sha256"]


def test_the_source_digest_covers_every_source_file_and_only_those(tmp_path, monkeypatch):
    from invbench import provenance

    before, read, module = provenance.source_digest(), Path.read_bytes, Path(provenance.__file__)
    monkeypatch.setattr(Path, "read_bytes", lambda self: read(self) + (b"#" if self == module else b""))
    assert provenance.source_digest() != before  # one byte more in one module moves it
    monkeypatch.undo()
    assert provenance.source_digest() == before


@pytest.mark.parametrize(
    "change, message",
    [
        ([*FAST, "metrics.reference_compat=false"], "another metrics_config_hash"),
        ([*FAST[:2], "metrics=none"], "another metrics_config_hash"),
        ([*FAST, "metrics.lpips.net=alex"], "another metrics_config_hash"),
    ],
)
def test_other_metric_settings_in_the_same_folder_are_refused(compose, tmp_path, change, message):
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
    with pytest.raises(ConfigError, match=message):  # before any model loads: rows would keep stale metrics
        run_job(compose(*change, "dataset.categories=[1]"), tmp_path)


def test_other_data_in_the_same_folder_is_refused(compose, tmp_path):
    copy = mini_copy(tmp_path)  # the same ids and content under another root
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path / "out")
    with pytest.raises(ConfigError, match="another mapping_file"):
        run_job(compose(*FAST, f"dataset.root={copy}", "dataset.categories=[6]"), tmp_path / "out")

    run_job(compose(*FAST, f"dataset.root={copy}", "dataset.categories=[1,6]"), tmp_path / "copy")
    stored = read_rows(tmp_path / "copy" / "results.jsonl")
    assert {row["mapping_file"] for row in stored} == {str(copy.resolve() / "mapping_file.json")}
    image = copy / "annotation_images" / stored[0]["image_path"]
    image.write_bytes(image.read_bytes() + b"\0")  # the same pixels, other bytes: the file is not the one scored
    with pytest.raises(ConfigError, match=f"sample {stored[0]['sample_id']}: its image file"):
        run_job(compose(*FAST, f"dataset.root={copy}", "dataset.categories=[1,6]"), tmp_path / "copy")
    mapping = json.loads((copy / "mapping_file.json").read_text())
    mapping[stored[1]["sample_id"]]["editing_prompt"] += " at night"
    (copy / "mapping_file.json").write_text(json.dumps(mapping))
    with pytest.raises(ConfigError, match=f"sample {stored[1]['sample_id']}: its mapping entry"):
        run_job(compose(*FAST, f"dataset.root={copy}", "dataset.categories=[6]"), tmp_path / "copy")


def test_a_second_process_on_one_folder_fails_at_once_naming_the_holder(compose, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from invbench.job_folder import exclusive_use\n"
                "with exclusive_use(Path(sys.argv[1]), 'test holder'):\n    print('held', flush=True); time.sleep(60)"
            ),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderInUseError, match=f"test holder, pid {holder.pid} on {socket.gethostname()}"):
            run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
        assert not (tmp_path / "results.jsonl").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)  # a dead holder's lock is gone with it


def test_temporary_files_carry_the_writer_pid_and_stale_ones_are_removed(compose, tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(Path(a).name), real_replace(a, b)))
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
    assert renamed and all(f".{os.getpid()}.partial" in name for name in renamed)
    stale = tmp_path / "edited" / "6_change_attribute_color_40" / ".other.png.424242.partial"
    stale.write_bytes(b"half")  # left by a killed writer
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
    assert not stale.exists()


def test_same_seed_gives_identical_outputs(compose, tmp_path):
    config = compose(*FAST, "dataset.categories=[6]")
    first = run_job(config, tmp_path / "a").iloc[0]
    second = run_job(config, tmp_path / "b").iloc[0]
    for column in ("edited_image", "reconstruction_image"):
        assert image_equal(tmp_path / "a" / first[column], tmp_path / "b" / second[column])
    edited, reconstruction = (read_pixels(tmp_path / "a" / first[c]) for c in ("edited_image", "reconstruction_image"))
    assert np.abs(edited - reconstruction).mean() > 1  # the edit is not the reconstruction (mean gray levels)


def test_threads_are_capped_under_submitit_local(compose, tmp_path, monkeypatch):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    try:
        run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
        assert torch.get_num_threads() == 1
        run_job(compose(*FAST, "dataset.categories=[6]", "num_threads=2"), tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_int_and_float_spellings_are_one_configuration(compose, tmp_path):
    first = run_job(compose(*FAST, "dataset.categories=[6]", "editor.guidance_scale=7"), tmp_path).iloc[0]
    again = run_job(compose(*FAST, "dataset.categories=[6]", "editor.guidance_scale=7.0"), tmp_path).iloc[0]
    assert first["config_hash"] == again["config_hash"] and first["hparams"]["editor"]["guidance_scale"] == 7.0


def test_a_folder_scored_with_other_backbones_is_refused_once_they_are_known(compose, tmp_path):
    """metrics.backbones=auto resolves to real or tiny backbones only when they load; rows scored by real ones
    (say, weights cached since) must not be continued with tiny ones, nor the other way round."""
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path)
    path = tmp_path / "results.jsonl"
    (row,) = read_rows(path)
    row["metrics_setup"] = "pie_bench/reference dino=facebook/dino-vitb8 clip=tiny lpips=tiny"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match="another metrics_setup .*dino=facebook/dino-vitb8"):
        run_job(compose(*FAST, "dataset.categories=[1]"), tmp_path)
    assert len(read_rows(path)) == 1


def test_every_job_writes_how_it_ended(compose, tmp_path):
    run_job(compose(*FAST, "dataset.categories=[6]"), tmp_path / "ok")
    ended = json.loads((tmp_path / "ok" / "job_status.json").read_text())
    assert ended["state"] == "ok" and ended["pid"] == os.getpid() and ended["ended_at"]
    with pytest.raises(ModelNotAvailableError):
        run_job(compose(*FAST, "model=sd14", "model.repo_id=invbench-tests/none"), tmp_path / "no_model")
    ended = json.loads((tmp_path / "no_model" / "job_status.json").read_text())
    assert ended["state"] == "failed" and ended["reason"].startswith("ModelNotAvailableError: model 'sd14'")


def test_a_job_stopping_signal_is_never_a_sample_failure(compose, tmp_path, monkeypatch):
    """submitit raises UncompletedJobError from its USR2 handler, wherever the job is, when it will not requeue:
    the job must stop there, not record the sample in flight as failed and compute on past its time."""
    from submitit.core.utils import UncompletedJobError

    from editors.direct import DirectEditor

    def refused_requeue(*args, **kwargs):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(DirectEditor, "edit", refused_requeue)
    with pytest.raises(UncompletedJobError):
        run_job(compose(*FAST, "dataset.categories=[1,6]"), tmp_path)
    assert read_rows(tmp_path / "results.jsonl") == []  # no sample marked failed, none after it started
    ended = json.loads((tmp_path / "job_status.json").read_text())
    assert ended["state"] == "failed" and "not requeued: Job not requeued because: timed-out" in ended["reason"]


def test_a_process_keeps_one_model_per_kind_keyed_by_what_built_it():
    from orchestration.resident import release_all, resident

    built = []

    def build(name):
        built.append(name)
        return object()

    try:
        first, reused = resident("model", {"name": "a"}, lambda: build("a"))
        assert not reused
        assert resident("model", {"name": "a"}, lambda: build("a")) == (first, True)
        other, reused = resident("model", {"name": "b"}, lambda: build("b"))  # replaces a
        assert not reused and other is not first
        assert resident("model", {"name": "a"}, lambda: build("a"))[1] is False  # a was let go
        assert built == ["a", "b", "a"]
    finally:
        release_all()
