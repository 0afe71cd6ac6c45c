"""Naive sampling: the hit fraction, with an exact Clopper–Pearson interval.

With zero hits the estimate is 0 but the interval's upper end is still informative
(≈ 3.7 / budget at 95%), which is the honest statement naive sampling can make about rare events.
"""

from __future__ import annotations

import torch
from scipy import stats

from lowprob.attribution import Hits, hits_of
from lowprob.estimators.base import RawEstimate, happened

BATCH = 4096


def clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float]:
    alpha = 1 - level
    lo = 0.0 if hits == 0 else float(stats.beta.ppf(alpha / 2, hits, n - hits + 1))
    hi = 1.0 if hits == n else float(stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits))
    return lo, hi


@torch.no_grad()
def naive(model, dist, event, budget: int, generator: torch.Generator) -> RawEstimate:
    hits, flops, hit_rows = 0, 0.0, []
    for start in range(0, budget, BATCH):
        tokens = dist.sample(min(BATCH, budget - start), generator)
        hit, cost = happened(model, event, tokens, generator)
        hits, flops = hits + int(hit.sum()), flops + cost
        hit_rows.append(hits_of(tokens, 0.0, hit))
    return RawEstimate(hits / budget, clopper_pearson(hits, budget), budget, 0, {"hits": hits}, flops,
                       Hits.cat(hit_rows, len(dist), "plain samples: every hit weighs the same"))
