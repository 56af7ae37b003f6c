"""OmegaConf resolvers used by conf/ (registered on import; launch.py and the sweep launchers import this module,
so they exist both where a sweep is composed and in every job process that resolves its own folder)."""

from omegaconf import OmegaConf

from pie_bench import selection_label

OmegaConf.register_new_resolver("selection_label", selection_label, replace=True)
