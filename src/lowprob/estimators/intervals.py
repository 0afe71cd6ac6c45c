"""Every confidence interval the estimators report, with the level as a parameter (0.95 by default).

One home so that a method states *which* interval it gives, never re-derives one: exact binomial
(Clopper–Pearson) for plain hit counts, Garwood's Poisson limits for counts of rare events, the
compound-Poisson interval for sums of importance weights, and normal or Student-t half widths for
averages of independent replicates.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

LEVEL = 0.95


def normal_quantile(level: float = LEVEL) -> float:
    """z such that a normal variable lies within ±z standard deviations with probability ``level``."""
    return float(stats.norm.ppf(1 - (1 - level) / 2))


def student_quantile(n: int, level: float = LEVEL) -> float:
    """t such that the mean of ``n`` independent normal values lies within ±t standard errors with ``level``."""
    return float(stats.t.ppf(1 - (1 - level) / 2, n - 1))


def student_half_width(std: float, n: int, level: float = LEVEL) -> float:
    """Half width of the Student-t interval for the mean of ``n`` independent values with sample sd ``std``."""
    return student_quantile(n, level) * std / math.sqrt(n)


def clopper_pearson(hits: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact binomial interval for a hit probability after ``hits`` in ``n``: covers at least at ``level``."""
    alpha = 1 - level
    lo = 0.0 if hits == 0 else float(stats.beta.ppf(alpha / 2, hits, n - hits + 1))
    hi = 1.0 if hits == n else float(stats.beta.ppf(1 - alpha / 2, hits + 1, n - hits))
    return lo, hi


def poisson_upper(count: float = 0.0, level: float = LEVEL) -> float:
    """Garwood's upper limit for a Poisson mean after ``count`` events (≈ 3.69 for none, at 95%).

    Samplers that saw no hit bound the probability by this many "hits' worth" of their largest weight.
    """
    return float(stats.chi2.ppf(1 - (1 - level) / 2, 2 * count + 2) / 2)


def compound_poisson(log_w_hits: torch.Tensor, n: int, max_log_weight: float,
                     level: float = LEVEL) -> tuple[tuple[float, float], float]:
    """Interval for (Σ hit weights) / n, and the effective number of hits (Σw)² / Σw².

    The hits are treated as a Poisson number of events of one common weight Σw² / Σw, so the count of
    n_eff = (Σw)² / Σw² of them gets Garwood's limits (a gamma interval). With no hit, the upper end
    is Garwood's no-event bound at the largest weight any sample had.
    """
    alpha = 1 - level
    if len(log_w_hits) == 0:
        return (0.0, poisson_upper(0, level) * math.exp(max_log_weight) / n), 0.0
    log_sum, log_sum_sq = float(log_w_hits.logsumexp(0)), float((2 * log_w_hits).logsumexp(0))
    n_eff = math.exp(2 * log_sum - log_sum_sq)
    scale = math.exp(log_sum_sq - log_sum) / n
    lo = stats.chi2.ppf(alpha / 2, 2 * n_eff) / 2 * scale
    hi = poisson_upper(n_eff, level) * scale
    return (float(lo), float(hi)), n_eff
