"""Backbone adapters, one file per model family, registered by the family name `conf/model/*.yaml` gives.

A backbone owns everything that differs between families: the weights it loads (pretrained from local files, or
random from a config), prompt encoding into the conditioning tensor methods pass around, the denoiser call, and the
VAE. `invbench.models.DiffusionModel` wraps one and is what every method talks to; a method never reaches past it.
Adding a family is one file here (registered with `@register("<family>")`) plus its `conf/model/*.yaml`.
"""

from invbench.backbones.base import BACKBONES, Backbone, backbone_class, register
from invbench.registry import import_submodules

__all__ = ["BACKBONES", "Backbone", "backbone_class", "register"]

import_submodules(__name__, __path__)
