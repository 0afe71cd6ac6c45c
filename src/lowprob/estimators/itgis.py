"""ITGIS: importance sampling with gradient-tilted independent tokens.

The proposal keeps the input's product form: q_i(v) ∝ D_i(v) exp(s_i(v) / T_b), where s_i(v) is the
first-order effect on the event's score of putting token v at position i — the gradient w.r.t. the
one-hot input, computed as (gradient w.r.t. position i's embedding) · W_E[v] on the support only.
Scores are an exponential moving average (decay 0.9) of per-batch mean gradients, and
T_b = T (1 - 0.9^b) / (1 - 0.9) makes the sum act as an average. Each batch's proposal is fixed
before the batch is drawn, so the mean of w(x) 1[event] with w = D/q is unbiased; weights are kept in
log space. The interval is the normal one from the per-sample terms' variance (a martingale CLT);
with no hit it is [0, 3 w_max / N], a heuristic bound from the largest weight seen.
"""

from __future__ import annotations

import math

import torch

from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import RawEstimate, register

DECAY = 0.9
Z95 = 1.959963984540054


def _one_hot_scores(model, dist: TokenDistribution, event, tokens: torch.Tensor):
    """Event indicator [B] and the batch-mean one-hot gradient per position, on each support."""
    emb = model.W_E[tokens].detach().requires_grad_(True)
    with torch.enable_grad():
        resid = model.final_residual(emb)
        logits = resid @ model.W_U if model.b_U is None else resid @ model.W_U + model.b_U
        (grad,) = torch.autograd.grad(event.score(logits).sum(), emb)
    mean_grad = grad.mean(0)  # [T, d]
    scores = [model.W_E[dist.support(i)[0]].detach() @ mean_grad[i] for i in range(len(dist))]
    return event.indicator(logits.detach()), scores


def tilted(dist: TokenDistribution, scores: list[torch.Tensor], temperature: float) -> TokenDistribution:
    """The proposal q_i ∝ D_i exp(s_i / T), normalised in float64 via log-sum-exp."""
    positions = []
    for i, s in enumerate(scores):
        ids, probs = dist.support(i)
        logits = probs.log() + s.double() / temperature
        positions.append((ids, torch.softmax(logits, 0)))
    return TokenDistribution.from_positions(positions, normalize=True)


@register("itgis", "importance sampling with gradient-tilted independent tokens", temperature=1.0, batch_size=256)
def itgis(model, dist: TokenDistribution, event, budget: int, generator: torch.Generator,
          temperature: float, batch_size: int) -> RawEstimate:
    ema = [torch.zeros(n, dtype=torch.float64) for n in dist.support_sizes()]
    proposal = dist
    log_terms, log_weights = [], []
    done, b = 0, 0
    while done < budget:
        n = min(batch_size, budget - done)
        tokens = proposal.sample(n, generator)
        log_w = dist.log_prob(tokens) - proposal.log_prob(tokens)
        hit, scores = _one_hot_scores(model, dist, event, tokens)
        log_weights.append(log_w)
        log_terms.append(torch.where(hit, log_w, torch.tensor(-math.inf, dtype=torch.float64)))
        done += n
        b += 1
        ema = [DECAY * e + s.double() for e, s in zip(ema, scores, strict=True)]
        proposal = tilted(dist, ema, temperature * (1 - DECAY**b) / (1 - DECAY))
    log_terms_all, log_w_all = torch.cat(log_terms), torch.cat(log_weights)
    hits = int(torch.isfinite(log_terms_all).sum())
    terms = log_terms_all.exp()  # underflows to 0 only below ~1e-308
    p = float(terms.mean())
    if hits == 0:
        interval = (0.0, 3.0 * float(log_w_all.max().exp()) / budget)
    else:
        se = float(terms.std(unbiased=True)) / math.sqrt(budget) if budget > 1 else p
        interval = (max(0.0, p - Z95 * se), p + Z95 * se)
    hit_w = log_terms_all[torch.isfinite(log_terms_all)]
    ess = float(hit_w.logsumexp(0).mul(2).sub((2 * hit_w).logsumexp(0)).exp()) if hits else 0.0
    return RawEstimate(p, interval, budget, budget, {"hits": hits, "ess_hits": ess, "batches": b,
                                                     "max_log_weight": float(log_w_all.max())})
