"""Everything about a job that can be checked from its composed configuration, before any model loads: the run
settings' types and ranges, every method's hyperparameters (each method's annotated dataclass fields), and whether
the inversion and the editor can run together. `launch.py` checks each job of a sweep before launching any
(hydra_plugins/invbench_sweeper), and each job checks itself again when it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from invbench.errors import ConfigError
from invbench.hyperparameters import Count, Range, Steps, at_least, between, check_fields
from orchestration.compatibility import check_pair, family_problems

# the top-level keys a job reads (conf/config.yaml), each checked by the dataclasses below
JOB_KEYS = (
    "seed",
    "device",
    "num_threads",
    "inversion_cache",
    "resume_with_other_code",
    "batch_size",
    "precision",
    "num_steps",
    "model",
    "dataset",
    "inversion",
    "editor",
    "metrics",
    "logger",
)


@dataclass
class RunSettings:
    seed: Count
    device: str
    num_threads: Annotated[int, at_least(1)] | None
    num_steps: Steps
    inversion_cache: bool
    resume_with_other_code: bool
    batch_size: Annotated[int, at_least(1)]
    precision: Literal["reference", "bfloat16", "float16"]


@dataclass
class ModelSettings:
    family: Literal["sd", "sdxl", "sd3", "flux"]  # invbench.models.MODEL_FAMILIES
    resolution: Annotated[int, Range(low=8, multiple_of=8)]  # SD-family VAEs downsample by 8
    dtype: Literal["float32", "float16", "bfloat16", "float64"]


@dataclass
class DatasetSettings:
    categories: list[Annotated[int, between(0, 9)]] | None
    num_shards: Steps
    shard_index: Count


@dataclass
class CheckedJob:
    """The methods a configuration describes, built and checked."""

    inversion: Any
    editor: Any
    metrics: Any
    logger: Any


def check_job_config(config: Mapping[str, Any]) -> CheckedJob:
    """Check a resolved job configuration (the JOB_KEYS of it) and build its methods; a ConfigError names the key,
    the value and what is accepted."""
    from editors import EDITORS
    from inversions import INVERSIONS
    from metrics import METRICS
    from orchestration.loggers import LOGGERS

    run = {
        key: config[key]
        for key in (
            "seed",
            "device",
            "num_threads",
            "num_steps",
            "inversion_cache",
            "resume_with_other_code",
            "batch_size",
            "precision",
        )
    }
    check_fields(RunSettings, run, "conf/config.yaml or the command line", "")
    model = config["model"]
    check_fields(ModelSettings, model, f"conf/model/{model['name']}.yaml", "model.")
    dataset = config["dataset"]
    check_fields(DatasetSettings, dataset, f"conf/dataset/{dataset['name']}.yaml", "dataset.")
    job = CheckedJob(
        inversion=INVERSIONS.build(config["inversion"]),
        editor=EDITORS.build(config["editor"]),
        metrics=METRICS.build(config["metrics"]),
        logger=LOGGERS.build(config["logger"]),
    )
    check_pair(job.inversion, job.editor)
    problems = family_problems(model["family"], model["name"], job.inversion, job.editor)
    problems += job.editor.model_problems(model)
    if problems:
        raise ConfigError("\n".join(problems))
    return job
