"""Run a benchmark scale: every method x hyper-parameter x target x seed on every pair, as JSON lines.

Layout of the output directory:

* ``bench.json`` — the scale's definition; a resumed run must match it;
* ``rows/{model}/{dist}.jsonl`` — one row per estimate (the file contract: estimate, interval, cost,
  diagnostics, hyper-parameters, seed and the target's ground truth), appended and flushed one by one;
* ``rows/{model}/{dist}.targets.json`` — the pair's targets and the range they were drawn from.

On a planted-trigger scale the one target is the planted one, and each row of a sampling method also
carries ``attribution``: whether its hits rank the trigger's values first in their slots.

A crash loses at most the estimates in flight: ``--resume`` drops a torn last line and skips every row already
written. A run holds the directory's lock (``claim_output``): a second run into it fails at once. Pairs are
independent, so ``workers`` processes (``lowprob.threads``' budget each) run them in parallel, or
``backend="ray"`` runs chunks of a pair's estimates as Ray tasks (``ray_runner.py``); both make each row with
``estimate_row``, and rows depend on neither the worker count nor the backend, only on seeds.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty

import torch
from tqdm import tqdm

from lowprob._version import __version__
from lowprob.bench.scales import GenerationScale, Scale, hyper_key, load_problem, target_seed
from lowprob.checks import integer_in
from lowprob.distributions import TokenDistribution
from lowprob.distributions.slots import SlotDistribution
from lowprob.errors import LowprobError
from lowprob.estimators import METHODS, estimate
from lowprob.estimators.catalog import methods_for
from lowprob.evaluation import select_targets, target_range
from lowprob.evaluation.targets import candidate_targets
from lowprob.events import ArgmaxIs
from lowprob.files import atomic_write, dumps_json, output_lock, prepare_output, read_json, read_jsonl
from lowprob.models.backdoor import PlantedTrigger, planted_trigger
from lowprob.models.protocol import model_sha256
from lowprob.threads import thread_count, torch_threads
from lowprob.truth.trigger import attribution_summary, load_trigger_reference


def hyper_grid(scale: Scale, method: str) -> list[dict]:
    """The hyper-parameter settings a method is run at: every combination of its tuned ones' grids."""
    tuned = METHODS[method].tuned()
    return [dict(zip(tuned, values, strict=True)) for values in itertools.product(*(scale.grid(k) for k in tuned))]


def row_key(method: str, hyper: dict, target: int | str, seed: int) -> tuple:
    """One estimate's identity within a rows file: resume skips it, a report refuses it twice."""
    return method, hyper_key(hyper), target, seed


def _write_json(path: Path, obj) -> None:
    atomic_write(path, (dumps_json(obj, indent=1) + "\n").encode())


@dataclass(frozen=True)
class PairPlan:
    """One pair's work, settled before anything runs: its targets, their ground truth, the jobs left."""

    model: str
    distribution: str
    meta: dict  # what rows/{model}/{dist}.targets.json holds
    truth: dict[int, dict]  # target -> the ground-truth fields every row carries
    jobs: list[tuple[str, dict, int, int]]  # (method, hyper, seed, target) not yet in the rows file


def _planted_targets(scale: Scale, model_name: str, dist_name: str) -> tuple[list[int], dict]:
    """The planted target, and what the reference says of the pair (the targets file's content)."""
    ref = load_trigger_reference(model_name)
    if ref["planted"] != planted_trigger(scale.planted).to_json():
        raise LowprobError(f"{model_name} was not trained with the {scale.planted!r} trigger of the {scale.name} scale")
    figures = ref["distributions"][dist_name]
    return [ref["target_id"]], {"targets": [ref["target_id"]], "planted": ref["planted"],
                                **{k: figures[k] for k in ("trigger_probability", "event_off_trigger")}}


def _drawn_targets(scale: Scale, gt, model_name: str, dist_name: str) -> tuple[list[int], dict]:
    """Targets drawn from the pair's ground truth, and the range they were drawn from."""
    targets = select_targets(gt, scale.budget, scale.n_targets, seed=target_seed(model_name, dist_name),
                             spread=scale.spread)
    if scale.spread is None:
        r = target_range(gt, scale.budget)
        return targets, {"targets": targets, "n_candidates": len(candidate_targets(gt, scale.budget)),
                         "range": [r.low, r.high]}
    low, high = scale.spread  # exact truth: how many tokens each decade of the span offers
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)))
    p = gt.probabilities
    per_decade = {f"1e{d}": int(((p >= 10.0**d) & (p < 10.0 ** (d + 1))).sum()) for d in decades}
    return targets, {"targets": targets, "n_candidates": int(((p >= low) & (p <= high)).sum()), "range": [low, high],
                     "candidates_per_decade": per_decade}


def plan_pair(scale: Scale, model_name: str, dist_name: str, out: Path, methods: list[str],
              ground_truth_dir: Path | None) -> PairPlan:
    """Choose the pair's targets and list the estimates still to make; refuse a changed ground truth."""
    _, _, gt = load_problem(scale, model_name, dist_name, ground_truth_dir)
    if scale.planted is not None:
        targets, meta = _planted_targets(scale, model_name, dist_name)
    else:
        targets, meta = _drawn_targets(scale, gt, model_name, dist_name)
    meta["ground_truth"] = {"exact": gt.exact, "n": gt.n_samples, "seed": gt.seed}
    meta_path = out / "rows" / model_name / f"{dist_name}.targets.json"
    if meta_path.exists() and read_json(meta_path) != json.loads(dumps_json(meta)):
        raise LowprobError(f"the ground truth of {model_name}/{dist_name} changed since {out} was started "
                           f"(other targets); run into an empty directory")
    truth = {t: {"ground_truth": float(gt.probabilities[t]), "ground_truth_exact": gt.exact,
                 "ground_truth_n": gt.n_samples,
                 "ground_truth_count": None if gt.counts is None else int(gt.counts[t])} for t in targets}
    done = {row_key(r["method"], r["hyper"], r["target"], r["seed"])
            for r in read_jsonl(meta_path.with_name(f"{dist_name}.jsonl"))}
    jobs = [(m, h, s, t) for m in methods for h in hyper_grid(scale, m) for s in scale.seeds for t in targets
            if row_key(m, h, t, s) not in done]  # seed before target: QLD/GLD reuse one activation set
    return PairPlan(model_name, dist_name, meta, truth, jobs)


