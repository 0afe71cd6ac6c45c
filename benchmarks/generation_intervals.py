"""Why tilted generation's intervals under-cover on the shipped models: candidate intervals on the same draws.

Runs ``tilted`` on every target of the ``generation`` scale for ``--seeds`` (budget 1024, like the
scale), keeps each run's estimation-phase terms (W·1[hit], the Rao–Blackwellised Σ_t W_{t−1} r_t, and
the weights) in ``--out`` (JSON lines, appended, so a run resumes), then scores several intervals
built from those terms against the scale's truth (sampled, or the tilted reference), split by truth
kind:

* ``plain:cp`` — the estimator's own compound-Poisson interval; ``clt``, ``logclt`` (a CLT interval
  on log p̂, by the delta method), ``batch8`` (Student t over 8 batch means), ``johnson`` (t with
  Johnson's skewness correction), each on the plain and on the Rao–Blackwellised terms;
* ``+maxbump`` — the upper end raised to p̂ + 3.69 max term / n (one more term as large as the largest
  seen, Garwood's no-event bound);

and the Pareto tail index k̂ of the plain terms (a generalised Pareto fit to the largest
min(n/5, 3√n)), against whether the run's own interval covered: if misses came with heavy visible
tails, k̂ could flag them.

    OMP_NUM_THREADS=1 python benchmarks/generation_intervals.py --seeds 0 16 --out runs.jsonl
    OMP_NUM_THREADS=1 python benchmarks/generation_intervals.py --out runs.jsonl --score-only
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import lowprob
import lowprob.estimators.tilted as tilted_module
from lowprob.bench.generation import _load_truth, _problem, event_of, reference
from lowprob.bench.scales import SCALES
from lowprob.estimators.itgis import compound_poisson_interval
from lowprob.files import dumps_json, read_jsonl

Z = stats.norm.ppf(0.975)


def collect(seeds: range, hyper: dict, out: Path) -> None:
    """Append one row per (model, target, seed) not yet in ``out``, with the estimation phase's terms."""
    scale = SCALES["generation"]
    done = {(r["model"], r["text"], r["seed"]) for r in read_jsonl(out)}
    last = {}
    draw = tilted_module.Drawer.__call__

    def keep_last(self, n, beta):  # the estimation phase is the estimator's last draw
        last["run"], prompts = draw(self, n, beta)
        return last["run"], prompts

    tilted_module.Drawer.__call__ = keep_last
    with out.open("a") as f:
        for model_name, texts in scale.targets:
            model, dist = _problem(scale, model_name)
            truth = _load_truth(scale, model_name, out.parent / f"{model_name}.truth.json")
            for text in texts:
                ref = reference(truth, text)
                for seed in seeds:
                    if (model_name, text, seed) in done:
                        continue
                    e = lowprob.estimate(model, dist, event_of(scale, model, text), method="tilted",
                                         budget=scale.budget, seed=seed, **hyper)
                    run = last["run"]
                    f.write(dumps_json({
                        "model": model_name, "text": text, "seed": seed, "hyper": hyper, "p": e.probability,
                        "interval": list(e.interval), "truth": ref["ground_truth"], "kind": ref["ground_truth_kind"],
                        "log_plain": _nulls(torch.where(run.hit, run.log_weight, -math.inf).tolist()),
                        "log_rb": _nulls(run.log_summed.tolist()), "log_w": run.log_weight.tolist()}) + "\n")
                    f.flush()
    tilted_module.Drawer.__call__ = draw


def _nulls(log_terms: list[float]) -> list[float | None]:
    """Strict JSON has no -Infinity: a zero term (log -inf) is written as null."""
    return [v if v > -math.inf else None for v in log_terms]


def _read_runs(path: Path) -> list[dict]:
    return [{**r, **{k: [-math.inf if v is None else v for v in r[k]] for k in ("log_plain", "log_rb")}}
            for r in read_jsonl(path)]


def _cp(log_terms: list[float], log_w: list[float]) -> tuple[float, float]:
    t = torch.tensor(log_terms, dtype=torch.float64)
    return tuple(compound_poisson_interval(t[torch.isfinite(t)], len(t), max(log_w))[0])


def _clt(x: np.ndarray) -> tuple[float, float]:
    m, se = x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    return max(0.0, m - Z * se), m + Z * se


