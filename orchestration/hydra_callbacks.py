"""Hydra callbacks: before a run or sweep, check that its output folder can be written; after a sweep, print and save
one table over all of its jobs, then the jobs that failed."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from invbench.errors import OutputFault

log = logging.getLogger(__name__)


class OutputCheck(Callback):
    """Hydra creates the output folder and opens its log file before invbench's code runs, and a folder that cannot
    be written (read-only, no space, no permission) then ends in Hydra's tracebacks. Check it first: one message
    that names the folder and the fix, and exit code 3 (as every OutputFault)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("dry_run", False):  # a dry run launches nothing: no job will write there
            check_writable(Path(config.hydra.sweep.dir))


def check_writable(folder: Path) -> None:
    """Create `folder` (as Hydra will) and write and remove a file in it; exit with the fault's message if not."""
    import os

    probe = folder / f".invbench-write-check.{os.getpid()}"
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"invbench" * 512)  # 4 KiB, as the first log lines and job_status.json take
        finally:
            probe.unlink(missing_ok=True)
    except OSError as error:
        fault = OutputFault("write the output folder", folder, error)
        print(f"invbench: {str(fault).replace('resumes in the same folder with the samples not yet done', 'starts')}",
              file=sys.stderr)  # fmt: skip
        sys.exit(OutputFault.EXIT_CODE)


class SweepProgress(Callback):
    """`k/N jobs done` as the jobs of a sweep end in this process (Hydra's basic launcher). The sweeper counts the
    jobs (`SWEEP_PROGRESS`); jobs that submitit runs in other processes are counted by our launcher instead."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        progress = SWEEP_PROGRESS.get("jobs")
        if progress is None or not progress.total:
            return
        progress.advance()
        status = getattr(getattr(job_return, "status", None), "name", "").lower() or "ended"
        overrides = " ".join(getattr(job_return, "overrides", None) or [])
        log.info("invbench sweep: %d/%d jobs done (%s: %s); %s", progress.done, progress.total, overrides, status,
                 progress.status())  # fmt: skip


# the sweep this process runs: {"jobs": Progress}, set by the sweeper (hydra_plugins/invbench_sweeper)
SWEEP_PROGRESS: dict[str, Any] = {}

# {"overrides", "reason", "logs"} of the jobs of this process's sweep that failed: the sweeper
# (hydra_plugins/invbench_sweeper) appends them, the summary below lists them
FAILED_JOBS: list[dict[str, Any]] = []


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from reports import load_results, mean_table, to_markdown

        if config.get("dry_run", False):
            return
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
