"""Unfit accuracy, calibration and efficiency: what the paper's fitted loss does not show.

* ``abs_log10_error``: |log10 q − log10 p| with zero estimates at ``ZERO_FLOOR``; its median is the
  "how many orders of magnitude off" a user feels.
* ``covered``: whether the estimator's own nominal-95% interval holds the ground truth;
  ``meets_truth``: whether it meets the ground truth's own 95% interval — a sampled truth resolved by
  8 hits is known only to about ±70% at 95%, and an interval that misses its point but meets its
  interval is not shown wrong by it (for an exact truth the two coincide).
* ``work_normalised_variance``: WNRV = (Var q̂ / p²) × cost over repeated seeds, with cost in model
  calls (forward + backward passes); crude Monte Carlo has WNRV = (1 − p)/p, so the ratio of the two
  is "how many times fewer model calls than plain sampling" for the same relative variance.
"""

from __future__ import annotations

import numpy as np

from lowprob.evaluation.loss import ZERO_FLOOR, log_estimate


def abs_log10_error(p, q, floor: float = ZERO_FLOOR) -> np.ndarray:
    return np.abs(log_estimate(q, floor) - np.log(np.asarray(p, np.float64))) / np.log(10.0)


def covered(p, lo, hi) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return (np.asarray(lo, np.float64) <= p) & (p <= np.asarray(hi, np.float64))


def meets_truth(lo: float, hi: float, truth_lo: float, truth_hi: float) -> bool:
    """The estimate's interval [lo, hi] and the ground truth's [truth_lo, truth_hi] overlap."""
    return lo <= truth_hi and truth_lo <= hi


def work_normalised_variance(p: float, estimates, work) -> float:
    """WNRV of repeated independent estimates (≥ 2) of one probability ``p`` at mean cost ``work``, in forward
    passes of one input (what plain sampling spends per sample)."""
    estimates = np.asarray(estimates, np.float64)
    if len(estimates) < 2:
        raise ValueError("work-normalised variance needs at least 2 repeated estimates")
    return float(estimates.var(ddof=1) / p**2 * np.mean(work))


def plain_sampling_wnrv(p) -> np.ndarray:
    """Crude Monte Carlo's WNRV, (1 − p)/p: the baseline a speed-up is measured against."""
    p = np.asarray(p, np.float64)
    return (1 - p) / p
