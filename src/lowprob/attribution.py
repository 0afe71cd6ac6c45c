"""Attribution: which input values the event favours, read off the samples that hit it.

A sampling estimator already holds what it takes: every hit x carries a weight w relative to the
input distribution D (D/q for importance sampling, 1 for naive sampling, e^{-s/T} for MHIS's tilted
chains), so the same weights that estimate P(event) estimate the event's own input law,

    P(x_i = v | event) ≈ Σ_hits w 1[x_i = v] / Σ_hits w        (self-normalised),

and comparing it with D_i(v) says which values the event pulls up. Values are ranked per position
by their **rise** P(v | event) − D(v), the share of the event's inputs a value accounts for beyond
its base rate: it is bounded by 1 and a single stray hit on a very rare value cannot top it, which
ranking by the lift P(v | event) / D(v) (also reported) would let happen.

**Interval.** Clopper–Pearson at an effective number of hits: for n equally weighted independent
hits (naive sampling) the hits are independent draws from D(· | event), so the count of v among them
is binomial and the interval is exact. Unequal weights and dependent hits are worth fewer: hits of
one independent unit (an MCMC chain, a summed-out prefix, an SMC ancestor) are pooled first, Kish's
(Σ W_g)² / Σ W_g² over the units' total weights W_g gives the effective count, and where the
delta-method variance of the ratio says the value's estimate is less certain than that count
implies, the smaller count is used. With a handful of hits the interval is as wide as it should be;
with none there is nothing to attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats
from torch import Tensor

from lowprob.checks import integer_in
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.slots import SlotDistribution

LEVEL = 0.95


@dataclass(frozen=True)
class Hits:
    """The samples of one estimate that hit the event, as an estimator hands them back.

    ``tokens`` [H, T] are in the distribution's own index space (value ids for slot distributions).
    ``log_weight`` [H] is the log of the hit's weight relative to D times how much it hit (1 for a
    plain hit; for a Rao–Blackwellised completion, the completion's own D probability), on one scale
    across the estimate. Hits with equal ``unit`` come from one independent draw; ``None``: every
    hit is its own. ``note`` says how the method's samples became these hits.
    """

    tokens: Tensor
    log_weight: Tensor
    unit: Tensor | None = None
    note: str = ""

    def __len__(self) -> int:
        return len(self.tokens)

    def units(self) -> Tensor:
        return torch.arange(len(self)) if self.unit is None else self.unit

    @staticmethod
    def cat(parts: list[Hits], width: int, note: str = "") -> Hits:
        """One set of hits from several, each part's units kept apart from the others'."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Hits(torch.zeros(0, width, dtype=torch.long), torch.zeros(0, dtype=torch.float64), note=note)
        units, offset = [], 0
        for p in parts:
            units.append(p.units() + offset)
            offset = int(units[-1].max()) + 1
        return Hits(torch.cat([p.tokens for p in parts]), torch.cat([p.log_weight for p in parts]), torch.cat(units),
                    note or parts[0].note)


def hits_of(tokens: Tensor, log_weight: Tensor | float, hit: Tensor, unit: Tensor | None = None,
            note: str = "") -> Hits:
    """The rows of a batch that hit, with their log weights (a float: the same for every row)."""
    log_w = log_weight if isinstance(log_weight, Tensor) else torch.full((len(tokens),), log_weight,
                                                                         dtype=torch.float64)
    return Hits(tokens[hit], log_w[hit], None if unit is None else unit[hit], note)


