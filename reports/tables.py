"""Tables from result rows: the mean per inversion × editor × model × configuration × metric setup."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from invbench.columns import COLUMNS, MEAN_TABLE_COSTS, MEAN_TABLE_METRICS
from invbench.markdown import markdown_table
from invbench.results import RESULTS_FILE, scan_rows

log = logging.getLogger(__name__)

GROUP_COLUMNS = ["inversion", "editor", "model", "config_hash", "metrics_setup"]
# PIE-Bench metrics in the papers' column order at the papers' scale, then the costs (invbench/columns.py)
PAPER_SCALES = {key: COLUMNS[key].scale for key in MEAN_TABLE_METRICS}
COST_COLUMNS = list(MEAN_TABLE_COSTS)


def scaled_name(column: str) -> str:
    scale = PAPER_SCALES.get(column, 1)
    return column if scale == 1 else f"{column}_x{scale:.0e}".replace("e+0", "e")


def load_results(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every results file under `paths` (run folders, sweep folders or results files), one row per
    (job folder, sample): the latest, so a sample retried after a failure counts once. Lines that are not rows
    (damage) are skipped and listed, as 'file:line: why', in `.attrs["unreadable_rows"]`."""
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        found = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE))
        if not found:
            log.warning("%s holds no %s", path, RESULTS_FILE)
        files.extend(found)
    rows, unreadable = [], []
    for file in files:
        readable, problems = scan_rows(file)
        rows += [dict(row, run_dir=str(file.parent)) for row in readable]
        unreadable += problems
    frame = pd.DataFrame(rows)
    if rows:
        frame = frame.drop_duplicates(subset=["run_dir", "sample_id"], keep="last").reset_index(drop=True)
    frame.attrs["unreadable_rows"] = unreadable
    return frame


# Fields the reports read. A row may lack any of them (metrics=none rows have no metrics, score.py rows of another
# tool's outputs no costs, a failed row no images, an older row no fingerprint): reports then skip what is missing
# and say so, never fail.
DESCRIPTIVE_COLUMNS = [
    "sample_id",
    "status",
    "error",
    "inversion",
    "editor",
    "model",
    "config_hash",
    "hparams",
    "metrics_setup",
    "dataset",
    "category",
    "edit_class",
    "source_prompt",
    "target_prompt",
    "image_path",
    "edited_image",
    "reconstruction_image",
    "mapping_file",
    "entry_sha256",
    "finished_at",
    "scored_from",
    "run_dir",
]
# What identifies one result: the same sample (by its mapping file and entry) under the same configuration and metric
# setup.
RESULT_IDENTITY = ["config_hash", "metrics_setup", "mapping_file", "sample_id", "entry_sha256"]


def complete_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows with every descriptive column present (None where a row lacks it), metrics_setup filled, and `data`
    naming the data the row came from (its mapping file; the dataset name for rows that predate it)."""
    rows = results.copy()
    for column in DESCRIPTIVE_COLUMNS:
        if column not in rows.columns:
            rows[column] = None
    rows["metrics_setup"] = rows["metrics_setup"].fillna("none")  # rows of metrics=none or before metric suites
    rows["data"] = rows["mapping_file"].fillna(rows["dataset"]).fillna("-")  # the data a row came from
    return rows


def deduplicate(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Count each result once: the same sample of the same configuration and metric setup found in several folders
    (a job run twice, score.py rows next to the rows they re-scored) keeps its latest row by finished_at.
    Returns the rows and a note saying what was dropped."""
    if results.empty:
        return results, []
    rows = complete_rows(results)
    # element by element: pandas 3's astype(str) keeps a missing value missing, which join cannot take
    identity = rows[RESULT_IDENTITY].map(str).agg("|".join, axis=1)
    latest = rows.assign(_identity=identity).sort_values("finished_at", kind="stable", na_position="first")
    kept = latest.drop_duplicates("_identity", keep="last").sort_index().drop(columns="_identity")
    dropped = len(rows) - len(kept)
    if not dropped:
        return kept, []
    folders = sorted(set(rows["run_dir"].dropna()) - set(kept["run_dir"].dropna()))
    note = (
        f"{dropped} rows repeat a sample of the same configuration and metric setup from another folder; each such "
        "sample counts once, with its latest row (by finished_at)"
        + (f"; folders whose rows were all superseded: {', '.join(folders)}" if folders else "")
        + "."
    )
    return kept.reset_index(drop=True), [note]


def mean_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per inversion × editor × model × configuration × metric setup: sample counts and the means over
    successful samples (NaN values, such as unedited-region metrics of whole-image edits, are left out of their
    column's mean). Metric columns carry the papers' scale factors in their names (`lpips_unedit_part_x1e3`).

    Where one inversion × editor × model ran under several configurations, a `differs` column names the
    hyperparameters that tell the rows apart."""
    results = complete_rows(results)
    status = results.groupby(GROUP_COLUMNS, dropna=False)["status"]
    table = pd.DataFrame({"samples_ok": status.apply(lambda s: int((s == "ok").sum()))})
    table["samples_failed"] = status.apply(lambda s: int((s != "ok").sum()))
    columns = [c for c in PAPER_SCALES if c in results.columns] + [c for c in COST_COLUMNS if c in results.columns]
    ok = results[results["status"] == "ok"]
    means = ok.groupby(GROUP_COLUMNS, dropna=False)[columns].mean()
    means = means.astype(float).mul({c: PAPER_SCALES.get(c, 1) for c in columns}).rename(columns=scaled_name)
    table = table.join(means).reset_index()
    differs = differing_hyperparameters(results)
    if differs:
        table.insert(len(GROUP_COLUMNS), "differs", table["config_hash"].map(differs))
    return table


def differing_hyperparameters(results: pd.DataFrame) -> dict[str, str]:
    """config_hash -> 'key=value, ...' of the inversion/editor hyperparameters that vary between the
    configurations of the same inversion × editor × model; empty when no such group has two configurations."""
    described: dict[str, str] = {}
    for _, group in results.drop_duplicates("config_hash").groupby(GROUP_COLUMNS[:3], dropna=False):
        if len(group) < 2:
            continue
        flat = {
            row.config_hash: _flatten(row.hparams if isinstance(row.hparams, dict) else {})
            for row in group.itertuples()
        }
        keys = sorted({key for values in flat.values() for key in values})
        varying = [key for key in keys if len({repr(values.get(key)) for values in flat.values()}) > 1]
        for digest, values in flat.items():
            described[digest] = (
                ", ".join(f"{key}={values.get(key)}" for key in varying)
                or "settings outside inversion/editor (see run.json)"
            )
    return described


def _flatten(node: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table; numbers rounded to `digits` decimals, NaN shown as '-'."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    return markdown_table(list(table.columns), ([cell(v) for v in row] for row in table.itertuples(index=False)))
