"""Hydra callbacks: after a sweep, print and save one table over all of its jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from reports import load_results, mean_table, to_markdown

        if not config.hydra.launcher.get("wait", True):
            return  # the jobs were only queued; aggregate.py merges them when they have run
        sweep_dir = Path(config.hydra.sweep.dir)
        results = load_results([sweep_dir]) if sweep_dir.exists() else None
        if results is None or results.empty:
            return
        text = to_markdown(mean_table(results))
        (sweep_dir / "summary.md").write_text(text + "\n", encoding="utf-8")
        print(f"\ninvbench sweep: {len(results)} rows from {results['run_dir'].nunique()} jobs in {sweep_dir}\n{text}")
