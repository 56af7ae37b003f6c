"""Run inversion × editor jobs on PIE-Bench-format data.

    python launch.py                                        # DDIM + DDIM-Edit on the bundled mini benchmark
    python launch.py -m inversion=ddim editor=direct dataset.categories=[1,6]
    python launch.py -m inversion=ddim editor=direct hydra/launcher=submitit_local

Hydra composes conf/config.yaml; `python launch.py --help` lists the groups, docs/reference/options.md every
option. Each job writes its images, results.jsonl, run.json and summary.md into its own output folder.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from invbench.configs import config_dir
from orchestration.cli import exit_on_user_error, start

log = logging.getLogger("launch")


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    from invbench.job_folder import job_logs
    from orchestration.runner import run_job

    hydra_config = HydraConfig.get()
    if cfg.get("frontier") and hydra_config.mode != RunMode.MULTIRUN:
        log.error("experiment=frontier sweeps each method's knob settings, one job per setting: add -m")
        sys.exit(2)
    if cfg.dry_run:
        from orchestration.runner import check_only

        with exit_on_user_error(log):
            print(check_only(cfg))
        return
    output_dir = Path(hydra_config.runtime.output_dir)
    job_num = OmegaConf.select(hydra_config, "job.num", default=None)  # missing in single runs
    # In a sweep a user error fails this job only (the sweep reports it); a single run exits with code 2.
    with exit_on_user_error(log, in_sweep=job_num is not None):
        run_job(
            cfg,
            output_dir,
            launcher_cpus=OmegaConf.select(hydra_config, "launcher.cpus_per_task", default=None),
            job_num=job_num,
            logs=job_logs(output_dir / f"{hydra_config.job.name}.log"),
        )


def entry() -> None:
    """The `invbench` console script: the same as `python launch.py`."""
    start(main)


if __name__ == "__main__":
    entry()
