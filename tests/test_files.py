"""Crash-safe files: atomic writes, JSON lines with a torn last line, strict JSON, outputs never replaced or
written twice unless told."""

import json
import os
import re

import pytest
import torch

from lowprob.errors import LowprobError
from lowprob.files import (
    atomic_path,
    atomic_write,
    dumps_json,
    output_lock,
    prepare_output,
    read_json,
    read_jsonl,
)


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


def test_dumps_json_refuses_what_strict_parsers_reject():
    assert dumps_json({"x": [1.5, None]}, indent=1) == json.dumps({"x": [1.5, None]}, indent=1)
    for bad in (float("-inf"), float("inf"), float("nan")):
        with pytest.raises(ValueError):
            dumps_json({"near_miss_log_w": {"m05": bad}})


def test_a_bad_complete_line_is_named_not_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"\n{"a": 3}\n{"c": ')  # a bad middle line, then a torn last one
    with pytest.raises(LowprobError, match=rf"^{path}:2 is not a JSON row \(.*\): fix or delete that line$"):
        read_jsonl(path)
    for bad in ('{"m05": -Infinity}', '{"x": NaN}', "[1, 2]"):
        path.write_text(f'{{"a": 1}}\n{bad}\n')
        with pytest.raises(LowprobError, match=f"{path}:2 is not a JSON row"):
            read_jsonl(path, repair=True)



def test_read_json_is_strict_and_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text('{"name": "cpu", "budget": [1.5, null]}')
    assert read_json(path) == {"name": "cpu", "budget": [1.5, None]}
    for text, reason in [('{"name": "cpu",\n "budget": }', "Expecting value at line 2, column 12"),
                         ("", "Expecting value at line 1, column 1"), ('{"x": -Infinity}', "-Infinity is not JSON"),
                         ("[NaN]", "NaN is not JSON"),
                         ('{"a": {"b": 1, "b": 2}}', "the key 'b' appears twice in one object; keep one")]:
        path.write_text(text)
        message = f"{path} is not valid JSON ({reason}): fix or delete it"
        with pytest.raises(LowprobError, match=f"^{re.escape(message)}$"):
            read_json(path)
    path.write_bytes(b"\xff{}")
    with pytest.raises(LowprobError, match=f"^{re.escape(str(path))} is not valid JSON \\(.*codec can't decode"):
        read_json(path)
    with pytest.raises(LowprobError, match=f"^{re.escape(str(tmp_path))}/gone.json is missing: compute it first$"):
        read_json(tmp_path / "gone.json", missing="compute it first")
    with pytest.raises(LowprobError, match=f"^cannot read {re.escape(str(tmp_path))}: Is a directory$"):
        read_json(tmp_path)


def test_a_corrupt_json_file_lowprob_reads_is_one_error_naming_it(tmp_path, monkeypatch, capsys):
    from lowprob.truth.trigger import load_trigger_reference, trigger_problems

    from .test_cli import run

    bench, hf, refs = tmp_path / "bench", tmp_path / "hf", tmp_path / "refs"
    for path, text in [(bench / "bench.json", '{"name": "cpu",'),
                       (hf / "config.json", '{"model_type": "gpt2", "n_layer": '),
                       (refs / "gelu-2l-trigger.json", '{"model": "gelu-2l-trigger", "target_id": NaN}')]:
        path.parent.mkdir()
        path.write_text(text)
    code, _, err = run(monkeypatch, capsys, "report", str(bench))
    assert code == 2 and err.startswith(f"error: {bench}/bench.json is not valid JSON (Expecting")
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", str(hf), "--dist", "hex", "--target", "id:5")
    assert code == 2 and err.startswith(f"error: {hf}/config.json is not valid JSON (Expecting")  # not "no card.json"
    reference = re.escape(f"{refs}/gelu-2l-trigger.json is not valid JSON (NaN is not JSON): fix or delete it")
    with pytest.raises(LowprobError, match=reference):
        load_trigger_reference("gelu-2l-trigger", refs)
    with pytest.raises(LowprobError, match=reference):
        trigger_problems(refs)


