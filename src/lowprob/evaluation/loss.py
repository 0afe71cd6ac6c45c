"""The paper's loss and its log-space affine fit, evaluated leave-one-out.

Everything works on log-probabilities (float64 numpy arrays), because targets span 1e-9 … 1e-4.

* Itakura–Saito loss ``L(p, q) = p/q − ln(p/q) − 1``: zero only at ``q = p``; an underestimate costs
  linearly in ``p/q``, an overestimate only logarithmically.
* Affine fit ``log q' = a·log q + b`` per (model, distribution, method), minimising the mean loss.
  For fixed ``a`` the best ``b`` is ``log mean(p / q^a)``; what is left of the loss is then convex in
  ``a`` with derivative ``mean(log q) − E_w[log q]`` (``w ∝ p / q^a``), increasing in ``a``, so
  bisection finds it. With every ``log q`` equal the estimates carry no information: ``a = 0``, and
  the fit is the optimal constant whatever estimate it is later applied to.
* Leave-one-out: target ``i`` is scored with the fit on the other targets, so the fit never sees the
  ground truth it is judged against; a fitted estimate above 1 is capped at 1. The optimal-constant
  baseline is held to the same protocol: its constant for target ``i`` is the mean ground truth of the
  others (the IS-optimal constant).

Zero estimates have no logarithm: they are scored as ``ZERO_FLOOR`` (1e-12, the bottom of the range
lowprob is for), i.e. as a confident claim that the event is rarer than anything measured. The fit may
map that floor elsewhere, so a method that always says 0 scores like the optimal constant; a method
that says 0 now and then pays ~``p / 1e-12`` for each, and zeros pull the fit's slope down. Reports
count zero estimates separately, and ``lowprob report --zero-floor`` shows how much a result rests
on this choice.
"""

from __future__ import annotations

import numpy as np

ZERO_FLOOR = 1e-12
SLOPE_BOUND = 100.0  # |a| beyond this is a degenerate fit (all estimates nearly equal), not a calibration


def log_estimate(q, floor: float = ZERO_FLOOR) -> np.ndarray:
    """``log max(q, floor)``: the log-space value at which an estimate is scored."""
    return np.log(np.maximum(np.asarray(q, dtype=np.float64), floor))


def is_loss(log_p, log_q) -> np.ndarray:
    """Itakura–Saito loss from log-probabilities: ``e^d − d − 1`` with ``d = log p − log q``."""
    d = np.asarray(log_p, dtype=np.float64) - np.asarray(log_q, dtype=np.float64)
    return np.expm1(d) - d


def _masked_logmeanexp(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x = np.where(mask, x, -np.inf)
    top = x.max(axis=-1, keepdims=True)
    return (top[..., 0] + np.log(np.exp(x - top).sum(axis=-1))) - np.log(mask.sum(axis=-1))


def fit_log_affine(log_p, log_q, mask=None, iterations: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Loss-minimising ``(a, b)`` of ``log q' = a·log q + b`` over the last axis, batched.

    ``mask`` (bool, broadcastable to the data) selects the targets each fit may use: leave-one-out
    and nested selection are batches of masks. Every fit needs at least one target.
    """
    mask = True if mask is None else mask
    log_p, log_q, mask = np.broadcast_arrays(np.asarray(log_p, np.float64), np.asarray(log_q, np.float64),
                                             np.asarray(mask, bool))
    if not mask.any(axis=-1).all():
        raise ValueError("every fit needs at least one target")
    count = mask.sum(axis=-1)
    masked_p = np.where(mask, log_p, -np.inf)
    masked_q = np.where(mask, log_q, 0.0)  # masked-out targets: weight 0 below, so any finite value
    mean_q = masked_q.sum(axis=-1) / count

    def slope(a: np.ndarray) -> np.ndarray:  # d loss / d a at the best b for this a
        x = masked_p - a[..., None] * masked_q
        w = np.exp(x - x.max(axis=-1, keepdims=True))
        return mean_q - (w * masked_q).sum(axis=-1) / w.sum(axis=-1)

    lo = np.full(mean_q.shape, -SLOPE_BOUND)
    hi = np.full(mean_q.shape, SLOPE_BOUND)
    for _ in range(iterations):  # 64 halvings of [-100, 100] reach float64 resolution
        mid = 0.5 * (lo + hi)
        rising = slope(mid) > 0
        hi = np.where(rising, mid, hi)
        lo = np.where(rising, lo, mid)
    a = 0.5 * (lo + hi)
    spread = np.where(mask, log_q, -np.inf).max(axis=-1) - np.where(mask, log_q, np.inf).min(axis=-1)
    a = np.where(spread > 1e-9, a, 0.0)
    b = _masked_logmeanexp(log_p - a[..., None] * log_q, mask)
    return a, b


def others_mask(n: int) -> np.ndarray:
    """[n, n] mask: row i is every target but i."""
    return ~np.eye(n, dtype=bool)


def loo_fitted(log_p, log_q) -> np.ndarray:
    """Leave-one-out fitted log-estimates: entry i uses the fit on every target but i."""
    log_p = np.asarray(log_p, np.float64)
    log_q = np.asarray(log_q, np.float64)
    n = log_p.shape[-1]
    if n < 2:
        raise ValueError("leave-one-out needs at least 2 targets")
    a, b = fit_log_affine(log_p[..., None, :], log_q[..., None, :], others_mask(n))
    return np.minimum(a * log_q + b, 0.0)


def held_out_fits(log_p, log_q) -> np.ndarray:
    """``[..., i, j]``: target j's log-estimate under the fit on every target but i and j.

    The diagonal is :func:`loo_fitted`; row i is a leave-one-out evaluation of the targets other than
    i that never touched target i, which is what nested selection needs. Batched over leading axes of
    ``log_q`` (e.g. one row per temperature); needs n ≥ 3. The fit without {i, j} serves both (i, j)
    and (j, i), so each pair is fitted once.
    """
    log_p = np.asarray(log_p, np.float64)
    log_q = np.asarray(log_q, np.float64)
    n = log_p.shape[-1]
    if n < 3:
        raise ValueError("nested leave-one-out needs at least 3 targets")
    i, j = np.triu_indices(n, k=1)
    keep = others_mask(n)
    a, b = fit_log_affine(log_p[..., None, :], log_q[..., None, :], keep[i] & keep[j])  # [..., pairs]
    out = np.empty((*log_q.shape, n))
    out[..., i, j] = a * log_q[..., j] + b
    out[..., j, i] = a * log_q[..., i] + b
    diagonal = np.arange(n)
    out[..., diagonal, diagonal] = loo_fitted(log_p, log_q)
    return np.minimum(out, 0.0)


def loo_losses(log_p, log_q) -> np.ndarray:
    """Per-target IS loss of the leave-one-out fitted estimates."""
    return is_loss(log_p, loo_fitted(log_p, log_q))


def loo_constant_losses(log_p) -> np.ndarray:
    """Per-target IS loss of the optimal constant fitted on the other targets (their mean p)."""
    log_p = np.asarray(log_p, np.float64)
    n = log_p.shape[-1]
    if n < 2:
        raise ValueError("leave-one-out needs at least 2 targets")
    log_c = _masked_logmeanexp(np.broadcast_to(log_p, (n, n)), others_mask(n))
    return is_loss(log_p, log_c)
