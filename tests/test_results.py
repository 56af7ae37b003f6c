"""Results files: atomic append, torn-tail recovery, resume bookkeeping, configuration hashing."""

from invbench.results import ResultsFile, config_hash, read_rows, scan_rows


def test_append_and_read(tmp_path):
    results = ResultsFile(tmp_path / "job" / "results.jsonl")
    results.append({"sample_id": "a", "status": "failed", "score": float("nan")})
    results.append({"sample_id": "b", "status": "ok"})
    results.append({"sample_id": "a", "status": "ok"})
    assert [r["sample_id"] for r in results.rows()] == ["a", "b", "a"]
    assert results.finished_ids() == {"a", "b"}


def test_failed_samples_are_not_finished(tmp_path):
    results = ResultsFile(tmp_path / "results.jsonl")
    results.append({"sample_id": "a", "status": "ok"})
    results.append({"sample_id": "a", "status": "failed"})
    assert results.finished_ids() == set()


def test_torn_last_line_is_ignored_then_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"sample_id": "a", "status": "ok"}\n{"sample_id": "b", "sta')
    assert [r["sample_id"] for r in read_rows(path)] == ["a"]
    results = ResultsFile(path)  # opening for a resume truncates the torn row
    results.append({"sample_id": "b", "status": "ok"})
    assert path.read_text().count("\n") == 2
    assert results.finished_ids() == {"a", "b"}


def test_config_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": {"c": [1, 2]}}) == config_hash({"b": {"c": [1, 2]}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash({})) == 12


DAMAGED = (
    '{"sample_id": "a", "status": "ok"}\n'
    "\n"  # a blank line
    '{"sample_id": "b", "sta\n'  # a line cut by a crash, then a newline from the next append
    '{"sample_id": "c", "status": "ok"}\n'
    "[1, 2]\n"  # JSON, but not a row
    '{"sample_id": "d", "sta'  # a torn tail
)


def test_damaged_lines_are_skipped_and_named_by_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(DAMAGED)
    rows, unreadable = scan_rows(path)
    assert [row["sample_id"] for row in rows] == ["a", "c"]
    assert [problem.split(" (")[0] for problem in unreadable] == [
        f"{path}:2: blank line",
        f"{path}:3: not JSON",
        f"{path}:5: not a result row",
    ]
    results = ResultsFile(path)  # a resume goes on: the torn tail is dropped, the damaged lines are kept as they are
    assert results.finished_ids() == {"a", "c"}
    results.append({"sample_id": "b", "status": "ok"})
    assert results.finished_ids() == {"a", "b", "c"} and path.read_text().startswith(DAMAGED.rsplit("\n", 1)[0])
