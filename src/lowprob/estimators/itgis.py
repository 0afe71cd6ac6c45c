"""ITGIS: importance sampling with gradient-tilted independent tokens.

The proposal keeps the input's product form: q_i(v) ∝ D_i(v) exp(s_i(v) / T_b), where s_i(v) is the
first-order effect on the event's score of putting token v at position i — the gradient w.r.t. the
one-hot input, computed as (gradient w.r.t. position i's embedding) · W_E[v] on the support only.
Scores are an exponential moving average (decay 0.9) of per-batch mean gradients, and
T_b = T (1 - 0.9^b) / (1 - 0.9) makes the sum act as an average. Each batch's proposal is fixed
before the batch is drawn, so the mean of w(x) 1[event] with w = D/q is unbiased; weights are kept in
log space. The batch is the paper's 256 but small enough for at least 16 adaptive rounds: with the
whole budget in one batch, ITGIS would be plain sampling.

The interval is ``intervals.compound_poisson``: the hits as a Poisson count of n_eff = (Σw)² / Σw²
events of one weight. Unlike the normal interval from the terms' variance, it stays honest with a
handful of hits. With no hit it is [0, 3.69 w_max / N], w_max the largest weight seen: a heuristic,
since mass the proposal never visits cannot be bounded by any importance sampler.
"""

from __future__ import annotations

import math

import torch

from lowprob.attribution import Hits, hits_of
from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import RawEstimate, score_and_gradient
from lowprob.estimators.intervals import compound_poisson
from lowprob.estimators.proposals import gradient_tilt, one_hot_scores

DECAY = 0.9
MAX_BATCH, MIN_ROUNDS = 256, 16


def _hits_and_scores(model, dist: TokenDistribution, event, tokens: torch.Tensor):
    """Event indicator [B] and the one-hot scores of the batch-mean gradient per position, on each support."""
    _, hit, grad = score_and_gradient(model, event, tokens)
    mean_grad = grad.mean(0)  # [T, d]
    return hit, [one_hot_scores(model, dist.support(i)[0], mean_grad[i]) for i in range(len(dist))]


def _proposal(dist: TokenDistribution, scores: list[torch.Tensor], temperature: float) -> TokenDistribution:
    """The proposal q_i ∝ D_i exp(s_i / T), normalised in float64."""
    positions = []
    for i, s in enumerate(scores):
        ids, probs = dist.support(i)
        positions.append((ids, gradient_tilt(probs.log(), s.double(), temperature)))
    return TokenDistribution.from_positions(positions, normalize=True)


def itgis(model, dist: TokenDistribution, event, budget: int, generator: torch.Generator,
          temperature: float, batch_size: int | None) -> RawEstimate:
    if batch_size is None:
        batch_size = min(MAX_BATCH, -(-budget // MIN_ROUNDS))
    ema = [torch.zeros(n, dtype=torch.float64) for n in dist.support_sizes()]
    proposal = dist
    log_terms, log_weights, hit_rows = [], [], []
    done, b = 0, 0
    while done < budget:
        n = min(batch_size, budget - done)
        tokens = proposal.sample(n, generator)
        log_w = dist.log_prob(tokens) - proposal.log_prob(tokens)
        hit, scores = _hits_and_scores(model, dist, event, tokens)
        log_weights.append(log_w)
        log_terms.append(torch.where(hit, log_w, torch.tensor(-math.inf, dtype=torch.float64)))
        hit_rows.append(hits_of(tokens, log_w, hit))
        done += n
        b += 1
        ema = [DECAY * e + s for e, s in zip(ema, scores, strict=True)]
        proposal = _proposal(dist, ema, temperature * (1 - DECAY**b) / (1 - DECAY))
    log_terms_all, log_w_all = torch.cat(log_terms), torch.cat(log_weights)
    hits = int(torch.isfinite(log_terms_all).sum())
    p = float(log_terms_all.exp().mean())  # underflows to 0 only below ~1e-308
    interval, n_eff = compound_poisson(log_terms_all[torch.isfinite(log_terms_all)], budget, float(log_w_all.max()))
    return RawEstimate(p, interval, {"hits": hits, "effective_hits": n_eff, "batches": b,
                                                     "max_log_weight": float(log_w_all.max())},
                       hits=Hits.cat(hit_rows, len(dist), "importance weights D/q of the tilted proposals"))

