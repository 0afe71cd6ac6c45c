"""`lowprob bench` / `lowprob report`: the tiny scale end to end, resuming, refusing, and the rows contract."""

import dataclasses
import json
import math
import os
import sys

import numpy as np
import pytest

from lowprob.bench import get_scale, run_bench
from lowprob.bench.score import CONSTANT, load_rows, score_rows
from lowprob.cli import main
from lowprob.errors import LowprobError
from lowprob.estimators.catalog import methods_for
from lowprob.evaluation import is_loss

from .test_cli import run

ROW_FIELDS = {"scale", "model", "distribution", "length", "model_sha256", "distribution_sha256", "version", "target",
              "target_text", "event", "method", "hyper", "seed", "budget", "probability", "interval", "cost",
              "warnings", "diagnostics", "ground_truth", "ground_truth_exact", "ground_truth_n", "ground_truth_count"}
SMALL = dataclasses.replace(get_scale("tiny"), n_targets=4, seeds=(0,), temperatures=(0.5, 2.0),
                            models=("toy-1l",), distributions=("tiny-uniform", "tiny-wide"))


def comparable(rows):
    """Rows without what legitimately differs between runs: timings and cache hits."""
    out = []
    for r in rows:
        r = {**r, "cost": {k: v for k, v in r["cost"].items() if k != "seconds"},
             "diagnostics": {k: v for k, v in r["diagnostics"].items() if k != "cache_hit"}}
        out.append(r)
    return sorted(out, key=lambda r: (r["model"], r["distribution"], r["method"], json.dumps(r["hyper"]),
                                      r["seed"], r["target"]))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The README's `lowprob bench --scale tiny`, through the CLI entry point."""
    out = tmp_path_factory.mktemp("bench") / "tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["lowprob", "bench", "--scale", "tiny", "--out", str(out)])
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None)
    return out


@pytest.mark.slow
def test_tiny_scale_rows_follow_the_contract(tiny_run):
    rows = load_rows(tiny_run)
    scale = get_scale("tiny")
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(ROW_FIELDS))}
    assert {r["method"] for r in rows} == set(methods_for("logits"))  # the scales' targets are argmax events
    assert {r["hyper"]["temperature"] for r in rows if r["method"] in ("itgis", "mhis")} == set(scale.temperatures)
    for r in rows:
        assert r["ground_truth_exact"] and r["budget"] == scale.budget
        assert 1e-9 <= r["ground_truth"] <= 0.65 / scale.budget
        assert 0 <= r["interval"][0] <= r["interval"][1] and r["probability"] >= 0
    targets = json.loads((tiny_run / "rows" / "toy-1l" / "tiny-wide.targets.json").read_text())
    assert targets["n_candidates"] >= len(targets["targets"]) == scale.n_targets


@pytest.mark.slow
def test_tiny_report_scores_every_method(tiny_run, monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "report", str(tiny_run))
    assert code == 0
    assert all(name in out for name in ("report.md", "scores.csv", "coverage.png", "loss_toy-1l.png"))
    report = (tiny_run / "report.md").read_text()
    assert report.startswith("# lowprob benchmark: `tiny` scale\n\n> **A smoke test.**")
    for name in ("loss_toy-1l.png", "loss_toy-2l.png", "scatter_raw.png", "scatter_fitted.png", "coverage.png"):
        assert (tiny_run / name).stat().st_size > 10_000
        assert f"({name})" in report
    records, notes = score_rows(load_rows(tiny_run))
    assert not notes
    assert {r["method"] for r in records} == {CONSTANT, *methods_for("logits")}
    for r in records:
        assert r["loss"] >= 0 and r["oracle_loss"] >= 0
        if r["method"] != CONSTANT:  # a record's loss is the IS loss of its own fitted estimate
            assert r["loss"] == pytest.approx(float(is_loss(math.log(r["ground_truth"]), math.log(r["fitted"]))),
                                              rel=1e-9)
    per_pair = {}
    for r in records:
        per_pair.setdefault((r["method"], r["model"], r["distribution"]), []).append(r["loss"])
    mean = {m: np.mean([np.mean(v) for (me, *_), v in per_pair.items() if me == m]) for m in {k[0] for k in per_pair}}
    ranking = next(line for line in report.splitlines() if line.startswith("| all |") and " < " in line)
    assert ranking.split(" | ")[1] == " < ".join(sorted(mean, key=mean.get))  # leak-free, best first
    by_unit = {}
    for r in records:
        by_unit.setdefault((r["model"], r["distribution"], r["method"], r["seed"]), []).append(r)
    for unit in by_unit.values():  # per unit the oracle picks the best single temperature: never worse on average
        assert sum(r["oracle_loss"] for r in unit) <= sum(r["loss"] for r in unit) + 1e-9 or \
            len({r["tuned"] for r in unit}) > 1


