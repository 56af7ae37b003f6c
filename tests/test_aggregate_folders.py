"""aggregate.py over every kind of folder the harness itself writes, alone and in every pair (and all together):
it never crashes, and every table, figure and the gallery skip what a row lacks and say so."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CONF, FAST
from PIL import Image

import aggregate
from invbench.images import fit_square
from invbench.results import read_rows
from orchestration.evaluation import evaluate_folder
from orchestration.runner import NoSampleSucceeded, run_job
from pie_bench.dataset import BUNDLED_MINI_ROOT

SAMPLES = "dataset.categories=[1,9]"  # a masked edit and a whole-image style edit


def compose(*overrides: str, config_name: str = "config"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def reference_layout(job: Path, out: Path) -> Path:
    """The job's edits written as the reference scripts write them: 2048×512 composites saved as .jpg."""
    method = out / "ddim+direct"
    for row in read_rows(job / "results.jsonl"):
        source = fit_square(np.asarray(Image.open(BUNDLED_MINI_ROOT / "annotation_images" / row["image_path"])), 512)
        edits = [
            fit_square(np.asarray(Image.open(job / row[key])), 512) for key in ("reconstruction_image", "edited_image")
        ]
        path = method / "annotation_images" / row["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate([np.zeros_like(source), source, *edits], axis=1)).save(path)
    return method


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("folders")
    kinds = {}
    kinds["job"] = root / "job"
    run_job(compose(*FAST, SAMPLES), kinds["job"])
    kinds["same_job_again"] = root / "same_job_again"  # the same configuration and samples, run again elsewhere
    run_job(compose(*FAST, SAMPLES), kinds["same_job_again"])

    broken = root / "broken_data"  # every sample fails: images gone, and one entry without an image_path
    shutil.copytree(BUNDLED_MINI_ROOT, broken)
    shutil.rmtree(broken / "annotation_images")
    mapping = json.loads((broken / "mapping_file.json").read_text())
    del mapping["121000000001"]["image_path"]
    (broken / "mapping_file.json").write_text(json.dumps(mapping))
    kinds["only_failed"] = root / "only_failed"
    with pytest.raises(NoSampleSucceeded):  # its rows are written; the job itself ends as failed
        run_job(compose(*FAST, SAMPLES, f"dataset.root={broken}"), kinds["only_failed"])

    kinds["metrics_none"] = root / "metrics_none"
    run_job(compose(*FAST[:2], SAMPLES, "metrics=none", "editor=p2p"), kinds["metrics_none"])

    kinds["evaluated_reference_layout"] = root / "evaluated_reference_layout"
    method = reference_layout(kinds["job"], root / "output")
    evaluate_folder(
        compose(f"outputs={method}", SAMPLES, "metrics.backbones=tiny", config_name="score"),
        kinds["evaluated_reference_layout"],
    )
    kinds["evaluated_run"] = root / "evaluated_run"  # score.py rows of the job itself, next to its launch.py rows
    evaluate_folder(
        compose(f"outputs={kinds['job']}", "metrics.backbones=tiny", config_name="score"), kinds["evaluated_run"]
    )
    kinds["damaged"] = root / "damaged"
    shutil.copytree(kinds["job"], kinds["damaged"])
    path = kinds["damaged"] / "results.jsonl"
    first, second = path.read_text().splitlines(keepends=True)
    path.write_text(first + "\n" + second[:40] + "\n" + second)
    return kinds


def test_the_folders_are_what_they_claim(folders):
    rows = {kind: read_rows(folder / "results.jsonl") for kind, folder in folders.items()}
    assert all(row["status"] == "failed" for row in rows["only_failed"])
    assert any(row["image_path"] is None for row in rows["only_failed"])
    assert all("structure_distance" not in row for row in rows["metrics_none"])
    assert all("total_seconds" not in row for row in rows["evaluated_reference_layout"])
    assert {row["config_hash"] for row in rows["evaluated_run"]} == {row["config_hash"] for row in rows["job"]}


def aggregate_ok(paths: list[Path], out: Path, *options: str) -> str:
    code = aggregate.main([*map(str, paths), "--out", str(out), "--resamples", "50", *options])
    assert code == 0, paths
    return (out / "table1.md").read_text()


COMBINATIONS = [
    combination
    for size in (1, 2, 7)
    for combination in itertools.combinations(
        [
            "job",
            "same_job_again",
            "only_failed",
            "metrics_none",
            "evaluated_reference_layout",
            "evaluated_run",
            "damaged",
        ],
        size,
    )
]


@pytest.mark.parametrize("kinds", COMBINATIONS, ids=["+".join(kinds) for kinds in COMBINATIONS])
def test_aggregate_never_crashes_on_folders_the_harness_wrote(folders, kinds, tmp_path, capsys):
    out = tmp_path / "tables"
    aggregate_ok([folders[kind] for kind in kinds], out)
    for stem in ("table1", "per_category", "mean_by_method"):
        assert (out / f"{stem}.csv").is_file() and (out / f"{stem}.md").is_file()
    assert (out / "table1.tex").is_file() and (out / "failed.csv").is_file() and (out / "coverage.csv").is_file()
    assert (out / "gallery" / "index.html").is_file()
    assert all(path.stat().st_size > 1000 for path in (out / "figures").glob("*.png"))


def table1(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "table1.csv")


def test_the_same_samples_in_several_folders_count_once_with_a_note(folders, tmp_path):
    text = aggregate_ok([folders["job"], folders["same_job_again"], folders["damaged"]], tmp_path)
    (row,) = table1(tmp_path).to_dict("records")
    assert row["samples_ok"] == 2 and row["structure_distance_n"] == 2
    assert pd.read_csv(tmp_path / "mean_by_method.csv")["samples_ok"].tolist() == [2]
    assert "each such sample counts once, with its latest row (by finished_at)" in text
    # score.py's re-scoring of the job is the later row of the same samples: it replaces the job's rows
    text = aggregate_ok([folders["job"], folders["evaluated_run"]], tmp_path / "with_evaluation")
    assert table1(tmp_path / "with_evaluation")["samples_ok"].tolist() == [2]
    assert f"folders whose rows were all superseded: {folders['job']}" in text


def test_tables_figures_and_gallery_say_what_rows_lack(folders, tmp_path, capsys):
    text = aggregate_ok(list(folders.values()), tmp_path)
    assert "every column (no successful sample)" in text  # only_failed
    assert "(run with metrics=none)" in text
    assert "(scored by score.py from saved outputs, which record no cost)" in text
    assert "data: " + str(Path(folders["only_failed"]).parent / "broken_data" / "mapping_file.json") in text
    failed = pd.read_csv(tmp_path / "failed.csv")
    samples, jobs = failed[failed["sample_id"].notna()], failed[failed["sample_id"].isna()]
    assert len(samples) == 2 and samples["error"].str.contains("image_path").any()
    (job,) = jobs["error"]  # the job whose samples all failed ended as failed, and says so
    assert job.startswith("job ended: NoSampleSucceeded: all 2 samples of this job failed"), job
    page = (tmp_path / "gallery" / "index.html").read_text()
    assert "failed: " in page
    for source in re.findall(r'<img [^>]*src="([^"]+)"', page):
        assert (tmp_path / "gallery" / source).is_file(), source

    alone = aggregate_ok([folders["metrics_none"]], tmp_path / "none")
    assert "Not shown because no row has them: Structure Distance ×10³, PSNR" in alone
    assert re.search(r"<p>\d+ samples? × 1 method\. ", (tmp_path / "none" / "gallery" / "index.html").read_text())
    assert (tmp_path / "none" / "figures" / "tradeoff_psnr_vs_clip_edited.png").stat().st_size > 1000
    costless = aggregate_ok([folders["evaluated_reference_layout"]], tmp_path / "external")
    assert "Not shown because no row has them: Time (s/image), UNet evals, UNet backward, Peak memory (MB)" in costless
