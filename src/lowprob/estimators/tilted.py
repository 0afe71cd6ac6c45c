"""Tilted generation: importance sampling of continuations, the tilt adapted inside the call.

Prompts come from the input distribution; each continuation token is drawn from
q(y) ∝ p(y) e^{β a(y)}, a(y) = 1 for tokens that advance a partial match of a pattern
(``continuations.continue_prompts``), so every row's weight p/q is exact and the mean of
(p/q) 1[match] is unbiased for any β fixed before the row is drawn. β is fitted by a cross-entropy
pilot on ``adapt_fraction`` of the budget (``proposals.adapt``); with ``prompt_side`` the estimation
phase also draws prompts from a mixture of D and per-position categoricals fitted to the pilot's hits
(``proposals.PromptProposal``), the prompt's D/q joining the weight: on the toy problems of the tests
this halved the spread.

The rest of the budget is drawn at the final β and only those draws are averaged: adaptation draws
are unbiased too, but the early ones (β near 0) carry weight-1 hits that are almost never seen, and
pooled with equal weight they made the estimator's spread heavy-tailed. The interval is the
compound-Poisson one (``intervals.compound_poisson``), declared sampling error only: on the shipped
models a few prompts carry much of the probability, and a run that draws few of them is low and narrow
(``benchmarks/notebook/generation-events/README.md``, section 3).
"""

from __future__ import annotations

import math

import torch

from lowprob.attribution import hits_of
from lowprob.estimators.base import RawEstimate
from lowprob.estimators.intervals import compound_poisson
from lowprob.estimators.proposals import Drawer, adapt


@torch.no_grad()
def tilted(model, dist, event, budget: int, generator: torch.Generator, rounds: int, rho: float,
           adapt_fraction: float, defensive: float, prompt_side: bool) -> RawEstimate:
    draw = Drawer(model, dist, event, generator, defensive)
    pilot = max(rounds, int(budget * adapt_fraction))
    beta, betas = adapt(draw, dist, pilot, rounds, rho, prompt_side)
    n = budget - pilot
    run, prompts = draw(n, beta)  # estimation: one fixed tilt, so every term is unbiased and weights are alike
    terms = torch.where(run.hit, run.log_weight, -math.inf)
    hits = int(run.hit.sum())
    p = float(terms.exp().mean())
    interval, n_eff = compound_poisson(terms[torch.isfinite(terms)], n, float(run.log_weight.max()))
    return RawEstimate(p, interval, {"hits": hits, "effective_hits": n_eff, "beta": round(beta, 3),
                                                "adaptation_betas": [round(b, 3) for b in betas],
                                                "estimation_samples": n},
                       hits=hits_of(prompts, run.log_weight, run.hit,
                                    note="prompts of the estimation phase, weighted D/q of prompt and continuation"))
