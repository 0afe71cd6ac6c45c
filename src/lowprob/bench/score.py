"""From benchmark rows to scores: one record per (model, distribution, method, seed, target).

Each (model, distribution, method, seed) is scored as a unit over its targets and hyper-parameter
grid: the leak-free (nested leave-one-out) and the oracle selection (of a temperature, or whatever the
method declares tuned) of
``lowprob.evaluation.selection``, each with its leave-one-out fitted estimate and loss. Unfit metrics
(log10 error, zero estimates, interval coverage) are read at the leak-free choice. The optimal
constant appears as method ``constant``. A unit whose grid is incomplete (a run still going) or that
has fewer than 3 targets is listed, not scored. A scale with one target per pair (``trigger``) pools a
model's distributions into one unit: the fit and the temperature choice for a pair's target are made on
the model's other pairs.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lowprob.bench.rows import row_key
from lowprob.bench.scales import hyper_key
from lowprob.errors import LowprobError
from lowprob.estimators.catalog import METHODS
from lowprob.estimators.intervals import clopper_pearson
from lowprob.evaluation import (
    ZERO_FLOOR,
    abs_log10_error,
    covered,
    log_estimate,
    loo_constant_losses,
    meets_truth,
    plain_sampling_wnrv,
    select,
    work_normalised_variance,
)
from lowprob.files import read_jsonl

CONSTANT = "constant"
ALL_DISTRIBUTIONS = "*"  # the distribution group of a pooled unit (``score_rows(pool_distributions=True)``)


def load_rows(directory: str | Path) -> list[dict]:
    """Every complete row under ``directory/rows`` (a torn last line from a crash is skipped).

    An estimate present twice (two runs wrote into one directory) would be counted twice in every
    mean: it is refused, naming the file and the row key the runner resumes by.
    """
    files = sorted(Path(directory).glob("rows/*/*.jsonl"))
    if not files:
        raise LowprobError(f"no benchmark rows under {directory}/rows: run `lowprob bench --out {directory}` first")
    rows = []
    for path in files:
        seen = set()
        for row in read_jsonl(path):
            key = row_key(row["method"], row["hyper"], row["target"], row["seed"])
            if key in seen:
                raise LowprobError(f"{path} holds the estimate (method, hyper, target, seed) = {key} twice (did two "
                                   f"runs write into {directory}?): delete the duplicate lines, or rerun into an "
                                   f"empty directory")
            seen.add(key)
            rows.append(row)
    return rows


def tuned_text(row: dict) -> str | None:
    """The tuned hyper-parameters of a row, as text ("temperature=0.3"), or None if it has none."""
    names = METHODS[row["method"]].tuned() if row["method"] in METHODS else sorted(row["hyper"])
    return ", ".join(f"{k}={row['hyper'][k]:g}" for k in names if k in row["hyper"]) or None


def _work(row: dict) -> float:
    """A row's executed work in forward passes of one input (``Cost.forward_equivalents``)."""
    if "forward_equivalents" not in row["cost"]:
        raise LowprobError(f"a {row['method']} row of {row['model']}/{row['distribution']} has no "
                           f"cost.forward_equivalents: it was written before lowprob priced what estimates execute "
                           f"(a backward pass as one forward), so its costs do not compare with today's; rerun the "
                           f"benchmark into an empty directory")
    return row["cost"]["forward_equivalents"]


