"""Which tokens a benchmark asks about: rare enough to matter, common enough to be measured.

A token qualifies when its ground truth is trustworthy and the budget would rarely see it:

* sampled ground truth: at least ``min_count`` hits (8 by default: ≤ ~35% relative error, and the
  loss floor a perfect estimator pays for ground-truth noise, ~1/(2·count), stays ≤ 1/16);
* exact ground truth: at least ``exact_floor`` (1e-9; enumeration has no noise);
* at most ``headroom / budget`` (0.65/budget: plain sampling expects < 1 hit, as in the paper's
  2^16 budget with targets ≤ 1e-5).

Up to ``n_targets`` are drawn uniformly from the qualifying tokens with a seeded generator, and
returned sorted. With a ``spread`` span instead (exact ground truth, which resolves any p > 0), the
candidates are the tokens in the span and the targets are spread evenly in log p over it: for each
of ``n_targets`` evenly spaced points of log p, the nearest candidate not yet taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowprob.truth import GroundTruth

MIN_COUNT = 8
EXACT_FLOOR = 1e-9
HEADROOM = 0.65


@dataclass(frozen=True)
class TargetRange:
    low: float  # smallest admissible ground-truth probability
    high: float  # largest


def target_range(gt: GroundTruth, budget: int, min_count: int = MIN_COUNT, exact_floor: float = EXACT_FLOOR,
                 headroom: float = HEADROOM) -> TargetRange:
    low = exact_floor if gt.exact else min_count / gt.n_samples
    return TargetRange(low, headroom / budget)


def candidate_targets(gt: GroundTruth, budget: int, **range_options) -> torch.Tensor:
    """Every token id whose ground truth lies in ``target_range`` (sorted)."""
    r = target_range(gt, budget, **range_options)
    p = gt.probabilities
    return torch.nonzero((p >= r.low) & (p <= r.high)).flatten()


def select_targets(gt: GroundTruth, budget: int, n_targets: int, seed: int,
                   spread: tuple[float, float] | None = None, **range_options) -> list[int]:
    """Up to ``n_targets`` candidates, sorted: drawn uniformly (seeded), or spread evenly in log p over ``spread``."""
    if spread is None:
        candidates = candidate_targets(gt, budget, **range_options)
        order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
        return sorted(candidates[order[:n_targets]].tolist())
    low, high = spread
    p = gt.probabilities
    candidates = torch.nonzero((p >= low) & (p <= high) & (p > 0)).flatten()
    log_p = p[candidates].log10()
    points = torch.linspace(math.log10(low), math.log10(high), 2 * n_targets + 1, dtype=torch.float64)[1::2]
    taken: list[int] = []
    free = torch.ones(len(candidates), dtype=torch.bool)
    for point in points.tolist():
        if not free.any():
            break
        gap = torch.where(free, (log_p - point).abs(), torch.tensor(math.inf, dtype=torch.float64))
        best = int(gap.argmin())
        free[best] = False
        taken.append(int(candidates[best]))
    return sorted(taken)
