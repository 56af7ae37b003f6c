"""Results files: atomic append, torn-tail recovery, resume bookkeeping, configuration hashing."""

from invbench.results import ResultsFile, config_hash, read_rows


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
