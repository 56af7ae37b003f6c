"""Shared fixtures: the tiny model at 64×64 (8×8 latents) and composed Hydra configs, all on CPU, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# Small and quick, but the same code path as the default job: the tiny random model (a user's default is the trained
# toy) at 64x64, 10 denoising steps, and the tiny metric backbones even where real ones are cached. A test that names
# another model puts it after FAST.
FAST = ["model.resolution=64", "num_steps=10", "metrics.backbones=tiny", "model=tiny"]


def script_env(**extra: str) -> dict[str, str]:
    """The environment for running a script as a user would, offline, with Hydra's short error messages."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **extra}


def run(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None, default_model: bool = False
) -> tuple[int, str]:
    """Run one of the repository's scripts in a subprocess -> (exit code, stdout + stderr). A launch.py job that
    names no model runs the tiny random one (the tests' goldens are its numbers), unless `default_model`: then it
    runs what a user's would (the trained toy)."""
    if script == "launch.py" and not default_model and not any(arg.lstrip("+").startswith("model=") for arg in args):
        # after the first run of overrides: Hydra's parser takes one run of them, not one before and one after an
        # option; and a job's listed overrides still start with the test's own
        at = next((k for k, arg in enumerate(args) if "=" in arg and not arg.startswith("-")), len(args))
        while at < len(args) and "=" in args[at] and not args[at].startswith("-"):
            at += 1
        args = (*args[:at], "model=tiny", *args[at:])
    done = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        cwd=cwd,
        env=env or script_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.returncode, done.stdout + done.stderr


def conf_file(relative: str) -> dict:
    """conf/<relative> as a dict, its run-level interpolations (${num_steps}, ${guidance_scale}) resolved with
    conf/config.yaml's values for a model that sets none of its own (no defaults list is composed: use the `compose`
    fixture for that)."""
    from omegaconf import OmegaConf

    loaded = yaml.safe_load((CONF / relative).read_text())
    # a method's trade-off knobs may use resolvers only a composed configuration resolves (`${scaled_steps:...}`);
    # tests/test_frontier.py checks them composed
    loaded.pop("frontier", None)
    run_level = yaml.safe_load((CONF / "config.yaml").read_text())
    keys = ("num_steps", "guidance_scale")
    settings = OmegaConf.create({key: run_level[key] for key in keys} | {"model": {}})
    container = OmegaConf.to_container(settings, resolve=True)
    values = {f"${{{key}}}": container[key] for key in keys}

    def resolved(node):
        if isinstance(node, dict):
            return {key: resolved(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolved(value) for value in node]
        return values.get(node, node) if isinstance(node, str) else node

    return resolved(loaded)


@pytest.fixture(scope="session")
def tiny_model():
    from invbench.models import load_model

    config = conf_file("model/tiny.yaml") | {"resolution": 64}
    return load_model(config, conf_file("scheduler/ddim.yaml"), torch.device("cpu"))


@pytest.fixture(scope="session")
def mini():
    from pie_bench import edit_class_lookup, load_benchmark

    return load_benchmark(None, edit_class_lookup(conf_file("edit_classes/todinv.yaml")))


@pytest.fixture(scope="session")
def sample(mini):
    """The change-object sample (a cat photo)."""
    return next(s for s in mini.samples if s.editing_type == 1)


@pytest.fixture
def source_latent(tiny_model, sample):
    from invbench.images import fit_square

    return tiny_model.encode_image(fit_square(sample.read_image(), tiny_model.resolution))


@pytest.fixture
def compose():
    """compose(*overrides) -> the job config as launch.py would build it (without Hydra's own node);
    compose(*overrides, config_name="score") -> score.py's."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def build(*overrides: str, config_name: str = "config"):
        # the tests run the tiny random model (their goldens are its numbers) unless they name another; a user's
        # default is the trained toy
        first = ["model=tiny"] if config_name == "config" else []
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            return hydra_compose(config_name=config_name, overrides=[*first, *overrides])

    return build


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def image_equal(a: Path, b: Path) -> bool:
    """Pixel-identical: for two runs of the same computation (deterministic on one machine), never for two
    computations that are equal only mathematically."""
    return np.array_equal(read_pixels(a), read_pixels(b))


def read_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image).astype(np.int16)


def method_configs(axis: str, family: str = "sd") -> list[str]:
    """The conf/<axis>/*.yaml stems whose method works on model `family` (default: the tiny model's)."""
    from editors import EDITORS
    from inversions import INVERSIONS

    registry = INVERSIONS if axis == "inversion" else EDITORS
    names = []
    for path in sorted((CONF / axis).glob("*.yaml")):
        node = yaml.safe_load(path.read_text())
        while "name" not in node:  # a variant composed from its base
            base = next(item for item in node["defaults"] if item != "_self_")
            node = yaml.safe_load((CONF / axis / f"{base}.yaml").read_text())
        if family in registry.get(node["name"]).families:
            names.append(path.stem)
    return names


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict: equal exactly when two models hold the same weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    return digest.hexdigest()
