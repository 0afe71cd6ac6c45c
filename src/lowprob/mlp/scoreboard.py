"""Scoring against sampling: errors, the sampling-efficiency ratio R, and the mechanistic check.

R = (FLOPs plain Monte Carlo needs for the same error) / (FLOPs the method used). For means,
MC's MSE/Var after N samples is 1/N, so R = C_fwd / (MSE/Var * F). For a probability p estimated
with relative error e, MC needs N = (1 - p) / (p e^2) samples of C_fwd FLOPs each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from lowprob.errors import LowprobError


def mse_over_var(estimate: NDArray, truth_mean: NDArray, truth_var: NDArray,
                 truth_n: int) -> dict[str, float]:
    """Coordinate-mean squared error over the mean per-coordinate variance.

    The ground truth's own noise adds mean(var) / N to the raw MSE in expectation; ``corrected``
    subtracts it (it can come out below zero when the method is better than the ground truth can
    tell: ``floor`` says where that is).
    """
    var = float(np.mean(truth_var))
    raw = float(np.mean((np.asarray(estimate) - truth_mean) ** 2)) / var
    floor = 1.0 / truth_n
    return {"raw": raw, "corrected": raw - floor, "floor": floor, "var": var}


def means_ratio(mse_var: float, c_fwd: float, flops: float) -> float:
    return c_fwd / (max(mse_var, 1e-300) * flops)


def probability_ratio(p: float, rel_err: float, c_fwd: float, flops: float) -> float:
    return (1.0 - p) / (p * max(rel_err, 1e-300) ** 2) * c_fwd / flops


def bootstrap_mean_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.9) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (degenerate for a single seed)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, values.size)).mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


class SamplingTrapped(LowprobError):
    """A method claimed to be mechanistic drew random numbers or ran the network."""


@contextlib.contextmanager
def trap_sampling() -> Iterator[None]:
    """Make random-number generation and Monte Carlo forward passes raise while active.

    Wraps the module-level entry points that our code uses (numpy's and torch's RNG constructors
    and samplers, and ``mc_moments``), so a ``mechanistic`` flag is checked, not just asserted.
    """
    import torch

    from lowprob.mlp import montecarlo

    def refuse(*_args, **_kwargs):
        raise SamplingTrapped("random numbers or a forward pass were used inside a mechanistic estimate")

    targets = [(np.random, name) for name in ("default_rng", "standard_normal", "normal", "random",
                                             "rand", "randn", "Generator", "RandomState")]
    targets += [(torch, name) for name in ("randn", "rand", "randint", "normal", "Generator")]
    targets += [(montecarlo, "mc_moments")]
    saved = [(obj, name, getattr(obj, name)) for obj, name in targets]
    try:
        for obj, name, _ in saved:
            setattr(obj, name, refuse)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)
