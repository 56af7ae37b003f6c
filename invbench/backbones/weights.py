"""Loading a backbone's parts: pretrained from local files only (never a download), or the warning every random
model logs."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from invbench.errors import ModelNotAvailableError

log = logging.getLogger(__name__)


def random_model_warning(config: Mapping[str, Any], architecture: str, real: str) -> str:
    """Log that the model has random weights (loudly: its images are noise); returns the row's `weights` value."""
    log.warning(
        "MODEL: '%s', %s model with RANDOM weights (seed %s), built from its config. Its images are noise: use it to "
        "check plumbing, cost and metric code, not editing quality. For real numbers use %s (weights from the local "
        "Hugging Face cache or model.path).",
        config["name"],
        architecture,
        config["seed"],
        real,
    )
    return f"random-init {config['name']} (seed {config['seed']})"


def pretrained_parts(
    config: Mapping[str, Any], dtype: torch.dtype, classes: Mapping[str, Any]
) -> tuple[dict[str, Any], str]:
    """{subfolder: classes[subfolder].from_pretrained(...)} from model.path or the local Hugging Face cache of
    model.repo_id, networks in `dtype`; and where the weights came from. Missing weights: ModelNotAvailableError
    saying how to provide them."""
    source = config.get("path") or config["repo_id"]
    if config.get("path") and not Path(config["path"]).is_dir():
        raise ModelNotAvailableError(
            f"model.path={config['path']} is not a folder. Point model.path at a checkpoint folder in diffusers "
            f"layout ({', '.join(f'{name}/' for name in classes)}), or unset it to use the Hugging Face cache."
        )
    options = {"local_files_only": True, "revision": config.get("revision")}
    # diffusers warns on every load unless low-memory loading is asked for only where accelerate provides it
    low_memory = importlib.util.find_spec("accelerate") is not None
    weights = {**options, "torch_dtype": dtype, "low_cpu_mem_usage": low_memory}
    try:
        parts = {
            name: cls.from_pretrained(source, subfolder=name, **(weights if _is_network(cls) else options))
            for name, cls in classes.items()
        }
    except OSError as error:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ModelNotAvailableError(
            f"model '{config['name']}' ({source}) is not available on this machine: {str(error).splitlines()[0]}\n"
            "invbench never downloads weights during a run. Provide them in one of these ways:\n"
            f"  1. on a machine with network: `hf download {config['repo_id']}` (fills the cache {HF_HUB_CACHE}; "
            "copy it to the cluster and set HF_HOME there), then rerun;\n"
            f"  2. pass a local diffusers-layout folder: model.path=/path/to/{config['repo_id'].split('/')[-1]};\n"
            "  3. or run the embedded tiny model (random weights, plumbing only): model=tiny."
        ) from None
    return parts, f"{source}" + (f"@{config['revision']}" if config.get("revision") else "")


def _is_network(cls: Any) -> bool:
    """Networks load in the job's dtype; tokenizers and schedulers have none."""
    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)


EMBEDDED_WEIGHTS = Path(__file__).resolve().parent.parent / "embedded"


def embedded_state(config: Mapping[str, Any]) -> tuple[dict[str, dict[str, torch.Tensor]], str]:
    """The committed weights of an embedded trained model (kind `embedded`: model=toy) by network, checked against
    the config's sha256; and the row's `weights` value. Logged as the toy it is."""
    from safetensors.torch import load_file

    from invbench.digests import sha256

    where = f"conf/model/{config['name']}.yaml"
    path = EMBEDDED_WEIGHTS / config["weights"]
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{where}: its weights {path} are not there; they ship with invbench (reinstall it), or rebuild them "
            "with `python benchmarks/train_toy.py`"
        )
    digest = sha256(path.read_bytes())
    if config.get("sha256") and digest != config["sha256"]:
        raise ModelNotAvailableError(
            f"{where}: {path} has sha256 {digest}, not the {config['sha256']} the config names: the weights were "
            "changed or retrained. Set sha256 in the config to the new weights' (benchmarks/train_toy.py prints it)"
        )
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(str(path)).items():
        network, name = key.split(".", 1)
        state.setdefault(network, {})[name] = tensor
    log.warning(
        "MODEL: '%s', a TOY Stable-Diffusion-architecture model trained on a handful of photos (%s). It "
        "reconstructs photos; it does not edit like SD, and its numbers say nothing about the methods. For real "
        "numbers use model=sd14 or model=sd15 (weights from the local Hugging Face cache or model.path).",
        config["name"],
        path.name,
    )
    return state, f"embedded toy {config['name']} (sha256 {digest[:12]})"
