"""Choosing a hyper-parameter (the temperature) without letting the scored target's truth leak in.

The paper tuned temperatures against the ground truth of the very tokens it scored. Here a method
run at K temperatures on n targets (log-estimates ``[K, n]``) is scored two ways:

* **leak-free** (nested leave-one-out): for target ``i``, each temperature is judged by its mean
  leave-one-out loss over the other targets, with ``i`` left out of every one of those fits too; the
  best one's fit on the others then scores ``i``. Target ``i``'s ground truth touches neither its
  temperature nor its fit.
* **oracle**: one temperature per (model, distribution, method), the one with the lowest mean
  leave-one-out loss over all targets — the paper's protocol, an optimistic bound.

Both judge a temperature by the same out-of-sample loss, so the gap between them is the leak alone.
(Judging by the in-sample loss instead is optimistic exactly where it matters: a fit that has seen a
zero estimate bends to it, and a temperature that sometimes returns 0 looks better than it scores.)

Ties go to the earlier temperature in the grid, so choices are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowprob.evaluation.loss import held_out_fits, is_loss, others_mask


@dataclass(frozen=True)
class Selection:
    choice: np.ndarray  # [n] index into the grid used for each target
    fitted: np.ndarray  # [n] each target's leave-one-out fitted log-estimate at its chosen grid point
    losses: np.ndarray  # [n] IS loss of those fitted estimates


def select(log_p, log_q) -> tuple[Selection, Selection]:
    """(leak-free, oracle) selections over the first axis of ``log_q`` [K, n] (n ≥ 3), from one set of fits."""
    log_p = np.asarray(log_p, np.float64)
    fitted = held_out_fits(log_p, log_q)  # [K, i, j]: the fit without targets i and j, applied to j
    n = log_p.shape[-1]
    held_out = np.arange(n)
    loo = fitted[:, held_out, held_out]  # [K, n]: each target under the fit on the others
    # leak-free: for target i, the grid point with the best leave-one-out loss on the others, without i
    inner = np.where(others_mask(n), is_loss(log_p, fitted), 0.0).sum(-1) / (n - 1)  # [K, i]
    choice = inner.argmin(axis=0)
    free = loo[choice, held_out]
    # oracle: the one grid point with the lowest mean leave-one-out loss over all targets
    best = int(is_loss(log_p, loo).mean(axis=1).argmin())
    return (Selection(choice, free, is_loss(log_p, free)),
            Selection(np.full(n, best), loo[best], is_loss(log_p, loo[best])))
