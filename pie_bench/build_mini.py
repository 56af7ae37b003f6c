"""Build the mini benchmark bundled with invbench (`pie_bench/mini/`) in the exact PIE-Bench format.

    python -m pie_bench.build_mini [--out pie_bench/mini]

Ten real photographs from scikit-image's bundled sample data (they ship inside the pip package, so the build needs
no network), one sample per PIE-Bench editing type 0-9, center-cropped and resized to 512×512 like the reference's
`load_512`, saved as JPEG. Prompts, instructions and blended words are hand-written; `[ ]` mark the changed span.
Masks are drawn for the region each edit should change (polygons in 512×512 pixel coordinates, or a threshold where
the object separates cleanly from its background) and stored with `pie_bench.masks.encode_mask`.
The output is deterministic: the test suite rebuilds it and compares with the shipped copy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pie_bench.dataset import BUNDLED_MINI_ROOT, IMAGES_FOLDER
from pie_bench.editing_types import EDITING_TYPES
from pie_bench.masks import PIE_MASK_SHAPE, encode_mask

SIZE = PIE_MASK_SHAPE[0]
JPEG_QUALITY = 90
SUBCATEGORIES = {"animal": "1_animal", "human": "2_human", "indoor": "3_indoor", "outdoor": "4_outdoor"}


@dataclass(frozen=True)
class MiniSample:
    photo: str  # file in skimage's data folder
    editing_type: int
    subcategory: str  # PIE-Bench splits types 1-9 into animal / human / indoor / outdoor
    original_prompt: str
    editing_prompt: str
    instruction: str
    blended_word: str
    polygons: tuple[tuple[tuple[int, int], ...], ...] = ()
    threshold: str | None = None  # name of a function in THRESHOLD_MASKS


def _coins(gray: np.ndarray) -> np.ndarray:
    """The coins: brighter than the cloth once a white top-hat removes the cloth's uneven lighting. The threshold is
    0.6 × Otsu so that low-contrast coins are found; each coin is then filled to its convex hull and blobs smaller
    than a coin are dropped."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import convex_hull_object

    detail = ndimage.white_tophat(gray.astype(np.int16), size=121)
    coins = ndimage.binary_fill_holes(detail > 0.6 * threshold_otsu(detail))
    coins = convex_hull_object(ndimage.binary_opening(coins, iterations=3))
    labels, count = ndimage.label(coins)
    areas = ndimage.sum(coins, labels, index=np.arange(1, count + 1))
    coins = np.isin(labels, 1 + np.flatnonzero(areas >= 1500))
    return ndimage.binary_dilation(coins, iterations=3)


def _outside_fundus(gray: np.ndarray) -> np.ndarray:
    """Everything outside the bright circular fundus: the black background (and its JPEG fringe)."""
    from scipy import ndimage

    fundus = ndimage.binary_fill_holes(gray > 30)
    labels, _ = ndimage.label(fundus)
    largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return ~ndimage.binary_erosion(largest, iterations=3)


def _everything(gray: np.ndarray) -> np.ndarray:
    return np.ones_like(gray, dtype=bool)


THRESHOLD_MASKS = {"coins": _coins, "outside_fundus": _outside_fundus, "everything": _everything}

