"""A pair's rows: its targets chosen, its estimates made and appended, in the results directory's layout.

Layout of the output directory:

* ``bench.json`` — the scale's definition; a resumed run must match it;
* ``rows/{model}/{dist}.jsonl`` — one row per estimate (the file contract: estimate, interval, cost,
  diagnostics, hyper-parameters, seed and the target's ground truth), appended and flushed one by one;
* ``rows/{model}/{dist}.targets.json`` — the pair's targets and the range they were drawn from.

On a planted-trigger scale the one target is the planted one, and each row of a sampling method also
carries ``attribution``: whether its hits rank the trigger's values first in their slots.

A crash loses at most the estimates in flight: ``--resume`` drops a torn last line and skips every row already
written. A run holds the directory's lock (``claim_output``): a second run into it fails at once. Every row is
made by ``estimate_row``, a pure function of its arguments (up to ``cost.seconds``) wherever it runs: in
``runner.py``'s processes or as ``ray_runner.py``'s tasks.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lowprob._version import __version__
from lowprob.bench.scales import GenerationScale, Scale, hyper_key, load_problem, target_seed
from lowprob.distributions import SlotDistribution, TokenDistribution
from lowprob.distributions.planted import PlantedTrigger, planted_trigger
from lowprob.errors import LowprobError
from lowprob.estimators import METHODS, estimate
from lowprob.evaluation import select_targets, target_range
from lowprob.evaluation.targets import candidate_targets
from lowprob.events import ArgmaxIs
from lowprob.files import atomic_write, dumps_json, output_lock, prepare_output, read_json, read_jsonl
from lowprob.models.protocol import LanguageModel, model_sha256
from lowprob.truth.trigger import attribution_summary, load_trigger_reference, model_recipe


def hyper_grid(scale: Scale, method: str) -> list[dict]:
    """The hyper-parameter settings a method is run at: every combination of its tuned ones' grids."""
    tuned = METHODS[method].tuned()
    return [dict(zip(tuned, values, strict=True)) for values in itertools.product(*(scale.grid(k) for k in tuned))]


def row_key(method: str, hyper: dict, target: int | str, seed: int) -> tuple:
    """One estimate's identity within a rows file: resume skips it, a report refuses it twice."""
    return method, hyper_key(hyper), target, seed


def write_json(path: Path, obj) -> None:
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
    assert scale.planted  # called for planted-trigger scales only
    ref = load_trigger_reference(model_name)
    recipe = model_recipe(model_name)
    if ref["planted"] != planted_trigger(recipe).to_json():
        raise LowprobError(f"the trigger reference of {model_name} is not of its recipe {recipe!r}: recompute it")
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
    if scale.planted:
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

    model: LanguageModel
    dist: TokenDistribution | SlotDistribution
    common: dict  # the fields every row of the pair carries
    truth: dict[int, dict]  # target -> its ground-truth fields (``PairPlan.truth``)
    planted: PlantedTrigger | None = None  # a planted-trigger scale's trigger, which attribution should find


def pair_context(scale: Scale, plan: PairPlan, ground_truth_dir: Path | None) -> PairContext:
    model, dist, _ = load_problem(scale, plan.model, plan.distribution, ground_truth_dir)
    common = {"scale": scale.name, "model": plan.model, "distribution": plan.distribution, "length": scale.length,
              "model_sha256": model_sha256(model), "distribution_sha256": dist.bind(model)[1].content_hash(),
              "version": __version__}
    planted = planted_trigger(model_recipe(plan.model)) if scale.planted else None
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
            "warnings": est.warnings, "diagnostics": est.diagnostics, **pair.truth[target], **extra}


def prepare_pair(plan: PairPlan, out: Path) -> Path:
    """Write the pair's targets file and drop a torn last row: the rows file, ready to append to."""
    pair_dir = out / "rows" / plan.model
    pair_dir.mkdir(parents=True, exist_ok=True)
    write_json(pair_dir / f"{plan.distribution}.targets.json", plan.meta)
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