def _log_clt(x: np.ndarray) -> tuple[float, float]:
    m, se = x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    return (0.0, 0.0) if m == 0 else (m * math.exp(-Z * se / m), m * math.exp(Z * se / m))


def _batch_t(x: np.ndarray, k: int = 8) -> tuple[float, float]:
    b = np.array([c.mean() for c in np.array_split(x, k)])
    half = stats.t.ppf(0.975, k - 1) * b.std(ddof=1) / math.sqrt(k)
    return max(0.0, b.mean() - half), b.mean() + half


def _johnson(x: np.ndarray) -> tuple[float, float]:
    n, m, s = len(x), x.mean(), x.std(ddof=1)
    if s == 0:
        return m, m
    shift = ((x - m) ** 3).mean() / (6 * s * s * n)
    half = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    return max(0.0, m + shift - half), m + shift + half


def _max_bump(x: np.ndarray, interval: tuple[float, float]) -> tuple[float, float]:
    return interval[0], max(interval[1], x.mean() + 3.69 * x.max() / len(x))


def pareto_k(log_terms: list[float]) -> float:
    """Generalised Pareto shape of the largest min(n/5, 3√n) positive terms (NaN under 10 of them)."""
    x = np.sort(np.exp([v for v in log_terms if v > -math.inf]))
    if len(x) < 10:
        return math.nan
    m = int(min(len(x) / 5, 3 * math.sqrt(len(x))))
    return stats.genpareto.fit(x[-m:] - x[-m - 1], floc=0)[0]


def score(rows: list[dict]) -> None:
    kinds = ("sampled", "tilted reference", "all")
    tally = collections.defaultdict(collections.Counter)
    for r in rows:
        plain, rb = np.exp(r["log_plain"]), np.exp(r["log_rb"])
        own = _cp(r["log_plain"], r["log_w"])
        candidates = {"plain:cp (its own)": own, "plain:clt": _clt(plain), "plain:logclt": _log_clt(plain),
                      "plain:batch8": _batch_t(plain), "plain:johnson": _johnson(plain),
                      "plain:cp+maxbump": _max_bump(plain, own), "rb:cp": _cp(r["log_rb"], r["log_w"]),
                      "rb:clt": _clt(rb), "rb:logclt": _log_clt(rb), "rb:batch8": _batch_t(rb),
                      "rb:johnson": _johnson(rb), "rb:logclt+maxbump": _max_bump(rb, _log_clt(rb))}
        for name, (lo, hi) in candidates.items():
            for kind in (r["kind"], "all"):
                c = tally[name]
                c[kind, "n"] += 1
                c[kind, "covered"] += lo <= r["truth"] <= hi
                c[kind, "below"] += hi < r["truth"]
    print("coverage of the nominal-95% interval (runs whose interval lies wholly below the truth)")
    print(f"| interval | {' | '.join(kinds)} |\n|---|{'---|' * len(kinds)}")
    for name, c in tally.items():
        cells = (f"{c[k, 'covered']}/{c[k, 'n']} ({c[k, 'below']} below)" for k in kinds)
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label, key in (("plain", "log_plain"), ("rao-blackwellised", "log_rb")):
        errors = np.array([np.exp(r[key]).mean() / r["truth"] - 1 for r in rows])
        print(f"{label} terms: mean relative error {errors.mean():+.3f}, RMS {np.sqrt((errors ** 2).mean()):.3f}")
    print("\nPareto k̂ of the plain terms against the run's own interval")
    ks = [(pareto_k(r["log_plain"]), r["interval"][0] <= r["truth"] <= r["interval"][1]) for r in rows]
    for lo, hi in ((-math.inf, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 1.0), (1.0, math.inf)):
        band = [c for k, c in ks if lo <= k < hi]
        if band:
            print(f"k̂ in [{lo}, {hi}): {sum(band)}/{len(band)} covered")
    print(f"fewer than 10 hits (no k̂): {sum(math.isnan(k) for k, _ in ks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 16), metavar=("FIRST", "END"))
    parser.add_argument("--hyper", default="{}", help="JSON hyper-parameters of tilted")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines of runs (appended; resumes)")
    parser.add_argument("--score-only", action="store_true", help="score the runs in --out, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.score_only:
        collect(range(*args.seeds), json.loads(args.hyper), args.out)
    score(_read_runs(args.out))


if __name__ == "__main__":
    main()
