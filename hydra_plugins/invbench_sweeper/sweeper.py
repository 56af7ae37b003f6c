"""Hydra's basic sweeper, plus invbench's configuration checks on every job before any job is launched.

Hydra composes each job of a sweep once before launching (to catch composition errors early); this sweeper also
builds each job's inversion and editor from the composed configuration and checks that they can run together
(invbench/compatibility.py). One refused job refuses the sweep, with every distinct reason and the jobs it concerns,
so a grid never half-runs on a cluster before the broken corner shows up.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf

from invbench.cli import exit_on_user_error
from invbench.errors import ConfigError

log = logging.getLogger(__name__)


class InvbenchSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from invbench.job_config import JOB_KEYS, check_job_config  # torch and every method: only when sweeping

        refused: dict[str, list[str]] = defaultdict(list)
        for overrides in batch:
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            try:
                check_job_config({key: _plain(job[key]) for key in JOB_KEYS})
            except ConfigError as error:
                refused[str(error)].append(" ".join(overrides))
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
