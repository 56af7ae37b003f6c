"""Resuming in a job folder: what decides whether a folder's rows and this run's may sit together (the configuration,
the code and libraries, the data), and the words that say what differs when they may not."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from invbench.digests import sha256
from invbench.errors import ConfigError
from invbench.job_folder import (
    NEW_FOLDER,
)
from invbench.provenance import differences
from pie_bench import Benchmark, InvalidSample, Sample

log = logging.getLogger(__name__)

# The parts of the configuration that determine a sample's result; their hash names the configuration.
RESULT_DEFINING_KEYS = ("model", "scheduler", "inversion", "editor", "edit_classes", "seed")


def refuse_other_code(output_dir: Path, rows: list[Mapping[str, Any]], allowed: bool) -> list[str]:
    """The ways this process's code and libraries differ from those of the folder's results (invbench/provenance.py):
    refused (ConfigError listing them) unless `resume_with_other_code`, where they are returned for the rows to
    record. Failed rows are left out: they hold no result."""
    found = differences([row for row in rows if row.get("status") == "ok"])
    if found and not allowed:
        listed = "\n  ".join(found)
        raise ConfigError(
            f"{output_dir} holds results computed by other code or libraries than this run's:\n  {listed}\n"
            "Rows from two versions would be averaged together, and nothing in a table could tell them apart. "
            f"{NEW_FOLDER}. Only if you know the difference cannot change any result: resume_with_other_code=true "
            "(the new rows then record these differences in `resumed_with_other_code`)."
        )
    return found


def what_changed(output_dir: Path, config: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> dict[str, str]:
    """For the refusal of a changed configuration: config_hash and metrics_config_hash -> the keys whose values
    differ from the folder's run.json, in words ({} without a run.json or a difference to name)."""
    try:
        recorded = json.loads((output_dir / "run.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    keys = (*RESULT_DEFINING_KEYS, "precision")
    return {
        "config_hash": "; ".join(config_differences({k: recorded.get(k) for k in keys}, {k: config[k] for k in keys})),
        "metrics_config_hash": "; ".join(config_differences(recorded.get("metrics"), config["metrics"], "metrics")),
    }


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key.path: old -> new' for every value that differs between two nested configurations."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                found.append(f"{path}: (absent) -> {new[key]!r}")
            elif key not in new:
                found.append(f"{path}: {old[key]!r} -> (absent)")
            else:
                found += config_differences(old[key], new[key], path)
        return found
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def current_data(benchmark: Benchmark) -> dict[str, tuple[str | None, Callable[[], str | None]]]:
    """Sample id -> (its mapping entry's fingerprint, a function giving its image file's fingerprint now)."""

    def image_digest(entry: Sample | InvalidSample) -> str | None:
        if not isinstance(entry, Sample) or not entry.image_file.is_file():
            return None
        return sha256(entry.image_file.read_bytes())

    return {entry.id: (entry.entry_sha256, partial(image_digest, entry)) for entry in benchmark.entries}
