"""Choosing a hyper-parameter (the temperature) without letting the scored target's truth leak in.

The paper tuned temperatures against the ground truth of the very tokens it scored. Here a method
run at K temperatures on n targets (log-estimates ``[K, n]``) is scored two ways:

* **leak-free** (nested leave-one-out): for target ``i``, each temperature is fitted on the other
  targets and judged by its in-sample loss on them; the best one's fit (still without ``i``) then
  scores ``i``. Target ``i``'s ground truth touches neither its temperature nor its fit.
* **oracle**: one temperature per (model, distribution, method), the one with the lowest mean
  leave-one-out loss over all targets — the paper's protocol, an optimistic bound.

Ties go to the earlier temperature in the grid, so choices are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowprob.evaluation.loss import fit_log_affine, is_loss, loo_fitted


@dataclass(frozen=True)
class Selection:
    choice: np.ndarray  # [n] index into the grid used for each target
    fitted: np.ndarray  # [n] each target's leave-one-out fitted log-estimate at its chosen grid point
    losses: np.ndarray  # [n] IS loss of those fitted estimates


def leak_free(log_p, log_q) -> Selection:
    """Nested leave-one-out selection over the first axis of ``log_q`` [K, n] (n ≥ 3)."""
    log_p = np.asarray(log_p, np.float64)
    log_q = np.asarray(log_q, np.float64)
    n = log_q.shape[1]
    if n < 3:
        raise ValueError("nested leave-one-out needs at least 3 targets")
    others = ~np.eye(n, dtype=bool)  # [i, j]: j may be used when i is held out
    a, b = fit_log_affine(log_p[None, None, :], log_q[:, None, :], others[None])  # [K, i]
    fitted = np.minimum(a[..., None] * log_q[:, None, :] + b[..., None], 0.0)  # [K, i, j], capped at p = 1
    inner = np.where(others, is_loss(log_p, fitted), 0.0).sum(-1) / (n - 1)  # [K, i]
    choice = inner.argmin(axis=0)
    held_out = np.arange(n)
    scored = fitted[choice, held_out, held_out]
    return Selection(choice, scored, is_loss(log_p, scored))


def oracle(log_p, log_q) -> Selection:
    """The one grid point with the lowest mean leave-one-out loss (uses every target's truth)."""
    log_p = np.asarray(log_p, np.float64)
    fitted = loo_fitted(log_p, np.asarray(log_q, np.float64))  # [K, n]
    losses = is_loss(log_p, fitted)
    best = int(losses.mean(axis=1).argmin())
    return Selection(np.full(losses.shape[1], best), fitted[best], losses[best])
