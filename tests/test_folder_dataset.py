"""dataset=folder: a user's images and a prompts file run through launch.py and aggregate.py like PIE-Bench; rows
without a mask get NaN region metrics and say why; tables group by the rows' group; bad rows name file, row and
field and never stop the job."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
from conftest import run
from PIL import Image

from invbench.errors import BenchmarkFormatError, ConfigError
from invbench.results import read_rows
from pie_bench import BUNDLED_MINI_ROOT, load_dataset

PHOTOS = {  # three of the mini benchmark's photos, at other sizes than PIE-Bench's 512²
    "cat.jpg": "1_change_object_80/2_natural/1_animal/121000000001.jpg",
    "room.png": "7_change_attribute_material_40/2_natural/3_indoor/723000000007.jpg",
    "scene.jpg": "0_random_140/000000000000.jpg",
}
ROWS = [
    {"image": "cat.jpg", "source_prompt": "a photo of a cat", "target_prompt": "a photo of a tiger",
     "mask": "masks/cat.png", "blended_words": "cat tiger", "group": "animals"},
    {"image": "room.png", "source_prompt": "a wooden table", "target_prompt": "a glass table",
     "mask": "masks/room.png", "blended_words": "", "group": "materials"},
    {"image": "scene.jpg", "source_prompt": "a street", "target_prompt": "a street at night",
     "mask": "", "blended_words": "", "group": "animals"},
]  # fmt: skip


def make_folder(root, rows=ROWS):
    (root / "masks").mkdir(parents=True)
    for name, photo in PHOTOS.items():
        Image.open(BUNDLED_MINI_ROOT / "annotation_images" / photo).convert("RGB").resize((96, 80)).save(root / name)
    square = np.zeros((64, 64), np.uint8)
    square[16:48, 16:48] = 255
    for name in ("cat.png", "room.png"):
        Image.fromarray(square).save(root / "masks" / name)
    with (root / "prompts.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def dataset(root, **changes):
    return {"format": "folder", "root": str(root), "mapping_file": "prompts.csv", "categories": None} | changes


def test_the_reader_keeps_order_mask_groups_and_names_bad_rows(tmp_path):
    root = make_folder(tmp_path / "data", [*ROWS, {**ROWS[0], "image": "../outside.jpg", "target_prompt": ""}])
    benchmark = load_dataset(dataset(root), {}, strict=False)
    cat, room, scene = benchmark.samples
    assert [s.id for s in benchmark.samples] == ["cat", "room", "scene"]
    assert cat.has_mask and not scene.has_mask and cat.blended_words == ("cat", "tiger")
    assert (cat.category, room.category, scene.category) == ("animals", "materials", "animals")
    mask = cat.mask()  # the 64² drawing at 512², white = edit, the 1-pixel frame edited as PIE-Bench's
    assert mask.shape == (512, 512) and mask[256, 256] and not mask[100, 100] and mask[0, 0]
    assert mask[128:384, 128:384].all() and mask.sum() == 256 * 256 + 4 * 511
    (bad,) = benchmark.invalid
    problems = " ".join(bad.problems)
    assert "prompts.csv: row 5" in problems and "field 'target_prompt'" in problems and "field 'image'" in problems
    with pytest.raises(BenchmarkFormatError, match="row 5"):
        load_dataset(dataset(root), {})
    with pytest.raises(ConfigError, match="dataset.categories=null"):
        load_dataset(dataset(root, categories=[1]), {})


def test_a_folder_runs_end_to_end_and_tables_group_by_its_groups(tmp_path):
    root = make_folder(tmp_path / "data")
    run_dir = tmp_path / "run"
    code, output = run(
        "launch.py", "dataset=folder", f"dataset.root={root}", "model.resolution=64", "num_steps=3",
        "metrics.backbones=tiny", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "invbench: 3 samples ok, 0 failed" in output
    rows = {row["sample_id"]: row for row in read_rows(run_dir / "results.jsonl")}
    assert rows["scene"]["category"] == "animals" and rows["room"]["category"] == "materials"
    assert all(
        math.isnan(rows["scene"][key]) for key in ("psnr_unedit_part", "clip_similarity_target_image_edit_part")
    )
    assert "no edit mask" in rows["scene"]["metrics_note"]
    assert not math.isnan(rows["cat"]["psnr_unedit_part"]) and not math.isnan(rows["cat"]["structure_distance"])
    tables = tmp_path / "tables"
    code, output = run(
        "aggregate.py", str(run_dir), "--out", str(tables), "--no-figures", "--no-gallery", cwd=tmp_path
    )
    assert code == 0, output
    by_group = " ".join(path.read_text() for path in tables.glob("*.md"))
    assert "animals" in by_group and "materials" in by_group
    overall = pd.read_csv(tables / "table1.csv")
    assert overall["samples_ok"].tolist() == [3]
