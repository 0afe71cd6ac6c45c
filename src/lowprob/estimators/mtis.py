"""MTIS: importance sampling from an adaptive mixture of gradient tilts, no temperature to tune.

ITGIS needs a temperature T per problem, and a wrong one returns 0. MTIS instead draws from a
mixture of the tilts q_T,i ∝ D_i exp(g_i / T) over a fixed grid of temperatures (the benchmark's
grid) plus D itself, and weights each sample by w = D / q_mix, the whole mixture's density (the
balance heuristic within a batch): a sample is never weighted by more than 1 / (its component's
share) times its own tilt's ratio, so the temperatures that do not fit cost a share of the samples,
not the estimate.

1. **Gradient phase**: g_i(v) = W_E[v] · (mean gradient of the margin — target logit minus largest
   other logit — w.r.t. position i's embedding), on each position's support. Half the gradient
   samples come from D, half from the mixture built on the first half's gradient.
2. **Sampling phase** (forward passes only): batches from the mixture; after each batch the
   component shares are re-estimated by one population-Monte-Carlo (EM) step towards D | event:
   share_k ∝ Σ_hits w_j · r_jk, with r_jk component k's responsibility for hit j, smoothed with the
   previous shares and floored, D keeping a fixed defensive share.

Each batch's mixture is fixed before the batch is drawn, so the mean of w·1[event] over the sampling
phase is **unbiased**; weights are kept in log space. Gradient-phase samples are not used in the
estimate. Cost: a backward pass counts as 2 forwards; at ``budget`` B MTIS spends ≤ 3B
forward-equivalents, what ITGIS and MHIS spend (B forwards and B backwards each). The interval is
ITGIS's compound-Poisson one; a CLT interval is in the diagnostics.
"""

from __future__ import annotations

import math

import torch

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.estimators.base import RawEstimate, register
from lowprob.estimators.ceis import _Supports, margin
from lowprob.estimators.itgis import compound_poisson_interval

TEMPERATURES = (0.3, 0.45, 0.67, 1.0, 1.5, 2.24, 3.34, 5.0)
NEG_INF = -math.inf