def test_resume_after_a_crash_gives_the_uninterrupted_rows(tmp_path):
    whole = run_bench(SMALL, tmp_path / "whole", ["naive", "itgis", "qld"], progress=False)
    cut = run_bench(SMALL, tmp_path / "cut", ["naive", "itgis", "qld"], progress=False)
    path = cut / "rows" / "toy-1l" / "tiny-wide.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:40])  # killed mid-write: a torn line
    (cut / "rows" / "toy-1l" / "tiny-uniform.jsonl").unlink()
    with pytest.raises(LowprobError, match="--resume"):
        run_bench(SMALL, cut, ["naive", "itgis", "qld"], progress=False)
    run_bench(SMALL, cut, ["naive", "itgis", "qld"], resume=True, progress=False)
    assert comparable(load_rows(cut)) == comparable(load_rows(whole))
    assert all(line.endswith("\n") for line in path.read_text().splitlines(keepends=True))
    run_bench(SMALL, cut, ["mhis"], resume=True, progress=False)  # a method added later joins the same run
    assert {r["method"] for r in load_rows(cut)} == {"naive", "itgis", "qld", "mhis"}
    with pytest.raises(LowprobError, match="another scale"):
        run_bench(dataclasses.replace(SMALL, budget=128), cut, ["naive"], resume=True, progress=False)
    meta = cut / "rows" / "toy-1l" / "tiny-wide.targets.json"
    meta.write_text(meta.read_text().replace('"targets": [', '"targets": [0, '))  # as if the ground truth changed
    with pytest.raises(LowprobError, match="ground truth of toy-1l/tiny-wide changed"):
        run_bench(SMALL, cut, ["naive"], resume=True, progress=False)


@pytest.mark.slow
def test_parallel_workers_give_the_same_rows(tmp_path):
    serial = run_bench(SMALL, tmp_path / "serial", ["itgis"], progress=False)
    parallel = run_bench(SMALL, tmp_path / "parallel", ["itgis"], workers=2, progress=False)
    assert comparable(load_rows(serial)) == comparable(load_rows(parallel))


