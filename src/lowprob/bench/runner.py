"""Run a benchmark scale: every method x hyper-parameter x target x seed on every pair, as JSON lines.

The results directory and how each row is made: ``rows.py``. Pairs are independent, so ``workers``
processes (``lowprob.threads``' budget each) run them in parallel, or ``backend="ray"`` runs chunks of a
pair's estimates as Ray tasks (``ray_runner.py``); both make each row with ``rows.estimate_row``, and rows
depend on neither the worker count nor the backend, only on seeds. A ``GenerationScale`` (text targets,
sampled truth) runs in ``generation.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from queue import Empty

import torch
from tqdm import tqdm

from lowprob.bench.generation import run_generation_bench
from lowprob.bench.ray_runner import run_on_ray
from lowprob.bench.rows import PairPlan, claim_output, plan_pair, run_pair, write_json
from lowprob.bench.scales import GenerationScale, Scale
from lowprob.checks import integer_in
from lowprob.errors import LowprobError
from lowprob.estimators.catalog import methods_for
from lowprob.threads import thread_count, torch_threads

_QUEUE = None  # a worker's channel for progress ticks, set by ``_init_worker``


def _init_worker(parent: int, queue) -> None:
    """Worker set-up: its thread budget, a progress channel, and exit when the parent dies (no orphans)."""
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(thread_count())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker(args) -> None:
    scale, plan, out, gt_dir = args
    queue = _QUEUE
    assert queue is not None  # set by _init_worker, before any task
    run_pair(scale, plan, out, gt_dir, lambda: queue.put(1))


def _chosen_pairs(scale: Scale, only: list[str] | None) -> list[tuple[str, str]]:
    pairs = scale.pairs()
    if not only:
        return pairs
    unknown = sorted(set(only) - set(scale.models) - set(scale.distributions))
    if unknown:
        raise LowprobError(f"--only names {', '.join(unknown)}, not a model or distribution of the "
                           f"{scale.name} scale")
    models_named = set(only) & set(scale.models)
    dists_named = set(only) & set(scale.distributions)
    return [(m, d) for m, d in pairs if (not models_named or m in models_named)
            and (not dists_named or d in dists_named)]


def run_bench(scale: Scale | GenerationScale, out: str | Path, methods: list[str] | None = None, resume: bool = False,
              workers: int = 1, ground_truth_dir: str | Path | None = None, progress: bool = True,
              only: list[str] | None = None, backend: str = "local", address: str | None = None) -> Path:
    """Run (or continue) ``scale`` into ``out``; returns ``out``.

    Every pair is planned first (targets chosen, ground truth checked, finished rows counted), so a
    problem is reported before anything is written and the progress bar knows the whole job.
    ``only`` restricts the run to pairs whose model or distribution is named (a partial run that a
    later ``resume`` completes); the rows are the same as a full run's. ``backend="ray"`` makes the
    estimates as Ray tasks (a local Ray instance unless ``address``; ``bench/ray_runner.py``) with the
    same rows; ``workers`` is the local backend's. A ``GenerationScale`` (text targets, sampled truth) runs
    in ``bench/generation.py``, one process.
    """
    if isinstance(scale, GenerationScale):
        if workers != 1 or backend != "local" or only or ground_truth_dir is not None:
            raise LowprobError("the generation scale runs in one local process with its own truth: "
                               "--workers, --backend, --only and --ground-truth do not apply")
        with torch_threads():
            return run_generation_bench(scale, Path(out), methods, resume, progress)
    able = methods_for("logits")  # every scale's targets are argmax events
    methods = list(methods or able)
    unknown = [m for m in methods if m not in able]
    if unknown:
        raise LowprobError(f"method(s) {', '.join(unknown)} cannot run this benchmark (argmax targets): "
                           f"choose from {', '.join(able)}")
    workers = integer_in(workers, "--workers", high=4 * (os.cpu_count() or 1),
                         why=f" (4 processes per CPU of this machine's {os.cpu_count() or 1}; more only share them)")
    if backend not in ("local", "ray"):
        raise LowprobError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray" and workers != 1:
        raise LowprobError("--workers is for the local backend; with --backend ray the cluster's CPUs run the tasks")
    if scale.name == "paper" and ground_truth_dir is None:
        raise LowprobError("the paper scale needs --ground-truth DIR with 2^32-sample tables (see the README)")
    out = Path(out)
    gt_dir = Path(ground_truth_dir) if ground_truth_dir is not None else None
    pairs = _chosen_pairs(scale, only)
    with claim_output(scale, out, resume):
        with torch_threads():
            plans = [plan_pair(scale, m, d, out, methods, gt_dir) for m, d in pairs]
        write_json(out / "bench.json", scale.to_json())
        bar = tqdm(total=sum(len(p.jobs) for p in plans), unit="est", desc=f"bench {scale.name}",
                   disable=not progress, dynamic_ncols=True)
        _run_plans(scale, [p for p in plans if p.jobs], out, gt_dir, bar, workers, backend, address)
        bar.close()
    return out


def _run_plans(scale: Scale, plans: list[PairPlan], out: Path, gt_dir: Path | None, bar: tqdm, workers: int,
               backend: str, address: str | None) -> None:
    """Make the planned estimates here, in ``workers`` processes, or on Ray, ticking ``bar`` per row."""
    if backend == "ray":
        with torch_threads():
            run_on_ray(scale, plans, out, gt_dir, lambda: bar.update(1), address)
    elif workers == 1:
        with torch_threads():
            for plan in plans:
                run_pair(scale, plan, out, gt_dir, lambda: bar.update(1))
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), queue)) as pool:
            futures = [pool.submit(_worker, (scale, plan, out, gt_dir)) for plan in plans]
            while True:
                try:
                    bar.update(queue.get(timeout=0.5))
                    continue
                except Empty:
                    pass
                failed = [fut for fut in futures if fut.done() and fut.exception() is not None]
                if failed:
                    pool.shutdown(cancel_futures=True)  # pairs in flight finish; their rows are kept
                    error = failed[0].exception()
                    assert error is not None  # a failed future holds its exception
                    raise error
                if all(fut.done() for fut in futures):
                    break
