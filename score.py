"""Score existing edited images with the PIE-Bench metrics: our run folders or reference-layout method folders.

    python score.py outputs=outputs/2026-11-22_10-00-00_ddim+direct
    python score.py outputs=/data/output/ddim+p2p dataset=pie_bench dataset.root=/data
    python score.py outputs=<run folder> metrics.reference_compat=false metrics.backbones=real

Hydra composes conf/score.yaml. Rows (and summary.md) go to evaluations/<time>/, which aggregate.py reads like any
run folder; rerun with hydra.run.dir=<that folder> to finish an interrupted evaluation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from invbench.configs import config_dir
from orchestration.cli import exit_on_user_error, start

log = logging.getLogger("score")


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="score")
def main(cfg: DictConfig) -> None:
    from orchestration.evaluation import evaluate_folder

    with exit_on_user_error(log):
        evaluate_folder(cfg, Path(HydraConfig.get().runtime.output_dir))


def entry() -> None:
    """The `invbench-score` console script: the same as `python score.py`."""
    start(main)


if __name__ == "__main__":
    entry()