@pytest.mark.parametrize(("args", "message"), [
    (("bench", "--scale", "huge", "--out", "x"), "unknown scale 'huge'"),
    (("bench", "--scale", "tiny", "--out", "x", "--methods", "naive,magic"), "unknown method 'magic'"),
    (("bench", "--scale", "paper", "--out", "x", "--methods", "naive"), "needs --ground-truth"),
    (("bench", "--scale", "tiny", "--out", "x", "--backend", "ray", "--workers", "2"), "--workers is for the local"),
    (("report", "nowhere"), "no benchmark rows under nowhere"),
])
def test_bench_user_errors(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bench_help_names_every_scale(monkeypatch, capsys):
    from lowprob.bench import SCALES

    code, out, _ = run(monkeypatch, capsys, "bench", "--help")
    assert code == 0 and all(name in out for name in SCALES)


def test_only_runs_the_named_pairs_and_resume_completes_them(tmp_path):
    part = run_bench(SMALL, tmp_path / "part", ["naive"], progress=False, only=["tiny-wide"])
    assert {r["distribution"] for r in load_rows(part)} == {"tiny-wide"}
    run_bench(SMALL, part, ["naive"], resume=True, progress=False)
    whole = run_bench(SMALL, tmp_path / "whole", ["naive"], progress=False)
    assert comparable(load_rows(part)) == comparable(load_rows(whole))
    with pytest.raises(LowprobError, match="not a model or distribution"):
        run_bench(SMALL, part, ["naive"], resume=True, progress=False, only=["gelu-9l"])


def test_a_spread_scale_spreads_its_targets_and_old_definitions_still_match(tmp_path):
    from lowprob.bench import SCALES

    assert "spread" not in SCALES["cpu"].to_json()  # the committed cpu run's bench.json still matches
    assert SCALES["exact"].to_json()["spread"] == (1e-12, 1e-5)
    spread = dataclasses.replace(SMALL, spread=(1e-9, 1e-2), distributions=("tiny-wide",))
    out = run_bench(spread, tmp_path / "run", ["naive"], progress=False)
    meta = json.loads((out / "rows" / "toy-1l" / "tiny-wide.targets.json").read_text())
    assert meta["range"] == [1e-9, 1e-2] and set(meta["candidates_per_decade"]) == {f"1e{d}" for d in range(-9, -2)}
    assert len(meta["targets"]) == SMALL.n_targets


def fake_rows(directory, lines: list[str]):
    """A results directory whose one rows file holds ``lines`` (only what loading and resuming read)."""
    path = directory / "rows" / "toy-1l" / "tiny-wide.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


ROW = json.dumps({"method": "naive", "hyper": {}, "target": 3, "seed": 0})


def test_a_second_bench_into_a_directory_being_written_fails_at_once(monkeypatch, capsys, tmp_path):
    from lowprob.files import output_lock

    out = tmp_path / "run"
    out.mkdir()
    with output_lock(out, "lowprob bench"):  # as a first run does
        code, _, err = run(monkeypatch, capsys, "bench", "--scale", "tiny", "--out", str(out), "--methods", "naive")
    assert code == 2 and f"another lowprob bench is writing {out} (pid {os.getpid()})" in err
    assert len(err.strip().splitlines()) == 1 and not (out / "rows").exists()
    assert list(out.iterdir()) == []  # the lock goes with its holder


def test_report_refuses_an_estimate_written_twice(monkeypatch, capsys, tmp_path):
    path = fake_rows(tmp_path, [ROW, ROW])
    with pytest.raises(LowprobError, match="twice"):  # it would count in every mean twice
        load_rows(tmp_path)
    code, _, err = run(monkeypatch, capsys, "report", str(tmp_path))
    assert code == 2 and str(path) in err and "('naive', '{}', 3, 0) twice" in err


def test_a_corrupt_middle_row_is_named_by_report_and_resume(monkeypatch, capsys, tmp_path):
    path = fake_rows(tmp_path, [ROW, '{"method": "naive", "hyp', ROW.replace("3", "4")])
    code, _, err = run(monkeypatch, capsys, "report", str(tmp_path))
    assert code == 2 and f"{path}:2 is not a JSON row" in err and "fix or delete that line" in err
    with pytest.raises(LowprobError, match=f"{path}:2 is not a JSON row"):
        run_bench(SMALL, tmp_path, ["naive"], resume=True, progress=False)


def test_a_generation_report_without_its_truth_files_says_so(tmp_path):
    from lowprob.bench.generation import summarise

    fake_rows(tmp_path, [json.dumps({"model": "toy-1l", "method": "naive", "hyper": {}, "target": " x", "seed": 0})])
    with pytest.raises(LowprobError, match=r"truth/toy-1l\.json is missing"):
        summarise(tmp_path)


def test_rows_written_before_the_cost_meter_are_refused_with_what_to_do():
    """Rows without ``cost.forward_equivalents`` priced a backward pass as two forwards: scoring them next to
    today's would compare unequal compute, so the report refuses them in one line instead of a KeyError."""
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "cpu", "rows", "gelu-1l", "hex.jsonl")
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    assert score_rows(rows)[0]  # today's rows score
    for row in rows:
        del row["cost"]["forward_equivalents"]
    with pytest.raises(LowprobError, match="written before lowprob priced what estimates execute"):
        score_rows(rows)
