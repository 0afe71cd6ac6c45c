import sys

import pytest

from lowprob.cli import main
from lowprob.models import save_model


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["lowprob", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_lists_the_shipped_models(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "models")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["gelu-1l", "gelu-2l", "gelu-4l", "gelu-2l-trigger",
                                                         "gelu-4l-trigger"]
    assert [line.split()[1] for line in lines[1:]] == ["1", "2", "4", "2", "4"]


def test_complete_continues_the_prompt(tiny_lm, tmp_path, monkeypatch, capsys):
    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    code, out, _ = run(monkeypatch, capsys, "complete", "--model", str(tmp_path / "m"),
                       "--prompt", "def add(", "--tokens", "30")
    assert code == 0
    assert out.startswith("def add(") and len(out) > len("def add(\n")


@pytest.mark.parametrize("args, message", [
    (("complete", "--model", "gelu-9l", "--prompt", "x"), "unknown model 'gelu-9l'"),
    (("train", "gelu-3l", "--out", "x"), "unknown model 'gelu-3l'"),
])
def test_user_errors_exit_2_with_one_line(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("complete", "--prompt", "x"), "--model"),
    (("complete", "--model", "gelu-1l", "--prompt", "x", "--tokens", "0"), "--tokens"),
])
def test_usage_errors_exit_2(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err


def test_dists_lists_every_distribution(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "dists")
    assert code == 0
    *table, templates = out.strip().splitlines()[1:]
    assert {line.split()[0] for line in table} == {"hex", "camel", "colon", "if", "caps", "english", "spanish",
                                                   "icl", "tiny-uniform", "tiny-zipf", "tiny-constants",
                                                   "tiny-long", "tiny-wide"}
    assert all(f"trigger-p{k}" in templates for k in (4, 6, 8, 10))


def test_dists_shows_positions_and_samples(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "dists", "colon", "--samples", "3")
    assert code == 0
    assert "position 1-13" in out and "position 14     ':' 1" in out
    assert out.count("<|endoftext|>") == 4  # the position-0 line and three samples


def test_estimate_prints_json_per_the_contract(monkeypatch, capsys):
    import json

    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", " the",
                       "--method", "naive", "--budget", "256", "--json")
    assert code == 0
    row = json.loads(out)
    assert {"method", "probability", "interval", "budget", "seed", "cost", "diagnostics"} <= set(row)
    assert set(row["cost"]) == {"forward_passes", "backward_passes", "flops", "seconds"}


@pytest.mark.parametrize("target, message", [("hello world", "encodes to"), ("99999", "0..4095")])
def test_estimate_rejects_bad_targets(monkeypatch, capsys, target, message):
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", target,
                       "--method", "naive", "--budget", "8")
    assert code == 2 and message in err
