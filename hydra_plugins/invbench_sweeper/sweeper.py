"""Hydra's basic sweeper, plus invbench's configuration checks on every job before any job is launched, and a
report of failed jobs instead of a traceback.

Hydra composes each job of a sweep once before launching (to catch composition errors early); this sweeper also
checks each composed job (orchestration/job_config.py: settings, hyperparameters, and whether its inversion and editor
can run together). One refused job refuses the sweep, with every distinct reason and the jobs it concerns, so a grid
never half-runs on a cluster before the broken corner shows up.

A job that fails while running does not stop the sweep: Hydra's basic sweeper raises the first failure as soon as
its batch returns, which hides the others and skips the sweep's table. Here failures are collected in
`FAILED_JOBS`; the sweep summary (orchestration/hydra_callbacks.py) prints the table of the jobs that succeeded, then
each failure with its reason and logs, and exits with code 1.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from invbench.errors import ConfigError
from orchestration.cli import exit_on_user_error
from orchestration.hydra_callbacks import FAILED_JOBS, SWEEP_PROGRESS
from orchestration.progress import Progress

log = logging.getLogger(__name__)


class InvbenchSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        launch = self.launcher.launch
        dry_run = bool(self.config.get("dry_run", False))
        checked: list[str] = []
        SWEEP_PROGRESS["jobs"] = Progress(0)  # validate_batch_is_legal counts the jobs

        def launch_and_collect(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            if dry_run:  # every job of the batch passed validate_batch_is_legal: list it instead of launching it
                checked.extend(f"  #{initial_job_idx + k} {' '.join(job)}" for k, job in enumerate(job_overrides))
                return []
            results = launch(job_overrides, initial_job_idx)
            for result in results:
                if result.status == JobStatus.FAILED:
                    FAILED_JOBS.append(_failure(result))
            # the basic sweeper re-raises a failed result's error; the failure is recorded above instead
            return [
                dataclasses.replace(result, status=JobStatus.COMPLETED, _return_value=None)
                if result.status == JobStatus.FAILED
                else result
                for result in results
            ]

        self.launcher.launch = launch_and_collect
        frontier = _plain(self.config.get("frontier"))
        try:
            if frontier and frontier.get("mode") == "optuna":
                returns = self._search(arguments, frontier, dry_run)
            else:
                returns = super().sweep(arguments)
        finally:
            self.launcher.launch = launch
        if dry_run:
            print("\n".join([f"invbench sweep (dry_run=true): all {len(checked)} jobs can run; nothing was launched:",
                              *checked]))  # fmt: skip
        return returns

    def _search(self, arguments: list[str], frontier: dict[str, Any], dry_run: bool) -> list[Sequence[JobReturn]]:
        """`frontier.mode=optuna`: per job of the sweep, `frontier.trials` settings chosen by an Optuna study, in
        rounds of `frontier.batch` trials per job launched together (orchestration/frontier_search.py). Every job
        is checked at both ends of its knobs before anything is launched."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from orchestration.frontier_search import method_search, write_search

        if not OmegaConf.select(self.config, "hydra.launcher.wait", default=True):
            with exit_on_user_error(log):
                raise ConfigError(
                    "frontier.mode=optuna picks each setting from the results of the ones before: it needs a "
                    "launcher that waits for its jobs; drop hydra.launcher.wait=false"
                )
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        (jobs,) = BasicSweeper.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]), None)
        searches = []
        for job in jobs:
            composed = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            with exit_on_user_error(log):
                searches.append(method_search(job, {axis: _plain(composed[axis]) for axis in ("inversion", "editor")},
                                              frontier))  # fmt: skip
        ends = [[*search.job, *(f"{key}={getattr(knob, end)}" for key, knob in search.knobs)]
                for search in searches for end in ("low", "high")]  # fmt: skip
        self.validate_batch_is_legal(ends)
        trials, batch = int(frontier.get("trials", 8)), int(frontier.get("batch", 1))
        SWEEP_PROGRESS["jobs"].total = trials * len(searches)
        if dry_run:
            print(f"invbench sweep (dry_run=true): every job can run at both ends of its knobs; nothing was launched. "
                  f"Optuna would run {trials} trials for each of:")  # fmt: skip
            for search in searches:
                knobs = ", ".join(f"{key} in [{knob.low}, {knob.high}] ({knob.scale})" for key, knob in search.knobs)
                print(f"  {' '.join(search.job)}: {knobs or 'no knob (its configured setting only)'}")
            return []
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, job_num = [], 0
        for start in range(0, trials, batch):
            rounds = [(search, search.ask()) for search in searches for _ in range(min(batch, trials - start))]
            results = self.launcher.launch([overrides for _, overrides in rounds], initial_job_idx=job_num)
            for (search, _), result in zip(rounds, results, strict=True):
                values = search.tell(job_num, _output_dir(result))
                outcome = "failed" if values is None else "CLIP edited {:.4g}, PSNR unedited {:.4g} dB, {:.3g} s"
                log.info("invbench frontier search #%d %s: %s", job_num, " ".join(result.overrides or []),
                         outcome.format(*(values or ())))  # fmt: skip
                job_num += 1
            write_search(sweep_dir, searches)
            returns.append(results)
        return returns

    def split_arguments(self, overrides: list[Any], max_batch_size: int | None) -> list[list[list[str]]]:
        """Hydra's jobs, each expanded into one job per knob setting when the sweep is a frontier sweep
        (`frontier:` set, e.g. by experiment=frontier): the settings of the knobs its methods declare."""
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
        frontier = _plain(self.config.get("frontier"))
        if frontier:
            jobs = [expanded for job in jobs for expanded in self._frontier_jobs(job, frontier)]
        if max_batch_size is None:
            return [jobs]
        return [jobs[start : start + max_batch_size] for start in range(0, len(jobs), max_batch_size)]

    def _frontier_jobs(self, job: list[str], frontier: dict[str, Any]) -> list[list[str]]:
        from orchestration.frontier import knob_settings

        composed = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
        with exit_on_user_error(log):  # a bad frontier setting or knob: its message and exit code 2
            settings = knob_settings({axis: _plain(composed[axis]) for axis in ("inversion", "editor")}, frontier, job)
        if len(settings) < 2:
            log.warning(
                "frontier: %s declares no knob to sweep; it runs at its configured setting only", " ".join(job)
            )
        return [[*job, *setting] for setting in settings]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from orchestration.job_config import JOB_KEYS, check_job_config  # torch and every method: only when sweeping

        refused: dict[str, list[str]] = defaultdict(list)
        for overrides in batch:
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                check_job_config({key: _plain(job[key]) for key in JOB_KEYS})
            except ConfigError as error:
                refused[str(error)].append(" ".join(overrides))
        SWEEP_PROGRESS["jobs"].total += len(batch)
        if refused:
            reasons = [f"{reason}\n  jobs: {' | '.join(jobs)}" for reason, jobs in refused.items()]
            with exit_on_user_error(log):  # the message, without Hydra's traceback, and exit code 2
                raise ConfigError(
                    f"{sum(map(len, refused.values()))} of {len(batch)} jobs of this sweep cannot run; nothing was "
                    "launched.\n" + "\n".join(reasons)
                )


def _plain(value):
    """A composed config value as plain Python, interpolations resolved (without touching the hydra node)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _output_dir(result: JobReturn) -> Path | None:
    """A finished job's folder; None for a failed job (launch_and_collect recorded it in FAILED_JOBS)."""
    if result._return_value is None and any(failed["overrides"] == " ".join(result.overrides or [])
                                            for failed in FAILED_JOBS):  # fmt: skip
        return None
    folder = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir") if result.hydra_cfg else None
    return Path(str(folder)) if folder else None


def _failure(result: JobReturn) -> dict[str, Any]:
    error = result._return_value
    return {
        "overrides": " ".join(result.overrides or []),
        "reason": getattr(error, "reason", None) or f"{type(error).__name__}: {error}",
        "logs": getattr(error, "logs", None) or {},
    }
