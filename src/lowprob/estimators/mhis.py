"""MHIS: Metropolis–Hastings importance sampling.

Chains target π(x) ∝ D(x) exp(s(x)/T), with s the event's score (the target logit), using the
gradient-informed single-position proposal (Grathwohl et al. 2021): pick a variable position i
uniformly, propose v ∝ D_i(v) exp(g_i(v)/T), g the one-hot gradient at the current state; the reverse
move uses the proposed state's gradient and the full MH ratio is applied. Constant positions are never
proposed (they would waste a forward/backward pass). The self-normalised estimator
p̂ = Σ 1[event] e^{-s/T} / Σ e^{-s/T} over post-burn-in states is computed in log space; it is
consistent but **biased** for finite chains. Every forward/backward pass, burn-in included, counts
against the budget. The interval uses the between-chain spread (delta method for a ratio of sums,
Student t over chains), which cannot see a bias all chains share: ``estimate`` labels it
"sampling-only". With no hit after burn-in nothing about the tilted chains bounds p, so the
interval falls back on what is honest: the chains' initial states are independent draws from the
input distribution, and its upper end is their exact (Clopper–Pearson) bound — wide, as it should be
(0.11 for 32 chains).
"""

from __future__ import annotations

import math

import torch

from lowprob.attribution import Hits
from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.estimators.base import RawEstimate, score_and_gradient
from lowprob.estimators.intervals import clopper_pearson, student_quantile
from lowprob.estimators.proposals import Supports, log_gradient_tilt, one_hot_scores

CHAINS = 32  # default number of chains, fewer when the budget is smaller


def _log_proposal(model, supports: Supports, pos: torch.Tensor, grad: torch.Tensor, temperature: float
                  ) -> torch.Tensor:
    """log q(v | state) over each chain's chosen position [C, width] (one batched op over padded supports);
    grad is [C, T, d]."""
    g = grad[torch.arange(len(pos)), pos.to(grad.device)]  # [C, d]
    return log_gradient_tilt(supports.log_prior[pos], one_hot_scores(model, supports.ids[pos], g), temperature)


@torch.no_grad()
def mhis(model, dist: TokenDistribution, event, budget: int, generator: torch.Generator,
         temperature: float, chains: int | None, burn_in_fraction: float) -> RawEstimate:
    if chains is None:
        chains = min(CHAINS, budget)
    elif chains > budget:
        raise LowprobError(f"mhis: {chains} chains need a budget of at least {chains} (one call per initial state), "
                           f"got {budget}")
    steps = max(0, budget // chains - 1)  # the initial states cost one pass per chain
    burn = int(steps * burn_in_fraction)
    variable = torch.tensor(dist.variable_positions(), dtype=torch.long)
    supports = Supports(dist, model.d_vocab)
    rows = torch.arange(chains)
    x = dist.sample(chains, generator)
    s, hit, grad = score_and_gradient(model, event, x)
    initial_hits = int(hit.sum())  # the initial states are independent draws from the input distribution
    kept_s, kept_hit, hit_rows = [], [], []
    accepted = 0
    for step in range(steps if len(variable) else 0):
        pos = variable[torch.randint(len(variable), (chains,), generator=generator)]
        log_fwd_all = _log_proposal(model, supports, pos, grad, temperature)
        new_col = torch.multinomial(log_fwd_all.exp(), 1, generator=generator)[:, 0]
        old_col = supports.column[pos, x[rows, pos]]
        proposal = x.clone()
        proposal[rows, pos] = supports.ids[pos, new_col]
        s_new, hit_new, grad_new = score_and_gradient(model, event, proposal)
        log_rev = _log_proposal(model, supports, pos, grad_new, temperature)[rows, old_col]
        log_prior = supports.log_prior[pos, new_col] - supports.log_prior[pos, old_col]
        log_alpha = log_prior + (s_new - s) / temperature + log_rev - log_fwd_all[rows, new_col]
        accept = torch.rand(chains, generator=generator, dtype=torch.float64).log() < log_alpha
        accepted += int(accept.sum())
        x = torch.where(accept[:, None], proposal, x)
        s, hit = torch.where(accept, s_new, s), torch.where(accept, hit_new, hit)
        grad = torch.where(accept[:, None, None].to(grad.device), grad_new, grad)
        if step >= burn:
            kept_s.append(s.clone())
            kept_hit.append(hit.clone())
            hit_rows.append(Hits(x[hit], -s[hit] / temperature, rows[hit]))
    if not kept_s:  # no move possible or budget too small: use the current states
        kept_s, kept_hit = [s], [hit]
        hit_rows = [Hits(x[hit], -s[hit] / temperature, rows[hit])]
    log_w = -torch.stack(kept_s) / temperature  # [kept, chains]
    hits = torch.stack(kept_hit)
    if hits.any():
        p, interval = _ratio_estimate(log_w, hits)
    else:  # nothing about the tilted chains bounds p: fall back on the independent initial states
        p, interval = 0.0, (0.0, clopper_pearson(initial_hits, chains)[1])
    per_chain = (torch.where(hits, log_w, torch.tensor(-math.inf, dtype=torch.float64)).logsumexp(0)
                 - log_w.logsumexp(0)).exp()
    moves = steps * chains if len(variable) else 0
    return RawEstimate(p, interval,
                       {"acceptance_rate": accepted / moves if moves else 0.0, "hits": int(hits.sum()),
                        "chains": chains, "steps_per_chain": steps, "burn_in": burn,
                        "per_chain": per_chain.tolist(),
                        "note": "self-normalised: consistent, biased for finite chains"},
                       hits=_chain_hits(hit_rows, len(dist)))


def _chain_hits(parts: list[Hits], width: int) -> Hits:
    """The kept states that hit, weighted e^{-s/T} (back from the tilted target to D), each chain one unit:
    a chain's states are not independent of one another."""
    note = "MHIS states, weights e^{-s/T} relative to D, pooled per chain"
    if not parts:
        return Hits.cat([], width, note)
    return Hits(torch.cat([p.tokens for p in parts]), torch.cat([p.log_weight for p in parts]),
                torch.cat([p.units() for p in parts]), note)


def _ratio_estimate(log_w: torch.Tensor, hits: torch.Tensor) -> tuple[float, tuple[float, float]]:
    """p̂ = Σ_hits w / Σ w (log space) and a between-chain delta-method interval."""
    neg_inf = torch.tensor(-math.inf, dtype=torch.float64)
    log_num = torch.where(hits, log_w, neg_inf).logsumexp(0)  # per chain
    log_den = log_w.logsumexp(0)
    p = float((log_num.logsumexp(0) - log_den.logsumexp(0)).exp())
    chains = log_w.shape[1]
    if chains < 2:
        return p, (0.0, 1.0)
    shift = log_den.max()
    num, den = (log_num - shift).exp(), (log_den - shift).exp()
    se = float((num - p * den).std() / den.mean()) / math.sqrt(chains)
    half = student_quantile(chains) * se
    return p, (max(0.0, p - half), min(1.0, p + half))
