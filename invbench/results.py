"""Per-sample result rows in an append-only JSON-lines file, one file per job folder.

A row is appended only after the sample's images are on disk, and every append is flushed and fsynced, so a row
means "done". A job killed mid-append leaves at most a torn last line without its newline: it is dropped when the
file is opened for a resume (that sample then simply runs again) and ignored by readers.
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
    """All complete rows of a results file (a torn last line is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.endswith("\n"):
            rows.append(json.loads(line))
    return rows


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
