"""Adaptive multilevel splitting with exact Gibbs moves over a position's whole support.

**Method.** N particles are drawn from D and scored by ξ(x): the margin CEIS climbs, capped at 0 for a
miss, +∞ for a hit, so the event is {ξ > 0}. Each iteration takes the level L, the ``kill`` quantile of
the scores; every particle at or below it is killed (ties included), and the survivors' share r joins
the running product Π r = P̂(ξ > L). Each killed particle is replaced by a copy of a survivor drawn
uniformly, then moved by a Gibbs update of one variable position i that leaves D restricted to
{ξ > L} invariant: candidate values are scored exactly with the rest of the particle held fixed, and
one is drawn ∝ D_i(v) 1[ξ(x_i = v) > L]. A support of at most ``pool`` values is scored whole;
a larger one through a pool of the current value and ``pool`` − 1 uniform draws from the support, the
choice ∝ D_i(v) among those above the level (a multiple-try move, also invariant). The iterations
stop when the level reaches the event (L ≥ 0); then p̂ = Π r × (hits / N).

A Gibbs move scores a value given everything else in a sample that is already close, so the second
part of a conjunction is found once the first is held — what a product proposal fitted to elites does
not do.

**Unbiased** when the iterations reach the event: killing every tie at the level makes the estimator
of generalised AMS unbiased for any N and kill share (Bréhier, Gazeau, Goudenège, Lelièvre, Rousset,
2016). The work is fixed in advance: a pilot run of ``PILOT_PARTICLES`` particles on ``pilot_fraction``
of the work counts the levels p needs, and the main run gets as many particles as its levels leave room
for; only the main run is averaged. A run that exhausts the work before reaching the event returns
Π r × (hits / N), low, and says so in the diagnostics (``reached``: False).

**Interval.** p̂ × exp(±1.96 s), s² = Σ (1 − r)/(N r) over the levels and the last hit share: the
variance of ideal splitting, whose moves would mix perfectly. Sampling error only: poor mixing and
mass the particles never visit are not in it. With no hit, [0, Π r × its upper factor]: P̂(ξ > L) at
the last level bounds p from above, up to its own sampling error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lowprob.attribution import Hits
from lowprob.cost import GRADIENT_CALL
from lowprob.distributions.base import TokenDistribution
from lowprob.estimators.base import RawEstimate
from lowprob.estimators.intervals import normal_quantile
from lowprob.estimators.proposals import Supports, margin_of
from lowprob.estimators.swap_scan import run_exactly, scan_positions
from lowprob.events import Event
from lowprob.models.protocol import LanguageModel

PILOT_PARTICLES = 8
MIN_PARTICLES = 8


@dataclass
class _Run:
    """One splitting run's outcome."""

    log_product: float  # log Π r over the levels passed
    hits: int  # particles in the event at the end
    n: int
    levels: list[float]
    variance: float  # of log p̂, ideal splitting
    reached: bool  # the level reached the event (else the run ran out of work or died out)
    extinct: bool
    spent: int  # forward passes
    hit_cols: Tensor
    root: Tensor  # each hit's initial particle

    @property
    def estimate(self) -> float:
        return math.exp(self.log_product) * self.hits / self.n


class _Scorer:
    """ξ of support columns, one charged forward pass each, and the count of passes."""

    def __init__(self, model: LanguageModel, sup: Supports, event: Event) -> None:
        self.model, self.sup, self.event, self.margin = model, sup, event, margin_of(event)
        self.passes = 0

    def __call__(self, cols: Tensor) -> Tensor:
        margin, hit = run_exactly(self.model, self.sup, self.event, self.margin, cols)
        self.passes += len(cols)
        return torch.where(hit, math.inf, margin.clamp_max(0.0))


@torch.no_grad()
def splitting(model: LanguageModel, dist: TokenDistribution, event: Event, budget: int, generator: torch.Generator,
              kill: float, pool: int, pilot_fraction: float) -> RawEstimate:
    """P(event) from ``GRADIENT_CALL × budget`` forward passes of adaptive multilevel splitting."""
    work = GRADIENT_CALL * budget
    sup = Supports(dist, model.d_vocab)
    score = _Scorer(model, sup, event)
    positions = scan_positions(sup)
    if not positions:  # nothing varies: one forward decides
        hit = bool(torch.isinf(score(torch.zeros(1, len(dist), dtype=torch.long))).item())
        return RawEstimate(float(hit), (float(hit), float(hit)), {"particles": 1, "levels": [], "reached": True})
    per_move = sum(min(int(sup.sizes[i]), pool) for i in positions) / len(positions)
    pilot = _run(sup, score, positions, PILOT_PARTICLES, kill, pool, int(work * pilot_fraction), generator)
    # the levels p needs, from the pilot; one more for a run that died out or ran out before the event
    levels = max(1, len(pilot.levels) + (not pilot.reached))
    left = work - score.passes
    n = max(MIN_PARTICLES, int(left / (1 + levels * kill * per_move)))
    main = _run(sup, score, positions, n, kill, pool, left, generator)
    p = main.estimate
    if main.hits:
        spread = normal_quantile() * math.sqrt(main.variance)
        interval = (p * math.exp(-spread), p * math.exp(spread))
    else:  # P̂(ξ > last level) >= p, up to its own error
        interval = (0.0, min(1.0, math.exp(main.log_product + normal_quantile() * math.sqrt(main.variance))
                             * 3.69 / main.n))
    diagnostics = {"particles": main.n, "levels": [round(x, 3) for x in main.levels], "hits": main.hits,
                   "reached": main.reached, "extinct": main.extinct, "pilot_levels": len(pilot.levels),
                   "pilot_reached": pilot.reached, "pilot_estimate": pilot.estimate,
                   "last_level": round(main.levels[-1], 3) if main.levels else None,
                   "forward_passes": score.passes}
    weight = main.log_product - math.log(main.n)
    hits = Hits(sup.tokens(main.hit_cols), torch.full((main.hits,), weight, dtype=torch.float64), main.root,
                "particles in the event at the last level, each weighing Π r / N, pooled per initial particle")
    return RawEstimate(p, interval, diagnostics, hits=hits)


