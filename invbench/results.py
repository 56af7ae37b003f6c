"""Per-sample result rows in an append-only JSON-lines file, one file per job folder.

A row is appended only after the sample's images are on disk, and every append is flushed and fsynced, so a row
means "done". A job killed mid-append leaves at most a torn last line without its newline: it is dropped when the
file is opened for a resume (that sample then simply runs again) and ignored by readers. Damage elsewhere (a blank
line, a line cut and followed by a newline, text that is not a row) never blocks a folder: readers skip such lines
and name each one as file:line, and a resume runs the sample of a skipped line again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invbench.paths import temporary_sibling

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SELECTION_FILE = "selection.json"  # the samples a job is meant to produce, so that readers can tell what is missing


def config_hash(config: Mapping[str, Any]) -> str:
    """Short, stable hash of the configuration that determines a sample's result."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All complete rows of a results file (a torn last line is left out); unreadable lines are skipped with a
    warning that names them."""
    rows, unreadable = scan_rows(path)
    for problem in unreadable:
        log.warning("skipped an unreadable row: %s", problem)
    return rows


def scan_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(the complete rows of a results file, one 'file:line: why' per line that is not a row). A torn last line
    (no newline: a kill during the append) is neither; it is dropped on resume."""
    if not path.exists():
        return [], []
    rows, unreadable = [], []
    *lines, _torn_tail = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, 1):
        problem = None
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problem = "blank line" if not line.strip() else f"not JSON ({error})"
        else:
            if not isinstance(row, dict) or not isinstance(row.get("sample_id"), str) or "status" not in row:
                problem = "not a result row (no sample_id and status)"
        if problem:
            unreadable.append(f"{path}:{number}: {problem}")
        else:
            rows.append(row)
    return rows, unreadable


class ResultsFile:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning(
                "%s: dropping a torn last row left by an interrupted job (%d bytes)", self.path, len(data) - keep
            )
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def rows(self) -> list[dict[str, Any]]:
        return read_rows(self.path)

    def latest_rows(self) -> list[dict[str, Any]]:
        """The last row of each sample (a sample retried after a failure has several)."""
        return list({row["sample_id"]: row for row in self.rows()}.values())

    def finished_ids(self) -> set[str]:
        """Samples whose latest row succeeded; failed samples run again on a resume."""
        return {row["sample_id"] for row in self.latest_rows() if row["status"] == "ok"}

    def append(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomically(path: Path, record: Mapping[str, Any]) -> None:
    """Write a JSON file so that a reader sees the old or the new version, never a half-written one."""
    temporary = temporary_sibling(path)
    temporary.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(temporary, path)
