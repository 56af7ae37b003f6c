"""What a job folder guarantees: one process at a time, and rows of one configuration, one dataset and one metric
setup, so that resuming never mixes anything into the folder's means.

Every row records the data it came from (`mapping_file`, `entry_sha256`, `image_sha256`) and the metric settings
that scored it (`metrics_config_hash`, `metrics_setup`); a run into a folder whose rows differ in any of them is
refused before any work, with how to start a new folder. A process holds an exclusive lock on the folder for its
lifetime (`fcntl.flock` on `.invbench.lock`, which names the holder), so a second process fails at once instead of
interleaving its rows and images with the first one's.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from invbench.errors import ConfigError, InvbenchError, OutputFault
from invbench.paths import PARTIAL_SUFFIX, writing
from invbench.results import write_json_atomically

log = logging.getLogger(__name__)

LOCK_FILE = ".invbench.lock"
NEW_FOLDER = (
    "Resume with the settings and data the folder was made with, or write to a new folder: "
    "hydra.run.dir=<new folder> (or leave it out for a fresh time-stamped one)"
)


class FolderInUseError(InvbenchError):
    """Another process is working in this folder."""


class FolderLock:
    """The lock a process holds on a job folder. `check()` before each write of a result: the folder may have been
    deleted or unmounted, or its lock file replaced, while the job ran; writing on would then scatter a job's rows
    over two folders."""

    def __init__(self, path: Path, descriptor: int):
        self.path, self.descriptor = path, descriptor

    def check(self) -> None:
        try:
            ours = os.stat(self.path).st_ino == os.fstat(self.descriptor).st_ino
        except OSError as error:
            raise OutputFault("keep the lock on", self.path, error) from error
        if not ours:
            raise OutputFault(
                "keep the lock on",
                self.path,
                fix="another process replaced the folder's lock file: make sure that no other job writes this folder",
            )


@contextmanager
def exclusive_use(folder: Path, purpose: str) -> Iterator[FolderLock]:
    """Hold the folder's lock while the block runs; fail at once, naming the holder, if another process holds it.
    The lock dies with its process (even under SIGKILL), so a killed job never blocks its own resume."""
    path = folder / LOCK_FILE
    with writing("create and lock the job folder", folder):
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(
                f"{folder} is in use by another invbench process ({_describe_holder(path)}). Two processes must "
                "not write one folder: wait until it ends, or write to another folder (hydra.run.dir=<folder>)."
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": _now(),
            "purpose": purpose,
        }
        with writing("write the lock file", path):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
        yield FolderLock(path, descriptor)
    finally:
        os.close(descriptor)  # releases the lock


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"{holder['purpose']}, pid {holder['pid']} on {holder['host']}, started {holder['started_at']}"
    except (OSError, ValueError, KeyError):
        return "it is just starting; its pid is not written yet"


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete half-written files (`.<name>.<pid>.partial`) that a killed process left; call with the lock held, so
    that none of them can belong to a live writer. Returns what was removed."""
    stale = [path for path in folder.rglob(f".*{PARTIAL_SUFFIX}") if path.is_file()]
    with writing("remove half-written files from", folder):
        for path in stale:
            path.unlink()
    return stale


def refuse_mixing(
    folder: Path, rows: list[Mapping[str, Any]], expected: Mapping[str, Any], explain: Mapping[str, str] | None = None
) -> None:
    """Refuse to add rows to a folder whose rows differ in any field of `expected` (e.g. config_hash,
    metrics_config_hash, metrics_setup). Rows without a field (written by an older invbench) are not checked on it.
    `explain`: field -> what differs, in words (e.g. the configuration keys behind a hash)."""
    for field, value in expected.items():
        found = sorted({str(row[field]) for row in rows if row.get(field) is not None} - {str(value)})
        if found:
            details = f" What differs: {explain[field]}." if explain and explain.get(field) else ""
            raise ConfigError(
                f"{folder} already holds results with another {field} ({', '.join(found)}); this run's is {value}."
                f"{details} A folder holds one configuration, one dataset and one metric setup, or its means would "
                f"mix them. {NEW_FOLDER}."
            )


