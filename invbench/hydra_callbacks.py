"""Hydra callbacks: after a sweep, print and save one table over all of its jobs, then the jobs that failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra_plugins.invbench_sweeper.sweeper import FAILED_JOBS
        from reports import load_results, mean_table, to_markdown

        if not config.hydra.launcher.get("wait", True):
            return  # the jobs were only queued; aggregate.py merges them when they have run
        sweep_dir = Path(config.hydra.sweep.dir)
        results = load_results([sweep_dir]) if sweep_dir.exists() else None
        if results is not None and not results.empty:
            text = to_markdown(mean_table(results))
            (sweep_dir / "summary.md").write_text(text + "\n", encoding="utf-8")
            print(f"\ninvbench sweep: {len(results)} rows from {results['run_dir'].nunique()} jobs in {sweep_dir}")
            print(text)
        if FAILED_JOBS:
            lines = [f"\ninvbench sweep: {len(FAILED_JOBS)} job(s) failed:"]
            for failure in FAILED_JOBS:
                lines.append(f"  {failure['overrides']}: {failure['reason']}")
                lines += [f"    {name}: {path}" for name, path in failure["logs"].items()]
            print("\n".join(lines), file=sys.stderr)
            sys.exit(1)