@dataclass(frozen=True)
class PairContext:
    """What making one of a pair's rows needs: small and picklable, so a Ray task can receive it."""

    model: object
    dist: TokenDistribution | SlotDistribution
    common: dict  # the fields every row of the pair carries
    truth: dict[int, dict]  # target -> its ground-truth fields (``PairPlan.truth``)
    planted: PlantedTrigger | None = None  # a planted-trigger scale's trigger, which attribution should find


def pair_context(scale: Scale, plan: PairPlan, ground_truth_dir: Path | None) -> PairContext:
    model, dist, _ = load_problem(scale, plan.model, plan.distribution, ground_truth_dir)
    common = {"scale": scale.name, "model": plan.model, "distribution": plan.distribution, "length": scale.length,
              "model_sha256": model_sha256(model), "distribution_sha256": dist.bind(model)[1].content_hash(),
              "version": __version__}
    planted = None if scale.planted is None else planted_trigger(scale.planted)
    return PairContext(model, dist, common, plan.truth, planted)


def estimate_row(scale: Scale, pair: PairContext, job: tuple[str, dict, int, int]) -> dict:
    """One estimate's row; a pure function of its arguments (up to ``cost.seconds``), wherever it runs."""
    method, hyper, seed, target = job
    est = estimate(pair.model, pair.dist, ArgmaxIs(target), method=method, budget=scale.budget, seed=seed, **hyper)
    tokenizer = getattr(pair.model, "tokenizer", None)
    extra = {} if pair.planted is None else {"attribution": attribution_summary(est, pair.planted)}
    return {**pair.common, "target": target, "target_text": tokenizer.decode([target]) if tokenizer else None,
            "event": est.event, "method": method, "hyper": hyper, "seed": seed, "budget": scale.budget,
            "probability": est.probability, "interval": list(est.interval), "cost": est.to_json()["cost"],
            "diagnostics": est.diagnostics, **pair.truth[target], **extra}


def prepare_pair(plan: PairPlan, out: Path) -> Path:
    """Write the pair's targets file and drop a torn last row: the rows file, ready to append to."""
    pair_dir = out / "rows" / plan.model
    pair_dir.mkdir(parents=True, exist_ok=True)
    _write_json(pair_dir / f"{plan.distribution}.targets.json", plan.meta)
    rows_path = pair_dir / f"{plan.distribution}.jsonl"
    read_jsonl(rows_path, repair=True)
    return rows_path


def append_rows(path: Path, rows: Iterable[dict], tick: Callable[[], None]) -> None:
    """Append rows one by one, flushed as each comes, so a crash loses only rows not yet made."""
    with path.open("a") as f:
        for row in rows:
            f.write(dumps_json(row) + "\n")
            f.flush()
            tick()


def run_pair(scale: Scale, plan: PairPlan, out: Path, ground_truth_dir: Path | None, tick: Callable[[], None]
             ) -> None:
    """Make the plan's estimates, appending one row per estimate to rows/{model}/{dist}.jsonl."""
    rows_path = prepare_pair(plan, out)
    pair = pair_context(scale, plan, ground_truth_dir)
    append_rows(rows_path, (estimate_row(scale, pair, job) for job in plan.jobs), tick)


def check_config(scale: Scale | GenerationScale, out: Path, resume: bool) -> None:
    """Refuse a directory that holds results, unless resuming the same scale definition."""
    config = out / "bench.json"
    if config.exists() or (out / "rows").exists():
        if not resume:
            raise LowprobError(f"{out} already holds benchmark results: pass --resume to continue that run, "
                               f"or choose an empty directory")
        if config.exists() and read_json(config) != json.loads(dumps_json(scale.to_json())):
            raise LowprobError(f"{out} holds a run of another scale definition; choose an empty directory")


@contextmanager
def claim_output(scale: Scale | GenerationScale, out: Path, resume: bool) -> Iterator[None]:
    """Create ``out`` and hold its lock for the whole run, then check what it holds.

    Two runs into one directory would each write every estimate; the second fails at once instead.
    """
    prepare_output(out, kind="directory")
    with output_lock(out, "lowprob bench"):
        check_config(scale, out, resume)
        yield


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
    run_pair(scale, plan, out, gt_dir, lambda: _QUEUE.put(1))


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
        from lowprob.bench.generation import run_generation_bench

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
        _write_json(out / "bench.json", scale.to_json())
        bar = tqdm(total=sum(len(p.jobs) for p in plans), unit="est", desc=f"bench {scale.name}",
                   disable=not progress, dynamic_ncols=True)
        _run_plans(scale, [p for p in plans if p.jobs], out, gt_dir, bar, workers, backend, address)
        bar.close()
    return out


def _run_plans(scale: Scale, plans: list[PairPlan], out: Path, gt_dir: Path | None, bar: tqdm, workers: int,
               backend: str, address: str | None) -> None:
    """Make the planned estimates here, in ``workers`` processes, or on Ray, ticking ``bar`` per row."""
    if backend == "ray":
        from lowprob.bench.ray_runner import run_on_ray

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
                    raise failed[0].exception()
                if all(fut.done() for fut in futures):
                    break
