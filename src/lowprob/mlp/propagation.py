"""Cumulant propagation: E[pre[l]] of a deep MLP under x ~ N(0, I), from the weights alone.

The state after each activation is a truncated tower of cumulants of the activations:

* K = 1: the mean and one scalar c with Cov ~ c I (so a pre-activation's variance is c M_ii);
* K = 2: the mean and the covariance;
* K = 3: the mean, the covariance, the third cumulant kappa3 (dense, or factored as a sum of
  rank-one terms) and a scalar a4 with kappa4 ~ a4 Sym(I x I).

A linear layer maps every cumulant exactly (each mode is contracted with W). An activation is
handled by an Edgeworth-type expansion around independent Gaussians N(mu_i, Sigma_ii): the joint
cumulants of *powers* of the activations (power cumulants) are sums of diagrams, each a product of
input cumulant entries and per-neuron Wick coefficients; the truncation keeps diagrams of total
cost <= K - 1, where an entry with v indices costs |v| - 1 - [all multiplicities even]
(ARC's HEAD rule, "SIMPLE" variant). Power cumulants are then turned into cumulants by the
Leonov-Shiryaev formula, slice by slice.

The metric M of kappa4 after a linear layer is W W^T ("exact") or its average multiple of the
identity ("average", which assumes i.i.d. weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from lowprob.errors import LowprobError
from lowprob.mlp.flops import FlopCounter
from lowprob.mlp.gaussian import RELU_PRODUCT_OPS, relu_product_mean
from lowprob.mlp.limits import check_array
from lowprob.mlp.networks import MLPSpec
from lowprob.mlp.wick import VAR_FLOOR, wick_coefficients

METRICS = ("exact", "average")
PAIRS = ("linear", "exact")
KAPPA3_FORMS = ("dense", "factored")


@dataclass
class Estimate:
    """Propagated per-layer moments; ``pre_var``/``pre_kappa3``/``pre_kappa4`` hold the diagonals."""

    method: str
    pre_mean: list[NDArray]
    pre_var: list[NDArray]
    act_mean: list[NDArray]
    pre_kappa3: list[NDArray | None]
    pre_kappa4: list[NDArray | None]
    flops: float
    flops_by_region: dict[str, float]
    seconds: float
    mechanistic: bool = True
    options: dict = field(default_factory=dict)


class DenseKappa3:
    """The full symmetric n x n x n tensor: simple and exact, O(n^4) per linear layer."""

    def __init__(self, n: int, dtype: str) -> None:
        self.t = np.zeros((n, n, n), dtype=dtype)

    def linear(self, w: NDArray, fc: FlopCounter) -> None:
        w = w.astype(self.t.dtype)
        for _ in range(3):  # contract axis 0 with W's input axis; the new axis goes last
            fc.matmul("kappa3", w.shape[0], w.shape[1], self.t.shape[1] * self.t.shape[2])
            self.t = np.tensordot(self.t, w, axes=(0, 1))

    def slices(self, fc: FlopCounter) -> tuple[NDArray, NDArray]:
        """(kappa_iii, kappa_iij as an n x n matrix): indexing only, free."""
        i = np.arange(self.t.shape[0])
        return self.t[i, i, i].astype(np.float64), self.t[i, i, :].astype(np.float64)

    def nonlinear(self, c1: NDArray, u: NDArray, c2: NDArray, corr3: NDArray, corr21: NDArray,
                  fc: FlopCounter) -> None:
        """t <- t * (c1 x c1 x c1) + 3 Sym(paths) + corrections on the repeated-index entries."""
        n = c1.size
        self.t *= c1[:, None, None] * c1[None, :, None] * c1[None, None, :]
        q = np.einsum("ab,b,cb->abc", u, c2, u)
        self.t += q + q.transpose(1, 0, 2) + q.transpose(0, 2, 1)
        i = np.arange(n)
        self.t[i, i, :] += corr21
        self.t[i, :, i] += corr21
        self.t[:, i, i] += corr21.T
        self.t[i, i, i] += corr3
        fc.elementwise("kappa3", n**3, ops=9)


class FactoredKappa3:
    """kappa3 = Sym(sum_r a_r x b_r x c_r): O(n^2 R) per layer, R growing by 2n per layer.

    Activations add a rank-n path term; the exact repeated-index slices are kept as a pending
    correction, which the next linear layer turns into n more rank-one terms (W e_a, W e_a, W v_a).
    """

    def __init__(self, n: int, dtype: str) -> None:
        self.dtype = dtype
        self.f = [np.zeros((n, 0), dtype=dtype) for _ in range(3)]
        self.pending: tuple[NDArray, NDArray] | None = None

    @property
    def rank(self) -> int:
        return self.f[0].shape[1]

    def linear(self, w: NDArray, fc: FlopCounter) -> None:
        if self.pending is not None:
            corr3, corr21 = self.pending
            v = 3.0 * corr21.T
            v[np.diag_indices_from(v)] = corr3
            eye = np.eye(v.shape[0])
            self.f = [np.hstack([f, g.astype(self.dtype)])
                      for f, g in zip(self.f, (eye, eye, v), strict=True)]
            self.pending = None
        w = w.astype(self.dtype)
        for j in range(3):
            fc.matmul("kappa3", w.shape[0], w.shape[1], self.rank)
            self.f[j] = w @ self.f[j]

    def slices(self, fc: FlopCounter) -> tuple[NDArray, NDArray]:
        """Slices of Sym(a x b x c): a_i b_i c_i and (a_i b_i c_j + a_i c_i b_j + b_i c_i a_j) / 3."""
        a, b, c = self.f
        n, r = a.shape
        d3 = np.einsum("ir,ir,ir->i", a, b, c)
        d21 = ((a * b) @ c.T + (a * c) @ b.T + (b * c) @ a.T) / 3.0
        for _ in range(3):
            fc.matmul("kappa3", n, r, n)
        fc.elementwise("kappa3", n * r, ops=3 + 2)
        fc.reduce("kappa3", r, count=n)
        fc.elementwise("kappa3", n * n, ops=3)
        return d3.astype(np.float64), d21.astype(np.float64)

    def nonlinear(self, c1: NDArray, u: NDArray, c2: NDArray, corr3: NDArray, corr21: NDArray,
                  fc: FlopCounter) -> None:
        n = c1.size
        scale = c1[:, None].astype(self.dtype)
        self.f = [np.hstack([scale * f, g.astype(self.dtype)])
                  for f, g in zip(self.f, (u, np.diag(3.0 * c2), u), strict=True)]
        self.pending = (corr3, corr21)
        fc.elementwise("kappa3", n * self.rank, ops=3)


def _metric(w: NDArray, metric: str, fc: FlopCounter, full: bool) -> NDArray:
    """M = W W^T (or its diagonal when ``full`` is False), or mean(diag(W W^T)) I."""
    n_out, n_in = w.shape
    if metric == "average":
        fc.elementwise("metric", w.size, ops=2)
        m = np.full(n_out, float(np.sum(w * w)) / n_out)
        return np.diag(m) if full else m
    if full:
        fc.matmul("metric", n_out, n_in, n_out)
        return w @ w.T
    fc.elementwise("metric", w.size, ops=2)
    return np.einsum("ij,ij->i", w, w)


def _offdiag(x: NDArray) -> NDArray:
    x = x.copy()
    np.fill_diagonal(x, 0.0)
    return x


def _nonlinear_k3(act: str, mu: NDArray, sigma: NDArray, k3, d3: NDArray, d21: NDArray, a4: float,
                  metric: NDArray, fc: FlopCounter) -> tuple[NDArray, NDArray, float]:
    """One activation at K = 3 (SIMPLE): returns (mean, covariance, a4) and updates ``k3`` in place.

    ``d3``, ``d21`` are kappa3's (3) and (2,1) slices after the linear step.
    """
    n = mu.size
    var = np.diag(sigma).copy()
    c = wick_coefficients(act, mu, var, kmax=4, pmax=4, fc=fc)
    mdiag = np.diag(metric)
    k4_ii = a4 * mdiag**2
    k4_ij = a4 * (np.outer(mdiag, mdiag) + 2.0 * metric**2) / 3.0

    # Power moments of single neurons: the (3) and (4) blocks each cost 2.
    m = [None] + [c[0, p] + d3 / 6.0 * c[3, p] + k4_ii / 24.0 * c[4, p] for p in range(1, 5)]
    sq = sigma**2 / 2.0 + k4_ij / 4.0

    def pair(p: int, q: int) -> NDArray:
        """Power cumulant kappa(f_i^p, f_j^q), i != j: blocks (1,1), 2 x (1,1), (2,1), (1,2), (2,2)."""
        return _offdiag(sigma * np.outer(c[1, p], c[1, q]) + sq * np.outer(c[2, p], c[2, q])
                        + 0.5 * d21 * np.outer(c[2, p], c[1, q]) + 0.5 * d21.T * np.outer(c[1, p], c[2, q]))

    fc.elementwise("nonlinear", n * n, ops=3 * 16 + 12)
    m1, m2, m3, m4 = m[1:]
    cov = pair(1, 1)
    k21 = _offdiag(pair(2, 1) - 2.0 * m1[:, None] * cov)  # kappa(f_i, f_i, f_j)
    k22 = pair(2, 2) - 2.0 * cov**2 - 2.0 * m1[:, None] * k21.T - 2.0 * m1[None, :] * k21 \
        - 4.0 * np.outer(m1, m1) * cov
    cov[np.diag_indices(n)] = m2 - m1**2
    k3_diag = m3 - 3.0 * m2 * m1 + 2.0 * m1**3
    k4_diag = m4 - 4.0 * m3 * m1 - 3.0 * m2**2 + 12.0 * m2 * m1**2 - 6.0 * m1**4
    a4_new = 3.0 * (k4_diag.sum() + _offdiag(k22).sum()) / (n * (n + 2))

    # New kappa3: scale by c1 in every mode, add the three two-edge paths Sigma_ij Sigma_jk c2_j
    # (centre j), and correct the repeated-index slices to the exact (2,1) and (3) cumulants.
    c1, c2 = c[1, 1], c[2, 1]
    u = c1[:, None] * sigma
    sdiag = np.diag(sigma)
    base21 = (c1[:, None] ** 2 * c1[None, :] * d21 + 2.0 * np.outer(c1 * c2 * sdiag, c1) * sigma
              + c1[:, None] ** 2 * c2[None, :] * sigma**2)
    base3 = c1**3 * d3 + 3.0 * c1**2 * c2 * sdiag**2
    k3.nonlinear(c1, u, c2, k3_diag - base3, _offdiag(k21 - base21), fc)
    return m1, cov, a4_new


def check_memory(widths: list[int], K: int, kappa3: str = "factored", dtype: str = "float64") -> None:
    """Refuse a network (input width, then each layer's) whose largest state array at order K cannot fit,
    before any work: the covariance (n x n) at K >= 2; at K = 3 the dense kappa3 (n^3) or the factored
    one's n x (2 depth - 1) n factors. The CLI asks before it even builds the network."""
    n, depth = max(widths), len(widths) - 1
    fix = "lower the width, the depth or K"
    if K == 3 and kappa3 == "dense":
        check_array(f"K=3's dense kappa3 at width {n:,}", (n, n, n), np.dtype(dtype).itemsize, fix)
    elif K == 3:
        check_array(f"K=3's factored kappa3 at width {n:,} and depth {depth:,}",
                    (n, (2 * depth - 1) * n), np.dtype(dtype).itemsize, fix)
    if K >= 2:
        check_array(f"K={K}'s covariance at width {n:,}", (n, n), 8, fix)


@dataclass
class _Cumulants:
    """The state after an activation (or of the input): mean, covariance (at K = 1 the scalar c of
    Cov ~ c I), kappa3 (K = 3) and a4 (kappa4 ~ a4 Sym(I x I))."""

    mean: NDArray
    cov: NDArray | float
    k3: DenseKappa3 | FactoredKappa3 | None = None
    a4: float = 0.0


@dataclass
class _PreActivation:
    """A linear layer's output, what its activation reads: mean, variances, and from K = 2 the covariance;
    at K = 3 also kappa3's (3) and (2,1) slices and the metric of kappa4."""

    mu: NDArray
    var: NDArray
    sigma: NDArray | None = None
    d3: NDArray | None = None
    d21: NDArray | None = None
    metric: NDArray | None = None


def estimate_means(spec: MLPSpec, K: int = 2, *, metric: str = "exact", pair: str = "linear",
                   kappa3: str = "factored", dtype: str = "float64", full_last: bool = True) -> Estimate:
    """Propagate cumulants through ``spec`` and return per-layer estimates of E[pre] and E[act].

    ``pair='exact'`` (K = 2, ReLU only) replaces the linearised covariance Sigma_ij Phi_i Phi_j by
    the exact bivariate Gaussian ReLU moment. With ``full_last=False`` the last layer gets only its
    mean (2 n^2 FLOPs), which is all that estimating E[pre[-1]] needs. ``dtype='float32'`` runs the
    linear steps of the covariance and kappa3 (the O(n^3) work) in single precision; means, Wick
    coefficients and the power-cumulant-to-cumulant conversion (where cancellation bites) stay float64.
    """
    _check_options(spec, K, metric, pair, kappa3, dtype)
    fc = FlopCounter()
    start = time.perf_counter()
    n0 = spec.widths[0]
    state = _Cumulants(np.zeros(n0), 1.0 if K == 1 else np.eye(n0),
                       (DenseKappa3 if kappa3 == "dense" else FactoredKappa3)(n0, dtype) if K == 3 else None)
    out = Estimate(method=f"K{K}", pre_mean=[], pre_var=[], act_mean=[], pre_kappa3=[], pre_kappa4=[],
                   flops=0.0, flops_by_region={}, seconds=0.0,
                   options={"K": K, "metric": metric, "pair": pair, "kappa3": kappa3, "dtype": dtype})
    for layer, (w, b, act) in enumerate(zip(spec.weights, spec.biases, spec.activations, strict=True)):
        n_out, n_in = w.shape
        fc.matmul("mean", n_out, n_in, 1)
        fc.elementwise("mean", n_out)
        mu = w @ state.mean + b
        out.pre_mean.append(mu)
        if layer == spec.depth - 1 and not full_last:
            break
        pre = _linear(w, mu, state, metric, dtype, fc)
        out.pre_var.append(pre.var)
        out.pre_kappa3.append(pre.d3)
        out.pre_kappa4.append(None if pre.metric is None else state.a4 * np.diag(pre.metric) ** 2)
        state = _activation(act, pre, state, pair, fc)
        out.act_mean.append(state.mean)
    out.seconds = time.perf_counter() - start
    out.flops = fc.total
    out.flops_by_region = dict(fc.by_region)
    return out


def _check_options(spec: MLPSpec, K: int, metric: str, pair: str, kappa3: str, dtype: str) -> None:
    """Refuse an unknown option, or a network whose state cannot fit, before any work."""
    if K not in (1, 2, 3):
        raise LowprobError(f"K must be 1, 2 or 3 (got {K})")
    for name, value, allowed in (("metric", metric, METRICS), ("pair", pair, PAIRS),
                                 ("kappa3", kappa3, KAPPA3_FORMS)):
        if value not in allowed:
            raise LowprobError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    if pair == "exact" and (K != 2 or any(a != "relu" for a in spec.activations)):
        raise LowprobError("pair='exact' is the K=2 bivariate ReLU formula: use it with K=2 and ReLU layers")
    if dtype not in ("float64", "float32"):
        raise LowprobError(f"dtype must be float64 or float32 (got {dtype!r})")
    check_memory(spec.widths, K, kappa3, dtype)


def _linear(w: NDArray, mu: NDArray, state: _Cumulants, metric: str, dtype: str, fc: FlopCounter) -> _PreActivation:
    """The linear step on the cumulants above the mean (``mu``, already computed): each mode contracted with W."""
    n_out, n_in = w.shape
    if isinstance(state.cov, float):  # K = 1
        var = state.cov * _metric(w, metric, fc, full=False)
        fc.elementwise("linear", n_out)
        return _PreActivation(mu, var)
    fc.matmul("linear", n_out, n_in, n_in)
    fc.matmul("linear", n_out, n_in, n_out)
    wd = w.astype(dtype)
    sigma = (wd @ state.cov.astype(dtype) @ wd.T).astype(np.float64)
    pre = _PreActivation(mu, np.diag(sigma).copy(), sigma)
    if state.k3 is not None:  # K = 3
        state.k3.linear(w, fc)
        pre.metric = _metric(w, metric, fc, full=True)
        pre.d3, pre.d21 = state.k3.slices(fc)
    return pre


def _activation(act: str, pre: _PreActivation, state: _Cumulants, pair: str, fc: FlopCounter) -> _Cumulants:
    """The activation step: the cumulants of ``act(pre)`` kept at the state's order K."""
    n_out = pre.mu.size
    if pre.sigma is None:  # K = 1
        c = wick_coefficients(act, pre.mu, pre.var, kmax=0, pmax=2, fc=fc)
        fc.elementwise("nonlinear", n_out, ops=3)
        return _Cumulants(c[0, 1], float(np.mean(c[0, 2] - c[0, 1] ** 2)))
    if state.k3 is not None:  # K = 3
        assert pre.d3 is not None and pre.d21 is not None and pre.metric is not None
        mean, cov, a4 = _nonlinear_k3(act, pre.mu, pre.sigma, state.k3, pre.d3, pre.d21, state.a4, pre.metric, fc)
        return _Cumulants(mean, cov, state.k3, a4)
    c = wick_coefficients(act, pre.mu, pre.var, kmax=1, pmax=2, fc=fc)
    mean = c[0, 1]
    if pair == "exact":
        sd = np.sqrt(np.maximum(pre.var, VAR_FLOOR))
        cov = relu_product_mean(pre.mu[:, None], pre.mu[None, :], pre.var[:, None], pre.var[None, :],
                                pre.sigma / np.outer(sd, sd))
        cov -= np.outer(mean, mean)
        fc.elementwise("nonlinear", n_out * n_out, ops=RELU_PRODUCT_OPS)
    else:
        cov = pre.sigma * np.outer(c[1, 1], c[1, 1])
        fc.elementwise("nonlinear", n_out * n_out, ops=2)
    cov[np.diag_indices(n_out)] = c[0, 2] - c[0, 1] ** 2
    return _Cumulants(mean, cov)
