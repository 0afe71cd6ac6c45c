"""Crash-safe files: atomic writes and JSON lines with a torn last line."""

import json

import pytest

from lowprob.files import atomic_path, atomic_write, read_jsonl


def test_read_jsonl_drops_and_repairs_a_torn_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert read_jsonl(path) == []
    rows = [{"a": 1}, {"b": [2, 3]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"c": 4')
    assert read_jsonl(path) == rows
    assert path.read_text().endswith('{"c": 4')  # reading alone never modifies
    assert read_jsonl(path, repair=True) == rows
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows)


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer died")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
