"""PIE-Bench (Ju et al., ICLR 2024): the data format, its mask encoding, editing types and a validated reader."""

from pie_bench.dataset import (
    BUNDLED_MINI_ROOT,
    Benchmark,
    InvalidSample,
    Sample,
    load_benchmark,
    select,
    selection_label,
    strip_brackets,
)
from pie_bench.datasets import DATASET_FORMATS, load_dataset
from pie_bench.editing_types import EDIT_CLASSES, EDITING_TYPES, edit_class_lookup, edit_class_problem
from pie_bench.masks import PIE_MASK_SHAPE, decode_mask, encode_mask

__all__ = [
    "BUNDLED_MINI_ROOT",
    "DATASET_FORMATS",
    "EDITING_TYPES",
    "EDIT_CLASSES",
    "PIE_MASK_SHAPE",
    "Benchmark",
    "InvalidSample",
    "Sample",
    "decode_mask",
    "edit_class_lookup",
    "edit_class_problem",
    "encode_mask",
    "load_benchmark",
    "load_dataset",
    "select",
    "selection_label",
    "strip_brackets",
]
