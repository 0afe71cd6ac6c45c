"""Naive sampling: the hit fraction, with an exact Clopper–Pearson interval.

With zero hits the estimate is 0 but the interval's upper end is still informative
(≈ 3.7 / budget at 95%), which is the honest statement naive sampling can make about rare events.
"""

from __future__ import annotations

import torch

from lowprob.attribution import Hits, hits_of
from lowprob.estimators.base import RawEstimate, happened
from lowprob.estimators.intervals import clopper_pearson

BATCH = 4096


@torch.no_grad()
def naive(model, dist, event, budget: int, generator: torch.Generator) -> RawEstimate:
    hits, hit_rows = 0, []
    for start in range(0, budget, BATCH):
        tokens = dist.sample(min(BATCH, budget - start), generator)
        hit = happened(model, event, tokens, generator)
        hits += int(hit.sum())
        hit_rows.append(hits_of(tokens, 0.0, hit))
    return RawEstimate(hits / budget, clopper_pearson(hits, budget), {"hits": hits},
                       Hits.cat(hit_rows, len(dist), "plain samples: every hit weighs the same"))