def _run(sup: Supports, score: _Scorer, positions: list[int], n: int, kill: float, pool: int, work: int,
         generator: torch.Generator) -> _Run:
    """One splitting run of ``n`` particles within ``work`` forward passes (the first ``n`` included).

    Each particle carries a uniform u beside ξ, and particles are ordered by (ξ, u): copies of one particle
    tie in ξ, and killing every tie would kill them all. The kernel keeps D × U restricted to
    {(ξ, u) > (L, u_L)} invariant (a Gibbs update of a position, then u redrawn above the level)."""
    start = score.passes
    cols = sup.sample(sup.prior, n, generator)
    xi = score(cols)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    root = torch.arange(n)
    log_product, variance, levels = 0.0, 0.0, []
    reached = extinct = False
    k = max(1, int(kill * n))
    per_move = sum(min(int(sup.sizes[i]), pool) for i in positions) / len(positions)
    while True:
        order = sorted(range(n), key=lambda j: (float(xi[j]), float(u[j])))
        level, u_level = float(xi[order[k - 1]]), float(u[order[k - 1]])
        if level >= 0:
            reached = True
            break
        dead = (xi < level) | ((xi == level) & (u <= u_level))
        kills = int(dead.sum())
        if score.passes - start + kills * per_move > work:
            break
        r = (n - kills) / n
        log_product += math.log(r)
        variance += (1 - r) / (n * r)
        levels.append(level)
        alive = (~dead).nonzero()[:, 0]
        parents = alive[torch.randint(len(alive), (kills,), generator=generator)]
        at = dead.nonzero()[:, 0]
        cols[at], xi[at], u[at] = _gibbs(sup, score, positions, cols[parents], xi[parents], u[parents], level,
                                         u_level, pool, generator)
        root[at] = root[parents]
    hit = torch.isinf(xi)
    hits = int(hit.sum())
    if 0 < hits < n:
        f = hits / n
        variance += (1 - f) / (n * f)
    return _Run(log_product, hits, n, levels, variance, reached, extinct, score.passes - start, cols[hit], root[hit])


def _above(xi: Tensor, u: Tensor, level: float, u_level: float) -> Tensor:
    return (xi > level) | ((xi == level) & (u > u_level))


def _gibbs(sup: Supports, score: _Scorer, positions: list[int], cols: Tensor, xi: Tensor, u: Tensor, level: float,
           u_level: float, pool: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Move each row of ``cols`` (all above the level (``level``, ``u_level``)) by a Gibbs update of one uniformly
    chosen variable position, then redraw u above the level: invariant for D × U restricted to above it."""
    cols, xi = cols.clone(), xi.clone()
    which = torch.tensor(positions)[torch.randint(len(positions), (len(cols),), generator=generator)]
    for i in positions:
        rows = (which == i).nonzero()[:, 0]
        if len(rows) == 0:
            continue
        size = int(sup.sizes[i])
        if size <= pool:
            values = torch.arange(size).repeat(len(rows), 1)
        else:  # the current value and pool - 1 uniform draws
            values = torch.randint(size, (len(rows), pool), generator=generator)
            values[:, 0] = cols[rows, i]
        cand = cols[rows].repeat_interleave(values.shape[1], 0)
        cand[:, i] = values.reshape(-1)
        cand_xi = score(cand).view(len(rows), -1)
        weight = sup.prior[i][values] * _above(cand_xi, u[rows, None].expand_as(cand_xi), level, u_level)
        pick = torch.multinomial(weight, 1, generator=generator)[:, 0]
        cols[rows, i] = values[torch.arange(len(rows)), pick]
        xi[rows] = cand_xi[torch.arange(len(rows)), pick]
    fresh = torch.rand(len(cols), generator=generator, dtype=torch.float64)
    u = torch.where(xi > level, fresh, u_level + (1 - u_level) * fresh)
    return cols, xi, u
