"""Proposal pieces the importance samplers share: one home, so a method imports them, never another method.

**Logits events** (CEIS, ITGIS, MHIS) propose from products of per-position categoricals on the input
distribution D's supports (``Supports``), moved toward the event by the one-hot gradient of a score
(``one_hot_scores``, ``gradient_tilt``), mixed with D under the balance heuristic (``Mixture``); a sample
weighs D(x) / q(x), kept in log space, and Kish's ``effective_sample_size`` says what weights are worth.

**Generation events** (tilted, SMC) draw each continuation token from q(y) ∝ p(y) e^{β a(y)}, a(y) = 1
for tokens that advance a partial match of a pattern, and fit β by a cross-entropy pilot (``adapt``):
maximise Σ_elite w log q_β(tokens), whose derivative Σ_elite w Σ_t [a(y_t) − P_t e^β / (1 − P_t + P_t e^β)],
P_t the advancing set's mass under p at step t, falls monotonically in β, so bisection finds it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lowprob.continuations import Continuations, continue_prompts
from lowprob.distributions.base import TokenDistribution
from lowprob.models.protocol import LanguageModel

NEG_INF = -math.inf
MAX_BETA = 30.0


def effective_sample_size(log_w: Tensor) -> float:
    """Kish's (Σw)² / Σw² of importance weights given in log space: how many equal weights they are worth."""
    w = (log_w - log_w.max()).exp()
    return float(w.sum() ** 2 / (w * w).sum())


# --- logits events: product proposals over D's supports -------------------------------------------------------


def one_hot_scores(model: LanguageModel, ids: Tensor, grad: Tensor) -> Tensor:
    """``W_E[ids] · grad`` over the embedding axis, float64 on the CPU: the first-order effect on the
    score of putting each candidate token in place. ``ids`` [..., W] (CPU), ``grad`` [..., d_model]."""
    emb = model.W_E[ids.to(grad.device)].detach()
    return torch.einsum("...wd,...d->...w", emb, grad).double().cpu()


def gradient_tilt(log_prior: Tensor, scores: Tensor, temperature: float = 1.0) -> Tensor:
    """Probabilities ∝ D · e^{s/T} along the last axis, from log D and one-hot scores s (-inf stays -inf).

    One logit of predicted score at T = 1 multiplies a token's odds by e: lower T tilts harder.
    """
    return torch.softmax(log_prior + scores / temperature, -1)


def log_gradient_tilt(log_prior: Tensor, scores: Tensor, temperature: float = 1.0) -> Tensor:
    """``gradient_tilt`` in log space, for proposals whose density enters an acceptance ratio."""
    return torch.log_softmax(log_prior + scores / temperature, -1)


