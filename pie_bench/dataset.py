"""Reader for the PIE-Bench layout: `<root>/mapping_file.json` + `<root>/annotation_images/<image_path>`.

Follows the reference (cure-lab/PnPInversion, see shared/reference/pie-bench-protocol.md §1): samples keep the
mapping file's order; `[` and `]` are stripped from both prompts (nothing else is normalised); `blended_word` is
split on spaces and its first two words are (source word, target word); `editing_type_id` is "0"-"9".
Every problem is reported with the sample id, the field and a fix. `image_path` must stay inside
`<root>/annotation_images` (no absolute path, no '..', no symbolic link out), and no two samples may write the same
output file (an edit is named after its image_path): such samples are invalid, so outputs are only ever written
under a job folder, one per sample.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from invbench.digests import json_digest
from invbench.errors import BenchmarkFormatError, ConfigError, ImageError
from invbench.images import DecodedImage, decode_image
from invbench.paths import contained_path_problem, normalised
from pie_bench.editing_types import EDITING_TYPES
from pie_bench.masks import decode_mask, rle_problem

log = logging.getLogger(__name__)

BUNDLED_MINI_ROOT = Path(__file__).parent / "mini"
IMAGES_FOLDER = "annotation_images"

_FIXES = {
    "image_path": "a path relative to <root>/annotation_images that stays inside it, one image per sample, "
    "e.g. '0_random_140/000000000000.jpg' (copy an image that lives elsewhere into that folder)",
    "original_prompt": "the source prompt as a string",
    "editing_prompt": "the target prompt as a string, with [ ] around the changed words",
    "editing_instruction": "a string (may be empty)",
    "editing_type_id": "a string '0'..'9' (see pie_bench/editing_types.py)",
    "blended_word": "'' or '<word in source prompt> <word in target prompt>'",
    "mask": "[start, length, ...] runs over the 512x512 mask in row-major order (pie_bench/masks.py)",
}


def strip_brackets(prompt: str) -> str:
    return prompt.replace("[", "").replace("]", "")


@dataclass(frozen=True)
class Sample:
    id: str
    image_path: str  # relative to <root>/annotation_images
    image_file: Path
    source_prompt: str  # brackets stripped: what methods and metrics see
    target_prompt: str
    source_prompt_marked: str  # as written in the mapping file
    target_prompt_marked: str
    instruction: str
    editing_type: int | None  # PIE-Bench's 0-9; None for a dataset without editing types (dataset=folder)
    edit_class: str
    blended_words: tuple[str, str] | None  # (word in source prompt, word in target prompt)
    mask_rle: tuple[int, ...] | None  # None: the sample has no edit mask (dataset=folder rows without one)
    entry_sha256: str  # of the mapping entry as written: a resumed or merged row must come from the same entry
    group: str | None = None  # what tables group by when it is not PIE-Bench's editing type
    origin: str = ""  # where the entry was read, for messages: "mapping_file.json: sample '1'", "prompts.csv: row 3"
    image_field: str = "image_path"  # the field that names the image, for messages
    upright: bool = False  # apply the image's EXIF orientation (a user's photos); PIE-Bench's reference does not
    output_stem: str | None = None  # the outputs' name inside a job's image folders, if not image_path's

    @property
    def category(self) -> str:
        return self.group if self.group is not None else EDITING_TYPES[self.editing_type][1]

    @property
    def has_mask(self) -> bool:
        return self.mask_rle is not None

    @property
    def output_name(self) -> PurePosixPath:
        """Where this sample's outputs go inside a job's image folders: its image_path as PNG (PIE-Bench's layout),
        or its own name where the reader gives one (one image may have several edits)."""
        if self.output_stem is not None:
            return normalised(self.output_stem + ".png")
        return output_name(self.image_path)

    def mask(self) -> np.ndarray:
        """512×512 bool, True = region to edit, 1-pixel frame forced to True (reference rule)."""
        if self.mask_rle is None:
            raise ValueError(f"sample '{self.id}' has no edit mask (check `has_mask` first)")
        return decode_mask(self.mask_rle)

    def read_image(self) -> np.ndarray:
        """The source image as uint8 H×W×3 RGB, unresized (invbench/images.py decode_image)."""
        return self.decode(self.read_image_bytes()).pixels

    def decode(self, data: bytes) -> DecodedImage:
        """This sample's image file bytes -> its pixels and what decoding changed; an ImageError names the sample's
        file, entry and field."""
        try:
            return decode_image(data, apply_exif_orientation=self.upright)
        except ImageError as error:
            raise ImageError(f"{self.where_image()}: {error}") from None

    def where_image(self) -> str:
        where = self.origin or f"sample '{self.id}'"
        return f"{where}, field '{self.image_field}' ('{self.image_path}', {self.image_file})"

    def read_image_bytes(self) -> bytes:
        """The image file as stored: decode it with `decode`, fingerprint it with `sha256`."""
        if not self.image_file.is_file():
            raise FileNotFoundError(
                f"{self.where_image()}: image not found. Fix: put the image there, or correct {self.image_field}."
            )
        return self.image_file.read_bytes()


def entry_digest(item: object) -> str:
    """A mapping entry's fingerprint: the hash of its canonical JSON (key order and spacing do not matter)."""
    return json_digest(item, ensure_ascii=False)


@dataclass(frozen=True)
class InvalidSample:
    """A mapping entry that cannot be run; the job records it as failed with `problems`."""

    id: str
    problems: tuple[str, ...]
    editing_type: int | None
    image_path: str | None
    entry_sha256: str | None = None


@dataclass
class Benchmark:
    root: Path
    mapping_file: Path
    entries: list[Sample | InvalidSample]
    images_root: Path | None = None  # the folder samples' image paths are relative to (absolute)

    @property
    def samples(self) -> list[Sample]:
        return [e for e in self.entries if isinstance(e, Sample)]

    @property
    def invalid(self) -> list[InvalidSample]:
        return [e for e in self.entries if isinstance(e, InvalidSample)]


def load_benchmark(
    root: str | Path | None,
    edit_classes: Mapping[int, str],
    mapping_file: str = "mapping_file.json",
    strict: bool = True,
) -> Benchmark:
    """Read and validate a PIE-Bench folder (`root=None`: the mini benchmark bundled with invbench).

    strict=True raises `BenchmarkFormatError` listing every invalid entry; strict=False keeps them as
    `InvalidSample`s so that a job can record them as failed and run the rest.
    """
    root = Path(root) if root is not None else BUNDLED_MINI_ROOT
    path = (root / mapping_file).resolve()  # its absolute path identifies the dataset in every row
    if not path.is_file():
        raise BenchmarkFormatError(
            f"{path} does not exist. dataset.root must be a PIE-Bench folder holding {mapping_file} and "
            f"{IMAGES_FOLDER}/ (the 'data' folder of cure-lab/PnPInversion's benchmark download)."
        )
    repeated: list[str] = []

    def keep_repeats(pairs: list[tuple[str, object]]) -> dict:  # json.loads keeps the last of a repeated key
        seen: set[str] = set()
        repeated.extend(key for key, _ in pairs if key in seen or seen.add(key))
        return dict(pairs)

    try:
        mapping = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=keep_repeats)
    except json.JSONDecodeError as error:
        raise BenchmarkFormatError(f"{path} is not valid JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise BenchmarkFormatError(f"{path} is not UTF-8 text ({error}). Fix: save it as UTF-8") from None
    if repeated:
        raise BenchmarkFormatError(
            f"{path}: the key(s) {sorted(set(repeated))} appear more than once in one object (a sample id given to "
            "two entries, or a field given twice in one entry); a JSON reader silently keeps only the last. Fix: give "
            "each sample its own id and each field once"
        )
    if not isinstance(mapping, dict):
        raise BenchmarkFormatError(
            f"{path}: expected a JSON object {{sample id: annotation}}, got {type(mapping).__name__}"
        )

    entries = [_parse_entry(str(key), value, root, path, edit_classes) for key, value in mapping.items()]
    benchmark = Benchmark(root, path, _refuse_shared_outputs(entries, path), (root / IMAGES_FOLDER).resolve())
    invalid = benchmark.invalid
    if invalid and strict:
        lines = [problem for entry in invalid[:20] for problem in entry.problems]
        more = f"\n... and {len(invalid) - 20} more invalid samples" if len(invalid) > 20 else ""
        raise BenchmarkFormatError(f"{len(invalid)} invalid sample(s) in {path}:\n" + "\n".join(lines) + more)
    return benchmark


def _parse_entry(
    sample_id: str, item: object, root: Path, path: Path, edit_classes: Mapping[int, str]
) -> Sample | InvalidSample:
    problems: list[str] = []

    def problem(field: str, what: str) -> None:
        problems.append(f"{path.name}: sample '{sample_id}', field '{field}': {what}. Expected {_FIXES[field]}.")

    if not isinstance(item, dict):
        return InvalidSample(
            sample_id,
            (f"{path.name}: sample '{sample_id}': expected an object, got {item!r}",),
            None,
            None,
            entry_digest(item),
        )

    for field in ("image_path", "original_prompt", "editing_prompt", "blended_word"):
        if field not in item:
            problem(field, "missing")
        elif not isinstance(item[field], str):
            problem(field, f"{item[field]!r} is not a string")
    if isinstance(item.get("image_path"), str):
        path_problem = contained_path_problem(item["image_path"], root / IMAGES_FOLDER)
        if path_problem:
            problem("image_path", path_problem)
    if not isinstance(item.get("editing_instruction", ""), str):
        problem("editing_instruction", f"{item['editing_instruction']!r} is not a string")

    editing_type = None
    raw_type = item.get("editing_type_id")
    if raw_type is None:
        problem("editing_type_id", "missing")
    elif str(raw_type).strip() not in {str(k) for k in EDITING_TYPES}:
        problem("editing_type_id", f"{raw_type!r} is not one of '0'..'9'")
    else:
        editing_type = int(str(raw_type).strip())

    blended_words = None
    if isinstance(item.get("blended_word"), str) and item["blended_word"]:
        words = item["blended_word"].split(" ")
        if len(words) < 2 or not all(words[:2]):
            problem("blended_word", f"{item['blended_word']!r} does not hold two space-separated words")
        else:
            blended_words = (words[0], words[1])  # the reference uses the first two words only

    if "mask" not in item:
        problem("mask", "missing")
    else:
        mask_problem = rle_problem(item["mask"])
        if mask_problem:
            problem("mask", mask_problem)

    image_path = item.get("image_path") if isinstance(item.get("image_path"), str) else None
    if problems:
        return InvalidSample(sample_id, tuple(problems), editing_type, image_path, entry_digest(item))
    return Sample(
        id=sample_id,
        image_path=item["image_path"],
        image_file=root / IMAGES_FOLDER / item["image_path"],
        source_prompt=strip_brackets(item["original_prompt"]),
        target_prompt=strip_brackets(item["editing_prompt"]),
        source_prompt_marked=item["original_prompt"],
        target_prompt_marked=item["editing_prompt"],
        instruction=item.get("editing_instruction", ""),
        editing_type=editing_type,
        edit_class=edit_classes[editing_type],
        blended_words=blended_words,
        mask_rle=tuple(int(v) for v in item["mask"]),
        entry_sha256=entry_digest(item),
        origin=f"{path.name}: sample '{sample_id}'",
    )


def output_name(image_path: str) -> PurePosixPath:
    """The output file of a sample inside a job's image folders: its (validated) image_path as PNG."""
    return normalised(image_path).with_suffix(".png")


def _refuse_shared_outputs(entries: list[Sample | InvalidSample], path: Path) -> list[Sample | InvalidSample]:
    """A sample whose output file an earlier sample (in mapping-file order) already writes becomes invalid: the two
    would overwrite each other's images, and every reader would show one sample's image for both."""
    first: dict[PurePosixPath, str] = {}
    checked: list[Sample | InvalidSample] = []
    for entry in entries:
        if isinstance(entry, Sample):
            taken = first.setdefault(entry.output_name, entry.id)
            if taken != entry.id:
                entry = InvalidSample(
                    entry.id,
                    (
                        (
                            f"{path.name}: sample '{entry.id}', field 'image_path': '{entry.image_path}' gives the "
                            f"same output file ({entry.output_name}) as sample '{taken}'. "
                            f"Expected {_FIXES['image_path']}."
                        ),
                    ),
                    entry.editing_type,
                    entry.image_path,
                    entry.entry_sha256,
                )
        checked.append(entry)
    return checked


def select(
    entries: Sequence[Sample | InvalidSample],
    categories: Sequence[int] | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
) -> list[Sample | InvalidSample]:
    """Entries of the given editing types (None = all), then shard `shard_index` of `num_shards` contiguous,
    near-equal index ranges of what remains, in mapping-file order."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(
            f"dataset.shard_index={shard_index} must be in [0, dataset.num_shards={num_shards}) with num_shards >= 1"
        )
    if categories is not None:
        unknown = sorted(set(categories) - set(EDITING_TYPES))
        if unknown:
            raise ConfigError(f"dataset.categories: {unknown} are not PIE-Bench editing types (0-9)")
        untyped = [e.id for e in entries if e.editing_type is None]
        if untyped:
            log.warning("samples %s have no valid editing_type_id and are left out by dataset.categories", untyped)
        entries = [e for e in entries if e.editing_type in set(categories)]
    start = len(entries) * shard_index // num_shards
    stop = len(entries) * (shard_index + 1) // num_shards
    return list(entries[start:stop])


def selection_label(categories: Sequence[int] | None, num_shards: int, shard_index: int) -> str:
    """A folder-name suffix for a selection: '' for everything, else e.g. '_cat1', '_cat1+6', '_shard2of8'."""
    label = "_cat" + "+".join(str(c) for c in sorted(categories)) if categories is not None else ""
    return label + (f"_shard{shard_index}of{num_shards}" if num_shards > 1 else "")