def refuse_other_data(
    folder: Path, rows: list[Mapping[str, Any]], mapping_file: Path, current: Mapping[str, tuple[str, Any]]
) -> None:
    """Refuse to add rows to a folder whose results came from another mapping file, or from a mapping entry or an
    image that has changed since. `current`: sample id -> (entry_sha256, a function returning the image's sha256
    now). Failed rows are left out: they hold no result, and their samples run again (fixing the data and resuming
    is how a failed sample is retried)."""
    results = [row for row in rows if row["status"] == "ok"]
    refuse_mixing(folder, results, {"mapping_file": str(mapping_file)})
    changed = []
    for row in results:
        if row["sample_id"] not in current:
            continue
        entry_now, image_now = current[row["sample_id"]]
        if row.get("entry_sha256") not in (None, entry_now):
            changed.append(f"sample {row['sample_id']}: its mapping entry")
        elif row.get("image_sha256") is not None and row["image_sha256"] != image_now():
            changed.append(f"sample {row['sample_id']}: its image file")
    if changed:
        listed = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ConfigError(
            f"{folder} holds results computed from data that has changed since ({listed}). A folder holds one "
            f"dataset. {NEW_FOLDER}."
        )


STATUS_FILE = "job_status.json"
REQUEUE_EXIT_CODE = -1  # submitit's signal handler exits with it after requeueing the job


def job_logs(job_log: Path | None = None) -> dict[str, str]:
    """Where this job's output goes: our log file and, under submitit (Slurm or local), the task's stdout (where
    our log lines also go) and stderr (tracebacks)."""
    logs = {"log": str(job_log)} if job_log is not None else {}
    if os.environ.get("SUBMITIT_FOLDER"):
        import submitit

        paths = submitit.JobEnvironment().paths
        logs |= {"stdout": str(paths.stdout), "stderr": str(paths.stderr)}
    return logs


@contextmanager
def job_status(folder: Path, logs: Mapping[str, str]) -> Iterator[None]:
    """Keep `<folder>/job_status.json` saying whether the job is running or how it ended: ok, failed (with the
    reason), or preempted (requeued: it will resume here). Written by the job itself, so aggregate.py can tell a
    job that failed before its first sample from one still in the queue. A job killed outright (SIGKILL, scancel
    after its grace time) stays 'running'; aggregate.py then asks the scheduler (reports/coverage.py)."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    scheduler_id = _scheduler_job_id()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "job_id": scheduler_id, "started_at": started}
    record["logs"] = dict(logs)
    _write_status(folder, {"state": "running", **record})
    try:
        yield
    except BaseException as error:
        state, reason = _ended_by(error)
        _write_status(folder, {"state": state, "reason": reason, **record, "ended_at": _now()})
        raise
    _write_status(folder, {"state": "ok", **record, "ended_at": _now()})


def read_job_status(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _ended_by(error: BaseException) -> tuple[str, str]:
    """(state, reason) of a job that ended with `error`."""
    if isinstance(error, OutputFault):
        return "failed", str(error)
    if isinstance(error, SystemExit):
        if error.code == REQUEUE_EXIT_CODE and os.environ.get("SUBMITIT_FOLDER"):
            return "preempted", "signalled (time limit or preemption) and requeued: it resumes in this folder"
        return "failed", f"exited with code {error.code}"
    if isinstance(error, KeyboardInterrupt):
        return "failed", "interrupted (SIGINT)"
    if type(error).__name__ == "UncompletedJobError":  # submitit refused to requeue (e.g. timed out too often)
        return "failed", f"signalled and not requeued: {error}"
    return "failed", f"{type(error).__name__}: {error}"


def _scheduler_job_id() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID") or (str(os.getppid()) if os.environ.get("SUBMITIT_FOLDER") else None)


STATUS_RESERVED_BYTES = 8192


def _write_status(folder: Path, record: Mapping[str, Any]) -> None:
    """Write job_status.json. The file keeps STATUS_RESERVED_BYTES of room (trailing spaces), so that on a disk
    too full for a new file the record of how the job ended still fits, overwritten in place; only a folder that
    cannot be written at all keeps the previous record."""
    path = folder / STATUS_FILE
    record = dict(record)
    if len(str(record.get("reason", ""))) > STATUS_RESERVED_BYTES // 2:
        record["reason"] = str(record["reason"])[: STATUS_RESERVED_BYTES // 2] + " ..."
    try:
        write_json_atomically(path, record, reserve=STATUS_RESERVED_BYTES)
    except OutputFault:
        text = (json.dumps(record, indent=2, default=str) + "\n").ljust(STATUS_RESERVED_BYTES).encode("utf-8")
        try:
            descriptor = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(descriptor, text, 0)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            log.warning("could not record the job's state in %s: %s", path, error)


class LogFile(logging.FileHandler):
    """The job's log file (Hydra's `file` handler, conf/config.yaml). A write that fails (a full disk) is reported
    once, in one line, instead of logging's traceback for every record; the console still shows every line."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"invbench: cannot write the log file {self.baseFilename} ({error}); the log goes on "
                             "on the console only\n")  # fmt: skip


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
