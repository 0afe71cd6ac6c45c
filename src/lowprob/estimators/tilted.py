"""Tilted generation: importance sampling of continuations, the tilt adapted inside the call.

Prompts come from the input distribution; each continuation token is drawn from
q(y) ∝ p(y) e^{β a(y)}, a(y) = 1 for tokens that advance a partial match of a pattern
(``continuations.continue_prompts``), so every row's weight p/q is exact and the mean of
(p/q) 1[match] is unbiased for any β fixed before the row is drawn. With ``prompt_side`` the
estimation phase also draws prompts from a mixture of D and per-position categoricals fitted to the
pilot's hits (``PromptProposal``), the prompt's D/q joining the weight: on the toy problems of the
tests this halved the spread (relative SD 0.23 → 0.10 at p = 2.7e-4, 0.31 → 0.19 at p = 1.5e-6).

β starts at 0 (plain sampling) and is refitted after each of ``rounds`` adaptation rounds (together
``adapt_fraction`` of the budget) by the cross-entropy rule for this one-parameter family: maximise
Σ_elite w log q_β(tokens). Its derivative, Σ_elite w Σ_t [a(y_t) − P_t e^β / (1 − P_t + P_t e^β)]
with P_t the advancing set's mass under p at step t, falls monotonically in β, so bisection finds
it. Elites are the rows that hit, or, while fewer than ``rho`` of a round hit, the ``rho`` share
that took the most advancing tokens (the level rises as rows get closer); when no row advanced at
all (a rare first token), β is raised until the expected count of advancing tokens per continuation
is the shortest pattern's length. The rest of the budget is drawn at the final β and only those
draws are averaged: adaptation draws are unbiased too, but the early ones (β near 0) carry weight-1
hits that are almost never seen — pooled with equal weight they made the estimator's spread
heavy-tailed (measured: the mean of 100 seeds at 0.84 p, 63% coverage). The interval is ITGIS's
compound-Poisson one, declared sampling error only: 92–96% coverage on the toy problems of the tests,
but 74% on the shipped models, where a few prompts carry much of the probability and a run that draws
few of them is low and narrow (``benchmarks/results/generation/README.md``, section 3).

``rao_blackwell`` (off by default) averages each row's Σ_t W_{t−1} P(a match ends at step t) instead of
W 1[hit] (``continue_prompts``): unbiased for any tilt and positive for almost every row. On the toy
problems of the tests (100 seeds, budget 256) it cut the relative SD about 3× (0.103 → 0.035 at
p = 2.7e-4, 0.245 → 0.098 at 1.5e-6, 0.449 → 0.151 for two patterns at 5.5e-4), coverage 0.97–1.00; on
the shipped models' ``generation`` scale (same draws, 8 seeds × 15 targets) the RMS relative error fell
on 10 of 15 targets but coverage fell from 89 to 75 of 120: there the spread comes from which prompts
and prefixes are drawn, not from whether a row drew the match, and the many small terms make the
compound-Poisson interval narrower than that spread (``benchmarks/results/generation/rao_blackwell``).
"""

from __future__ import annotations

import math

import torch

from lowprob.attribution import hits_of
from lowprob.continuations import Continuations, continue_prompts, flops_of
from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import RawEstimate, effective_sample_size
from lowprob.estimators.itgis import compound_poisson_interval

MAX_BETA = 30.0


def solve_beta(advance: torch.Tensor, weights: torch.Tensor, target: float) -> float:
    """β ≥ 0 at which the rows' weighted expected count of advancing tokens under q_β is ``target``.

    ``advance`` [rows, steps] holds P_t, the advancing set's mass under p (NaN after a row stopped);
    under q_β a step advances with probability P e^β / (1 − P + P e^β), increasing in β.
    """
    seen = ~advance.isnan()
    p = advance.nan_to_num(0.0).clamp(0.0, 1.0)

    def expected(beta: float) -> float:
        e = math.exp(beta)
        return float((weights[:, None] * torch.where(seen, p * e / (1 - p + p * e), 0.0)).sum())

    if target <= expected(0.0):
        return 0.0
    lo, hi = 0.0, MAX_BETA
    if target >= expected(hi):
        return hi
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid) < target else (lo, mid)
    return (lo + hi) / 2


def cross_entropy_beta(advance: torch.Tensor, took: torch.Tensor, log_w: torch.Tensor) -> float:
    """β maximising Σ_rows w log q_β(tokens) over the given rows: where the expected count of
    advancing tokens matches the count they took (the derivative in the module docstring is 0)."""
    w = (log_w - log_w.max()).exp()
    return solve_beta(advance, w, float((w[:, None] * (took & ~advance.isnan())).sum()))


