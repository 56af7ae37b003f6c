"""`jobs.json`: what a sweep submitted (job number, scheduler id, overrides, output folder) and how to resubmit it.

Written by the sweep launchers (hydra_plugins/invbench_launcher) when they queue jobs, read by aggregate.py to say
which jobs have not delivered yet.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from invbench.results import write_json_atomically

JOBS_FILE = "jobs.json"


def write_job_list(sweep_dir: Path, jobs: list[dict[str, Any]], executor: str, resubmit_command: str) -> None:
    """Add (or, for a resubmission, replace by job number) the jobs in `<sweep_dir>/jobs.json`, atomically."""
    path = sweep_dir / JOBS_FILE
    previous = json.loads(path.read_text(encoding="utf-8"))["jobs"] if path.exists() else []
    by_number = {job["num"]: job for job in previous} | {job["num"]: job for job in jobs}
    record = {
        "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "executor": executor,
        "resubmit_command": resubmit_command,
        "jobs": [by_number[number] for number in sorted(by_number)],
    }
    write_json_atomically(path, record)


def read_job_list(sweep_dir: Path) -> dict[str, Any] | None:
    path = Path(sweep_dir) / JOBS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
