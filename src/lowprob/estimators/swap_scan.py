"""The swap scan: a white-box probe that ranks every support value by how far it moves the model.

Each value of each variable position is swapped, exactly, into a few base inputs drawn from D, and the
model is run once per swap. A value is then scored against the other values of its position on the
same bases:

* **margin**: how much it raises the margin the estimator climbs (a value that alone moves the output);
* **push**: how much it moves the pre-activations of the units that write the target token — the
  shipped ``Transformer``'s MLP units, read through the ``last_features`` capability (the final
  residual's coordinates for any other model). A part of a conjunction moves the unit that checks it
  while the unit stays below its threshold: no output moves and its gradient is zero, so the margin and
  a first-order score (the one-hot gradient) see nothing, but its pre-activation does;
* **feature z**: the largest robust z-score any one feature reaches (untargeted; for events without a
  target token).

Each score becomes a percentile rank within its position and a value's evidence is its best rank, so
a value either probe singles out is a candidate; ``candidates`` turns the ranking into a proposal. The
scan is a pilot: its passes are charged and inform proposals; they never enter an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lowprob import cost
from lowprob.estimators.base import outcomes
from lowprob.estimators.proposals import Supports
from lowprob.events import Event
from lowprob.models.protocol import LanguageModel, capability

BATCH = 2048
MAD_FLOOR = 1e-3  # features that barely vary across a position's values must not make huge z-scores


@dataclass(frozen=True)
class SwapScan:
    """Per variable position, each support column's evidence (``[width]`` rows; padding columns -inf)."""

    positions: list[int]
    margin_shift: Tensor  # [T, width] mean rise of the margin over the position's average, in logits
    push: Tensor  # [T, width] mean change of the target-writing units' summed pre-activation (0 without a target)
    feature_z: Tensor  # [T, width] mean largest robust z-score of one feature
    evidence: Tensor  # [T, width] best percentile rank within its position (~1: top)
    forward_passes: int

    def summary(self, sup: Supports, top: int = 5) -> dict:
        """What a user reads of the probe: per scanned position, the input ids of the values with
        the most evidence and their scores (margin rise in logits, push, largest feature z-score)."""
        ranked = {}
        for i in self.positions:
            order = torch.argsort(self.evidence[i], descending=True)[: min(top, int(sup.sizes[i]))]
            ranked[str(i)] = [{"id": int(sup.ids[i, c]), "evidence": round(float(self.evidence[i, c]), 4),
                               "margin_shift": round(float(self.margin_shift[i, c]), 3),
                               "push": round(float(self.push[i, c]), 3),
                               "feature_z": round(float(self.feature_z[i, c]), 2)} for c in order.tolist()]
        return {"top": ranked}

    def candidates(self, sup: Supports) -> Tensor:
        """A [T, width] table giving each scanned position's values probability ∝ 1 / (rank by evidence): the
        leader gets ~1/ln(size), the tenth a tenth of that — no cut-off to tune, and a value the probe ranks
        low still drawn. Positions not scanned keep D's law."""
        table = sup.prior.clone()
        for i in self.positions:
            size = int(sup.sizes[i])
            order = torch.argsort(self.evidence[i, :size], descending=True)
            table[i] = 0.0
            table[i, order] = 1.0 / torch.arange(1, size + 1, dtype=torch.float64)
        return table / table.sum(1, keepdim=True)


def candidate_product(sup: Supports, scan: SwapScan, base: Tensor, size: int) -> Tensor:
    """Columns [N, T] of every combination of each scanned position's ``k`` values with the most evidence, ``k``
    the largest with k^positions <= ``size`` (other positions at ``base``'s columns): conjunctions of candidates."""
    k = max(1, int(size ** (1 / max(1, len(scan.positions))) + 1e-9))
    tops = [torch.topk(scan.evidence[i, : int(sup.sizes[i])], min(k, int(sup.sizes[i]))).indices
            for i in scan.positions]
    grid = torch.cartesian_prod(*tops).reshape(-1, len(tops))
    cols = base.repeat(len(grid), 1)
    cols[:, scan.positions] = grid
    return cols


def neighbours(sup: Supports, bases: Tensor, most: int | None = None, generator: torch.Generator | None = None
               ) -> Tensor:
    """Columns of every input one position away from a base (``bases`` [B, T]): a scan conditioned on near-hits,
    where the one part of a conjunction still missing is a single swap away. With ``most``, a position with more
    values than that gets ``most`` of them drawn uniformly without replacement (``generator``), the same for every
    base, each base's own value added."""
    return torch.cat([_swapped(sup, bases, i, _some_values(int(sup.sizes[i]), most, generator))
                      for i in scan_positions(sup)])


def _some_values(size: int, most: int | None, generator: torch.Generator | None) -> Tensor | None:
    if most is None or size <= most:
        return None
    return torch.randperm(size, generator=generator)[:most]


def _swapped(sup: Supports, bases: Tensor, i: int, values: Tensor | None = None) -> Tensor:
    """Columns: each base with each value of position ``i`` in turn (base-major): every value, or ``values`` and the
    base's own."""
    if values is None:
        size = int(sup.sizes[i])
        cols = bases.repeat_interleave(size, 0)
        cols[:, i] = torch.arange(size).repeat(len(bases))
        return cols
    per_base = torch.cat([values[None].expand(len(bases), -1), bases[:, i: i + 1]], 1)  # [B, m + 1]
    cols = bases.repeat_interleave(per_base.shape[1], 0)
    cols[:, i] = per_base.reshape(-1)
    return cols


