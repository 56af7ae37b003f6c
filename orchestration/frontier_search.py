"""Frontier search (`frontier.mode=optuna`): each method's knob settings chosen by Optuna's multi-objective sampler
instead of a fixed grid, one Optuna study per job of the sweep.

Each study maximises the mean CLIP similarity of the edited region (editability) and the mean background PSNR
(preservation) and minimises the mean seconds per image (cost), the same columns the frontier report draws
(reports/frontier.py), over the samples the sweep selects. Its search space is the knobs the job's methods declare
(`frontier:` in their YAMLs; linear, log or integer scale); with `include_default` its first trial is the method's
configured (reference) setting. Optuna's TPE sampler, seeded with `frontier.seed`, picks each next setting from the
values of the trials before, so a sweep's trials are the same every time it runs on the same data.

Why not hydra-optuna-sweeper: it drives one search space per sweep, while a frontier sweep has one per method (P2P's
and MasaCtrl's knobs differ), and it would replace the sweeper that checks every job before any is launched. Here the
invbench sweeper keeps its checks and launchers and calls Optuna's ask-and-tell interface.

Resume: the studies live in memory and are replayed. Rerunning the sweep into the same folder asks the same trials
in the same order (the same job numbers and folders); a trial whose folder already holds its rows returns them at
once (the runner skips the samples already done), so the sampler is told the same values and goes on where the
killed sweep stopped. A trial whose job fails, or whose samples all failed, is a failed trial: Optuna does not learn
from it, and its rows are failed rows as in any sweep.

Settings are launched rounded to 4 significant digits (folder names and tables stay readable); `frontier_search.json`
in the sweep folder records each trial as launched, its objective values and each method's Pareto-optimal trials.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invbench.hyperparameters import Knob
from invbench.results import RESULTS_FILE, read_rows, write_json_atomically

# (results column, direction): what each study optimises; the columns of reports/frontier.py
OBJECTIVES = (
    ("clip_similarity_target_image_edit_part", "maximize"),
    ("psnr_unedit_part", "maximize"),
    ("total_seconds", "minimize"),
)
SEARCH_FILE = "frontier_search.json"


def objectives(job_folder: Path) -> list[float] | None:
    """The objective values of one trial: the means over its job's successful rows; None when there are none, or
    when its metric setup does not score an objective (a failed trial)."""
    path = job_folder / RESULTS_FILE
    rows = [row for row in read_rows(path) if row.get("status") == "ok"] if path.exists() else []
    if not rows:
        return None
    values = []
    for column, _ in OBJECTIVES:
        found = [float(row[column]) for row in rows if isinstance(row.get(column), int | float)]
        mean = sum(found) / len(found) if found else math.nan
        if not math.isfinite(mean):
            return None
        values.append(mean)
    return values


def launched_value(knob: Knob, value: float) -> int | float:
    """A suggested setting as launched: integers as they are, floats to 4 significant digits."""
    return int(value) if knob.scale == "int" else float(f"{value:.4g}")


@dataclass
class MethodSearch:
    """One job of the sweep (its overrides) and its Optuna study over the knobs it moves."""

    job: list[str]
    knobs: list[tuple[str, Knob]]  # (override key, knob)
    default: dict[str, Any]  # the configured value of each knob: the first trial with include_default
    seed: int
    include_default: bool
    study: Any = None
    trials: list[dict[str, Any]] = field(default_factory=list)  # as launched, with values and state
    _pending: dict[int, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our sweep logs each trial itself
        self.study = optuna.create_study(
            directions=[direction for _, direction in OBJECTIVES], sampler=optuna.samplers.TPESampler(seed=self.seed)
        )
        inside = {key: value for key, value in self.default.items() if _within(dict(self.knobs)[key], value)}
        if self.include_default and self.knobs and len(inside) == len(self.knobs):
            self.study.enqueue_trial(inside)

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution, IntDistribution

        return {
            key: IntDistribution(int(knob.low), int(knob.high))
            if knob.scale == "int"
            else FloatDistribution(float(knob.low), float(knob.high), log=knob.scale == "log")
            for key, knob in self.knobs
        }

    def ask(self) -> list[str]:
        """The next trial's overrides: the job's own and a setting of its knobs."""
        trial = self.study.ask(self.distributions())
        setting = {key: launched_value(knob, trial.params[key]) for key, knob in self.knobs}
        self._pending[trial.number] = trial
        self.trials.append({"trial": trial.number, "setting": setting, "state": "running"})
        return [*self.job, *(f"{key}={value}" for key, value in setting.items())]

    def tell(self, job_num: int, folder: Path | None) -> list[float] | None:
        """Record the oldest pending trial's outcome from its job folder (None: the job failed)."""
        import optuna

        number = min(self._pending)
        trial = self._pending.pop(number)
        values = objectives(folder) if folder is not None else None
        record = next(entry for entry in self.trials if entry["trial"] == number)
        record.update(job_num=job_num, folder=str(folder) if folder else None)
        if values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            record["state"] = "failed"
        else:
            self.study.tell(trial, values)
            record.update(state="complete", values=dict(zip([column for column, _ in OBJECTIVES], values)))
        return values

    def summary(self) -> dict[str, Any]:
        complete = [trial for trial in self.study.trials if trial.values is not None]
        pareto = {trial.number for trial in self.study.best_trials} if complete else set()
        return {
            "job": self.job,
            "knobs": {key: {"low": knob.low, "high": knob.high, "scale": knob.scale} for key, knob in self.knobs},
            "objectives": dict(OBJECTIVES),
            "sampler": f"optuna.samplers.TPESampler(seed={self.seed})",
            "trials": [{**entry, "pareto_optimal": entry["trial"] in pareto} for entry in self.trials],
        }


def _within(knob: Knob, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and knob.low <= value <= knob.high


def method_search(
    job: Sequence[str], methods: Mapping[str, Mapping[str, Any]], frontier: Mapping[str, Any]
) -> MethodSearch:
    """The search for one job of the sweep, from its composed inversion and editor nodes."""
    from orchestration.frontier import moving_knobs

    knobs = moving_knobs(methods, frontier, job)
    default = {key: methods[key.split(".", 1)[0]].get(key.split(".", 1)[1]) for key, _ in knobs}
    return MethodSearch(
        job=list(job), knobs=knobs, default=default, seed=int(frontier.get("seed", 0)),
        include_default=bool(frontier.get("include_default", True)),
    )  # fmt: skip


def write_search(sweep_dir: Path, searches: Sequence[MethodSearch]) -> None:
    write_json_atomically(sweep_dir / SEARCH_FILE, {"methods": [search.summary() for search in searches]})
