"""Run inversion × editor jobs on PIE-Bench-format data.

    python launch.py                                        # DDIM + DDIM-Edit on the bundled mini benchmark
    python launch.py -m inversion=ddim editor=direct dataset.categories=[1,6]
    python launch.py -m inversion=ddim editor=direct hydra/launcher=submitit_local

Hydra composes conf/config.yaml; see README.md for every option. Each job writes its images, results.jsonl,
run.json and summary.md into its own output folder.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("launch")


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from invbench.errors import InvbenchError
    from invbench.runner import run_job

    hydra_config = HydraConfig.get()
    try:
        run_job(
            cfg,
            Path(hydra_config.runtime.output_dir),
            launcher_cpus=OmegaConf.select(hydra_config, "launcher.cpus_per_task", default=None),
        )
    except InvbenchError as error:  # a user's mistake: say what and how to fix it, without a traceback
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    from invbench.cli import normalise_group_choices

    sys.argv = normalise_group_choices(sys.argv, Path(__file__).parent / "conf")
    main()