def run_exactly(model: LanguageModel, sup: Supports, event: Event, margin: Callable[[Tensor], Tensor], cols: Tensor
                ) -> tuple[Tensor, Tensor]:
    """The margin [N] and whether each input hit [N], one forward pass each, charged."""
    got = [outcomes(model, event, chunk, margin) for chunk in sup.tokens(cols).split(BATCH)]
    return torch.cat([m for m, _ in got]), torch.cat([h for _, h in got])


def found_table(sup: Supports, hit_cols: Tensor, around: Tensor, share: float = 0.9) -> Tensor:
    """A [T, width] table: ``share`` on the values the hits ``hit_cols`` [H, T] hold, in their frequencies, the
    rest on ``around`` (a table of the same shape), so values the hits did not try stay reachable."""
    counts = torch.zeros_like(around)
    counts.scatter_add_(1, hit_cols.T.contiguous(), torch.ones(hit_cols.T.shape, dtype=counts.dtype))
    return share * counts / len(hit_cols) + (1 - share) * around


def scan_positions(sup: Supports) -> list[int]:
    return [i for i in range(sup.ids.shape[0]) if int(sup.sizes[i]) > 1]


def scan_cost(sup: Supports, bases: int) -> int:
    """Forward passes a scan with ``bases`` base inputs takes: every value of every variable position, per base."""
    return bases * int(sum(int(sup.sizes[i]) for i in scan_positions(sup)))


@torch.no_grad()
def swap_scan(model: LanguageModel, sup: Supports, margin: Callable[[Tensor], Tensor], base_cols: Tensor,
              target: int | None = None) -> SwapScan:
    """Swap every support value of every variable position into each base (``base_cols`` [B, T] columns).

    With a ``target`` token, a value's *push* is how much it moves the summed pre-activations of the units
    that write the target most (the eighth of them with the largest direct effect on its logit over the
    average logit), read in both directions: a unit held below its threshold shows it though no output
    moves. The evidence is then a value's best percentile rank of margin rise and push; without a target,
    of margin rise and feature z-score.
    """
    positions = scan_positions(sup)
    width = sup.ids.shape[1]
    margin_shift, push, feature_z = (torch.full((sup.ids.shape[0], width), -math.inf, dtype=torch.float64)
                                     for _ in range(3))
    passes = 0
    for i in positions:
        size = int(sup.sizes[i])
        cols = _swapped(sup, base_cols, i)
        m, f, readout = _margins_and_features(model, sup.tokens(cols), margin)
        passes += len(cols)
        m, f = m.view(len(base_cols), size), f.view(len(base_cols), size, -1)
        margin_shift[i, :size] = (m - m.mean(1, keepdim=True)).mean(0)
        dev = f - f.mean(1, keepdim=True)
        push[i, :size] = (dev @ _target_writers(model, readout, target)).mean(0)
        med = f.median(1, keepdim=True).values
        mad = (f - med).abs().median(1, keepdim=True).values.clamp_min(MAD_FLOOR)
        feature_z[i, :size] = ((f - med).abs() / mad).amax(-1).mean(0)
    second = torch.maximum(_percentiles(push, sup), _percentiles(-push, sup)) if target is not None \
        else _percentiles(feature_z, sup)
    ranks = torch.stack([_percentiles(margin_shift, sup), second])
    evidence = ranks.amax(0) + ranks.mean(0) / 1000  # the best rank, ties broken by the average
    return SwapScan(positions, margin_shift, push, feature_z, evidence, passes)


def _target_writers(model: LanguageModel, readout: Tensor, target: int | None) -> Tensor:
    """[F] weights: each of the eighth of the units with the largest direct effect on ``target``'s logit over the
    average logit, weighted by that effect; zeros without a target."""
    if target is None:
        return torch.zeros(readout.shape[0], dtype=torch.float64)
    w_u = model.W_U.detach().double().cpu()
    effect = readout.double().cpu() @ (w_u[:, target] - w_u.mean(1))
    keep = torch.topk(effect, max(1, len(effect) // 8)).indices
    weights = torch.zeros_like(effect)
    weights[keep] = effect[keep]
    return weights


def _margins_and_features(model: LanguageModel, tokens: Tensor, margin: Callable[[Tensor], Tensor]
                          ) -> tuple[Tensor, Tensor, Tensor]:
    """The margin [B] and last-position features [B, F] (float64, CPU), one forward per row, and the features'
    readout [F, d_model] (the final residual's own: the identity, where the model offers no ``last_features``)."""
    features_of = capability(model, "last_features")
    margins, features, readout = [], [], None
    for chunk in tokens.split(BATCH):
        chunk = chunk.to(model.device)
        got = features_of(chunk) if features_of is not None else None
        if got is None:
            resid = model.final_residual(model.W_E[chunk])
            got = (model.unembed(resid), resid, torch.eye(resid.shape[1], device=resid.device))
        logits, feats, readout = got
        margins.append(margin(logits).double().cpu())
        features.append(feats.double().cpu())
        cost.charge_passes(model.flops_per_sequence(tokens.shape[1]), len(chunk))
    assert readout is not None  # tokens has rows
    return torch.cat(margins), torch.cat(features), readout


def _percentiles(score: Tensor, sup: Supports) -> Tensor:
    """Each value's share of its position's other values that score strictly lower (1: alone at the top; a
    score every value shares gives 0 to all), -inf on padding."""
    out = torch.full_like(score, -math.inf)
    for i in range(score.shape[0]):
        size = int(sup.sizes[i])
        row = score[i, :size]
        if size > 1 and torch.isfinite(row).all():
            out[i, :size] = (row[None, :] < row[:, None]).sum(1).double() / (size - 1)
    return out
