"""What a set of runs has delivered and what is still missing, job by job, and why.

A job folder says which samples it is meant to produce (selection.json, written when the job starts), which it has
produced (results.jsonl) and how the job is doing (job_status.json: running, or ended ok / failed with the reason /
preempted and requeued). A sweep folder lists the jobs it queued (jobs.json, written at submission), including
those that have not started yet. Where the job ran under Slurm, `squeue` and `sacct` say what became of jobs that
never wrote a status (queued, or failed before invbench started) or were killed without writing one (scancel, node
failure); for a job on this machine, whether its process is still alive. Together they tell a partial sweep's table apart from a
complete one, and a queued job from one that will never deliver.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd

from invbench.job_folder import read_job_status
from invbench.job_list import JOBS_FILE, read_job_list
from invbench.results import RESULTS_FILE, SELECTION_FILE, scan_rows

LISTED_JOBS = 20  # unfinished jobs named on the terminal; coverage.csv has them all
COVERAGE_COLUMNS = [
    "folder",
    "job_id",
    "overrides",
    "job_state",
    "reason",
    "stdout",
    "stderr",
    "log",
    "state",
    "expected",
    "ok",
    "failed",
    "missing",
    "missing_ids",
]
JOB_STATES = ("queued", "running", "preempted", "ended-ok", "ended-failed", "unknown")

# sacct states, by what they mean for a job's output
_SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING"}

# job id -> (Slurm state, exit code), e.g. {"4242_7": ("CANCELLED", "0:15")}; "GONE": neither queued nor recorded
SchedulerStates = Callable[[list[str]], Mapping[str, tuple[str, str]]]


def coverage(paths: Iterable[str | Path], scheduler: SchedulerStates | None = None) -> pd.DataFrame:
    """One row per job under `paths`: each job of a sweep's jobs.json (found by its number, which the job writes in
    its selection.json) and each other folder holding a selection.json or results.jsonl.

    `state` is about samples: 'done', 'incomplete', 'not started', or 'unknown' for folders that predate
    selection.json; a failed sample counts as failed, not missing (rerunning the job retries it). `job_state` is
    about the job: queued, running, preempted (requeued), ended-ok, ended-failed (with `reason` and its logs) or
    unknown. `scheduler` looks up Slurm job states (default: squeue and sacct, where they exist)."""
    paths = [Path(path) for path in paths]
    folders: dict[Path, dict] = {}
    for path in paths:
        if path.is_file():
            path = path.parent
        for marker in (*path.rglob(RESULTS_FILE), *path.rglob(SELECTION_FILE)):
            folders.setdefault(marker.parent.resolve(), {})
        for listing_file in sorted(path.rglob(JOBS_FILE)):
            sweep_dir = listing_file.parent.resolve()
            listing = read_job_list(sweep_dir)
            started = {_job_num(folder): folder for folder in folders if folder.is_relative_to(sweep_dir)}
            for job in listing["jobs"]:
                folder = started.get(job["num"], sweep_dir / f"#{job['num']:06d}")  # placeholder: nothing written yet
                folders[folder] = {
                    "job_id": job["job_id"],
                    "executor": listing.get("executor"),
                    "overrides": " ".join(job["overrides"]),
                    "stdout": job.get("stdout"),
                    "stderr": job.get("stderr", job.get("log")),  # jobs.json before stdout was listed
                    "ended_marker": job.get("ended_marker"),
                }
    slurm_ids = [known["job_id"] for known in folders.values() if known.get("executor") == "slurm"]
    states = (scheduler or slurm_states)(slurm_ids) if slurm_ids else {}
    rows = [_job_row(folder, known, states) for folder, known in sorted(folders.items())]
    return pd.DataFrame(rows, columns=COVERAGE_COLUMNS).astype({"expected": "Int64"})


def _job_num(folder: Path) -> int | None:
    selection = folder / SELECTION_FILE
    return json.loads(selection.read_text(encoding="utf-8")).get("job_num") if selection.exists() else None


def _job_row(folder: Path, known: Mapping, states: Mapping[str, tuple[str, str]]) -> dict:
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
    status = read_job_status(folder)
    job_state, reason = _job_state(known, status, states)
    logs = (status or {}).get("logs", {})
    return {
        "folder": str(folder) if folder.exists() else None,
        "job_id": known.get("job_id") or (status or {}).get("job_id"),
        "overrides": known.get("overrides"),
        "job_state": job_state,
        "reason": reason,
        "stdout": logs.get("stdout") or known.get("stdout"),
        "stderr": logs.get("stderr") or known.get("stderr"),
        "log": logs.get("log"),
        "state": state,
        "expected": len(expected) if expected is not None else None,
        "ok": len(ok),
        "failed": len(latest) - len(ok),
        "missing": len(missing),
        "missing_ids": " ".join(missing),
    }


def _job_state(
    known: Mapping, status: Mapping | None, states: Mapping[str, tuple[str, str]]
) -> tuple[str, str | None]:
    """(job_state, reason) from the job's own status file, the scheduler, and submitit's end marker."""
    own = (status or {}).get("state")
    if own == "ok":
        return "ended-ok", None
    if own == "failed":
        return "ended-failed", status.get("reason")
    slurm, exit_code = states.get(str(known.get("job_id")), (None, None))
    if slurm in _SLURM_WAITING:
        return ("preempted", status.get("reason")) if own == "preempted" else ("queued", None)
    if slurm in _SLURM_RUNNING:
        return "running", None
    if slurm == "GONE":
        return "ended-failed", "Slurm: no longer queued and no accounting record (cancelled while pending?)"
    if slurm is not None:  # the scheduler says it is over, but the job never said how: killed, cancelled, ...
        what = "the job ended" if own is None else f"the job was {own} when it ended"
        return "ended-failed", f"Slurm: {slurm} (exit code {exit_code}); {what} without writing its status"
    if own == "running" and status.get("host") == socket.gethostname() and not _process_alive(status.get("pid")):
        return "ended-failed", f"its process ({status.get('pid')}) is gone without writing how it ended (killed?)"
    if own in ("running", "preempted"):
        return own, status.get("reason")
    marker = known.get("ended_marker")
    if marker and Path(marker).exists():
        return "ended-failed", _submitit_outcome(Path(marker))
    if known.get("executor") == "local" and known.get("job_id") and not _process_alive(known["job_id"]):
        return "ended-failed", "its process is gone and it never started (see its logs)"
    return ("queued", None) if known.get("job_id") else ("unknown", None)


def _process_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, TypeError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _submitit_outcome(result_pickle: Path) -> str:
    """Why a job that submitit saw end left no status of ours: the last line of the traceback it saved, or what
    the absence of our files means."""
    try:
        import pickle

        outcome, payload = pickle.loads(result_pickle.read_bytes())
    except Exception:  # not readable here (e.g. a class this process cannot import): say what is certain
        return "ended without writing a status (see its logs)"
    if outcome == "error":
        lines = [line.strip() for line in str(payload).splitlines() if line.strip()]
        return lines[-1] if lines else "raised an error (see its logs)"
    return "ended, but its folder is not there (moved or deleted?)"


def slurm_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """What Slurm knows of the given job ids ("4242_7", "4243"): {id: (state, exit code)}. squeue gives the jobs
    still queued or running, sacct the record of those that ended. A job in neither (Slurm keeps no record of an
    array task cancelled while pending) is GONE. Where a command is missing or fails (no accounting: sacct says
    "accounting storage is disabled"), its part is left out and coverage relies on the jobs' own status files."""
    if not job_ids:
        return {}
    arrays = ",".join(sorted({str(job_id).split("_")[0] for job_id in job_ids}))
    # every user's active jobs (squeue -j fails once an array has left the queue); ours are picked out below
    queued = _slurm_command(["squeue", "-h", "-r", "-o", "%i|%T|"])
    ended = _slurm_command(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", arrays])
    states = parse_sacct(ended or "") | {
        job_id: state
        for job_id, state in parse_sacct(queued or "").items()
        if job_id.split("_")[0] in arrays.split(",")
    }
    if queued is not None:
        states |= {str(job_id): ("GONE", "") for job_id in job_ids if str(job_id) not in states}
    return states


def _slurm_command(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def parse_sacct(text: str) -> dict[str, tuple[str, str]]:
    """sacct -P lines 'JobID|State|ExitCode' -> {job id: (state word, exit code)}, array ranges of pending tasks
    ('4242_[3-5,7%2]') expanded. A task's own line wins over a range that still lists it (a pending task that was
    cancelled); a requeued job appears once per attempt, and the last line wins."""
    ranges, tasks = {}, {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id, state, exit_code = parts[0], parts[1].split()[0] if parts[1] else "", parts[2]
        match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
        if match:
            ranges |= {f"{match[1]}_{task}": (state, exit_code) for task in _expand(match[2].split("%")[0])}
        else:
            tasks[job_id] = (state, exit_code)
    return ranges | tasks


def _expand(ranges: str) -> list[int]:
    tasks = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        tasks += list(range(int(low), int(high or low) + 1))
    return tasks


def describe_coverage(jobs: pd.DataFrame, paths: Iterable[str | Path]) -> str:
    """A few lines for the terminal: totals, then each job that has not delivered everything or has failed, with
    the reason and its logs, then how to resubmit the sweeps that have gaps."""
    if jobs.empty:
        return "coverage: no job folders found"
    done = jobs["state"] == "done"
    counts = jobs["job_state"].value_counts()
    by_state = ", ".join(
        f"{int(counts[state])} {state}" for state in JOB_STATES if state in counts and state != "ended-ok"
    )
    without_output = jobs["state"] == "not started"
    lines = [
        f"coverage: {int(done.sum())} of {len(jobs)} jobs done" + (f" ({by_state})" if by_state else "")
        + f"; samples: {int(jobs['ok'].sum())} ok, {int(jobs['failed'].sum())} failed, "
        f"{int(jobs['missing'].sum())} missing"
        + (f", plus the samples of {int(without_output.sum())} job(s) with no output" if without_output.any() else "")
    ]  # fmt: skip
    attention = jobs[~done | (jobs["job_state"] == "ended-failed")]
    for job in attention.head(LISTED_JOBS).itertuples():
        what = {
            "not started": "no output",
            "incomplete": f"{job.missing} of {job.expected} samples missing",
            "unknown": "no selection.json (run by an older invbench), cannot tell what is missing",
            "done": "every sample delivered",
        }[job.state]
        scheduler = f" [job {job.job_id}]" if pd.notna(job.job_id) else ""
        settings = f" ({job.overrides})" if pd.notna(job.overrides) else ""
        where = job.folder if pd.notna(job.folder) else "(no folder yet)"
        reason = f": {job.reason}" if pd.notna(job.reason) else ""
        lines.append(f"  {where}{scheduler}: {what}; {job.job_state}{reason}{settings}")
        if job.job_state == "ended-failed":
            for name in ("log", "stdout", "stderr"):
                value = getattr(job, name)
                if pd.notna(value):
                    lines.append(f"    {name}: {value}")
    if len(attention) > LISTED_JOBS:
        lines.append(f"  ... and {len(attention) - LISTED_JOBS} more jobs (all are in coverage.csv)")
    if not done.all():
        for path in map(Path, paths):
            listing = read_job_list(path) if path.is_dir() else None
            if listing:
                lines.append(f"to run what is missing in {path} (finished samples are skipped):")
                lines.append(f"  {listing['resubmit_command']}")
    return "\n".join(lines)
