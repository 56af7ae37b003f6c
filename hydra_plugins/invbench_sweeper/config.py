"""Hydra config node `hydra/sweeper=invbench`: the basic sweeper's settings (conf/config.yaml selects it)."""

from dataclasses import dataclass

from hydra._internal.core_plugins.basic_sweeper import BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class InvbenchSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.invbench_sweeper.sweeper.InvbenchSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="invbench", node=InvbenchSweeperConf)
