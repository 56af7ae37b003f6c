"""PIE-Bench mask codec: hand-computed decodes, the border rule, clipping, and encode/decode round trips."""

import numpy as np
import pytest

from pie_bench.masks import PIE_MASK_SHAPE, decode_mask, encode_mask, rle_problem

SIZE = 512 * 512
FRAME_PIXELS = 4 * 512 - 4


def test_decode_is_absolute_row_major_runs():
    mask = decode_mask([0, 3, 513, 2, 1030, 1], force_border=False)
    expected = np.zeros(PIE_MASK_SHAPE, dtype=bool)
    expected[0, 0:3] = True  # indices 0, 1, 2
    expected[1, 1:3] = True  # 513 = 1*512 + 1
    expected[2, 6] = True  # 1030 = 2*512 + 6
    assert np.array_equal(mask, expected)


def test_border_rule_marks_the_one_pixel_frame_as_edited():
    empty = decode_mask([])
    assert empty.sum() == FRAME_PIXELS
    assert empty[0].all() and empty[-1].all() and empty[:, 0].all() and empty[:, -1].all()
    assert not empty[1:-1, 1:-1].any()
    assert decode_mask([], force_border=False).sum() == 0


def test_full_mask():
    assert decode_mask([0, SIZE]).all()
    assert encode_mask(np.ones(PIE_MASK_SHAPE, bool)) == [0, SIZE]


def test_run_past_the_end_is_clipped():
    mask = decode_mask([SIZE - 4, 100], force_border=False)
    assert mask.sum() == 4 and mask[-1, -4:].all()


def test_encode_hand_computed():
    mask = np.zeros(PIE_MASK_SHAPE, bool)
    mask[0, 0:2] = True
    mask[1, 5] = True
    mask[511, 511] = True
    assert encode_mask(mask) == [0, 2, 517, 1, SIZE - 1, 1]
    assert encode_mask(np.zeros(PIE_MASK_SHAPE, bool)) == []


def test_run_wrapping_a_row_end_is_one_run():
    mask = np.zeros(PIE_MASK_SHAPE, bool)
    mask[0, 510:] = True
    mask[1, :3] = True
    assert encode_mask(mask) == [510, 5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_on_hand_made_and_random_masks(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:512, :512]
    disc = (yy - 200) ** 2 + (xx - 300) ** 2 < 80**2
    rectangle = np.zeros(PIE_MASK_SHAPE, bool)
    rectangle[100:300, 50:70] = True
    speckle = rng.random(PIE_MASK_SHAPE) < 0.3
    for mask in (disc, rectangle, speckle, disc | rectangle):
        rle = encode_mask(mask)
        assert np.array_equal(decode_mask(rle, force_border=False), mask)
        assert encode_mask(decode_mask(rle, force_border=False)) == rle
        with_border = decode_mask(rle)
        assert np.array_equal(with_border[1:-1, 1:-1], mask[1:-1, 1:-1]) and with_border[0].all()


@pytest.mark.parametrize(
    "rle, words",
    [
        ([1, 2, 3], "even number"),
        ([-1, 2], "negative"),
        ([SIZE, 2], "outside the 512x512"),
        ([0, 2.5], "not an integer"),
        ("0 2", "list of integers"),
    ],
)
def test_malformed_rle_is_explained(rle, words):
    assert words in rle_problem(rle)
    with pytest.raises(ValueError, match=words):
        decode_mask(rle)
