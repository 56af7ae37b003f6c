"""A user's own images as a dataset (`dataset=folder`): `<root>/<prompts file>` (CSV, or JSON Lines when it ends in
.jsonl) lists one edit per row; every path is relative to `<root>` and must stay inside it.

Columns (a header row names them; order does not matter):
- `image` (required): the source image, any size PIL reads;
- `source_prompt`, `target_prompt` (required): plain prompts (PIE-Bench's [ ] marks are stripped if present);
- `id` (optional): the sample id, which also names the row's outputs (default: the image path without its suffix,
  with `_row<N>` after it when several rows edit one image);
- `mask` (optional): a black-and-white image of the region to edit (white = edit), resized to 512×512 with nearest
  neighbours and read as PIE-Bench's masks are (the 1-pixel frame counts as edited). Without it the unedited- and
  edited-region metrics are NaN and the row says why;
- `blended_words` (optional): "<word in source prompt> <word in target prompt>", for P2P's local blend;
- `group` (optional): what tables group the rows by (default "all");
- `edit_class` (optional): TODInv's edit class (`structure`, `appearance` or `global`; default `global`).
Rows are kept in file order; a bad row becomes an invalid sample that names the file, row, field and fix, and the job
runs the others. Samples have no PIE-Bench editing type, so `dataset.categories` must stay null.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from invbench.errors import BenchmarkFormatError
from invbench.paths import contained_path_problem
from pie_bench.dataset import Benchmark, InvalidSample, Sample, entry_digest, strip_brackets
from pie_bench.editing_types import edit_class_problem
from pie_bench.masks import PIE_MASK_SHAPE, encode_mask

REQUIRED = ("image", "source_prompt", "target_prompt")
OPTIONAL = ("id", "mask", "blended_words", "group", "edit_class")


def load_folder(root: str | Path, prompts_file: str, strict: bool = True) -> Benchmark:
    root = Path(root)
    path = (root / prompts_file).resolve()
    if not path.is_file():
        raise BenchmarkFormatError(
            f"{path} does not exist. dataset.root must be your folder and dataset.mapping_file its prompts file "
            f"(CSV or .jsonl) with columns {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})."
        )
    rows = _read_rows(path)
    uses = Counter(str(row.get("image") or "") for _, row in rows if isinstance(row, dict) and not row.get("id"))
    entries = [_parse_row(number, row, root, path, uses) for number, row in rows]
    benchmark = Benchmark(root, path, _refuse_repeated_ids(entries, path), root.resolve())
    if benchmark.invalid and strict:
        lines = [problem for entry in benchmark.invalid for problem in entry.problems]
        raise BenchmarkFormatError(f"{len(lines)} problem(s) in {path}:\n" + "\n".join(lines))
    return benchmark


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise BenchmarkFormatError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.object[error.start : error.start + 1]!r}). Fix: save "
            "it as UTF-8 (a spreadsheet's 'CSV UTF-8' export)"
        ) from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                rows.append((number, {"__error__": f"not valid JSON ({error})"}))
        return rows
    reader = csv.DictReader(io.StringIO(text))
    missing = [column for column in REQUIRED if column not in (reader.fieldnames or [])]
    if missing:
        raise BenchmarkFormatError(
            f"{path}: the header row {reader.fieldnames} lacks the column(s) {missing}; expected {', '.join(REQUIRED)} "
            f"(optional: {', '.join(OPTIONAL)})"
        )
    return [(number, row) for number, row in enumerate(reader, start=2)]  # row 1 is the header


def default_id(row: Mapping[str, Any], number: int, uses: Counter) -> str:
    """A row's sample id when it gives none: its image path without the suffix, and the row number after it when
    several rows edit that image ('photo', or 'photo_row2' and 'photo_row3')."""
    image = str(row.get("image") or "")
    if not image:
        return f"row{number}"
    stem = PurePosixPath(image).with_suffix("").as_posix()
    return stem if uses[image] <= 1 else f"{stem}_row{number}"


def _parse_row(number: int, row: object, root: Path, path: Path, uses: Counter) -> Sample | InvalidSample:
    problems: list[str] = []
    sample_id = (str(row.get("id") or default_id(row, number, uses))) if isinstance(row, dict) else f"row{number}"

    def problem(field: str, what: str) -> None:
        problems.append(f"{path.name}: row {number} (sample '{sample_id}'), field '{field}': {what}")

    if not isinstance(row, dict) or "__error__" in row:
        what = row.get("__error__") if isinstance(row, dict) else f"expected an object, got {row!r}"
        return InvalidSample(sample_id, (f"{path.name}: row {number}: {what}",), None, None, entry_digest(row))
    id_problem = contained_path_problem(sample_id, root) if row.get("id") else None
    if id_problem or (row.get("id") and PurePosixPath(sample_id).suffix.lower() == ".png"):
        what = id_problem or f"{sample_id!r} ends in .png"
        problem("id", f"{what}. Fix: a name for the row's outputs, e.g. 'cat_to_tiger'")
    for field in REQUIRED:
        if not isinstance(row.get(field), str) or not row[field].strip():
            problem(field, f"{row.get(field)!r} is missing or empty. Fix: give the {field.replace('_', ' ')}")
    for field in ("image", "mask"):
        if isinstance(row.get(field), str) and row[field].strip():
            where = contained_path_problem(row[field], root)
            if where:
                problem(field, f"{where}. Fix: a path relative to {root} that stays inside it")
            elif not (root / row[field]).is_file():
                problem(field, f"no file at {root / row[field]}. Fix: put it there or correct the path")
    blended_words = None
    if row.get("blended_words"):
        words = str(row["blended_words"]).split()
        if len(words) != 2:
            problem("blended_words", f"{row['blended_words']!r} is not two words. Fix: '<source word> <target word>'")
        else:
            blended_words = (words[0], words[1])
    edit_class = row.get("edit_class") or "global"
    class_problem = edit_class_problem(edit_class)
    if class_problem:
        problem("edit_class", f"{class_problem}. Fix: one of them, or leave it empty for global")
    mask_rle = None
    if not problems and row.get("mask"):
        try:
            mask_rle = tuple(encode_mask(_read_mask(root / row["mask"])))
        except Exception as error:  # an unreadable image file
            problem("mask", f"cannot be read as an image ({error}). Fix: a PNG, white where the edit goes")
    if problems:
        return InvalidSample(sample_id, tuple(problems), None, row.get("image"), entry_digest(row))
    image = PurePosixPath(row["image"]).as_posix()
    return Sample(
        id=sample_id,
        image_path=image,
        image_file=root / image,
        source_prompt=strip_brackets(row["source_prompt"]),
        target_prompt=strip_brackets(row["target_prompt"]),
        source_prompt_marked=row["source_prompt"],
        target_prompt_marked=row["target_prompt"],
        instruction="",
        editing_type=None,
        edit_class=edit_class,
        blended_words=blended_words,
        mask_rle=mask_rle,
        entry_sha256=entry_digest(_with_mask_digest(row, root)),
        group=row.get("group") or "all",
        origin=f"{path.name}: row {number} (sample '{sample_id}')",
        image_field="image",
        upright=True,  # a user's photo as a viewer shows it; the row says so when its EXIF turned it
        output_stem=sample_id,  # one image may have several edits: each row's outputs are named by its id
    )


def _refuse_repeated_ids(entries: list[Sample | InvalidSample], path: Path) -> list[Sample | InvalidSample]:
    """A row whose id an earlier row already has becomes invalid: results, images and resumes are keyed by it."""
    first: dict[str, int] = {}
    checked: list[Sample | InvalidSample] = []
    for position, entry in enumerate(entries):
        earlier = first.setdefault(entry.id, position)
        if earlier != position:
            entry = InvalidSample(
                f"{entry.id}#{position + 1}",
                ((f"{path.name}: sample id '{entry.id}' is given to two rows (entries {earlier + 1} and "
                 f"{position + 1}). Fix: give each row its own id"),),
                None,
                entry.image_path,
                entry.entry_sha256,
            )  # fmt: skip
        checked.append(entry)
    return checked


def _read_mask(file: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as image:
        gray = image.convert("L").resize(PIE_MASK_SHAPE[::-1], Image.Resampling.NEAREST)
        return np.asarray(gray) >= 128


def _with_mask_digest(row: Mapping[str, str], root: Path) -> dict:
    """The row plus the mask file's bytes' digest: a changed mask file changes the entry (rows are not mixed)."""
    if not row.get("mask"):
        return dict(row)
    from invbench.digests import sha256

    return dict(row) | {"mask_sha256": sha256((root / row["mask"]).read_bytes())}
