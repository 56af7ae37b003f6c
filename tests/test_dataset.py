"""The PIE-Bench reader: the bundled mini benchmark, validation messages, selection, edit classes, the builder."""

import json
import shutil

import numpy as np
import pytest
from conftest import conf_file

from invbench.errors import BenchmarkFormatError, ConfigError
from pie_bench import EDITING_TYPES, InvalidSample, edit_class_lookup, load_benchmark, select, selection_label
from pie_bench.dataset import BUNDLED_MINI_ROOT

CLASSES = edit_class_lookup(conf_file("edit_classes/todinv.yaml"))


def test_mini_benchmark_has_one_valid_sample_per_editing_type(mini):
    assert not mini.invalid
    assert sorted(s.editing_type for s in mini.samples) == list(range(10))
    for s in mini.samples:
        assert s.image_file.is_file()
        assert s.image_path.startswith(EDITING_TYPES[s.editing_type][0] + "/")
        assert "[" not in s.source_prompt + s.target_prompt and "]" not in s.source_prompt + s.target_prompt
        assert "[" in s.source_prompt_marked + s.target_prompt_marked  # a deletion marks the source prompt
        assert s.read_image().shape == (512, 512, 3)
        mask = s.mask()
        assert mask.shape == (512, 512) and 0 < mask.mean() <= 1
        if s.blended_words:
            source_word, target_word = s.blended_words
            assert source_word in s.source_prompt.split() and target_word in s.target_prompt.split()


def test_todinv_edit_classes_follow_the_paper():
    # seed 002 §4.1: structure = add, delete, content, pose; appearance = color, material, style; global = background
    assert {t for t, c in CLASSES.items() if c == "structure"} == {2, 3, 4, 5}
    assert {6, 7, 9} <= {t for t, c in CLASSES.items() if c == "appearance"}
    assert CLASSES[8] == "global"
    assert set(CLASSES) == set(range(10))


def test_edit_class_mapping_must_cover_every_type_once():
    with pytest.raises(ConfigError, match="both"):
        edit_class_lookup({"global": [0, 1, 2, 3, 4], "structure": [4, 5, 6, 7, 8, 9]})
    with pytest.raises(ConfigError, match=r"\[9\] belong to no class"):
        edit_class_lookup({"global": list(range(9))})
    with pytest.raises(ConfigError, match="not a PIE-Bench editing type"):
        edit_class_lookup({"global": list(range(11))})
    with pytest.raises(ConfigError, match="'shape' is not an edit class here; write 'structure'"):
        edit_class_lookup({"shape": [0, 1, 2, 3, 4], "global": [5, 6, 7, 8, 9]})


def write_mapping(root, mapping):
    root.mkdir(parents=True, exist_ok=True)
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return root


GOOD = {
    "image_path": "1_change_object_80/x.jpg",
    "original_prompt": "a [cat]",
    "editing_prompt": "a [dog]",
    "editing_instruction": "",
    "editing_type_id": "1",
    "blended_word": "cat dog",
    "mask": [0, 10],
}


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("mask", [1, 2, 3], "even number"),
        ("mask", None, "expected a list"),
        ("editing_type_id", "12", "not one of '0'..'9'"),
        ("blended_word", "cat", "two space-separated words"),
        ("original_prompt", 7, "not a string"),
        ("image_path", "", "not a non-empty relative path"),
        ("image_path", "../../../../tmp/x/evil.jpg", "contains '..'"),
        ("image_path", "1_change_object_80/../../x.jpg", "contains '..'"),
        ("image_path", "/abs/src.png", "is absolute"),
        ("image_path", "1_change_object_80\\x.jpg", "separate folders with '/'"),
    ],
)
def test_malformed_mapping_names_sample_and_field(tmp_path, field, value, words):
    root = write_mapping(tmp_path, {"000000000000": GOOD, "111000000001": {**GOOD, field: value}})
    with pytest.raises(BenchmarkFormatError) as error:
        load_benchmark(root, CLASSES)
    message = str(error.value)
    assert "sample '111000000001'" in message and f"field '{field}'" in message and words in message
    assert "sample '000000000000'" not in message


def test_image_path_through_a_symbolic_link_out_of_the_data_root_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = write_mapping(tmp_path / "data", {"a": {**GOOD, "image_path": "linked/x.jpg"}})
    (root / "annotation_images").mkdir()
    (root / "annotation_images" / "linked").symlink_to(outside)
    (invalid,) = load_benchmark(root, CLASSES, strict=False).invalid
    assert (
        "field 'image_path'" in invalid.problems[0]
        and f"outside {root.resolve() / 'annotation_images'}" in (invalid.problems[0])
    )


