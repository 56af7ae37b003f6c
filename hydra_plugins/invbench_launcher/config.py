"""Hydra config nodes `hydra/launcher=invbench_slurm|invbench_local`: the plugin's queue settings plus `wait`.
conf/launcher/{slurm,submitit_local}.yaml select them and set invbench's defaults."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf

_LAUNCHERS = "hydra_plugins.invbench_launcher.launcher"


@dataclass
class InvbenchSlurmConf(SlurmQueueConf):
    _target_: str = f"{_LAUNCHERS}.InvbenchSlurmLauncher"
    wait: bool = True  # false: print the job ids and return once they are queued


@dataclass
class InvbenchLocalConf(LocalQueueConf):
    _target_: str = f"{_LAUNCHERS}.InvbenchLocalLauncher"
    wait: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="invbench_slurm", node=InvbenchSlurmConf)
ConfigStore.instance().store(group="hydra/launcher", name="invbench_local", node=InvbenchLocalConf)