class Supports:
    """Every position's support padded to one width, so a product proposal is one [T, width] float64 table.

    Column c of row i stands for token ``ids[i, c]``; padding columns have prior 0 and ``mask`` False.
    """

    def __init__(self, dist: TokenDistribution, d_vocab: int) -> None:
        self.sizes = torch.tensor(dist.support_sizes(), dtype=torch.float64)
        width = max(dist.support_sizes())
        self.ids = torch.zeros(len(dist), width, dtype=torch.long)
        self.prior = torch.zeros(len(dist), width, dtype=torch.float64)
        self.column = torch.zeros(len(dist), d_vocab, dtype=torch.long)  # token id -> column
        for pos in range(len(dist)):
            ids, probs = dist.support(pos)
            self.ids[pos, : len(ids)] = ids
            self.prior[pos, : len(ids)] = probs
            self.column[pos, ids] = torch.arange(len(ids))
        self.mask = self.prior > 0
        self.log_prior = torch.where(self.mask, self.prior.log(), torch.tensor(NEG_INF, dtype=torch.float64))

    def log(self, table: Tensor) -> Tensor:
        """log of a [T, width] table on the supports (-inf on padding; a probability 0 on a support as ~-690)."""
        return torch.where(self.mask, table.clamp_min(1e-300).log(), torch.tensor(NEG_INF, dtype=torch.float64))

    def tokens(self, cols: Tensor) -> Tensor:
        """[B, T] token ids of [B, T] columns."""
        return self.ids.gather(1, cols.T.contiguous()).T.contiguous()

    def sample(self, table: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """[n, T] columns drawn from the product of the rows of ``table``."""
        return torch.multinomial(table, n, replacement=True, generator=generator).T.contiguous()


class Mixture:
    """A mixture of product components over padded supports, component 0 being D itself.

    A sample drawn from the mixture with shares c is weighted by the balance heuristic,
    w = D(x) / Σ_k c_k q_k(x): unbiased whatever the shares, and w ≤ 1 / c_0.
    """

    def __init__(self, sup: Supports) -> None:
        self.sup = sup
        self.tables: list[Tensor] = []
        self.log_tables: list[Tensor] = []
        self.add(sup.prior)

    def add(self, table: Tensor) -> None:
        """Append a component: ``table`` restricted to the supports and normalised per position."""
        table = torch.where(self.sup.mask, table, torch.zeros_like(table))
        table = table / table.sum(1, keepdim=True)
        self.tables.append(table)
        self.log_tables.append(self.sup.log(table))

    def __len__(self) -> int:
        return len(self.tables)

    def component_log_probs(self, cols: Tensor, skip: int | None = None) -> Tensor:
        """[B, K]: log q_k(x) for every component; over the positions other than ``skip`` if given."""
        idx = cols.T.contiguous()
        keep = slice(None) if skip is None else torch.arange(idx.shape[0]) != skip
        return torch.stack([lt.gather(1, idx)[keep].sum(0) for lt in self.log_tables], 1)

    def log_weights(self, cols: Tensor, shares: Tensor, skip: int | None = None) -> Tensor:
        """[B] log D(x) / q_mix(x) (over the positions other than ``skip`` if given)."""
        comp = self.component_log_probs(cols, skip)
        return comp[:, 0] - (comp + shares.log()).logsumexp(1)

    def sample(self, shares: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """[n, T] columns: a component per sample drawn by ``shares``, then the sample from it."""
        which = torch.multinomial(shares, n, replacement=True, generator=generator)
        cols = torch.empty(n, self.sup.ids.shape[0], dtype=torch.long)
        for k in range(len(shares)):
            rows = torch.nonzero(which == k).flatten()
            if len(rows):
                cols[rows] = self.sup.sample(self.tables[k], len(rows), generator)
        return cols


# --- generation events: the tilted next-token law's cross-entropy pilot ---------------------------------------


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
    """Draws continuations of fresh prompts (from ``prompts``) at a given tilt; a run's log weights include
    the prompts' D/q."""

    def __init__(self, model, dist, event, generator: torch.Generator, defensive: float) -> None:
        self.model, self.event, self.generator, self.defensive = model, event, generator, defensive
        self.prompts = PromptProposal(dist)

    def __call__(self, n: int, beta: float) -> tuple[Continuations, torch.Tensor]:
        prompts, log_ratio = self.prompts.sample(n, self.generator)
        run = continue_prompts(self.model, prompts, self.event, self.generator, beta, self.defensive)
        run.log_weight += log_ratio
        return run, prompts


def adapt(draw: Drawer, dist: TokenDistribution, samples: int, rounds: int, rho: float, prompt_side: bool
          ) -> tuple[float, list[float]]:
    """The tilt after ``rounds`` cross-entropy rounds of ``samples`` draws in all, and the tilts used;
    with ``prompt_side``, ``draw`` then proposes prompts fitted to every round's hits.

    β starts at 0 (plain sampling). A round's elites are its hits, or, while fewer than a ``rho`` share
    hit, the ``rho`` share that took the most advancing tokens (the level rises as rows get closer);
    when no row advanced at all (a rare first token), β rises until a continuation's expected count of
    advancing tokens is the shortest pattern's length.
    """
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
