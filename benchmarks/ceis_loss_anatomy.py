"""Where a model's mean leak-free IS loss on the `cpu` benchmark comes from, per method and seed.

Issue 13 asks for a default whose per-model mean loss is at most half MHIS's. A model's mean is the mean
over its 8 pairs of each pair's mean over ~30 targets, and the IS loss grows linearly in p/q, so one
estimate far below its truth can outweigh the other ~240. This prints, per model:

* the mean, and the mean after removing the model's worst 1 and 2 targets (the same trimming for every
  method, so the comparison stays fair);
* the median pair loss and the number of targets with a loss above 10;
* the ratio of the mean to MHIS's with a 95% bootstrap interval (targets resampled within each pair,
  paired across methods: every method is scored on the same targets).

Leak-free losses come from ``results/cpu/scores.csv`` (seed 0, every method) and from rows written by
``ceis_cpu.py`` on all 24 pairs (other seeds or settings, re-scored here with the same leave-one-out fit).

    PYTHONPATH=src python benchmarks/ceis_loss_anatomy.py \\
        --rows "ceis seed 1=benchmarks/results/cpu-seeds/ceis_seed1.jsonl" \\
               "ceis seed 2=benchmarks/results/cpu-seeds/ceis_seed2.jsonl"
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from lowprob.evaluation import log_estimate, loo_losses
from lowprob.files import read_jsonl

SCORES = Path(__file__).parent / "results" / "cpu" / "scores.csv"
MODELS = ("gelu-1l", "gelu-2l", "gelu-4l")

Losses = dict[tuple[str, str], dict[int, float]]  # (model, distribution) -> target -> leak-free loss


def committed_losses(method: str) -> Losses:
    out: Losses = defaultdict(dict)
    with SCORES.open() as f:
        for r in csv.DictReader(f):
            if r["method"] == method:
                out[r["model"], r["distribution"]][int(r["target"])] = float(r["loss"])
    return out


def rescored_losses(paths: list[str]) -> Losses:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no such rows file: {', '.join(missing)}")
    by_pair = defaultdict(list)
    for r in (r for path in paths for r in read_jsonl(path)):
        by_pair[r["model"], r["distribution"]].append(r)
    out: Losses = {}
    for key, rows in by_pair.items():
        log_p = np.log([r["ground_truth"] for r in rows])
        losses = loo_losses(log_p, log_estimate([r["probability"] for r in rows]))
        out[key] = {r["target"]: float(loss) for r, loss in zip(rows, losses, strict=True)}
    return out


def model_mean(losses: Losses, model: str, drop: int = 0) -> float:
    """Mean over the model's pairs of each pair's mean loss, without the model's ``drop`` worst targets."""
    pairs = {k: v for k, v in losses.items() if k[0] == model}
    ranked = sorted(((loss, k, t) for k, v in pairs.items() for t, loss in v.items()), reverse=True)
    worst = {(k, t) for _, k, t in ranked[:drop]}
    return float(np.mean([np.mean([loss for t, loss in v.items() if (k, t) not in worst])
                          for k, v in pairs.items()]))


def bootstrap_ratio(losses: Losses, baseline: Losses, model: str, reps: int, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of model_mean(losses) / model_mean(baseline): targets resampled within each
    pair, the same draws for both (paired). Seeded per call, so a row does not depend on the others."""
    rng = np.random.default_rng(seed)
    num, den = [], []
    for key in sorted(k for k in losses if k[0] == model):
        targets = sorted(losses[key])
        a = np.array([losses[key][t] for t in targets])
        b = np.array([baseline[key][t] for t in targets])
        idx = rng.integers(0, len(a), (reps, len(a)))
        num.append(a[idx].mean(1))
        den.append(b[idx].mean(1))
    lo, hi = np.quantile(np.mean(num, 0) / np.mean(den, 0), [0.025, 0.975])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="*", default=[], metavar="LABEL=PATH[,PATH...]",
                        help="further rows (ceis_cpu.py output covering all 24 pairs), printed under LABEL")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    args = parser.parse_args()
    mhis = committed_losses("mhis")
    methods = {"ceis seed 0": committed_losses("ceis")}
    for spec in args.rows:
        label, paths = spec.split("=", 1)
        methods[label] = rescored_losses(paths.split(","))
    methods |= {"mhis seed 0": mhis, "itgis seed 0": committed_losses("itgis"),
                "constant": committed_losses("constant")}
    print("| method | model | mean | without worst 1 | without worst 2 | median pair | targets > 10 "
          "| mean / MHIS [95% bootstrap] | without worst 1 / MHIS's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, losses in methods.items():
        for model in MODELS:
            means = [model_mean(losses, model, drop) for drop in range(3)]
            pair_means = [np.mean(list(v.values())) for k, v in losses.items() if k[0] == model]
            above = sum(loss > 10 for k, v in losses.items() if k[0] == model for loss in v.values())
            ratio = means[0] / model_mean(mhis, model)
            lo, hi = bootstrap_ratio(losses, mhis, model, args.reps)
            trimmed = means[1] / model_mean(mhis, model, 1)
            print(f"| {name} | {model} | {means[0]:.3g} | {means[1]:.3g} | {means[2]:.3g} | "
                  f"{np.median(pair_means):.3g} | {above} | {ratio:.2f} [{lo:.2f}, {hi:.2f}] | {trimmed:.2f} |")


if __name__ == "__main__":
    main()