def test_samples_that_would_write_the_same_output_are_refused(tmp_path):
    mapping = {
        "a": GOOD,
        "b": GOOD,  # the same image twice
        "c": {**GOOD, "image_path": "1_change_object_80/x.png"},  # another image, the same output x.png
        "d": {**GOOD, "image_path": "1_change_object_80//./y.jpg"},
        "e": {**GOOD, "image_path": "1_change_object_80/y.jpg"},  # another spelling of d
    }
    benchmark = load_benchmark(write_mapping(tmp_path, mapping), CLASSES, strict=False)
    assert [sample.id for sample in benchmark.samples] == ["a", "d"]
    problems = {entry.id: entry.problems[0] for entry in benchmark.invalid}
    assert set(problems) == {"b", "c", "e"}
    assert (
        "field 'image_path'" in problems["c"]
        and "same output file (1_change_object_80/x.png) as sample 'a'" in (problems["c"])
    )
    assert "as sample 'd'" in problems["e"]


def test_missing_field_and_lenient_load(tmp_path):
    broken = {k: v for k, v in GOOD.items() if k != "mask"}
    root = write_mapping(tmp_path, {"a": GOOD, "b": broken})
    with pytest.raises(BenchmarkFormatError, match="sample 'b', field 'mask': missing"):
        load_benchmark(root, CLASSES)
    benchmark = load_benchmark(root, CLASSES, strict=False)
    assert [e.id for e in benchmark.samples] == ["a"]
    (invalid,) = benchmark.invalid
    assert isinstance(invalid, InvalidSample) and invalid.editing_type == 1 and "mask" in invalid.problems[0]


def test_reader_follows_the_reference_conventions(tmp_path):
    root = write_mapping(
        tmp_path, {"k": {**GOOD, "editing_type_id": 6, "blended_word": "", "original_prompt": "[a] b"}}
    )
    (sample,) = load_benchmark(root, CLASSES).samples
    assert sample.editing_type == 6 and sample.edit_class == "appearance"
    assert sample.blended_words is None
    assert sample.source_prompt == "a b" and sample.source_prompt_marked == "[a] b"
    assert sample.image_file == root / "annotation_images" / "1_change_object_80/x.jpg"


def test_missing_or_broken_mapping_file_is_explained(tmp_path):
    with pytest.raises(BenchmarkFormatError, match="mapping_file.json does not exist"):
        load_benchmark(tmp_path, CLASSES)
    (tmp_path / "mapping_file.json").write_text("{not json")
    with pytest.raises(BenchmarkFormatError, match="not valid JSON"):
        load_benchmark(tmp_path, CLASSES)


def test_missing_image_is_a_clear_error(tmp_path):
    root = write_mapping(tmp_path, {"000000000000": GOOD})
    (sample,) = load_benchmark(root, CLASSES).samples
    with pytest.raises(FileNotFoundError, match="sample '000000000000', field 'image_path' .* image not found"):
        sample.read_image()


def test_selection_by_category_and_shard(mini):
    entries = mini.entries
    assert [e.editing_type for e in select(entries, categories=[1, 6])] == [1, 6]
    shards = [select(entries, num_shards=3, shard_index=i) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 4]
    assert [e.id for shard in shards for e in shard] == [e.id for e in entries]  # disjoint, ordered, complete
    with pytest.raises(ConfigError, match="shard_index=3"):
        select(entries, num_shards=3, shard_index=3)
    with pytest.raises(ConfigError, match="not PIE-Bench editing types"):
        select(entries, categories=[10])


def test_selection_label_names_job_folders():
    assert selection_label(None, 1, 0) == ""
    assert selection_label([6, 1], 1, 0) == "_cat1+6"
    assert selection_label(None, 8, 2) == "_shard2of8"
    assert selection_label([3], 2, 1) == "_cat3_shard1of2"


def test_build_script_reproduces_the_shipped_mini_benchmark(tmp_path):
    pytest.importorskip("skimage")
    from PIL import Image

    from pie_bench.build_mini import build

    build(tmp_path)
    shipped = json.loads((BUNDLED_MINI_ROOT / "mapping_file.json").read_text())
    assert json.loads((tmp_path / "mapping_file.json").read_text()) == shipped
    for item in shipped.values():
        rebuilt = np.asarray(Image.open(tmp_path / "annotation_images" / item["image_path"]), dtype=float)
        original = np.asarray(Image.open(BUNDLED_MINI_ROOT / "annotation_images" / item["image_path"]), dtype=float)
        assert np.abs(rebuilt - original).mean() < 0.5  # JPEG encoders may differ by a unit here and there
    shutil.rmtree(tmp_path)
