"""The ``lowprob mlp`` commands, through typer's runner."""

import json
import re

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


BIG = str(2**70)


@pytest.mark.parametrize(("argv", "match"), [
    (["expect", "--width", "8", "--seed", "-1"], "'--seed'"),
    (["expect", "--width", "8", "--seed", str(2**32)], "'--seed'"),
    (["expect", "--width", "8", "--hidden", BIG], "'--hidden'"),
    (["expect", "--width", "8", "--hidden", "1", "--mc-samples", BIG], "'--mc-samples'"),  # looped for ever
    (["expect", "--width", "8", "--threads", BIG], "'--threads'"),
    (["orthant", "--m", "5", "--n", "5", "--method", "mc", "--seed", "-1"], "'--seed'"),
    (["orthant", "--m", "5", "--n", "5", "--method", "mc", "--seed", str(2**32 - 1)], "'--seed'"),  # draws SEED + 1
    (["orthant", "--m", "5", "--n", "5", "--method", "mc", "--samples", BIG], "'--samples'"),
    (["bench", "--out", "never-written", "--threads", BIG], "'--threads'"),
])
def test_options_out_of_range_are_usage_errors(argv, match):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and result.exception.__class__ is SystemExit, result.output
    assert match in result.output


@pytest.mark.parametrize(("argv", "match"), [
    (["expect", "--width", BIG], r"K=3's factored kappa3 at width 1,180,591,620,717,411,303,424 and depth 5 "),
    (["expect", "--width", "100000", "--hidden", "1"], r"would need 224 GiB \(100,000 x 300,000 numbers"),
    (["expect", "--width", "100000", "--hidden", "1", "--k", "1"], r"random MLP .* would need 149 GiB"),
    (["orthant", "--m", BIG, "--method", "adf"], "W of 1,180,591,620,717,411,303,424 neurons x 50 inputs would need"),
])
def test_sizes_that_cannot_fit_are_refused_before_any_work(monkeypatch, argv, match):
    from lowprob.mlp import limits

    monkeypatch.setattr(limits, "memory_ceiling", lambda: (4 << 30, "a test's 8 GiB"))
    result = runner.invoke(app, argv)
    assert isinstance(result.exception, LowprobError), result.output
    assert re.search(match + r".*past the 4 GiB one array may take \(a test's 8 GiB\)", str(result.exception))


def test_an_unknown_orthant_method_or_a_nan_beta_is_refused_by_name_before_any_runs():
    result = runner.invoke(app, ["orthant", "--m", "5", "--n", "5", "--method", "adf", "--method", "magic"])
    assert isinstance(result.exception, LowprobError) and "magic" in str(result.exception)
    assert "log10 P" not in result.output
    result = runner.invoke(app, ["orthant", "--m", "5", "--n", "5", "--method", "adf", "--beta", "nan"])
    assert isinstance(result.exception, LowprobError)
    assert str(result.exception) == "beta (the bias in units of ||w_i||) must be a finite number, got nan"


def test_an_empty_weights_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    result = runner.invoke(app, ["expect", "--weights", str(tmp_path / "empty.npz")])
    assert isinstance(result.exception, LowprobError), result.output  # was click's "Aborted!" (an EOFError)
    assert "(the file is empty)" in str(result.exception)
