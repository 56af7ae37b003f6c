"""Reports: the paper tables (golden files), bootstrap intervals, paired comparisons, published deltas, and the
figures, gallery and wandb output of a real (tiny-model) sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run
from PIL import Image

from invbench.errors import ConfigError
from reports.build import ReportOptions, build_reports
from reports.paper import paper_table, prepare, to_csv, to_latex, to_markdown
from reports.published import compare_with_published, load_published
from reports.statistics import Bootstrap, paired_difference

GOLDEN = Path(__file__).parent / "golden"
SETUP = "pie_bench/reference dino=real clip=real lpips=real"


def sample_row(inversion, editor, sample_id, psnr, clip_edit, status="ok", model="sd14", category="change color"):
    """A result row with every table column; values derived from psnr / clip_edit so that they are easy to check."""
    row = {
        "inversion": inversion,
        "editor": editor,
        "model": model,
        "config_hash": f"{inversion}-{editor}",
        "metrics_setup": SETUP,
        "hparams": {"inversion": {"name": inversion}, "editor": {"name": editor}},
        "sample_id": sample_id,
        "category": category,
        "edit_class": "appearance" if category == "change color" else "structure",
        "status": status,
        "error": None if status == "ok" else "FileNotFoundError: image not found",
        "run_dir": "runs",
    }
    if status != "ok":
        return row
    return row | {
        "structure_distance": psnr / 1000,
        "psnr_unedit_part": psnr,
        "lpips_unedit_part": 1 / psnr,
        "mse_unedit_part": 10 ** (-psnr / 10),
        "ssim_unedit_part": float("nan") if math.isnan(psnr) else 0.8,  # NaN with the others when nothing is unedited
        "clip_similarity_target_image": clip_edit + 2,
        "clip_similarity_target_image_edit_part": clip_edit,
        "total_seconds": 10.0 if inversion == "ddim" else 100.0,
        "inversion_unet_evals": 50,
        "edit_unet_evals": 100,
        "inversion_unet_backward_evals": 0 if inversion == "ddim" else 20,
        "edit_unet_backward_evals": 0,
        "peak_memory_mb": 4000.0,
    }


def fixed_rows() -> pd.DataFrame:
    rows = []
    for index, (psnr, clip_edit) in enumerate([(20, 22), (24, 21), (28, 23), (float("nan"), 20)]):
        sample_id = f"s{index}"
        category = "change color" if index < 2 else "add object"
        rows.append(sample_row("ddim", "p2p", sample_id, psnr, clip_edit, category=category))
        rows.append(sample_row("nti", "p2p", sample_id, psnr + 6, clip_edit - 1, category=category))
    rows.append(sample_row("nti", "p2p", "s4", 0, 0, status="failed"))
    return pd.DataFrame(rows)


def test_table1_matches_the_golden_files_and_hand_computed_means():
    table = paper_table(prepare(fixed_rows()), "Golden", resamples=200)
    cells = table.cells.set_index("inversion")
    # ddim PSNR: mean of 20, 24, 28 (the NaN of s3 is left out) = 24; nti: +6 = 30. Structure distance ×1e3 = PSNR.
    assert cells.loc["ddim", "psnr_unedit_part"] == pytest.approx(24)
    assert cells.loc["nti", "psnr_unedit_part"] == pytest.approx(30)
    assert cells.loc["nti", "structure_distance"] == pytest.approx(30)
    assert cells.loc["ddim", "clip_similarity_target_image_edit_part"] == pytest.approx(21.5)
    assert cells.loc["ddim", "psnr_unedit_part_n"] == 3 and cells.loc["ddim", "clip_similarity_target_image_n"] == 4
    assert cells.loc["nti", "samples_failed"] == 1 and cells.loc["nti", "samples_ok"] == 4
    assert cells.loc["ddim", "unet_evals"] == 150

    markdown, latex = to_markdown(table), to_latex(table)
    assert "| nti | p2p | 30.00 ± " in markdown.replace("**", "") and "| **30.00** ±" in markdown  # PSNR: higher best
    assert "| **24.00** ±" in markdown  # structure distance: lower is better, so ddim's 24 is bold
    assert "1 failed sample rows are counted (samples_failed) and not in any mean: nti+p2p s4" in markdown
    assert "(2 sample rows here)" in markdown  # the NaN policy counts the undefined background rows (s3 twice)
    assert r"\textbf{30.00}" in latex and r"\toprule" in latex and r"\bottomrule" in latex
    for name, text in {"table1.csv": to_csv(table), "table1.md": markdown, "table1.tex": latex}.items():
        assert text == (GOLDEN / name).read_text(encoding="utf-8"), f"{name} differs from tests/golden/{name}"


def test_blocks_are_per_category_with_their_own_best_and_structure_tables_drop_the_distance(tmp_path):
    report = build_reports(fixed_rows(), tmp_path, ReportOptions(resamples=100, figures=False, gallery=False))
    per_category = report.tables["per_category"].cells
    assert list(per_category["block"]) == ["add object", "add object", "change color", "change color"]
    ddim_color = per_category[(per_category["block"] == "change color") & (per_category["inversion"] == "ddim")]
    assert ddim_color["psnr_unedit_part"].item() == pytest.approx(22)  # samples s0, s1 only
    assert "structure_distance" not in [c.key for c in report.tables["class_structure"].columns]
    assert "structure_distance" in [c.key for c in report.tables["class_appearance"].columns]
    assert "\\midrule" in (tmp_path / "per_category.tex").read_text()
    assert (tmp_path / "failed.csv").read_text().count("s4") == 1


def test_rows_of_different_models_get_setup_markers():
    rows = pd.concat([fixed_rows(), pd.DataFrame([sample_row("ddim", "p2p", "s0", 20, 22, model="tiny")])])
    table = paper_table(prepare(rows), "Mixed", resamples=50)
    assert table.has_setups and set(table.cells["setup"]) == {"a", "b"}
    markdown = to_markdown(table)
    assert "| ddim | p2p | [b] |" in markdown and "[b] model=tiny" in markdown and "never compare across" in markdown


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_samples():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 2000):
        values = pd.Series(rng.normal(5.0, 2.0, n), index=[f"s{i}" for i in range(n)])
        plan = Bootstrap.plan(values.index, resamples=500)
        low, high = plan.interval(plan.align(values))
        assert low < values.mean() < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # ~ 1/sqrt(100) = 1/10 of the width
    # NaN values are left out of each resample's mean, as in the table.
    values = pd.Series([1.0, np.nan, 3.0], index=["a", "b", "c"])
    plan = Bootstrap.plan(values.index, resamples=200)
    low, high = plan.interval(plan.align(values))
    assert 1.0 <= low <= 2.0 <= high <= 3.0


def test_paired_difference_sees_a_constant_shift_and_nothing_in_identical_methods():
    rng = np.random.default_rng(2)
    a = pd.Series(rng.normal(0, 5, 50), index=[f"s{i}" for i in range(50)])
    shifted = paired_difference(a + 0.3, a, "psnr")
    assert shifted.difference == pytest.approx(0.3) and shifted.low == pytest.approx(0.3)
    assert shifted.excludes_zero and shifted.a_higher == 1.0
    same = paired_difference(a, a.copy(), "psnr")
    assert same.difference == 0 and not same.excludes_zero
    # only shared samples count
    partial = paired_difference(a.iloc[:10], a + 1, "psnr")
    assert partial.samples == 10 and partial.difference == pytest.approx(-1)


def test_published_numbers_are_matched_by_registry_name():
    published, source = load_published("todinv_table1")
    assert "Task-Oriented Diffusion Inversion" in source
    nti = published[(published["inversion"] == "nti") & (published["editor"] == "p2p")].iloc[0]
    assert nti["psnr_unedit_part"] == 27.03 and nti["total_seconds"] == 137.54
    assert math.isnan(published[published["inversion"] == "spdinv"].iloc[0]["clip_similarity_target_image_edit_part"])
    comparison = compare_with_published(paper_table(prepare(fixed_rows()), "T", resamples=50), published)
    psnr = comparison[(comparison["inversion"] == "nti") & (comparison["metric"] == "psnr_unedit_part")].iloc[0]
    assert psnr["delta"] == pytest.approx(30 - 27.03) and psnr["published_inside_our_interval"]  # [26, 34]
    ssim = comparison[(comparison["inversion"] == "nti") & (comparison["metric"] == "ssim_unedit_part")].iloc[0]
    assert ssim["delta"] == pytest.approx(80 - 84.11) and not ssim["published_inside_our_interval"]  # [80, 80]
    with pytest.raises(ConfigError, match="shipped tables: \\[.*'todinv_table1'.*\\]"):
        load_published("nope")


@pytest.fixture(scope="module")
def mini_sweep(tmp_path_factory):
    """A real sweep on the bundled mini benchmark: 2 editors x 3 samples, tiny model, wandb offline."""
    root = tmp_path_factory.mktemp("reports")
    sweep = root / "sweep"
    args = ["-m", "editor=direct,p2p", "dataset.categories=[1,6,9]", "logger=wandb", f"hydra.sweep.dir={sweep}"]
    code, output = run("launch.py", *args, "model.resolution=64", "num_steps=5", "metrics.backbones=tiny", cwd=root)
    assert code == 0, output
    return root, sweep


def test_aggregate_renders_tables_figures_gallery_and_pushes_to_wandb(mini_sweep):
    root, sweep = mini_sweep
    out = root / "tables"
    args = [str(sweep), "--out", str(out), "--published", "todinv_table1", "--compare", "ddim+p2p", "ddim+direct"]
    code, output = run("aggregate.py", *args, "--wandb-project", "invbench-test", "--wandb-mode", "offline", cwd=root)
    assert code == 0, output
    assert "**PIE-Bench: inversion × editing method**" in output and "coverage: 2 of 2 jobs done" in output
    for stem in ("table1", "per_category", "class_appearance", "class_global"):
        assert {p.suffix for p in out.glob(f"{stem}.*")} == {".csv", ".md", ".tex"}
    assert "ddim | p2p" in (out / "published.md").read_text() and "WARNING" in (out / "published.md").read_text()
    assert "| clip_similarity_target_image_edit_part | 3 |" in (out / "compare_ddim-p2p_vs_ddim-direct.md").read_text()

    for stem in ("tradeoff_psnr_vs_clip_edited", "time_per_image"):
        with Image.open(out / "figures" / f"{stem}.png") as image:
            assert image.width > 300 and image.height > 200
        assert (out / "figures" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")

    page = out / "gallery" / "index.html"
    text = page.read_text()
    sources = [part.split('"')[0] for part in text.split('src="')[1:]]
    assert len(sources) == 3 * (1 + 1 + 2)  # per sample: source, one reconstruction (ddim), two edits
    assert all((page.parent / source).is_file() for source in sources)
    for sample_id in ("121000000001", "623000000006", "922000000009"):
        assert sample_id in text
    assert "a close-up photo of a tiger with green eyes" in text
    assert "<p>3 samples × 2 methods. Captions" in text

    assert "wandb (offline): logged" in output
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_wandb_logger_writes_one_offline_run_per_job_and_resumes_it(mini_sweep):
    root, sweep = mini_sweep
    job = next(sweep.glob("0_*"))
    (run_dir,) = job.glob("wandb/offline-run-*")
    run_id = (job / "wandb_run_id").read_text().strip()
    assert run_dir.name.endswith(run_id)
    (table,) = run_dir.glob("files/media/table/samples_*.table.json")
    logged = json.loads(table.read_text())
    assert logged["columns"][:7] == [
        "sample_id",
        "category",
        "status",
        "error",
        "target_prompt",
        "edited",
        "reconstruction",
    ]
    assert sorted(row[0] for row in logged["data"]) == ["121000000001", "623000000006", "922000000009"]

    # A resumed job (here with one sample to redo) continues the same wandb run id.
    rows = (job / "results.jsonl").read_text().splitlines(keepends=True)
    (job / "results.jsonl").write_text("".join(rows[:-1]))
    code, output = run(
        "launch.py", "dataset.categories=[1,6,9]", "logger=wandb", f"hydra.run.dir={job}",
        "model.resolution=64", "num_steps=5", "metrics.backbones=tiny", cwd=root,
    )  # fmt: skip
    assert code == 0, output
    assert {p.name.rsplit("-", 1)[1] for p in job.glob("wandb/offline-run-*")} == {run_id}


SPECIALS = r"50$ a^b ~c {d} back\slash 10% A&B #1 snake_case"


def latex_unescape(latex: str) -> str:
    """The text a LaTeX string typesets, for the escapes latex_escape emits (the test's own reading of them)."""
    import re

    words = {r"\textbackslash{}": "\\", r"\textasciicircum{}": "^", r"\textasciitilde{}": "~"}
    pattern = re.compile("|".join(map(re.escape, words)) + r"|\\([{}$&#%_])")
    return pattern.sub(lambda match: words.get(match[0]) or match[1], latex)


def test_latex_escaping_round_trips_every_special_character():
    from reports.paper import latex_escape

    escaped = latex_escape(SPECIALS)
    assert latex_unescape(escaped) == SPECIALS
    # no special character is left bare: each one is part of an escape
    bare = escaped
    for escape in (r"\textbackslash{}", r"\textasciicircum{}", r"\textasciitilde{}", *(f"\\{c}" for c in "{}$&#%_")):
        bare = bare.replace(escape, "")
    assert not set(bare) & set("\\{}$&#%_^~")
    assert latex_escape("ε ×10³ é") == r"? $\times$10$^{3}$ e"


def nasty_rows() -> pd.DataFrame:
    rows = fixed_rows()
    rows.loc[rows["inversion"] == "nti", "inversion"] = "n_t#i"
    rows["sample_id"] = rows["sample_id"] + SPECIALS
    rows.loc[rows["status"] != "ok", "error"] = "OSError: " + SPECIALS + " ε"
    return rows


def test_latex_tables_with_special_characters_compile(tmp_path):
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed; the round-trip test checks the escaping without it")
    table = paper_table(prepare(nasty_rows()), "Escaping: " + SPECIALS, resamples=20)
    (tmp_path / "table.tex").write_text(to_latex(table))
    (tmp_path / "document.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{graphicx}"
        "\\begin{document}\\input{table.tex}\\end{document}\n"
    )
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "document.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "document.pdf").stat().st_size > 1000
