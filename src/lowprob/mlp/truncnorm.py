"""Standard normal truncated to [a, b], stable far into the tails (log-space throughout).

Used by the orthant estimators, whose per-constraint masses reach 1e-300 and below.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_ndtr, ndtr, ndtri, ndtri_exp

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def log_pdf(x: NDArray) -> NDArray:
    return -0.5 * x * x - _LOG_SQRT_2PI


def _log1mexp(x: NDArray) -> NDArray:
    """log(1 - exp(x)) for x <= 0, accurate at both ends."""
    x = np.minimum(x, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(x > -math.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _by_region(a: NDArray, b: NDArray, *fns) -> NDArray:
    """Evaluate fns[0] where a > 0 (upper tail), fns[1] where b < 0 (lower tail), fns[2] elsewhere.

    Each branch only sees its own elements, so tail formulas never meet arguments they overflow on.
    """
    upper = a > 0
    lower = (b < 0) & ~upper
    regions = (upper, lower, ~(upper | lower))
    out = np.empty(a.shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for mask, fn in zip(regions, fns, strict=True):
            if mask.any():
                out[mask] = fn(mask)
    return out


def log_mass(a: ArrayLike, b: ArrayLike) -> NDArray:
    """log(Phi(b) - Phi(a)) for a <= b, working in whichever tail the interval lies."""
    a, b = (np.asarray(x, dtype=np.float64) for x in np.broadcast_arrays(a, b))

    def upper(k):
        la = log_ndtr(-a[k])
        return la + _log1mexp(log_ndtr(-b[k]) - la)

    def lower(k):
        lb = log_ndtr(b[k])
        return lb + _log1mexp(log_ndtr(a[k]) - lb)

    return _by_region(a, b, upper, lower, lambda k: np.log1p(-ndtr(a[k]) - ndtr(-b[k])))


def mean_var(a: NDArray, b: NDArray) -> tuple[NDArray, NDArray]:
    """Mean and variance of N(0, 1) truncated to [a, b] (infinite ends allowed)."""
    a, b = (np.asarray(x, dtype=np.float64) for x in np.broadcast_arrays(a, b))
    lz = log_mass(a, b)
    pa, pb = np.exp(log_pdf(a) - lz), np.exp(log_pdf(b) - lz)
    mean = pa - pb
    with np.errstate(invalid="ignore"):
        apa = np.where(np.isfinite(a), a * pa, 0.0)
        bpb = np.where(np.isfinite(b), b * pb, 0.0)
    var = np.clip(1.0 + apa - bpb - mean * mean, 0.0, 1.0)
    return mean, var


def sample(a: ArrayLike, b: ArrayLike, u: ArrayLike) -> NDArray:
    """Inverse-CDF draw of N(0, 1) truncated to [a, b] from uniforms ``u``; exact in either tail."""
    a, b, u = (np.asarray(x, dtype=np.float64) for x in np.broadcast_arrays(a, b, u))

    def upper(k):  # Phi(-t) = Phi(-a) (1 - u (1 - r)), r = Phi(-b) / Phi(-a)
        la = log_ndtr(-a[k])
        r = np.exp(log_ndtr(-b[k]) - la)
        return -ndtri_exp(la + np.log1p(-u[k] * (1.0 - r)))

    def lower(k):  # Phi(t) = Phi(b) (r + u (1 - r)), r = Phi(a) / Phi(b)
        lb = log_ndtr(b[k])
        r = np.exp(log_ndtr(a[k]) - lb)
        return ndtri_exp(lb + np.log(r + u[k] * (1.0 - r)))

    def middle(k):
        fa, fb = ndtr(a[k]), ndtr(b[k])
        return ndtri(fa + u[k] * (fb - fa))

    return np.clip(_by_region(a, b, upper, lower, middle), a, b)
