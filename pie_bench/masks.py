"""PIE-Bench's mask encoding (NOT COCO RLE), both directions.

A mask is a flat list `[start_0, length_0, start_1, length_1, ...]`: starts are absolute 0-based indices into the
512×512 mask flattened row-major (index = y·512 + x), 1 = region to edit. Decoding clips a run at the end of the
array and then forces the 1-pixel frame to 1 ("to avoid annotation errors in boundary", evaluation/evaluate.py
`mask_decode`), so the frame always counts as edited and never enters an unedited-region metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PIE_MASK_SHAPE = (512, 512)


def decode_mask(rle: Sequence[int], shape: tuple[int, int] = PIE_MASK_SHAPE, force_border: bool = True) -> np.ndarray:
    """Flat [start, length, ...] runs -> bool mask of `shape` (True = edit), with the reference's border rule."""
    problem = rle_problem(rle, shape)
    if problem:
        raise ValueError(problem)
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    for start, length in zip(rle[0::2], rle[1::2]):
        flat[start : start + length] = True  # a slice past the end is clipped, as in the reference
    mask = flat.reshape(shape)
    if force_border:
        mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def encode_mask(mask: np.ndarray) -> list[int]:
    """Bool/0-1 mask -> flat [start, length, ...] runs of its True pixels in row-major order (exact inverse of the
    decoding before the border rule)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="C").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flat, [0]))))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def rle_problem(rle: object, shape: tuple[int, int] = PIE_MASK_SHAPE) -> str | None:
    """Why `rle` is not a valid PIE-Bench mask for `shape`, or None."""
    size = shape[0] * shape[1]
    if not isinstance(rle, (list, tuple)):
        return f"expected a list of integers [start, length, ...], got {type(rle).__name__}"
    if len(rle) % 2:
        return f"expected an even number of integers (start, length pairs), got {len(rle)}"
    for position, value in enumerate(rle):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return f"entry {position} is {value!r}, not an integer"
        if value < 0:
            return f"entry {position} is negative ({value})"
        if position % 2 == 0 and value >= size:
            return f"run start {value} (entry {position}) is outside the {shape[0]}x{shape[1]} mask (< {size})"
    return None
