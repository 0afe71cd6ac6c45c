"""ITGIS: importance sampling with gradient-tilted independent tokens.

The proposal keeps the input's product form: q_i(v) ∝ D_i(v) exp(s_i(v) / T_b), where s_i(v) is the
first-order effect on the event's score of putting token v at position i — the gradient w.r.t. the
one-hot input, computed as (gradient w.r.t. position i's embedding) · W_E[v] on the support only.
Scores are an exponential moving average (decay 0.9) of per-batch mean gradients, and
T_b = T (1 - 0.9^b) / (1 - 0.9) makes the sum act as an average. Each batch's proposal is fixed
before the batch is drawn, so the mean of w(x) 1[event] with w = D/q is unbiased; weights are kept in
log space. The batch is the paper's 256 but small enough for at least 16 adaptive rounds: with the
whole budget in one batch, ITGIS would be plain sampling.

The interval treats the hits as a compound Poisson count: with effective count
n_eff = (Σw)² / Σw² and scale s = Σw² / Σw (so p̂ = s n_eff / N), it is Garwood's exact Poisson
interval for n_eff, times s / N. Unlike the normal interval from the terms' variance, it stays honest
with a handful of hits (on the tiny test problems the normal interval covered 7-23% of the time at
p ≈ 1e-4, this one 98-100%). With no hit it is [0, 3.69 w_max / N], w_max the largest weight seen: a
heuristic, since mass the proposal never visits cannot be bounded by any importance sampler.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from lowprob.attribution import Hits, hits_of
from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import RawEstimate, one_hot_scores, poisson_upper, score_and_gradient

DECAY = 0.9
MAX_BATCH, MIN_ROUNDS = 256, 16


def _one_hot_scores(model, dist: TokenDistribution, event, tokens: torch.Tensor):
    """Event indicator [B] and the batch-mean one-hot gradient per position, on each support."""
    _, hit, grad = score_and_gradient(model, event, tokens)
    mean_grad = grad.mean(0)  # [T, d]
    return hit, [one_hot_scores(model, dist.support(i)[0], mean_grad[i]) for i in range(len(dist))]


def tilted(dist: TokenDistribution, scores: list[torch.Tensor], temperature: float) -> TokenDistribution:
    """The proposal q_i ∝ D_i exp(s_i / T), normalised in float64 via log-sum-exp."""
    positions = []
    for i, s in enumerate(scores):
        ids, probs = dist.support(i)
        logits = probs.log() + s.double() / temperature
        positions.append((ids, torch.softmax(logits, 0)))
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
        hit, scores = _one_hot_scores(model, dist, event, tokens)
        log_weights.append(log_w)
        log_terms.append(torch.where(hit, log_w, torch.tensor(-math.inf, dtype=torch.float64)))
        hit_rows.append(hits_of(tokens, log_w, hit))
        done += n
        b += 1
        ema = [DECAY * e + s for e, s in zip(ema, scores, strict=True)]
        proposal = tilted(dist, ema, temperature * (1 - DECAY**b) / (1 - DECAY))
    log_terms_all, log_w_all = torch.cat(log_terms), torch.cat(log_weights)
    hits = int(torch.isfinite(log_terms_all).sum())
    p = float(log_terms_all.exp().mean())  # underflows to 0 only below ~1e-308
    interval, n_eff = compound_poisson_interval(log_terms_all[torch.isfinite(log_terms_all)], budget,
                                                float(log_w_all.max()))
    return RawEstimate(p, interval, budget, budget, {"hits": hits, "effective_hits": n_eff, "batches": b,
                                                     "max_log_weight": float(log_w_all.max())},
                       hits=Hits.cat(hit_rows, len(dist), "importance weights D/q of the tilted proposals"))


def compound_poisson_interval(log_w_hits: torch.Tensor, n: int, max_log_weight: float,
                              level: float = 0.95) -> tuple[tuple[float, float], float]:
    """95% interval for (Σ hit weights) / n, and the effective number of hits (see module docstring)."""
    alpha = 1 - level
    if len(log_w_hits) == 0:
        return (0.0, poisson_upper(0, level) * math.exp(max_log_weight) / n), 0.0
    log_sum, log_sum_sq = float(log_w_hits.logsumexp(0)), float((2 * log_w_hits).logsumexp(0))
    n_eff = math.exp(2 * log_sum - log_sum_sq)
    scale = math.exp(log_sum_sq - log_sum) / n
    lo = stats.chi2.ppf(alpha / 2, 2 * n_eff) / 2 * scale
    hi = poisson_upper(n_eff, level) * scale
    return (float(lo), float(hi)), n_eff
