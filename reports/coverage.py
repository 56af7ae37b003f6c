"""What a set of runs has delivered and what is still missing, job by job.

A job folder says which samples it is meant to produce (selection.json, written when the job starts) and which it has
produced (results.jsonl); a sweep folder lists the jobs it queued (jobs.json, written at submission), including those
that have not started yet. Together they tell a partial sweep's table apart from a complete one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from invbench.job_list import JOBS_FILE, read_job_list
from invbench.results import RESULTS_FILE, SELECTION_FILE, scan_rows

LISTED_JOBS = 20  # unfinished jobs named on the terminal; coverage.csv has them all
COVERAGE_COLUMNS = [
    "folder",
    "job_id",
    "overrides",
    "log",
    "state",
    "expected",
    "ok",
    "failed",
    "missing",
    "missing_ids",
]


def coverage(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per job under `paths`: each job of a sweep's jobs.json (found by its number, which the job writes in
    its selection.json) and each other folder holding a selection.json or results.jsonl. Its state is 'done',
    'incomplete', 'not started', or 'unknown' for folders that predate selection.json, prefixed 'ended ' when the
    scheduler's job is over (nothing more will come without a resubmission). A sample that failed counts as failed,
    not missing: rerunning the job retries it. `folder` is empty for a listed job that has written nothing."""
    folders: dict[Path, dict] = {}
    for path in map(Path, paths):
        if path.is_file():
            path = path.parent
        for marker in (*path.rglob(RESULTS_FILE), *path.rglob(SELECTION_FILE)):
            folders.setdefault(
                marker.parent.resolve(), {"job_id": None, "overrides": None, "log": None, "ended": False}
            )
        for listing in sorted(path.rglob(JOBS_FILE)):
            sweep_dir = listing.parent.resolve()
            started = {_job_num(folder): folder for folder in folders if folder.is_relative_to(sweep_dir)}
            for job in read_job_list(sweep_dir)["jobs"]:
                folder = started.get(job["num"], sweep_dir / f"#{job['num']:06d}")  # placeholder: nothing written yet
                folders[folder] = {
                    "job_id": job["job_id"],
                    "overrides": " ".join(job["overrides"]),
                    "log": job.get("log"),
                    "ended": "ended_marker" in job and Path(job["ended_marker"]).exists(),
                }
    rows = [_job_state(folder, **known) for folder, known in sorted(folders.items())]
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS).astype({"expected": "Int64"})


def _job_num(folder: Path) -> int | None:
    selection = folder / SELECTION_FILE
    return json.loads(selection.read_text(encoding="utf-8")).get("job_num") if selection.exists() else None


def _job_state(folder: Path, job_id: str | None, overrides: str | None, log: str | None, ended: bool) -> dict:
    rows, _ = scan_rows(folder / RESULTS_FILE)  # unreadable lines are reported once, by load_results
    latest = {row["sample_id"]: row["status"] for row in rows}
    ok = {sample for sample, status in latest.items() if status == "ok"}
    selection = folder / SELECTION_FILE
    if selection.exists():
        expected = json.loads(selection.read_text(encoding="utf-8"))["sample_ids"]
        missing = [sample for sample in expected if sample not in latest]
        state = "incomplete" if missing else "done"
    else:
        expected, missing = None, []
        state = "unknown" if latest else "not started"
    return {
        "folder": str(folder) if folder.exists() else None,
        "job_id": job_id,
        "overrides": overrides,
        "log": log,
        "state": f"ended {state}" if ended and state != "done" else state,
        "expected": len(expected) if expected is not None else None,
        "ok": len(ok),
        "failed": len(latest) - len(ok),
        "missing": len(missing),
        "missing_ids": " ".join(missing),
    }


def describe_coverage(jobs: pd.DataFrame, paths: Iterable[str | Path]) -> str:
    """A few lines for the terminal: totals, then each job that has not delivered everything, then how to
    resubmit the sweeps that have gaps."""
    if jobs.empty:
        return "coverage: no job folders found"
    done = jobs["state"] == "done"
    without_output = jobs["state"].str.endswith("not started")
    lines = [
        f"coverage: {int(done.sum())} of {len(jobs)} jobs done; samples: {int(jobs['ok'].sum())} ok, "
        f"{int(jobs['failed'].sum())} failed, {int(jobs['missing'].sum())} missing"
        + (f", plus the samples of {int(without_output.sum())} job(s) with no output" if without_output.any() else "")
    ]
    unfinished = jobs[~done]
    for job in unfinished.head(LISTED_JOBS).itertuples():
        ended = job.state.startswith("ended ")
        what = {
            "not started": "no output" + (": the job ended before its first sample" if ended else " yet"),
            "incomplete": f"{job.missing} of {job.expected} samples missing"
            + (", the job has ended" if ended else ""),
            "unknown": "no selection.json (run by an older invbench), cannot tell what is missing",
        }[job.state.removeprefix("ended ")]
        scheduler = f" [job {job.job_id}]" if pd.notna(job.job_id) else ""
        settings = f" ({job.overrides})" if pd.notna(job.overrides) else ""
        where = job.folder if pd.notna(job.folder) else "(no folder yet)"
        lines.append(f"  {where}{scheduler}: {what}{settings}")
        if ended:
            lines.append(f"    its log: {job.log}")
    if len(unfinished) > LISTED_JOBS:
        lines.append(f"  ... and {len(unfinished) - LISTED_JOBS} more jobs (all are in coverage.csv)")
    if not done.all():
        for path in map(Path, paths):
            listing = read_job_list(path) if path.is_dir() else None
            if listing:
                lines.append(f"to run what is missing in {path} (finished samples are skipped):")
                lines.append(f"  {listing['resubmit_command']}")
    return "\n".join(lines)
