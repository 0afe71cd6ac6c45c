"""Run a benchmark scale: every method x hyper-parameter x target x seed on every pair, as JSON lines.

Layout of the output directory:

* ``bench.json`` — the scale's definition; a resumed run must match it;
* ``rows/{model}/{dist}.jsonl`` — one row per estimate (the file contract: estimate, interval, cost,
  diagnostics, hyper-parameters, seed and the target's ground truth), appended and flushed one by one;
* ``rows/{model}/{dist}.targets.json`` — the pair's targets and the range they were drawn from.

A crash loses at most the estimate in flight: ``--resume`` drops a torn last line and skips every row
already written. Pairs are independent, so ``workers`` processes (one thread each) run them in
parallel; rows do not depend on the worker count, only on seeds.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from queue import Empty

import torch
from tqdm import tqdm

import lowprob
from lowprob.bench.scales import Scale, hyper_key, load_problem, target_seed
from lowprob.errors import LowprobError
from lowprob.estimators import METHODS, estimate
from lowprob.evaluation import select_targets, target_range
from lowprob.evaluation.targets import candidate_targets
from lowprob.events import ArgmaxIs
from lowprob.files import atomic_write, read_jsonl
from lowprob.ground_truth import model_sha256

Tick = Callable[[str, int], None]  # ("total", n) when a pair's work is known, ("done", 1) per estimate


def hyper_grid(scale: Scale, method: str) -> list[dict]:
    """The hyper-parameter settings a method is run at: the temperature grid, or its defaults."""
    if "temperature" in METHODS[method].defaults:
        return [{"temperature": t} for t in scale.temperatures]
    return [{}]


def row_key(method: str, hyper: dict, target: int, seed: int) -> tuple:
    return method, hyper_key(hyper), target, seed


def _write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=1) + "\n").encode())


def run_pair(scale: Scale, model_name: str, dist_name: str, out: Path, methods: list[str],
             ground_truth_dir: Path | None, tick: Tick) -> None:
    from lowprob import estimators  # noqa: F401  (registers the built-in methods)

    model, dist, gt = load_problem(scale, model_name, dist_name, ground_truth_dir)
    targets = select_targets(gt, scale.budget, scale.n_targets, seed=target_seed(model_name, dist_name))
    pair_dir = out / "rows" / model_name
    pair_dir.mkdir(parents=True, exist_ok=True)
    r = target_range(gt, scale.budget)
    meta = {"targets": targets, "n_candidates": len(candidate_targets(gt, scale.budget)), "range": [r.low, r.high],
            "ground_truth": {"exact": gt.exact, "n": gt.n_samples, "seed": gt.seed}}
    meta_path = pair_dir / f"{dist_name}.targets.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != json.loads(json.dumps(meta)):
        raise LowprobError(f"the ground truth of {model_name}/{dist_name} changed since {out} was started "
                           f"(other targets); run into an empty directory")
    _write_json(meta_path, meta)
    rows_path = pair_dir / f"{dist_name}.jsonl"
    done = {row_key(r["method"], r["hyper"], r["target"], r["seed"]) for r in read_jsonl(rows_path, repair=True)}
    jobs = [(m, h, s, t) for m in methods for h in hyper_grid(scale, m) for s in scale.seeds for t in targets
            if row_key(m, h, t, s) not in done]  # seed before target: QLD/GLD reuse one activation set
    tick("total", len(jobs))
    common = {"scale": scale.name, "model": model_name, "distribution": dist_name, "length": scale.length,
              "model_sha256": model_sha256(model), "distribution_sha256": dist.content_hash(),
              "version": lowprob.__version__}
    tokenizer = getattr(model, "tokenizer", None)
    with rows_path.open("a") as f:
        for method, hyper, seed, target in jobs:
            est = estimate(model, dist, ArgmaxIs(target), method=method, budget=scale.budget, seed=seed, **hyper)
            row = {**common, "target": target, "target_text": tokenizer.decode([target]) if tokenizer else None,
                   "method": method, "hyper": hyper, "seed": seed, "budget": scale.budget,
                   "probability": est.probability, "interval": list(est.interval),
                   "cost": est.to_json()["cost"], "diagnostics": est.diagnostics,
                   "ground_truth": float(gt.probabilities[target]), "ground_truth_exact": gt.exact,
                   "ground_truth_n": gt.n_samples,
                   "ground_truth_count": None if gt.counts is None else int(gt.counts[target])}
            f.write(json.dumps(row) + "\n")
            f.flush()
            tick("done", 1)


def _check_config(scale: Scale, out: Path, resume: bool) -> None:
    config = out / "bench.json"
    if config.exists() or (out / "rows").exists():
        if not resume:
            raise LowprobError(f"{out} already holds benchmark results: pass --resume to continue that run, "
                               f"or choose an empty directory")
        if config.exists() and json.loads(config.read_text()) != json.loads(json.dumps(scale.to_json())):
            raise LowprobError(f"{out} holds a run of another scale definition; choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(config, scale.to_json())


_QUEUE = None  # a worker's channel for progress ticks, set by ``_init_worker``


def _init_worker(parent: int, queue) -> None:
    """Worker set-up: one thread, a progress channel, and exit when the parent dies (no orphans)."""
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _worker(args) -> None:
    scale, model_name, dist_name, out, methods, gt_dir = args
    run_pair(scale, model_name, dist_name, out, methods, gt_dir, lambda kind, n: _QUEUE.put((kind, n)))


def run_bench(scale: Scale, out: str | Path, methods: list[str] | None = None, resume: bool = False,
              workers: int = 1, ground_truth_dir: str | Path | None = None, progress: bool = True,
              only: list[str] | None = None) -> Path:
    """Run (or continue) ``scale`` into ``out``; returns ``out``.

    ``only`` restricts the run to pairs whose model or distribution is named (a partial run that a
    later ``resume`` completes); the rows are the same as a full run's.
    """
    from lowprob import estimators  # noqa: F401

    methods = list(methods or sorted(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise LowprobError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(sorted(METHODS))}")
    if workers < 1:
        raise LowprobError(f"--workers must be at least 1, got {workers}")
    if scale.name == "paper" and ground_truth_dir is None:
        raise LowprobError("the paper scale needs --ground-truth DIR with 2^32-sample tables (see the README)")
    out = Path(out)
    gt_dir = Path(ground_truth_dir) if ground_truth_dir is not None else None
    _check_config(scale, out, resume)
    pairs = scale.pairs()
    if only:
        unknown = sorted(set(only) - set(scale.models) - set(scale.distributions))
        if unknown:
            raise LowprobError(f"--only names {', '.join(unknown)}, not a model or distribution of the "
                               f"{scale.name} scale")
        chosen = [(m, d) for m, d in pairs if m in only or d in only]
        models_named = set(only) & set(scale.models)
        dists_named = set(only) & set(scale.distributions)
        pairs = [(m, d) for m, d in chosen if (not models_named or m in models_named)
                 and (not dists_named or d in dists_named)]
    bar = tqdm(total=0, unit="est", desc=f"bench {scale.name}", disable=not progress, dynamic_ncols=True)

    def tick(kind: str, n: int) -> None:
        if kind == "total":
            bar.total += n
            bar.refresh()
        else:
            bar.update(n)

    if workers == 1:
        for model_name, dist_name in pairs:
            run_pair(scale, model_name, dist_name, out, methods, gt_dir, tick)
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(os.getpid(), queue)) as pool:
            futures = [pool.submit(_worker, (scale, m, d, out, methods, gt_dir)) for m, d in pairs]
            while True:
                try:
                    tick(*queue.get(timeout=0.5))
                    continue
                except Empty:
                    pass
                failed = [fut for fut in futures if fut.done() and fut.exception() is not None]
                if failed:
                    pool.shutdown(cancel_futures=True)  # pairs in flight finish; their rows are kept
                    raise failed[0].exception()
                if all(fut.done() for fut in futures):
                    break
    bar.close()
    return out
