"""The flattened baseline: importance sampling from D mixed with the uniform law on each position's support.

Model-blind on purpose. Where an event's rarity lives in *which values D makes rare* (a trigger value
weighted 1e-5 in a slot whose other values are common) rather than in how many combinations there are,
flattening the weights makes the event common without looking at the model; a method that does worse
is beaten by ignoring the model. Each sample weighs w = D(x) / q(x), q = ``defensive`` D + (1 − ``defensive``) U,
so w ≤ 1 / ``defensive``; the estimate is the mean of w·1[event], with the compound-Poisson interval.
"""

from __future__ import annotations

import torch

from lowprob.attribution import Hits, hits_of
from lowprob.cost import GRADIENT_CALL
from lowprob.estimators.base import RawEstimate, happened
from lowprob.estimators.intervals import compound_poisson
from lowprob.estimators.proposals import Mixture, Supports

BATCH = 4096


@torch.no_grad()
def flat(model, dist, event, budget: int, generator: torch.Generator, defensive: float) -> RawEstimate:
    """P(event) from ``GRADIENT_CALL × budget`` samples (the forwards CEIS executes at this budget)."""
    sup = Supports(dist, model.d_vocab)
    mix = Mixture(sup)
    mix.add(sup.mask.double())  # the supports' indicator: add normalises it to the uniform law
    shares = torch.tensor([defensive, 1 - defensive], dtype=torch.float64)
    n = GRADIENT_CALL * budget
    log_terms, log_ws, hit_rows = [], [], []
    for start in range(0, n, BATCH):
        cols = mix.sample(shares, min(BATCH, n - start), generator)
        log_w = mix.log_weights(cols, shares)
        tokens = sup.tokens(cols)
        hit = happened(model, event, tokens, generator)
        log_terms.append(log_w[hit])
        log_ws.append(log_w)
        hit_rows.append(hits_of(tokens, log_w, hit))
    terms, log_w = torch.cat(log_terms), torch.cat(log_ws)
    interval, n_eff = compound_poisson(terms, n, float(log_w.max()))
    note = "importance weights D/q, q = defensive·D + (1 − defensive)·uniform"
    return RawEstimate(float(terms.exp().sum()) / n, interval, {"hits": len(terms), "effective_hits": n_eff},
                       Hits.cat(hit_rows, len(dist), note))
