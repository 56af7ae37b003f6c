"""OmegaConf resolvers used by conf/ (registered on import; launch.py and the sweep launchers import this module,
so they exist both where a sweep is composed and in every job process that resolves its own folder)."""

from typing import Any

from omegaconf import OmegaConf

from pie_bench import selection_label


def scaled_steps(count: int, grid: int, *, _parent_: Any) -> int:
    """`${scaled_steps:12,50}`: a step count a method's reference gives for its `grid`-step schedule (12 of 50),
    scaled to the num_steps of the nearest node that has one (the method's own, else the run's), so that one setting
    works at every `num_steps` (e.g. experiment=smoke)."""
    node = _parent_
    while node is not None and "num_steps" not in node:
        node = node._get_parent()
    if node is None:
        raise ValueError("scaled_steps: no num_steps above this value")
    return round(count * node.num_steps / grid)


OmegaConf.register_new_resolver("selection_label", selection_label, replace=True)
OmegaConf.register_new_resolver("scaled_steps", scaled_steps, replace=True)
