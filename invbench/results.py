"""Per-sample result rows in an append-only JSON-lines file, one file per job folder.

A row is appended only after the sample's images are on disk, and every append is flushed and fsynced, so a row
means "done". A job killed mid-append leaves at most a torn last line without its newline: it is dropped when the
file is opened for a resume (that sample then simply runs again) and ignored by readers. Damage elsewhere (a blank
line, a line cut and followed by a newline, text that is not a row, a row whose fields do not fit the schema: a
number field holding text, a value out of its range, invbench/columns.py) never blocks a folder: readers skip such
lines and name each one as file:line with the field at fault, and a resume runs the sample of a skipped line again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from invbench.columns import row_problems
from invbench.digests import json_digest
from invbench.paths import remove_quietly, temporary_sibling, writing

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SELECTION_FILE = "selection.json"  # the samples a job is meant to produce, so that readers can tell what is missing


def config_hash(config: Mapping[str, Any]) -> str:
    """Short, stable hash of the configuration that determines a sample's result."""
    return json_digest(config)[:12]


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
            elif row_problems(row):
                problem = f"sample '{row['sample_id']}': " + "; ".join(row_problems(row))
        if problem:
            unreadable.append(f"{path}:{number}: {problem}")
        else:
            rows.append(row)
    return rows, unreadable


class ResultsFile:
    def __init__(self, path: Path):
        self.path = path
        with writing("open the results file", path):
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
        """Append one row, durably; a write that fails (a full disk) is undone, so the file never keeps a torn row,
        and raises OutputFault."""
        line = (json.dumps(row, default=str) + "\n").encode("utf-8")
        with writing("append a row to", self.path):
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                start = os.fstat(descriptor).st_size
                try:
                    written = 0
                    while written < len(line):
                        written += os.write(descriptor, line[written:])
                    os.fsync(descriptor)
                except OSError:
                    os.ftruncate(descriptor, start)
                    raise
            finally:
                os.close(descriptor)


def write_json_atomically(path: Path, record: Mapping[str, Any], reserve: int = 0) -> None:
    """Write a JSON file so that a reader sees the old or the new version, never a half-written one. `reserve`:
    pad it with spaces (valid JSON) to at least that many bytes, so that a later write of that size can overwrite
    it in place where a full disk refuses new files (job_folder's status)."""
    temporary = temporary_sibling(path)
    text = (json.dumps(record, indent=2, default=str) + "\n").ljust(reserve)
    with writing("write", path):
        try:
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
        finally:
            remove_quietly(temporary)
