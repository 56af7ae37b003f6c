"""Decoding a user's image files: every format to the colours it means, or a refusal that names the reason; and what
decoding and fitting changed, in words a row can carry (invbench/images.py)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from invbench.errors import ImageError
from invbench.images import decode_image, fit_changes, fit_square


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of `values` (H×W grey, or H×W×C with 2, 3 or 4 channels), written by hand: Pillow writes no
    16-bit colour PNGs."""
    height, width = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


GRADIENT = np.linspace(0, 65535, 48 * 64).round().astype(np.uint16).reshape(48, 64)
PHOTO = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped():
    decoded = decode_image(png16(GRADIENT))
    expected = np.round(GRADIENT / 257).astype(np.uint8)
    assert decoded.pixels.shape == (48, 64, 3) and (decoded.pixels == expected[..., None]).all()
    assert "16-bit greyscale scaled" in decoded.changes["bit_depth"] and "I;16" in decoded.source
    # what Pillow's own RGB conversion gives: everything above 255 clipped to white
    clipped = np.asarray(Image.open(io.BytesIO(png16(GRADIENT))).convert("RGB"))
    assert (clipped == 255).mean() > 0.99 and (decoded.pixels == 255).mean() < 0.01


def test_16_bit_colour_is_read_as_its_high_byte_and_says_so():
    colour = np.stack([GRADIENT, GRADIENT[::-1], np.full_like(GRADIENT, 40000)], axis=-1)
    decoded = decode_image(png16(colour))
    assert (decoded.pixels == (colour >> 8).astype(np.uint8)).all()
    assert "high byte" in decoded.changes["bit_depth"]


@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_is_dropped_as_the_reference_does_and_recorded(channels):
    values = np.dstack([PHOTO[..., :1] if channels == 2 else PHOTO, np.full(PHOTO.shape[:2], 255, np.uint8)])
    values[:20, :, -1] = 0  # the top half transparent
    mode = "LA" if channels == 2 else "RGBA"
    decoded = decode_image(encoded(Image.fromarray(values, mode), "PNG"))
    expected = values[..., :1].repeat(3, axis=2) if channels == 2 else values[..., :3]
    assert (decoded.pixels == expected).all()
    assert "alpha channel dropped (50.0% of the pixels not opaque" in decoded.changes["alpha"]
    opaque = np.dstack([PHOTO, np.full(PHOTO.shape[:2], 255, np.uint8)])
    assert decode_image(encoded(Image.fromarray(opaque, "RGBA"), "PNG")).changes == {}  # nothing lost: nothing said


def test_a_palette_with_a_transparent_colour_says_so():
    image = Image.fromarray(PHOTO).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.info["transparency"] = 0
    decoded = decode_image(encoded(image, "PNG", transparency=0))
    assert "alpha" in decoded.changes
    assert (decoded.pixels == np.asarray(image.convert("RGB"))).all()


def test_exif_orientation_is_applied_for_photos_and_ignored_as_the_reference_for_pie_bench():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90° clockwise to view
    data = encoded(Image.fromarray(PHOTO), "PNG", exif=exif)
    upright = decode_image(data, apply_exif_orientation=True)
    assert upright.pixels.shape == (60, 40, 3) and (upright.pixels == np.rot90(PHOTO, -1)).all()
    assert "EXIF orientation 6" in upright.changes["exif_orientation"]
    stored = decode_image(data)
    assert stored.pixels.shape == (40, 60, 3) and "not applied" in stored.changes["exif_orientation"]


def test_cmyk_and_multi_frame_images_are_decoded_with_a_note():
    cmyk = decode_image(encoded(Image.fromarray(PHOTO).convert("CMYK"), "JPEG"))
    assert cmyk.pixels.shape == (40, 60, 3) and "CMYK converted to RGB" in cmyk.changes["colour_mode"]
    frames = [Image.fromarray(PHOTO), Image.fromarray(255 - PHOTO)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert "the first of its 2 frames" in decode_image(gif).changes["frames"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"a,b,c\n1,2,3\n", "not an image file Pillow can read"),
        (encoded(Image.fromarray(PHOTO), "JPEG")[:400], "damaged or truncated"),
        (encoded(Image.fromarray(PHOTO), "PNG")[:-30], "damaged or truncated"),
        (encoded(Image.fromarray(np.random.default_rng(1).random((8, 8)).astype(np.float32), "F"), "TIFF"),
         "floating-point pixels have no defined 8-bit colours"),
        (b"", "not an image file"),
    ],
)  # fmt: skip
def test_what_cannot_be_decoded_is_refused_with_the_reason_and_a_fix(data, reason):
    with pytest.raises(ImageError, match=reason) as refused:
        decode_image(data)
    assert "Fix:" in str(refused.value)


def test_decompression_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large to decode safely"):
        decode_image(encoded(Image.fromarray(PHOTO), "PNG"))


def test_fitting_says_what_it_crops_and_how_it_resizes():
    assert fit_changes((480, 640, 3), 512) == {
        "crop": "640x480 cropped to its centre 480x480",
        "resize": "upscaled from 480x480 to 512x512 (bicubic)",
    }
    assert fit_changes((512, 512, 3), 512) == {}
    assert fit_changes((1024, 1024, 3), 512) == {"resize": "downscaled from 1024x1024 to 512x512 (bicubic)"}
    assert fit_square(PHOTO, 40).shape == (40, 40, 3)


def test_a_colour_profile_other_than_srgb_is_named_and_srgb_is_not():
    from PIL import ImageCms

    def with_profile(name: str) -> bytes:
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile(name)).tobytes()
        return encoded(Image.fromarray(PHOTO), "PNG", icc_profile=profile)

    assert (
        "colour profile 'Lab identity built-in' not applied"
        in decode_image(with_profile("LAB")).changes["colour_profile"]
    )
    assert decode_image(with_profile("sRGB")).changes == {}