def test_prepare_output_refuses_to_replace_a_file_unless_told(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(LowprobError, match=f"{notes} already exists: pass --force"):
        prepare_output(notes)
    assert prepare_output(notes, overwrite=True) == notes and notes.read_text() == "mine"
    with pytest.raises(LowprobError, match=f"{notes} is a file, not a directory"):
        prepare_output(notes / "x.safetensors")


@pytest.mark.skipif(not os.path.isdir("/sys") or not os.access("/sys", os.W_OK), reason="needs a writable-looking /sys")
def test_prepare_output_probes_that_it_can_really_write():
    with pytest.raises(LowprobError, match="cannot write to /sys"):  # os.access says yes, as root
        prepare_output("/sys/x.safetensors")


def test_a_failed_write_is_a_user_error_naming_the_path(tmp_path):
    path = tmp_path / "gone" / "x.json"
    with pytest.raises(LowprobError, match=f"cannot write {path}: No such file or directory"):
        atomic_write(path, b"{}")


def test_a_second_writer_fails_at_once_and_a_released_lock_is_taken(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    busy = rf"another lowprob bench is writing {out} \(pid {os.getpid()}\)"
    with output_lock(out, "lowprob bench"), pytest.raises(LowprobError, match=busy), output_lock(out, "lowprob bench"):
        pass
    assert list(out.iterdir()) == []
    gt = tmp_path / "gt.safetensors.partial"
    with output_lock(gt, "lowprob ground-truth"):
        assert (tmp_path / "gt.safetensors.partial.lock").exists()
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_saved_distribution_honours_the_umask_and_is_written_atomically(tmp_path, umask):
    from lowprob.distributions import TokenDistribution

    dist = TokenDistribution.from_positions([0, ([5, 9], [0.5, 0.5])])
    old = os.umask(umask)
    try:
        dist.save(tmp_path / "d.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "d.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]
    assert TokenDistribution.load(tmp_path / "d.safetensors").content_hash() == dist.content_hash()


def test_a_safetensors_write_that_fails_names_its_path(tmp_path):
    """safetensors wraps I/O errors in its own type: its writers serialise to bytes and write atomically."""
    from lowprob.distributions import TokenDistribution
    from lowprob.truth import GroundTruth

    gone = tmp_path / "gone"
    dist = TokenDistribution.from_positions([0, ([5, 9], [0.5, 0.5])])
    with pytest.raises(LowprobError, match=f"cannot write {gone}/d.safetensors"):
        dist.save(gone / "d.safetensors")
    gt = GroundTruth(torch.tensor([0.5, 0.5], dtype=torch.float64), None, True, 4, None, "m", "d", "0")
    with pytest.raises(LowprobError, match=f"cannot write {gone}/gt.safetensors"):
        gt.save(gone / "gt.safetensors")


# --- the ground-truth command's output -----------------------------------------------------------------
def test_ground_truth_never_replaces_an_existing_file_unless_forced(tiny_lm, tmp_path, monkeypatch, capsys):
    from lowprob.models import save_model

    from .test_cli import run

    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    args = ["ground-truth", "--model", str(tmp_path / "m"), "--dist", "tiny-uniform", "--exact", "--out", str(notes)]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and f"{notes} already exists: pass --force" in err and notes.read_text() == "my notes"
    code, out, err = run(monkeypatch, capsys, *args, "--force")
    assert code == 0 and "wrote" in out, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "notes.txt"]  # no partial, no lock left
    partial = tmp_path / "gt.safetensors.partial"
    with output_lock(partial, "lowprob ground-truth"):  # as a run writing gt.safetensors does
        code, _, err = run(monkeypatch, capsys, *args[:-1], str(tmp_path / "gt.safetensors"))
    assert code == 2 and f"another lowprob ground-truth is writing {partial}" in err
