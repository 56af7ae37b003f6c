"""One definition of the result-row columns (invbench/columns.py): a row the runner writes holds every metric and
cost column the schema defines (the two phase sums are made by the reports), and the reports' tables take their
columns, scales and directions from it."""

from __future__ import annotations

from conftest import run

from invbench.columns import COLUMNS, MEAN_TABLE_COSTS, MEAN_TABLE_METRICS, METRIC_COLUMNS, PAPER_TABLE
from invbench.results import read_rows
from reports.paper import PAPER_COLUMNS
from reports.tables import COST_COLUMNS, PAPER_SCALES

DERIVED = {"unet_evals", "unet_backward_evals"}  # inversion + edit, summed by the reports


def test_a_written_row_holds_every_column_of_the_schema(tmp_path):
    code, output = run(
        "launch.py", "model.resolution=64", "num_steps=2", "metrics.backbones=tiny", "dataset.categories=[1]",
        f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    (row,) = read_rows(tmp_path / "run" / "results.jsonl")
    missing = [key for key in COLUMNS if key not in DERIVED and key not in row]
    assert not missing and all(isinstance(row[key], (int, float)) for key in METRIC_COLUMNS)


def test_the_reports_take_their_columns_from_the_schema():
    assert list(PAPER_SCALES) == list(MEAN_TABLE_METRICS) and COST_COLUMNS == list(MEAN_TABLE_COSTS)
    assert PAPER_SCALES["lpips_unedit_part"] == 1e3 and PAPER_SCALES["mse_unedit_part"] == 1e4
    assert [column.key for column in PAPER_COLUMNS] == list(PAPER_TABLE)
    assert all(column is COLUMNS[column.key] for column in PAPER_COLUMNS)
    assert {key for key in COLUMNS if COLUMNS[key].kind == "metric"} == set(METRIC_COLUMNS)
    assert (
        not COLUMNS["structure_distance"].higher_is_better and COLUMNS["clip_similarity_target_image"].higher_is_better
    )
