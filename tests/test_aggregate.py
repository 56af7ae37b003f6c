"""Tables from rows: counts, means over successful samples only, dedup of retried samples, Markdown."""

import json
import math
import socket

import pandas as pd
import pytest

from reports import coverage, describe_coverage, load_results, mean_table, to_markdown
from reports.coverage import parse_sacct


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


def status(folder, state, **fields):
    (folder / "job_status.json").write_text(json.dumps({"state": state, "logs": {"stdout": "out.txt"}, **fields}))


def test_coverage_tells_job_and_sample_states_apart(tmp_path):
    sweep = tmp_path / "sweep"
    write(sweep / "0", [row("a"), row("b", "failed")])
    write(sweep / "1", [row("a")])
    for n, ids in enumerate([["a", "b"], ["a", "b", "c"], ["a"], ["a"]]):
        (sweep / str(n)).mkdir(exist_ok=True)
        (sweep / str(n) / "selection.json").write_text(json.dumps({"job_num": n, "sample_ids": ids}))
    status(sweep / "0", "ok")
    status(sweep / "1", "running", pid=1, host="elsewhere")  # on another node: Slurm says what became of it
    status(sweep / "2", "failed", reason="ModelNotAvailableError: model 'sd14' is not available")
    status(sweep / "3", "preempted", reason="requeued")
    jobs = [
        {"num": n, "job_id": f"7_{n}", "overrides": [f"x={n}"], "stdout": f"7_{n}.out", "stderr": f"7_{n}.err"}
        for n in range(6)
    ]
    listing = {"executor": "slurm", "resubmit_command": "python /abs/launch.py -m x=0,1,2,3,4,5", "jobs": jobs}
    (sweep / "jobs.json").write_text(json.dumps(listing))
    write(tmp_path / "old_run", [row("a")])  # a job folder from before selection.json, outside any sweep
    slurm = parse_sacct(
        "7_0|COMPLETED|0:0\n7_1|CANCELLED by 0|0:15\n7_3|REQUEUED|0:0\n7_4|FAILED|2:0\n7_8|CANCELLED by 0|0:0\n"
        "7_[5-9%2]|PENDING|0:0\n"  # sacct lists the pending tasks as a range, still including the cancelled 7_8
    )
    assert slurm["7_6"] == ("PENDING", "0:0") and slurm["7_1"] == ("CANCELLED", "0:15")
    assert slurm["7_8"] == ("CANCELLED", "0:0")

    table = coverage([sweep, tmp_path / "old_run"], scheduler=lambda ids: slurm).set_index("job_id", drop=False)
    assert table.loc["7_0", ["state", "job_state", "expected", "ok", "failed", "missing"]].tolist() == [
        "done",
        "ended-ok",
        2,
        1,
        1,
        0,
    ]
    assert table.loc["7_1", ["state", "job_state", "missing_ids"]].tolist() == ["incomplete", "ended-failed", "b c"]
    assert table.loc["7_1", "reason"].startswith("Slurm: CANCELLED (exit code 0:15); the job was running")
    assert table.loc["7_2", ["job_state", "reason"]].tolist() == [
        "ended-failed",
        "ModelNotAvailableError: model 'sd14' is not available",
    ]
    assert table.loc["7_3", "job_state"] == "preempted"
    assert table.loc["7_4", ["state", "job_state"]].tolist() == [
        "not started",
        "ended-failed",
    ]  # failed before invbench
    assert pd.isna(table.loc["7_4", "folder"]) and table.loc["7_4", "stderr"] == "7_4.err"
    assert table.loc["7_5", "job_state"] == "queued"
    assert table.set_index("folder").loc[str(tmp_path / "old_run"), "state"] == "unknown"

    text = describe_coverage(table, [sweep])
    assert text.splitlines()[0] == (
        "coverage: 1 of 7 jobs done (1 queued, 1 preempted, 3 ended-failed, 1 unknown); samples: 3 ok, 1 failed, "
        "4 missing, plus the samples of 2 job(s) with no output"
    )
    assert f"{sweep / '2'} [job 7_2]: 1 of 1 samples missing; ended-failed: ModelNotAvailableError" in text
    assert "    stdout: out.txt" in text
    assert "(no folder yet) [job 7_4]: no output; ended-failed: Slurm: FAILED (exit code 2:0)" in text
    assert "    stderr: 7_4.err" in text
    assert text.endswith("python /abs/launch.py -m x=0,1,2,3,4,5")


def test_a_killed_local_job_is_ended_not_running(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    write(tmp_path / "run", [row("a")])
    status(tmp_path / "run", "running", pid=gone.pid, host=socket.gethostname())
    (row_,) = coverage([tmp_path / "run"]).to_dict("records")
    assert row_["job_state"] == "ended-failed" and "is gone without writing how it ended" in row_["reason"]


def test_rows_whose_fields_break_the_schema_are_named_by_file_line_and_field(tmp_path):
    from conftest import run

    job = tmp_path / "job"
    job.mkdir()
    good = {"sample_id": "a", "status": "ok", "inversion": "ddim", "editor": "direct", "psnr_unedit_part": 20.0,
            "total_seconds": 1.0, "category": "random", "edit_class": "global"}  # fmt: skip
    lines = [good, {**good, "sample_id": "b", "psnr_unedit_part": "n/a"}, {**good, "sample_id": "c",
             "total_seconds": -4}, {**good, "sample_id": "d", "ssim_unedit_part": 3.5}, {**good, "sample_id": "e",
             "status": "done"}]  # fmt: skip
    (job / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, output = run("aggregate.py", str(job), "--out", str(tmp_path / "tables"), "--no-figures", "--no-gallery",
                       cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    path = job / "results.jsonl"
    assert f"{path}:2: sample 'b': field 'psnr_unedit_part': 'n/a' is not a number" in output
    assert f"{path}:3: sample 'c': field 'total_seconds': -4 is outside [0, inf]" in output
    assert f"{path}:4: sample 'd': field 'ssim_unedit_part': 3.5 is outside [-1, 1]" in output
    assert f"{path}:5: sample 'e': field 'status': 'done' is not one of ok, failed" in output
    assert "Traceback" not in output
    assert "skipped 4 unreadable line(s)" in output
