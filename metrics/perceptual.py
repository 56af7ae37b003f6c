"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018).

The reference scores with torchmetrics' LPIPS (`net_type='squeeze'`, inputs in [-1, 1]); torchmetrics wraps the same
network and calibrated linear heads as the `lpips` package, which we use because it can build its ImageNet trunk
without downloading (tests/test_metrics.py checks that both give the same distance for the same weights).

The linear heads ship with the package. The trunk (SqueezeNet 1.1 / AlexNet / VGG16 ImageNet weights) is read from
the torch hub cache, where torchvision keeps it; when it is absent the trunk is random and the row says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from invbench.errors import ConfigError
from metrics.backbone import Backbone, described, resolve_backbone, seeded

_TRUNK_WEIGHTS = {"squeeze": "SqueezeNet1_1_Weights", "alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}


def trunk_checkpoint(net: str) -> Path:
    """Where torchvision caches the ImageNet trunk that LPIPS-`net` loads."""
    import torchvision.models

    url = getattr(torchvision.models, _TRUNK_WEIGHTS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


@contextmanager
def _quiet_torchvision() -> Iterator[None]:
    """lpips builds its trunk with torchvision's deprecated `pretrained=` argument; not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        yield


def load_lpips(config: Mapping[str, Any], mode: str) -> Backbone:
    import lpips

    net = config["net"]
    if net not in _TRUNK_WEIGHTS:
        raise ConfigError(f"metrics.lpips.net='{net}' is not one of {sorted(_TRUNK_WEIGHTS)}")

    def real():
        checkpoint = trunk_checkpoint(net)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no ImageNet {net} trunk at {checkpoint}")
        random_trunk = checkpoint.with_name(checkpoint.name + ".invbench-random").is_file()  # a rehearsal's
        with _quiet_torchvision():
            return lpips.LPIPS(net=net, verbose=False), described(f"lpips-{net}", random_trunk)

    def tiny():
        with seeded(config["tiny_seed"]), _quiet_torchvision():
            network = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        return network, f"lpips-{net}, random trunk (seed {config['tiny_seed']})"

    return resolve_backbone(
        mode,
        f"LPIPS-{net}",
        real,
        tiny,
        f"Provide the trunk at {trunk_checkpoint(net)} (torchvision's ImageNet checkpoint; copy it from a machine "
        "with network, or set TORCH_HOME to a cache that has it).",
    )
