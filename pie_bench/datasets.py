"""Datasets by format: `dataset.format` picks the reader (PIE-Bench's mapping file, or a user's folder of images
with a prompts file), and every reader returns the same `Benchmark` of `Sample`s that methods, metrics and tables
take. A new format is one reader function and one entry here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from invbench.errors import ConfigError
from pie_bench.dataset import Benchmark, load_benchmark
from pie_bench.folder import load_folder

Reader = Callable[[Mapping[str, Any], Mapping[int, str], bool], Benchmark]

DATASET_FORMATS: dict[str, Reader] = {
    "pie_bench": lambda dataset, edit_classes, strict: load_benchmark(
        dataset["root"], edit_classes, dataset["mapping_file"], strict=strict
    ),
    "folder": lambda dataset, edit_classes, strict: load_folder(dataset["root"], dataset["mapping_file"], strict),
}


def load_dataset(dataset: Mapping[str, Any], edit_classes: Mapping[int, str], strict: bool = True) -> Benchmark:
    """The samples a `dataset` config (conf/dataset/*.yaml) names; `format` defaults to pie_bench (older run
    records have none)."""
    kind = dataset.get("format", "pie_bench")
    if dataset.get("root") == "???":  # a mandatory value the command line did not give
        example = "/path/to/your/folder" if kind == "folder" else "/path/to/PIE-Bench/data"
        raise ConfigError(
            f"dataset.root is not set: dataset={dataset.get('name', kind)} needs the folder its data is in. Fix: add "
            f"dataset.root={example} to the command"
        )
    if kind not in DATASET_FORMATS:
        raise ConfigError(f"dataset.format={kind!r} is not one of {sorted(DATASET_FORMATS)} (conf/dataset/)")
    if kind != "pie_bench" and dataset.get("categories") is not None:
        raise ConfigError(
            f"dataset.categories={dataset['categories']} selects PIE-Bench editing types, which dataset.format={kind} "
            "samples do not have: set dataset.categories=null (tables group by the rows' `group`)"
        )
    return DATASET_FORMATS[kind](dataset, edit_classes, strict)