def score_rows(rows: Iterable[dict], zero_floor: float = ZERO_FLOOR, pool_distributions: bool = False
               ) -> tuple[list[dict], list[str]]:
    """Scored records, and notes on the units that could not be scored (zeros scored at ``zero_floor``).

    ``pool_distributions``: a unit is (model, method, seed) over all of the model's distributions, for a
    scale with one target per pair (``trigger``), where a per-pair fit would have nothing to fit on.
    """
    units: dict[tuple, list[dict]] = defaultdict(list)
    repeats: dict[tuple, list[dict]] = defaultdict(list)  # the seeds of one (pair, method, hyper, target)
    for row in rows:
        group = ALL_DISTRIBUTIONS if pool_distributions else row["distribution"]
        units[(row["model"], group, row["method"], row["seed"])].append(row)
        repeats[_setting(row)].append(row)
    records: list[dict] = []
    notes: list[str] = []
    truths: dict[tuple, dict[tuple, dict]] = defaultdict(dict)
    for (model, group, method, seed), unit in sorted(units.items(), key=lambda kv: tuple(map(str, kv[0]))):
        grid = sorted({hyper_key(r["hyper"]) for r in unit})
        targets = sorted({(r["distribution"], r["target"]) for r in unit})  # one distribution unless pooled
        cell = {(hyper_key(r["hyper"]), r["distribution"], r["target"]): r for r in unit}
        for r in unit:
            truths[(model, group)][(r["distribution"], r["target"])] = r
        if len(cell) < len(grid) * len(targets):
            notes.append(f"{model}/{group}/{method} seed {seed}: incomplete ({len(cell)} of "
                         f"{len(grid) * len(targets)} estimates), not scored")
            continue
        if len(targets) < 3:
            notes.append(f"{model}/{group}/{method} seed {seed}: {len(targets)} target(s), too few to fit")
            continue
        p = np.array([cell[(grid[0], *t)]["ground_truth"] for t in targets])
        log_q = np.array([[log_estimate(cell[(h, *t)]["probability"], zero_floor) for t in targets] for h in grid])
        free, best = select(np.log(p), log_q)
        for i, t in enumerate(targets):
            chosen, top = cell[(grid[free.choice[i]], *t)], cell[(grid[best.choice[i]], *t)]
            q, (lo, hi) = chosen["probability"], chosen["interval"]
            records.append({
                "model": model, "distribution": t[0], "method": method, "seed": seed, "target": t[1],
                "target_text": chosen["target_text"], "ground_truth": p[i],
                "ground_truth_count": chosen["ground_truth_count"],
                "tuned": tuned_text(chosen), "estimate": q, "interval": chosen["interval"],
                "fitted": math.exp(free.fitted[i]), "loss": float(free.losses[i]),
                "oracle_tuned": tuned_text(top), "oracle_fitted": math.exp(best.fitted[i]),
                "oracle_loss": float(best.losses[i]),
                "zero": q == 0, "abs_log10_error": float(abs_log10_error(p[i], q, zero_floor)),
                "covered": bool(covered(p[i], *chosen["interval"])),
                "meets_truth": meets_truth(lo, hi, *_truth_interval(chosen)),
                "work": _work(chosen), "seconds": chosen["cost"]["seconds"], "flops": chosen["cost"]["flops"],
                "wnrv": _wnrv(repeats[_setting(chosen)]),
            })
    for (model, _), by_target in sorted(truths.items()):
        targets = sorted(by_target)
        if len(targets) < 3:
            continue
        p = np.array([by_target[t]["ground_truth"] for t in targets])
        losses = loo_constant_losses(np.log(p))
        for i, t in enumerate(targets):
            records.append({"model": model, "distribution": t[0], "method": CONSTANT, "seed": None, "target": t[1],
                            "target_text": by_target[t]["target_text"], "ground_truth": p[i],
                            "ground_truth_count": by_target[t]["ground_truth_count"],
                            "loss": float(losses[i]), "oracle_loss": float(losses[i])})
    return records, notes


def _truth_interval(row: dict) -> tuple[float, float]:
    """The ground truth's 95% interval: Clopper–Pearson on its count for a sampled truth, the point if exact."""
    if row["ground_truth_exact"] or row.get("ground_truth_count") is None:
        return row["ground_truth"], row["ground_truth"]
    return clopper_pearson(row["ground_truth_count"], row["ground_truth_n"])


def _setting(row: dict) -> tuple:
    return row["model"], row["distribution"], row["method"], hyper_key(row["hyper"]), row["target"]


def _wnrv(repeats: list[dict]) -> float | None:
    """Work-normalised relative variance over every seed's run of one setting (None with one seed)."""
    if len(repeats) < 2:
        return None
    return work_normalised_variance(repeats[0]["ground_truth"], [r["probability"] for r in repeats],
                                    [_work(r) for r in repeats])


def wnrv_gain(record: dict) -> float | None:
    """How many times fewer model calls than plain sampling for the same relative variance."""
    if record.get("wnrv") in (None, 0.0):
        return None
    return float(plain_sampling_wnrv(record["ground_truth"]) / record["wnrv"])
