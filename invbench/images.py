"""Images in and out: decoding a user's file into the 8-bit RGB pixels it holds (or a refusal that names the file),
fitting it to the model's square as the reference does, recording everything either step changed, and lossless,
atomic image writes.

Decoding never changes what a file holds silently. Every pixel format Pillow reads is decoded to the colours it
means (16-bit grey scaled to 8 bits instead of clipped; 16-bit colour read as its high byte, as Pillow reads it),
and what had to give (an alpha channel, frames after the first, a colour profile, an EXIF orientation) is named in
`DecodedImage.changes`, which every result row carries and the job summary counts. A file that does not hold a
picture Pillow can decode raises ImageError with the reason and a fix; the caller names the file and the row.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from invbench.errors import ImageError
from invbench.paths import remove_quietly, temporary_sibling, writing

EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_GREY = {"I;16", "I;16B", "I;16L", "I;16N"}
_WITH_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_LOSSLESS_TO_RGB = {"RGB", "L", "1", "P"}  # every value maps to exactly one 8-bit RGB colour


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8 H×W×3 RGB
    source: str  # what the file holds, e.g. "PNG I;16 640x480"
    changes: dict[str, str] = field(default_factory=dict)  # kind -> what was done, e.g. {"alpha": "dropped ..."}


def decode_image(data: bytes, apply_exif_orientation: bool = False) -> DecodedImage:
    """Image file bytes -> its 8-bit RGB pixels and what had to change to get them. `apply_exif_orientation`: turn
    the pixels upright as the file's EXIF orientation says (what a photo viewer shows), or keep them as stored (the
    PIE-Bench reference's `np.array(Image.open(path))`), noting the tag either way."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            return _decode(image, apply_exif_orientation)
    except UnidentifiedImageError:
        raise ImageError(
            f"not an image file Pillow can read ({len(data)} bytes starting {data[:8]!r}). Fix: save the picture as "
            "PNG or JPEG, or correct the path"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"too large to decode safely ({error}). Fix: downscale it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # bytes in memory: every such error is the data's
        raise ImageError(
            f"damaged or truncated: Pillow stopped decoding it ({type(error).__name__}: {error}). Fix: export or "
            "copy the image again"
        ) from None


def _decode(image: Image.Image, apply_exif_orientation: bool) -> DecodedImage:
    changes: dict[str, str] = {}
    width, height = image.size
    rawmode = image.tile[0][3] if image.tile and isinstance(image.tile[0][3], str) else image.mode
    source = f"{image.format or 'image'} {image.mode} {width}x{height}"
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        changes["frames"] = f"the first of its {frames} frames is used"
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    profile = _profile_name(image.info.get("icc_profile"))
    image.load()  # decode now: a damaged file fails here, inside decode_image's error handling
    if orientation not in (1, None):
        if apply_exif_orientation:
            image = ImageOps.exif_transpose(image)
            changes["exif_orientation"] = f"turned upright as its EXIF orientation {orientation} says"
        else:
            changes["exif_orientation"] = (
                f"EXIF orientation {orientation} not applied: pixels read as stored, as the PIE-Bench reference does"
            )
    if profile is not None:
        changes["colour_profile"] = f"colour profile '{profile}' not applied: pixels read as sRGB, as the reference"
    if ";16" in rawmode and image.mode not in _SIXTEEN_BIT_GREY:
        changes["bit_depth"] = "16 bits per channel, read as their high byte (Pillow's 8-bit reading)"
    pixels = _to_rgb(image, changes)
    return DecodedImage(np.ascontiguousarray(pixels), source, changes)


def _to_rgb(image: Image.Image, changes: dict[str, str]) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_GREY or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ImageError(
                f"32-bit integer pixels ({values.min()}..{values.max()}) have no defined 8-bit colours. Fix: convert "
                "the image to 8- or 16-bit RGB or greyscale"
            )
        changes["bit_depth"] = "16-bit greyscale scaled to 8 bits (round(v / 257))"
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        raise ImageError(
            "floating-point pixels have no defined 8-bit colours. Fix: convert the image to 8- or 16-bit RGB or "
            "greyscale"
        )
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _WITH_ALPHA:
        image = image.convert("RGBA")
        transparent = float((np.asarray(image.getchannel("A")) < 255).mean())
        if transparent > 0:
            changes["alpha"] = (
                f"alpha channel dropped ({transparent:.1%} of the pixels not opaque; their colour is used as "
                "stored, as the reference's [:, :, :3])"
            )
        image = image.convert("RGB")
    elif mode not in _LOSSLESS_TO_RGB:
        try:
            converted = image.convert("RGB")
        except ValueError as error:
            raise ImageError(
                f"pixel format {mode} cannot be converted to RGB ({error}). Fix: save it as RGB"
            ) from None
        changes["colour_mode"] = f"{mode} converted to RGB by Pillow (without a colour profile)"
        image = converted
    else:
        image = image.convert("RGB")
    return np.asarray(image)


def _profile_name(icc: bytes | None) -> str | None:
    """The name of an embedded colour profile that is not sRGB, or None."""
    if not icc:
        return None
    try:
        from PIL import ImageCms

        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except Exception:  # Pillow without littlecms, or a profile it cannot parse
        return "unreadable profile"
    return None if "srgb" in name.lower().replace(" ", "") else name


def fit_square(image: np.ndarray, size: int) -> np.ndarray:
    """Center-crop to a square and resize to size×size with PIL bicubic: the reference's `load_512`."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC))


def fit_changes(shape: tuple[int, ...], size: int) -> dict[str, str]:
    """What `fit_square` does to an image of `shape`, in the words of DecodedImage.changes."""
    height, width = shape[:2]
    side = min(height, width)
    changes = {}
    if height != width:
        changes["crop"] = f"{width}x{height} cropped to its centre {side}x{side}"
    if side != size:
        direction = "upscaled" if side < size else "downscaled"
        changes["resize"] = f"{direction} from {side}x{side} to {size}x{size} (bicubic)"
    return changes


def save_png(image: np.ndarray, path: Path) -> None:
    """Write a lossless PNG so that a reader never sees a half-written file: temp file, then atomic rename. A write
    that fails (a full disk) leaves nothing behind."""
    temporary = temporary_sibling(path)
    with writing("write the image", path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # zlib level 1: ~5× faster than PIL's default 6 for ~12% more bytes (the same pixels); at GPU speeds the
            # default's two writes per sample cost ~10% of a DDIM + P2P sample
            Image.fromarray(image).save(temporary, format="PNG", compress_level=1)
            os.replace(temporary, path)
        finally:
            remove_quietly(temporary)