def _margin_gradient(model, event, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Margin [B] and its gradient w.r.t. the token embeddings [B, T, d]."""
    emb = model.W_E[tokens].detach().requires_grad_(True)
    with torch.enable_grad():
        s = margin(event, model.unembed(model.final_residual(emb)))
        (grad,) = torch.autograd.grad(s.sum(), emb)
    return s.detach(), grad


class _Mixture:
    """Components: D, then q_T for each temperature; log-densities of many sequences at once."""

    def __init__(self, sup: _Supports, g: torch.Tensor, temperatures) -> None:
        self.sup = sup
        tables = [sup.prior] + [torch.softmax(sup.log_prior + g / t, 1) for t in temperatures]
        self.tables = torch.stack(tables)  # [K, T, width]
        self.log_tables = torch.where(sup.mask, self.tables.clamp_min(1e-300).log(),
                                      torch.tensor(NEG_INF, dtype=torch.float64))

    def component_log_probs(self, cols: torch.Tensor) -> torch.Tensor:
        """[B, K] log q_k(x)."""
        K, T, _ = self.log_tables.shape
        idx = cols.T.contiguous()[None].expand(K, T, cols.shape[0])
        return self.log_tables.gather(2, idx).sum(1).T

    def sample(self, shares: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(shares, n, replacement=True, generator=generator)
        cols = torch.empty(n, self.tables.shape[1], dtype=torch.long)
        for k in range(len(shares)):
            rows = torch.nonzero(which == k).flatten()
            if len(rows):
                cols[rows] = self.sup.sample(self.tables[k], len(rows), generator)
        return cols


@register("mtis", "importance sampling from an adaptive mixture of gradient tilts (no temperature)",
          defensive=0.05, floor=0.01, gradient_fraction=0.0625, batch_fraction=0.04, smoothing=0.5,
          gradient_rounds=2, temperatures=TEMPERATURES, adapt_shares=True)
@torch.no_grad()
def mtis(model, dist: TokenDistribution, event, budget: int, generator: torch.Generator, defensive: float,
         floor: float, gradient_fraction: float, batch_fraction: float, smoothing: float, gradient_rounds: int,
         temperatures, adapt_shares: bool) -> RawEstimate:
    temperatures = tuple(float(t) for t in temperatures)
    for name, value in (("defensive", defensive), ("floor", floor), ("gradient_fraction", gradient_fraction),
                        ("batch_fraction", batch_fraction), ("smoothing", smoothing)):
        if not 0 < value < 1:
            raise LowprobError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    K = len(temperatures) + 1
    if defensive + floor * (K - 1) >= 1:
        raise LowprobError("defensive + floor x temperatures must be below 1")
    work = 3 * budget
    sup = _Supports(dist, model.d_vocab)
    n_grad = max(2, int(budget * gradient_fraction))
    m = max(16, int(work * batch_fraction))

    def tilt_scores(grad_sum: torch.Tensor, count: int) -> torch.Tensor:
        g = torch.einsum("twd,td->tw", model.W_E[sup.ids].detach(), grad_sum / count).double()
        return torch.where(sup.mask, g, torch.zeros_like(g))

    shares = torch.full((K,), (1 - defensive) / (K - 1), dtype=torch.float64)
    shares[0] = defensive
    # 1. gradient phase: round 0 from D, each later round from the mixture on the gradient so far
    rounds = max(1, min(int(gradient_rounds), n_grad))
    grad_sum, seen, mix = None, 0, None
    for r in range(rounds):
        n = n_grad * (r + 1) // rounds - n_grad * r // rounds
        tokens = dist.sample(n, generator) if r == 0 else sup.tokens(mix.sample(shares, n, generator))
        _, grad = _margin_gradient(model, event, tokens)
        grad_sum = grad.sum(0) if grad_sum is None else grad_sum + grad.sum(0)
        seen += n
        mix = _Mixture(sup, tilt_scores(grad_sum, seen), temperatures)
    n_est = work - 3 * n_grad

    # 2. sampling phase
    log_terms, log_ws, hits_r = [], [], torch.zeros(K, dtype=torch.float64)
    done, history = 0, []
    while done < n_est:
        n = min(m, n_est - done)
        cols = mix.sample(shares, n, generator)
        comp = mix.component_log_probs(cols)  # [n, K]
        log_q = (comp + shares.log()).logsumexp(1)
        log_w = comp[:, 0] - log_q
        hit = event.indicator(model.logits(sup.tokens(cols)))
        done += n
        log_ws.append(log_w)
        log_terms.append(torch.where(hit, log_w, torch.tensor(NEG_INF, dtype=torch.float64)))
        if adapt_shares and hit.any():  # PMC step: responsibilities of the hits, weighted by w
            hits_r = hits_r + (comp[hit] + shares.log() - log_q[hit, None] + log_w[hit, None]).exp().sum(0)
            target = hits_r[1:] / hits_r[1:].sum()
            tilts = smoothing * target + (1 - smoothing) * shares[1:] / shares[1:].sum()
            tilts = floor + (1 - defensive - floor * (K - 1)) * tilts
            shares = torch.cat([shares[:1], tilts])
        history.append(shares.tolist())
    log_terms_all, log_w_all = torch.cat(log_terms), torch.cat(log_ws)
    hits = int(torch.isfinite(log_terms_all).sum())
    p = float(log_terms_all.exp().mean())
    interval, n_eff = compound_poisson_interval(log_terms_all[torch.isfinite(log_terms_all)], n_est,
                                                float(log_w_all.max()))
    sd = float(log_terms_all.exp().std()) if n_est > 1 else math.inf
    half_width = 1.96 * sd / math.sqrt(n_est)
    return RawEstimate(p, interval, n_grad + n_est, n_grad,
                       {"hits": hits, "effective_hits": n_eff, "estimation_samples": n_est,
                        "final_shares": [round(s, 4) for s in shares.tolist()],
                        "clt_interval": [max(0.0, p - half_width), p + half_width],
                        "note": "unbiased: mean of w·1[event] over the sampling phase only"})
