"""The ``lowprob mlp`` commands, through typer's runner."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lowprob.errors import LowprobError
from lowprob.mlp.cli import app
from lowprob.mlp.networks import random_mlp, save_spec

runner = CliRunner()


def test_expect_with_user_weights(tmp_path):
    save_spec(random_mlp(6, 3, seed=0), tmp_path / "net.npz")
    result = runner.invoke(app, ["expect", "--weights", str(tmp_path / "net.npz"), "--k", "2",
                                 "--mc-samples", "1000"])
    assert result.exit_code == 0, result.output
    assert "K=2" in result.output and "MC N=1000" in result.output


def test_orthant_command():
    result = runner.invoke(app, ["orthant", "--m", "4", "--n", "5", "--method", "adf", "--method", "botev",
                                 "--samples", "500"])
    assert result.exit_code == 0, result.output
    assert "adf" in result.output and "botev" in result.output


def test_bench_quick_writes_rows_plots_and_resumes(tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"means", "tails", "orthant"}
    for r in rows:
        assert np.isfinite(r["flops"]) and r["flops"] > 0
        assert r["mechanistic"] == (r["method"].startswith("K") or r["method"] in ("adf", "ep", "pairwise"))
    assert all(r["seed"] is not None for r in rows)
    assert {p.name for p in out.glob("*.png")} == {"means_vs_flops.png", "means_vs_width.png",
                                                   "tails_rel_err.png", "orthant.png"}
    again = runner.invoke(app, ["bench", "--out", str(out), "--quick", "--resume"])
    assert again.exit_code == 0
    assert len((out / "rows.jsonl").read_text().splitlines()) == len(rows)


def test_user_errors_are_lowprob_errors(tmp_path):
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--task", "nope"])
    assert isinstance(result.exception, LowprobError)
    np.savez(tmp_path / "bad.npz", W0=np.ones((2, 2)))
    result = runner.invoke(app, ["expect", "--weights", str(tmp_path / "bad.npz")])
    assert isinstance(result.exception, LowprobError)


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"]])
def test_help(argv):
    assert runner.invoke(app, argv).exit_code == 0


def test_bench_never_discards_earlier_rows_unless_forced(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "rows.jsonl").write_text('{"key": "means/8/0/K1"}\n')
    result = runner.invoke(app, ["bench", "--out", str(out), "--quick"])
    assert isinstance(result.exception, LowprobError), result.output
    assert "pass --resume to continue that run, --force to start over" in str(result.exception)
    assert (out / "rows.jsonl").read_text() == '{"key": "means/8/0/K1"}\n'
    result = runner.invoke(app, ["bench", "--out", str(out), "--quick", "--resume", "--force"])
    assert isinstance(result.exception, LowprobError) and "give one of them" in str(result.exception)
    (out / "config.json").write_text(json.dumps({"widths": [32]}))  # rows of another configuration
    result = runner.invoke(app, ["bench", "--out", str(out), "--quick", "--resume"])
    assert isinstance(result.exception, LowprobError) and "another configuration" in str(result.exception)


def test_bench_refuses_a_file_or_a_directory_being_written(tmp_path):
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["bench", "--out", str(tmp_path / "file"), "--quick"])
    assert isinstance(result.exception, LowprobError) and "is a file, not a directory" in str(result.exception)
    from lowprob.files import output_lock

    with output_lock(tmp_path, "lowprob mlp bench"):
        result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--quick"])
    assert isinstance(result.exception, LowprobError)
    assert f"another lowprob mlp bench is writing {tmp_path}" in str(result.exception)
    assert not (tmp_path / "rows.jsonl").exists()


def test_a_refused_bench_prints_its_error_alone_and_names_a_corrupt_config(tmp_path):
    (tmp_path / "rows.jsonl").write_text('{"key": "means/8/0/K1"}\n')
    (tmp_path / "config.json").write_text('{"widths": [32],')  # torn by hand or by a full disk
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--quick"])
    assert isinstance(result.exception, LowprobError) and "already exists" in str(result.exception)
    assert "bench rows" not in result.output  # no empty progress bar before the refusal
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--quick", "--resume"])
    assert isinstance(result.exception, LowprobError) and "bench rows" not in result.output
    assert str(result.exception).startswith(f"{tmp_path}/config.json is not valid JSON (Expecting")
