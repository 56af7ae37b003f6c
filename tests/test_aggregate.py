"""Tables from rows: counts, means over successful samples only, dedup of retried samples, Markdown."""

import json
import math

import pandas as pd
import pytest

from reports import coverage, describe_coverage, load_results, mean_table, to_markdown


def row(sample_id, status="ok", seconds=1.0, guidance=7.5, digest="h1", **extra):
    return {
        "sample_id": sample_id,
        "status": status,
        "inversion": "ddim",
        "editor": "direct",
        "model": "tiny",
        "config_hash": digest,
        "hparams": {"inversion": {"num_steps": 50}, "editor": {"guidance_scale": guidance}},
        "total_seconds": seconds,
        "inversion_seconds": seconds / 4,
        "edit_seconds": 3 * seconds / 4,
        "inversion_unet_evals": 50,
        "edit_unet_evals": 200,
        "peak_memory_mb": 100.0,
        **extra,
    }


def write(folder, rows):
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_means_exclude_failed_samples_and_count_them():
    table = mean_table(pd.DataFrame([row("a", seconds=1.0), row("b", seconds=2.0), row("c", "failed", seconds=100.0)]))
    (only,) = table.to_dict("records")
    assert only["samples_ok"] == 2 and only["samples_failed"] == 1
    assert only["total_seconds"] == pytest.approx(1.5) and only["edit_seconds"] == pytest.approx(1.125)
    assert "differs" not in table.columns


def test_latest_row_per_sample_wins_and_folders_merge(tmp_path):
    write(tmp_path / "sweep" / "0", [row("a", "failed"), row("a", seconds=4.0), row("b", seconds=2.0)])
    write(tmp_path / "sweep" / "1", [row("a", seconds=6.0, guidance=1.0, digest="h2")])
    results = load_results([tmp_path / "sweep"])
    assert len(results) == 3
    table = mean_table(results).set_index("config_hash")
    assert table.loc["h1", "samples_ok"] == 2 and table.loc["h1", "samples_failed"] == 0
    assert table.loc["h1", "total_seconds"] == pytest.approx(3.0)
    assert table.loc["h2", "differs"] == "editor.guidance_scale=1.0"
    assert table.loc["h1", "differs"] == "editor.guidance_scale=7.5"


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_results([tmp_path / "nope"])


def test_markdown_rounds_and_marks_missing_values():
    text = to_markdown(pd.DataFrame({"method": ["ddim"], "psnr": [27.2249], "ssim": [math.nan], "n": [3]}))
    assert text.splitlines() == ["| method | psnr | ssim | n |", "|---|---|---|---|", "| ddim | 27.22 | - | 3 |"]


def test_metric_means_use_paper_scales_skip_nan_and_never_mix_setups():
    rows = [
        row("a", metrics_setup="pie_bench/reference dino=tiny", mse_unedit_part=0.002, ssim_unedit_part=0.8),
        row("b", metrics_setup="pie_bench/reference dino=tiny", mse_unedit_part=math.nan, ssim_unedit_part=0.6),
        row("c", metrics_setup="pie_bench/reference dino=facebook/dino-vitb8", mse_unedit_part=0.004),
    ]
    table = mean_table(pd.DataFrame(rows)).set_index("metrics_setup")
    assert len(table) == 2  # same method, different metric backbones: two rows, never one average
    tiny = table.loc["pie_bench/reference dino=tiny"]
    assert tiny["mse_unedit_part_x1e4"] == pytest.approx(20.0)  # NaN (nothing unedited) left out, ×10⁴
    assert tiny["ssim_unedit_part_x1e2"] == pytest.approx(70.0)
    assert table.loc["pie_bench/reference dino=facebook/dino-vitb8", "mse_unedit_part_x1e4"] == pytest.approx(40.0)


def test_coverage_tells_done_incomplete_ended_and_unlisted_jobs_apart(tmp_path):
    sweep = tmp_path / "sweep"
    write(sweep / "0", [row("a"), row("b", "failed")])
    write(sweep / "1", [row("a")])
    for n, ids in enumerate([["a", "b"], ["a", "b", "c"], ["a"]]):
        (sweep / str(n)).mkdir(exist_ok=True)
        (sweep / str(n) / "selection.json").write_text(json.dumps({"job_num": n, "sample_ids": ids}))
    (sweep / "3.ended").write_text("")  # submitit's result file of job 3, which never wrote anything
    jobs = [
        {
            "num": n,
            "job_id": f"7_{n}",
            "overrides": [f"x={n}"],
            "log": f"7_{n}.err",
            "ended_marker": f"{sweep}/{n}.ended",
        }
        for n in range(4)
    ]
    (sweep / "jobs.json").write_text(json.dumps({"resubmit_command": "python launch.py -m x=0,1,2,3", "jobs": jobs}))
    write(tmp_path / "old_run", [row("a")])  # a job folder from before selection.json, outside any sweep

    table = coverage([sweep, tmp_path / "old_run"]).set_index("job_id", drop=False)
    assert table.loc["7_0", ["state", "expected", "ok", "failed", "missing"]].tolist() == ["done", 2, 1, 1, 0]
    assert table.loc["7_1", ["state", "missing", "missing_ids"]].tolist() == ["incomplete", 2, "b c"]
    assert table.loc["7_2", ["state", "ok", "missing"]].tolist() == ["incomplete", 0, 1]
    assert table.loc["7_3", "state"] == "ended not started" and pd.isna(table.loc["7_3", "folder"])
    assert table.set_index("folder").loc[str(tmp_path / "old_run"), "state"] == "unknown"

    text = describe_coverage(table, [sweep])
    assert text.splitlines()[0] == (
        "coverage: 1 of 5 jobs done; samples: 3 ok, 1 failed, 3 missing, plus the samples of 1 job(s) with no output"
    )
    assert f"{sweep / '1'} [job 7_1]: 2 of 3 samples missing (x=1)" in text
    assert (
        "(no folder yet) [job 7_3]: no output: the job ended before its first sample (x=3)\n    its log: 7_3.err"
        in text
    )
    assert text.endswith("python launch.py -m x=0,1,2,3")
