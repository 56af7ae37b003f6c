"""Metrics end to end: every row of a job carries every metric; score.py re-scores run folders and scores the
reference layout (2048×512 JPEG composites) to the same numbers; missing outputs fail only their sample."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import FAST
from PIL import Image

from invbench.columns import METRIC_COLUMNS
from invbench.errors import ConfigError
from invbench.images import fit_square
from invbench.results import read_rows
from orchestration.evaluation import evaluate_folder
from orchestration.runner import run_job

CATEGORIES = "dataset.categories=[1,9]"  # a masked edit and a whole-image style edit (nothing unedited)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        config = compose(config_name="config", overrides=[*FAST, CATEGORIES])
    folder = tmp_path_factory.mktemp("run")
    return folder, run_job(config, folder).set_index("sample_id")


def metric_values(rows, sample_id):
    return {column: rows.loc[sample_id, column] for column in METRIC_COLUMNS}


def assert_same_metrics(actual, expected):
    for column in METRIC_COLUMNS:
        a, e = actual[column], expected[column]
        assert (math.isnan(a) and math.isnan(e)) or a == pytest.approx(e, rel=1e-6, abs=1e-9), column


def test_job_rows_carry_every_metric(run):
    _, rows = run
    assert (rows["status"] == "ok").all()
    for column in METRIC_COLUMNS:
        assert column in rows.columns
    masked, style = rows.loc["121000000001"], rows.loc["922000000009"]
    assert all(np.isfinite(masked[column]) for column in METRIC_COLUMNS)
    assert all(math.isnan(style[f"{name}_unedit_part"]) for name in ("psnr", "lpips", "mse", "ssim"))
    assert rows["metrics_setup"].eq("pie_bench/reference dino=tiny clip=tiny lpips=tiny").all()
    assert (rows["metrics_resized_from"] == 64).all()  # the 64² test images are scored at the mask's 512²
    assert (rows["metrics_seconds"] > 0).all()


@pytest.mark.slow
def test_metrics_take_under_a_second_per_sample_on_cpu():
    """Wall-clock, so only meaningful on an otherwise idle machine: run with `-m slow`."""
    import statistics
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    from metrics_speed import measure

    assert statistics.median(measure("tiny", "cpu")) < 1.0


def test_evaluate_rescoring_a_run_folder_reproduces_the_job_metrics(run, compose, tmp_path):
    folder, rows = run
    rescored = evaluate_folder(compose(f"outputs={folder}", "metrics.backbones=tiny", config_name="score"), tmp_path)
    rescored = rescored.set_index("sample_id")
    for sample_id in rows.index:
        assert_same_metrics(metric_values(rescored, sample_id), metric_values(rows, sample_id))
        assert rescored.loc[sample_id, "total_seconds"] == rows.loc[sample_id, "total_seconds"]  # costs kept
    assert (tmp_path / "summary.md").is_file()


def test_evaluate_scores_reference_layout_composites_like_the_job(run, compose, tmp_path, mini):
    """Write the job's images as the reference scripts do (2048×512 composite, saved as .jpg at PIL's defaults):
    scoring them gives the job's own reference_compat numbers, because the job emulates that JPEG round trip."""
    folder, rows = run
    method_folder = tmp_path / "output" / "ddim+direct"
    samples = {s.id: s for s in mini.samples}
    for sample_id in rows.index:
        sample = samples[sample_id]
        panels = [
            np.zeros((512, 512, 3), np.uint8),  # the prompt-text panel
            fit_square(sample.read_image(), 512),
            *(
                fit_square(np.asarray(Image.open(folder / rows.loc[sample_id, key])), 512)
                for key in ("reconstruction_image", "edited_image")
            ),
        ]
        path = method_folder / "annotation_images" / sample.image_path
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(panels, axis=1)).save(path)
    scored = evaluate_folder(
        compose(
            f"outputs={method_folder}",
            CATEGORIES.replace("[1,9]", "[1,6,9]"),
            "metrics.backbones=tiny",
            config_name="score",
        ),
        tmp_path / "scores",
    ).set_index("sample_id")
    for sample_id in rows.index:
        assert_same_metrics(metric_values(scored, sample_id), metric_values(rows, sample_id))
    assert scored.loc["121000000001", ["inversion", "editor", "model"]].tolist() == ["ddim", "direct", "external"]
    missing = scored.loc["623000000006"]  # category 6 was selected but has no output image
    assert missing["status"] == "failed" and "no output image" in missing["error"]


def test_evaluate_refuses_row_paths_that_leave_the_run_folder_or_are_shared(run, compose, tmp_path):
    folder, rows = run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    outside = tmp_path / "outside.png"
    shutil.copy(copy / rows.loc["121000000001", "edited_image"], outside)
    stored = read_rows(copy / "results.jsonl")
    stored[0]["edited_image"] = "../outside.png"  # a row pointing out of its folder is never read
    stored[1]["reconstruction_image"] = str(outside)
    (copy / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in stored))
    scored = evaluate_folder(compose(f"outputs={copy}", "metrics.backbones=tiny", config_name="score"), tmp_path / "a")
    assert scored["status"].tolist() == ["failed", "failed"]
    errors = scored.set_index("sample_id")["error"]
    assert "field 'edited_image': '../outside.png' contains '..'" in errors[stored[0]["sample_id"]]
    assert (
        "field 'reconstruction_image'" in errors[stored[1]["sample_id"]]
        and "is absolute" in errors[stored[1]["sample_id"]]
    )

    # two samples' rows naming one edited image (an older folder whose mapping reused an image): neither is scored
    stored = read_rows(folder / "results.jsonl")
    stored[1]["edited_image"] = stored[0]["edited_image"]
    (copy / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in stored))
    scored = evaluate_folder(compose(f"outputs={copy}", "metrics.backbones=tiny", config_name="score"), tmp_path / "b")
    assert scored["status"].tolist() == ["failed", "failed"]
    assert all("is named by 2 samples' rows" in error for error in scored["error"])


def test_an_evaluation_folder_holds_one_source_and_one_metric_setup(run, compose, tmp_path):
    folder, _ = run
    evaluate_folder(compose(f"outputs={folder}", "metrics.backbones=tiny", config_name="score"), tmp_path / "eval")
    with pytest.raises(ConfigError, match="another metrics_config_hash"):
        evaluate_folder(
            compose(
                f"outputs={folder}", "metrics.backbones=tiny", "metrics.reference_compat=false", config_name="score"
            ),
            tmp_path / "eval",
        )
    other = tmp_path / "other_run"
    shutil.copytree(folder, other)
    with pytest.raises(ConfigError, match="another scored_from"):
        evaluate_folder(compose(f"outputs={other}", "metrics.backbones=tiny", config_name="score"), tmp_path / "eval")
