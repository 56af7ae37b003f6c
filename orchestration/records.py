"""What a job writes about itself besides its rows: run.json (the configuration and every start's environment) and
the summary (table, counts, what was adapted to fit the data, failures) printed and kept in summary.md."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from invbench.paths import writing
from invbench.results import RESULTS_FILE, write_json_atomically
from invbench.runtime import (
    environment_info,
)
from reports import mean_table, to_markdown

log = logging.getLogger(__name__)


def write_run_record(
    output_dir: Path, config: Mapping[str, Any], digest: str, device: torch.device, done_before: int
) -> None:
    """run.json: the configuration, when the folder was first started, and the environment (code version included)
    of every start that did work in it, the latest as `environment`."""
    path = output_dir / "run.json"
    try:
        starts = json.loads(path.read_text(encoding="utf-8")).get("starts", [])
    except (OSError, ValueError, AttributeError):
        starts = []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    environment = environment_info(device)
    starts.append({"started_at": now, "samples_done_before": done_before, "environment": environment})
    record = {
        "config_hash": digest,
        "started_at": starts[0]["started_at"],
        "environment": environment,
        "config": config,
        "starts": starts,
    }
    write_json_atomically(path, record)


def write_summary(rows: pd.DataFrame, output_dir: Path, skipped: int, locations: Mapping[str, Path]) -> None:
    """Print the job's table, counts and failures, and keep them in summary.md."""
    if rows.empty:
        print(f"invbench: no samples selected; nothing written to {output_dir}")
        return
    failed = rows[rows["status"] != "ok"]
    where = {"results": output_dir / RESULTS_FILE, **locations}
    lines = [
        (
            f"invbench: {len(rows) - len(failed)} samples ok, {len(failed)} failed "
            f"({skipped} already done before this run)"
        ),
        *(f"  {name:<16}{path}" for name, path in where.items()),
        "",
        to_markdown(mean_table(rows)),
    ]
    notes = adjustments(rows)
    if notes:
        lines += ["", "what was adapted to fit (each row records its own):"] + [f"  {note}" for note in notes]
    if len(failed):
        lines += ["", "failed samples:"] + [f"  {r.sample_id}: {r.error}" for r in failed.itertuples()]
    text = "\n".join(lines)
    with writing("write the summary", output_dir / "summary.md"):
        (output_dir / "summary.md").write_text(text + "\n", encoding="utf-8")
    print(text)


def adjustments(rows: pd.DataFrame) -> list[str]:
    """One line per kind of thing the job did to fit a user's data to the model and the metrics, with how many
    samples it concerns: image conversions and fitting (`image_changes`), prompts cut to the text encoder
    (`prompt_truncated`), edits rescaled for the metrics (`metrics_resized_from`)."""
    notes = []
    if "image_changes" in rows:
        counts = Counter(kind for changes in rows["image_changes"] if isinstance(changes, dict) for kind in changes)
        notes += [f"source images, {kind}: {count} (image_changes)" for kind, count in sorted(counts.items())]
    if "prompt_truncated" in rows:
        cut = int(rows["prompt_truncated"].map(lambda value: isinstance(value, dict) and bool(value)).sum())
        if cut:
            notes.append(f"prompts cut to the text encoder's tokens, as the reference pipeline does: {cut} "
                         "(prompt_truncated)")  # fmt: skip
    if "metrics_resized_from" in rows:
        sizes = rows["metrics_resized_from"].dropna()
        if len(sizes):
            sides = ", ".join(f"{int(side)}x{int(side)}" for side in sorted(set(sizes)))
            notes.append(f"edits rescaled to 512x512 for the metrics: {len(sizes)}, from {sides} "
                         "(metrics_resized_from)")  # fmt: skip
    return notes
