"""Tables from rows: counts, means over successful samples only, dedup of retried samples, Markdown."""

import json
import math

import pandas as pd
import pytest

from reports import load_results, mean_table, to_markdown


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