# Hand-drawn coordinates read best a polygon per line, so the formatter leaves this table alone.
# fmt: off
SAMPLES = (
    MiniSample(
        "astronaut.png", 0, "human",
        "a smiling woman astronaut in an [orange] spacesuit in front of [an american flag]",
        "a smiling woman astronaut in a [white] spacesuit in front of [a red curtain]",
        "make the spacesuit white and replace the flag with a red curtain",
        "spacesuit spacesuit",
        polygons=(
            ((20, 511), (25, 330), (60, 240), (120, 205), (125, 160), (175, 150), (300, 210), (310, 265),
             (350, 300), (365, 360), (300, 400), (280, 511)),
            ((0, 0), (95, 0), (95, 250), (60, 250), (20, 330), (20, 511), (0, 511)),
        ),
    ),
    MiniSample(
        "chelsea.png", 1, "animal",
        "a close-up photo of a [cat] with green eyes",
        "a close-up photo of a [tiger] with green eyes",
        "turn the cat into a tiger",
        "cat tiger",
        polygons=(((0, 0), (440, 0), (480, 70), (500, 200), (490, 330), (511, 420), (511, 511), (0, 511)),),
    ),
    MiniSample(
        "moon.png", 2, "outdoor",
        "the grey cratered surface of the moon",
        "the grey cratered surface of the moon [with a small rover]",
        "add a small rover on the surface",
        "surface rover",
        polygons=(((300, 300), (330, 255), (400, 245), (455, 270), (460, 330), (420, 360), (340, 360)),),
    ),
    MiniSample(
        "rocket.jpg", 3, "outdoor",
        "a rocket on the launch pad [between two lightning towers] at dusk",
        "a rocket on the launch pad at dusk",
        "remove the two towers",
        "",
        polygons=(
            ((98, 140), (122, 140), (142, 470), (72, 470)),
            ((398, 140), (420, 140), (452, 480), (385, 480)),
        ),
    ),
    MiniSample(
        "coins.png", 4, "indoor",
        "rows of ancient silver coins with [portraits] on them",
        "rows of ancient silver coins with [smiley faces] on them",
        "replace the portraits on the coins with smiley faces",
        "coins coins",
        threshold="coins",
    ),
    MiniSample(
        "camera.png", 5, "human",
        "a man [leaning forward] behind a camera on a tripod on a lawn",
        "a man [standing straight] behind a camera on a tripod on a lawn",
        "make the man stand up straight",
        "man man",
        polygons=(
            ((0, 170), (60, 140), (120, 20), (250, 20), (265, 100), (262, 150), (330, 175), (325, 215),
             (280, 230), (290, 300), (245, 330), (160, 320), (150, 511), (0, 511)),
        ),
    ),
    MiniSample(
        "motorcycle_left.png", 6, "indoor",
        "a [red] motorcycle parked in a garage",
        "a [blue] motorcycle parked in a garage",
        "make the motorcycle blue",
        "motorcycle motorcycle",
        polygons=(
            ((0, 170), (30, 160), (230, 180), (300, 165), (350, 140), (390, 100), (440, 110), (470, 160),
             (470, 250), (505, 280), (511, 290), (511, 460), (470, 450), (420, 420), (350, 385), (240, 380),
             (220, 445), (200, 445), (150, 400), (60, 410), (0, 380)),
        ),
    ),
    MiniSample(
        "coffee.png", 7, "indoor",
        "a [ceramic] cup of coffee on a saucer with a spoon",
        "a [glass] cup of coffee on a saucer with a spoon",
        "make the cup out of glass",
        "cup cup",
        polygons=(
            ((95, 90), (120, 45), (190, 25), (300, 25), (370, 45), (392, 95), (385, 200), (360, 275), (300, 330),
             (230, 350), (200, 345), (195, 390), (130, 390), (118, 330), (130, 290), (105, 230), (92, 150)),
        ),
    ),
    MiniSample(
        "retina.jpg", 8, "human",
        "a fundus photograph of a human retina on a [black] background",
        "a fundus photograph of a human retina on a [white] background",
        "make the background white",
        "background background",
        threshold="outside_fundus",
    ),
    MiniSample(
        "ihc.png", 9, "human",
        "a [microscope photo] of stained tissue",
        "a [watercolor painting] of stained tissue",
        "turn the image into a watercolor painting",
        "",
        threshold="everything",
    ),
)
# fmt: on


def load_photo(name: str) -> Image.Image:
    """A scikit-image sample photo, RGB, center-cropped to a square and resized to 512×512 (as `load_512`)."""
    import skimage

    image = Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)


def draw_mask(sample: MiniSample, photo: Image.Image) -> np.ndarray:
    if sample.threshold:
        return THRESHOLD_MASKS[sample.threshold](np.asarray(photo.convert("L")))
    canvas = Image.new("1", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in sample.polygons:
        draw.polygon(polygon, fill=1)
    return np.asarray(canvas, dtype=bool)


def build(out: Path) -> dict[str, dict]:
    mapping: dict[str, dict] = {}
    for index, sample in enumerate(SAMPLES):
        folder = EDITING_TYPES[sample.editing_type][0]
        if sample.editing_type == 0:  # type 0 is flat in PIE-Bench
            sample_id = f"{index:012d}"
            relative = f"{folder}/{sample_id}.jpg"
        else:  # <type><2 = natural photo><subcategory><index>, as PIE-Bench's 12-digit ids
            sub = SUBCATEGORIES[sample.subcategory]
            sample_id = f"{sample.editing_type}2{sub[0]}{index:09d}"
            relative = f"{folder}/2_natural/{sub}/{sample_id}.jpg"
        photo = load_photo(sample.photo)
        target = out / IMAGES_FOLDER / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        photo.save(target, quality=JPEG_QUALITY)
        mapping[sample_id] = {
            "image_path": relative,
            "original_prompt": sample.original_prompt,
            "editing_prompt": sample.editing_prompt,
            "editing_instruction": sample.instruction,
            "editing_type_id": str(sample.editing_type),
            "blended_word": sample.blended_word,
            "mask": encode_mask(draw_mask(sample, photo)),
        }
    lines = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in mapping.items())
    (out / "mapping_file.json").write_text("{\n" + lines + "\n}\n", encoding="utf-8")
    return mapping


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BUNDLED_MINI_ROOT, help="folder to write (default: %(default)s)")
    args = parser.parse_args()
    mapping = build(args.out)
    print(f"wrote {len(mapping)} samples to {args.out}")


if __name__ == "__main__":
    main()