class PromptProposal:
    """Prompts from ``defensive`` D + (1 − ``defensive``) Q, Q per-position categoricals on D's
    supports fitted to the prompts that hit; without Q, the input distribution D itself."""

    def __init__(self, dist: TokenDistribution, fitted: TokenDistribution | None = None, defensive: float = 1.0
                 ) -> None:
        self.dist, self.fitted, self.defensive = dist, fitted, defensive

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts [n, positions] and log D/q of each."""
        prompts = self.dist.sample(n, generator)
        if self.fitted is None:
            return prompts, torch.zeros(n, dtype=torch.float64)
        use_fit = torch.rand(n, generator=generator, dtype=torch.float64) >= self.defensive
        prompts = torch.where(use_fit[:, None], self.fitted.sample(n, generator), prompts)
        log_d = self.dist.log_prob(prompts)
        log_q = torch.logaddexp(math.log(self.defensive) + log_d,
                                math.log1p(-self.defensive) + self.fitted.log_prob(prompts))
        return prompts, log_d - log_q

    @classmethod
    def fit(cls, dist: TokenDistribution, prompts: torch.Tensor, log_w: torch.Tensor, defensive: float,
            strength: float = 1.0) -> PromptProposal:
        """Weighted frequencies of the hit prompts per position, shrunk toward D by ``strength`` × the
        weights' effective count (a Dirichlet prior), so a handful of hits cannot zero out D's support."""
        if len(prompts) == 0:
            return cls(dist)
        w = (log_w - log_w.max()).exp()
        w = w / w.sum()
        kappa = strength * effective_sample_size(log_w) ** 0.5
        positions = []
        for i in range(len(dist)):
            ids, probs = dist.support(i)
            counts = torch.zeros(len(ids), dtype=torch.float64)
            counts.index_add_(0, torch.searchsorted(ids, prompts[:, i].contiguous()), w)
            positions.append((ids, (counts + kappa * probs) / (1 + kappa)))
        return cls(dist, TokenDistribution.from_positions(positions, normalize=True), defensive)


class Drawer:
    """Draws continuations of fresh prompts (from ``prompts``) at a given tilt, adding up their FLOPs;
    a run's log weights include the prompts' D/q."""

    def __init__(self, model, dist, event, generator: torch.Generator, defensive: float) -> None:
        self.model, self.event, self.generator, self.defensive = model, event, generator, defensive
        self.prompts = PromptProposal(dist)
        self.flops = 0.0

    def __call__(self, n: int, beta: float) -> tuple[Continuations, torch.Tensor]:
        prompts, log_ratio = self.prompts.sample(n, self.generator)
        run = continue_prompts(self.model, prompts, self.event, self.generator, beta, self.defensive)
        run.log_weight += log_ratio
        run.log_summed += log_ratio
        self.flops += flops_of(self.model, n, prompts.shape[1], self.event, run.extended_rows,
                               run.extended_positions)
        return run, prompts


def adapt(draw: Drawer, dist: TokenDistribution, samples: int, rounds: int, rho: float, prompt_side: bool
          ) -> tuple[float, list[float]]:
    """The tilt after ``rounds`` cross-entropy rounds of ``samples`` draws in all, and the tilts used;
    with ``prompt_side``, ``draw`` then proposes prompts fitted to every round's hits."""
    beta, betas = 0.0, []
    shortest = min(len(p) for p in draw.event.patterns)
    hit_prompts, hit_log_w = [], []
    for r in range(rounds):
        n = samples // rounds + (r < samples % rounds)
        run, prompts = draw(n, beta)
        hit_prompts.append(prompts[run.hit])
        hit_log_w.append(run.log_weight[run.hit])
        betas.append(beta)
        reached = int(run.hit.sum()) >= rho * n
        elite = run.hit
        if not reached:
            progress = run.took.sum(1).double()
            level = float(torch.quantile(progress, 1 - rho))
            elite = run.hit | ((progress >= level) & (progress > 0))
        if elite.any():  # with enough hits, fit them; below that, only ever tilt harder
            fitted = cross_entropy_beta(run.advance[elite], run.took[elite], run.log_weight[elite])
            beta = fitted if reached else max(beta, fitted)
        else:  # nothing advanced: tilt until a continuation takes a whole pattern's worth of advancing tokens
            per_row = torch.full((len(run.advance),), 1.0 / len(run.advance), dtype=torch.float64)
            beta = max(beta, solve_beta(run.advance, per_row, float(shortest)))
    if prompt_side:
        draw.prompts = PromptProposal.fit(dist, torch.cat(hit_prompts), torch.cat(hit_log_w), draw.defensive)
    return beta, betas


@torch.no_grad()
def tilted(model, dist, event, budget: int, generator: torch.Generator, rounds: int, rho: float,
           adapt_fraction: float, defensive: float, prompt_side: bool, rao_blackwell: bool) -> RawEstimate:
    draw = Drawer(model, dist, event, generator, defensive)
    pilot = max(rounds, int(budget * adapt_fraction))
    beta, betas = adapt(draw, dist, pilot, rounds, rho, prompt_side)
    n = budget - pilot
    run, prompts = draw(n, beta)  # estimation: one fixed tilt, so every term is unbiased and weights are alike
    # each row's term: W 1[hit], or with rao_blackwell Σ_t W_{t-1} P(a match ends at step t) (both unbiased)
    terms = run.log_summed if rao_blackwell else torch.where(run.hit, run.log_weight, -math.inf)
    hits = int(run.hit.sum())
    p = float(terms.exp().mean())
    interval, n_eff = compound_poisson_interval(terms[torch.isfinite(terms)], n, float(run.log_weight.max()))
    return RawEstimate(p, interval, budget, 0, {"hits": hits, "effective_hits": n_eff, "beta": round(beta, 3),
                                                "adaptation_betas": [round(b, 3) for b in betas],
                                                "estimation_samples": n}, draw.flops,
                       hits=hits_of(prompts, run.log_weight, run.hit,
                                    note="prompts of the estimation phase, weighted D/q of prompt and continuation"))