class Labels:
    """Names of positions and text of values, for people: a slot distribution's slot names and value
    strings, or position numbers and the tokenizer's text of each token id (``id N`` without one)."""

    def __init__(self, source, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.units = source.unit_labels() if isinstance(source, SlotDistribution) else None

    def position(self, i: int) -> str:
        return self.units[i][0] if self.units is not None else f"position {i}"

    def value(self, i: int, v: int) -> str:
        if self.units is not None:
            return self.units[i][1][v]
        return self.tokenizer.decode([v]) if self.tokenizer is not None else f"id {v}"


@dataclass(frozen=True)
class SampledHits:
    """What ``Estimate`` keeps for ``attribution()``: the hits, the distribution they index, its labels."""

    hits: Hits
    dist: TokenDistribution
    labels: Labels


@dataclass(frozen=True)
class Attribution:
    """Per variable position, the values whose probability the event raises most (see the module docstring).

    ``rows``: one dict per (position, value) shown, with ``position``, ``name``, ``value`` (id),
    ``text``, ``prior`` D(v), ``conditional`` P(v | event), ``interval`` [lo, hi], ``rise``,
    ``lift`` and ``shift``, the position's total-variation distance between D and P(· | event).
    """

    rows: list[dict]
    hits: int
    effective_hits: float
    note: str = ""

    def table(self) -> str:
        """The rows for people, grouped by position."""
        if not self.hits:
            return "attribution: no sample hit the event, so there is nothing to attribute"
        lines = [f"attribution: {self.hits} hit{'s' * (self.hits > 1)} (effective {self.effective_hits:.1f}); "
                 f"P(value | event) against D(value), {LEVEL:.0%} intervals (Clopper–Pearson at the effective "
                 f"number of hits)"]
        if self.note:
            lines.append(f"  ({self.note})")
        shown = None
        for r in self.rows:
            if r["position"] != shown:
                shown = r["position"]
                lines.append(f"{r['name']} (shift {r['shift']:.2f})")
            lo, hi = r["interval"]
            lines.append(f"  {r['text']!r:>16}  D {r['prior']:.3g} -> {r['conditional']:.3g} "
                         f"[{lo:.3g}, {hi:.3g}]  lift {r['lift']:.3g}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"hits": self.hits, "effective_hits": self.effective_hits, "note": self.note, "rows": self.rows}


def effective_interval(p: float, n_eff: float, variance: float, level: float = LEVEL) -> tuple[float, float]:
    """Clopper–Pearson for a proportion ``p`` seen among ``n_eff`` effective hits (fractional counts),
    fewer when the ratio's delta-method ``variance`` says so."""
    n = n_eff
    if 0 < p < 1 and variance > 0:
        n = min(n, p * (1 - p) / variance)
    k, alpha = p * n, 1 - level
    lo = float(stats.beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
    hi = float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def attribute(sampled: SampledHits, top: int | None = 3, level: float = LEVEL) -> Attribution:
    """The ``top`` values by rise at each variable position, those the event raises at all (every value of
    every variable position with ``top=None``)."""
    if top is not None:  # a slice would take 0 as "none", -1 as "all but the last", and choke on "3"
        top = integer_in(top, "top (values shown per position; None shows them all)")
    hits, dist, labels = sampled.hits, sampled.dist, sampled.labels
    if len(hits) == 0:
        return Attribution([], 0, 0.0, hits.note)
    w = (hits.log_weight - hits.log_weight.max()).exp()
    unit = torch.unique(hits.units(), return_inverse=True)[1]
    unit_w = torch.zeros(int(unit.max()) + 1, dtype=torch.float64).index_add_(0, unit, w)  # W_g
    total, n_eff = float(unit_w.sum()), float(unit_w.sum() ** 2 / (unit_w**2).sum())
    rows = []
    for i in dist.variable_positions():
        ids, prior = dist.support(i)
        col = torch.searchsorted(ids, hits.tokens[:, i].contiguous())
        # A_gv: weight of unit g's hits with value v, over the (unit, value) pairs that occur
        pairs, which = torch.unique(unit * len(ids) + col, return_inverse=True)
        a = torch.zeros(len(pairs), dtype=torch.float64).index_add_(0, which, w)
        pair_col, pair_unit = pairs % len(ids), pairs // len(ids)
        num = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, pair_col, a)
        a2 = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, pair_col, a * a)
        ab = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, pair_col, a * unit_w[pair_unit])
        p = (num / total).clamp(0.0, 1.0)  # a sum of parts can round past the whole
        # delta method for Σ_g A_gv / Σ_g W_g: Σ_g (A_gv − p W_g)² / (Σ W_g)²
        var = (a2 - 2 * p * ab + p * p * (unit_w**2).sum()).clamp_min(0) / total**2
        rise = p - prior
        shift = float(rise.abs().sum()) / 2
        order = torch.argsort(rise, descending=True, stable=True)
        shown = order.tolist() if top is None else [c for c in order[:top].tolist() if rise[c] > 0]
        for c in shown:
            v, pv, dv = int(ids[c]), float(p[c]), float(prior[c])
            rows.append({"position": i, "name": labels.position(i), "value": v, "text": labels.value(i, v),
                         "prior": dv, "conditional": pv,
                         "interval": list(effective_interval(pv, n_eff, float(var[c]), level)),
                         "rise": pv - dv, "lift": pv / dv, "shift": shift})
    return Attribution(rows, len(hits), n_eff, hits.note)

