"""A user's own data as it comes: image files of every kind (16-bit, alpha, EXIF-rotated, damaged, not an image),
several edits of one image, TODInv's edit classes, prompts longer than the text encoder reads. Each is either run as
the reference would, with what was adapted recorded in the row and counted in the summary, or refused by name
(file, row, field, reason, fix) while the other samples run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import run
from PIL import Image
from test_images import GRADIENT, png16

from invbench.errors import BenchmarkFormatError
from invbench.results import read_rows
from pie_bench import BUNDLED_MINI_ROOT, EDIT_CLASSES, load_dataset

CAT = BUNDLED_MINI_ROOT / "annotation_images" / "1_change_object_80/2_natural/1_animal/121000000001.jpg"
LONG = " ".join(["a very detailed photograph of a quiet garden with flowers"] * 9)  # 90 CLIP tokens
LONG_CAT, LONG_TIGER = f"{LONG} cat", f"{LONG} tiger"  # the edited word after CLIP's 77 tokens


def folder_dataset(root, rows: list[dict]) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "prompts.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sorted({key for row in rows for key in row}))
        writer.writeheader()
        writer.writerows(rows)
    return {"format": "folder", "root": str(root), "mapping_file": "prompts.csv", "categories": None}


def row(image: str, **changes) -> dict:
    return {"image": image, "source_prompt": "a photo of a cat", "target_prompt": "a photo of a tiger"} | changes


@pytest.mark.parametrize(("given", "right"), [("shape", "structure"), ("texture", "appearance")])
def test_one_vocabulary_of_edit_classes_and_old_spellings_name_the_right_word(tmp_path, given, right):
    Image.open(CAT).save(tmp_path / "cat.png")
    rows = [row("cat.png", id=name, edit_class=name) for name in EDIT_CLASSES] + [row("cat.png", edit_class=given)]
    benchmark = load_dataset(folder_dataset(tmp_path, rows), {}, strict=False)
    assert [sample.edit_class for sample in benchmark.samples] == list(EDIT_CLASSES)
    (refused,) = benchmark.invalid
    assert f"field 'edit_class': '{given}' is not an edit class here; write '{right}'" in refused.problems[0]
    assert "prompts.csv: row 5" in refused.problems[0]


def test_repeated_ids_and_repeated_keys_are_refused_by_name(tmp_path):
    Image.open(CAT).save(tmp_path / "cat.png")
    benchmark = load_dataset(folder_dataset(tmp_path, [row("cat.png", id="a"), row("cat.png", id="a")]), {}, False)
    (refused,) = benchmark.invalid
    assert "sample id 'a' is given to two rows" in refused.problems[0]
    mapping = tmp_path / "pie" / "mapping_file.json"
    mapping.parent.mkdir()
    entry = '{"image_path": "x.jpg", "original_prompt": "a", "editing_prompt": "b", "blended_word": ""}'
    mapping.write_text('{"1": ' + entry + ', "1": ' + entry + "}")
    with pytest.raises(BenchmarkFormatError, match=r"the key\(s\) \['1'\] appear more than once"):
        load_dataset({"root": str(mapping.parent), "mapping_file": "mapping_file.json", "categories": None}, {})


def test_a_prompts_file_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "prompts.csv").write_bytes("image,source_prompt,target_prompt\ncafé.png,a,b\n".encode("latin-1"))
    with pytest.raises(BenchmarkFormatError, match="not UTF-8 text .* Fix: save it as UTF-8"):
        load_dataset({"format": "folder", "root": str(tmp_path), "mapping_file": "prompts.csv"}, {})


def write_images(root) -> None:
    cat = Image.open(CAT).convert("RGB")
    cat.resize((96, 64)).save(root / "wide.jpg")  # not square: cropped
    (root / "grey16.png").write_bytes(png16(GRADIENT))  # 16-bit greyscale
    rgba = cat.resize((64, 64)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(64)[:, None] < 32, 0, 255).astype(np.uint8).repeat(64, 1)))
    rgba.save(root / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    cat.resize((64, 48)).save(root / "rotated.jpg", exif=exif)
    (root / "cut.jpg").write_bytes((root / "wide.jpg").read_bytes()[:500])  # a copy that stopped half-way
    (root / "notes.png").write_text("image,prompt\n")  # a text file named .png
    cat.resize((64, 64)).save(root / "cat.png")


def test_a_users_folder_runs_with_everything_adapted_recorded_and_every_bad_file_named(tmp_path):
    """One job over every kind of file and prompt above, with TODInv + P2P (the pair that reads edit classes and
    blended words); then the gallery shows every source and score.py names a damaged output."""
    root = tmp_path / "data"
    rows = [
        row("wide.jpg", edit_class="structure", blended_words="cat tiger"),
        row("grey16.png", edit_class="appearance"),
        row("alpha.png"),
        row("rotated.jpg"),
        row("cut.jpg"),
        row("notes.png"),
        row("cat.png", target_prompt="a photo of a dog", blended_words="cat dog"),  # one image, two edits:
        row("cat.png", target_prompt="a photo of a fox", blended_words="cat fox"),  # named by their rows
        row("cat.png", id="long", source_prompt=LONG_CAT, target_prompt=LONG_TIGER, blended_words="cat tiger"),
        row("cat.png", id="long_no_blend", source_prompt="a cat " + LONG, target_prompt="a tiger " + LONG),
        row("cat.png", id="cut_edit", source_prompt=LONG_CAT, target_prompt=LONG_TIGER),
    ]  # fmt: skip
    folder_dataset(root, rows)
    write_images(root)
    job = tmp_path / "job"
    code, output = run(
        "launch.py", "dataset=folder", f"dataset.root={root}", "inversion=todinv", "editor=p2p", "num_steps=2",
        "inversion.inner_steps=2", "model.resolution=64", "metrics.backbones=tiny", f"hydra.run.dir={job}",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, output
    assert "invbench: 7 samples ok, 4 failed" in output, output
    rows = {row["sample_id"]: row for row in read_rows(job / "results.jsonl")}
    assert {key for key, value in rows.items() if value["status"] == "ok"} == {
        "wide", "grey16", "alpha", "rotated", "cat_row8", "cat_row9", "long_no_blend"
    }  # fmt: skip
    # edit classes reach TODInv: structure edits tune the appearance levels and vice versa
    assert rows["wide"]["inversion_info"]["edit_class"] == "structure"
    assert rows["grey16"]["inversion_info"]["edit_class"] == "appearance"
    # what decoding and fitting changed, in the row
    assert "cropped to its centre 64x64" in rows["wide"]["image_changes"]["crop"]
    assert "16-bit greyscale scaled" in rows["grey16"]["image_changes"]["bit_depth"]
    assert "50.0% of the pixels not opaque" in rows["alpha"]["image_changes"]["alpha"]
    assert "turned upright" in rows["rotated"]["image_changes"]["exif_orientation"]
    assert rows["cat_row8"]["image_changes"] == {}  # 64² at 64²: nothing to say
    # bad files: the file, the row, the reason and a fix
    for sample, reason in (("cut", "damaged or truncated"), ("notes", "not an image file Pillow can read")):
        error = rows[sample]["error"]
        assert error.startswith("ImageError: prompts.csv: row ") and f"field 'image' ('{sample}." in error, error
        assert reason in error and "Fix:" in error and str(root) in error
    # prompts longer than CLIP's 77 tokens: cut as SD's pipeline cuts them, unless that loses the edit
    assert (
        "source prompt 94 tokens and target prompt 94 tokens, cut to 77"
        in (rows["long_no_blend"]["prompt_truncated"]["CLIP"])
    )
    assert "blended word 'cat' sits at token 91 of the source prompt" in rows["long"]["error"]
    assert "reads 77 tokens" in rows["long"]["error"]
    assert "differ only after the tokens the text encoders read" in rows["cut_edit"]["error"]
    assert not rows["long"].get("edit_unet_evals")  # refused before any work
    # several edits of one image, each with its own outputs
    assert rows["cat_row8"]["edited_image"] == "edited/cat_row8.png"
    assert (job / "edited/cat_row8.png").is_file() and (job / "edited/cat_row9.png").is_file()
    summary = (job / "summary.md").read_text()
    assert "source images, crop: 3 (image_changes)" in summary and "source images, alpha: 1" in summary
    assert "prompts cut to the text encoder's tokens, as the reference pipeline does: 1" in summary

    tables = tmp_path / "tables"
    code, output = run("aggregate.py", str(job), "--out", str(tables), "--no-figures", cwd=tmp_path)
    assert code == 0, output
    gallery = (tables / "gallery" / "index.html").read_text()
    for image in ("wide.jpg", "grey16.png", "cat.png"):
        assert f"data/{image}" in gallery, image  # the source of every folder sample is shown

    (job / rows["alpha"]["edited_image"]).write_bytes(b"not a png any more")
    evaluation = tmp_path / "evaluation"
    code, output = run("score.py", f"outputs={job}", "metrics.backbones=tiny", f"hydra.run.dir={evaluation}",
                       cwd=tmp_path)  # fmt: skip
    assert code == 0, output
    scored = {row["sample_id"]: row for row in read_rows(evaluation / "results.jsonl")}
    error = scored["alpha"]["error"]
    assert error.startswith("ImageError: ") and "sample 'alpha', edited_image" in error and "not an image" in error
    assert scored["wide"]["status"] == "ok" and scored["wide"]["metrics_resized_from"] == 64
    assert "edits rescaled to 512x512 for the metrics: 6, from 64x64" in (evaluation / "summary.md").read_text()


def test_dataset_without_a_root_says_which_setting_to_give(tmp_path):
    code, output = run("launch.py", "dataset=folder", "metrics=none", cwd=tmp_path)
    assert code == 2, output
    assert "dataset.root is not set: dataset=folder needs the folder its data is in" in output
    assert "???" not in output


def test_a_job_whose_samples_all_fail_exits_non_zero(tmp_path):
    folder_dataset(tmp_path / "data", [row("missing.png")])
    code, output = run(
        "launch.py", "dataset=folder", f"dataset.root={tmp_path / 'data'}", "metrics=none", "model.resolution=64",
        "num_steps=2", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path,
    )  # fmt: skip
    assert code == 2, output
    assert "all 1 samples of this job failed" in output
    status = json.loads((tmp_path / "job" / "job_status.json").read_text())
    assert status["state"] == "failed" and "all 1 samples of this job failed" in status["reason"]
