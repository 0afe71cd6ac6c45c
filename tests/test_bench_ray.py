"""`lowprob bench --backend ray`: the local backend's rows, resumable, with failing tasks retried."""

import sys

import pytest

from lowprob.bench import get_scale, ray_runner, rows, run_bench
from lowprob.bench.score import load_rows
from lowprob.cli import main

from .conftest import fails_once
from .test_bench import SMALL, comparable

ray = pytest.importorskip("ray")
METHODS = ["naive", "itgis", "qld"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Several tasks per pair, cutting QLD's (method, seed) runs: rows must not notice."""
    monkeypatch.setattr(ray_runner, "CHUNK", 5)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    return comparable(load_rows(run_bench(SMALL, tmp_path_factory.mktemp("local") / "run", METHODS,
                                          progress=False)))


def test_cli_ray_run_writes_the_local_rows(tmp_path, monkeypatch):
    args = ["--scale", "tiny", "--methods", "naive,qld", "--only", "toy-2l,tiny-wide"]
    local = run_bench(get_scale("tiny"), tmp_path / "local", ["naive", "qld"], only=["toy-2l", "tiny-wide"],
                      progress=False)
    monkeypatch.setattr(sys, "argv", ["lowprob", "bench", *args, "--out", str(tmp_path / "ray"), "--backend", "ray"])
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert comparable(load_rows(tmp_path / "ray")) == comparable(load_rows(local))


def test_resume_after_a_partial_ray_run_gives_the_local_rows(tmp_path, local):
    cut = run_bench(SMALL, tmp_path / "cut", METHODS, progress=False, only=["tiny-wide"], backend="ray")
    path = cut / "rows" / "toy-1l" / "tiny-wide.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:7]) + lines[7][:40])  # killed mid-write: a torn line
    run_bench(SMALL, cut, METHODS, resume=True, progress=False, backend="ray")
    assert comparable(load_rows(cut)) == local
    assert all(line.endswith("\n") for line in path.read_text().splitlines(keepends=True))


def test_a_task_that_fails_once_is_retried(tmp_path, monkeypatch, local):
    marker = tmp_path / "failed-once"

    def flaky_problem(*args, **kwargs):
        model, dist, gt = runner_load_problem(*args, **kwargs)
        return model, fails_once(dist, "sample", marker), gt

    runner_load_problem = rows.load_problem
    monkeypatch.setattr(rows, "load_problem", flaky_problem)  # the driver's pairs, and so their tasks
    out = run_bench(SMALL, tmp_path / "run", ["naive"], progress=False, only=["tiny-uniform"], backend="ray")
    assert marker.exists()  # the failure did happen, and the run still finished
    assert comparable(load_rows(out)) == [r for r in local if r["method"] == "naive"
                                          and r["distribution"] == "tiny-uniform"]
