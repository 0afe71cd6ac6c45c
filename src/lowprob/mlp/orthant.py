"""One layer, "all neurons on": P(W x + b > 0) for x ~ N(0, I_n), W of shape (m, n).

Y = W x + b ~ N(b, C = W W^T), so this is a Gaussian orthant probability. Methods:

* ``adf`` (mechanistic): the chain rule P = prod_k P(Y_k > 0 | Y_j > 0, j before k) with the running
  conditional law kept Gaussian by moment matching (assumed-density filtering, the degree-2 case of
  sequential "deduction-projection"); constraints are taken most-binding first. O(m^2 n + m^3).
* ``ep`` (mechanistic): expectation propagation (Cunningham, Hennig & Lacoste-Julien 2011): ADF's
  one-dimensional moment matches iterated to a fixed point, each constraint replaced by a Gaussian
  site; log P is EP's normaliser. O(m^3) per sweep.
* ``pairwise`` (mechanistic): log P ~ sum_i log P_i + sum_{i<j} log(P_ij / (P_i P_j)).
* ``genz``: scipy's randomized-lattice QMC (Genz); its tolerance is absolute, so it is set to a
  thousandth of the ADF estimate.
* ``botev``: minimax-tilted sequential importance sampling (Botev 2017), unbiased with vanishing
  relative error in the tails; also yields the deterministic upper bound exp(psi*).
* ``mc``: plain Monte Carlo.

Every result is in log space: orthant probabilities of 1e-30 are routine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr, logsumexp

from lowprob.checks import check_seed, integer_in
from lowprob.errors import LowprobError
from lowprob.mlp import truncnorm
from lowprob.mlp.flops import FlopCounter
from lowprob.mlp.gaussian import bvn_cdf
from lowprob.mlp.limits import check_array, check_samples, finite

METHODS = ("adf", "ep", "pairwise", "genz", "botev", "mc")
MECHANISTIC = frozenset({"adf", "ep", "pairwise"})
EP_MAX_SWEEPS = 200
EP_TOL = 1e-10
TN_OPS = 30  # elementwise operations charged per truncated-normal draw and log-mass evaluation


@dataclass
class OrthantResult:
    method: str
    log_p: float
    rel_se: float | None  # None for deterministic methods
    flops: float
    seconds: float
    mechanistic: bool
    seed: int | None = None
    n_samples: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def p(self) -> float:
        return math.exp(self.log_p)


def _check(w: NDArray, b: NDArray) -> tuple[NDArray, NDArray]:
    w = np.asarray(w, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise LowprobError(f"W must be (m, n) and b (m,): got {w.shape} and {b.shape}")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
        raise LowprobError("W and b must be finite")
    if np.any(np.sum(w * w, axis=1) == 0):
        raise LowprobError("W has a zero row: that neuron's sign does not depend on x")
    check_array(f"the constraint covariance W W^T of {w.shape[0]:,} neurons", (w.shape[0],) * 2,
                fix="use fewer neurons (rows of W)")
    return w, b


def adf(w: NDArray, b: NDArray, fc: FlopCounter) -> float:
    """log P by sequential moment matching in Y-space (rank-one updates of the m x m covariance)."""
    m, n = w.shape
    fc.matmul("adf", m, n, m)
    cov = w @ w.T
    mean = b.copy()
    remaining = np.ones(m, dtype=bool)
    log_p = 0.0
    for _ in range(m):
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = np.where(sd > 0, mean / sd, np.copysign(np.inf, mean))
        k = int(np.argmin(np.where(remaining, alpha, np.inf)))  # most binding constraint first
        remaining[k] = False
        fc.elementwise("adf", m, ops=3)
        if not np.isfinite(alpha[k]):  # implied by earlier constraints (or contradicted)
            if alpha[k] < 0:
                return -math.inf
            continue
        log_p += float(log_ndtr(alpha[k]))
        lam, var_ratio = truncnorm.mean_var(np.array(-alpha[k]), np.array(np.inf))
        col = cov[:, k].copy()
        mean += col * (float(lam) / sd[k])
        cov -= np.outer(col, col) * ((1.0 - float(var_ratio)) / sd[k] ** 2)
        fc.elementwise("adf", m * m, ops=3)
        fc.elementwise("adf", m, ops=3 + TN_OPS)
    return log_p


def ep(w: NDArray, b: NDArray, fc: FlopCounter) -> tuple[float, dict]:
    """log P by expectation propagation on Y ~ N(b, C) with sites t_k(y_k) ~ exp(nu_k y_k - tau_k y_k^2 / 2).

    Sequential site updates keep q = N(mean, cov) by rank-one updates; at convergence log Z_EP is
    (Rasmussen & Williams eq. 3.65 with a step instead of a probit likelihood, prior mean b)
    -1/2 log|C + T^-1| - 1/2 (mu~ - b)^T (C + T^-1)^-1 (mu~ - b) + sum_k log Phi(mu_-k / s_-k)
    + 1/2 sum_k log(s_-k^2 + 1/tau_k) + sum_k (mu_-k - mu~_k)^2 / (2 (s_-k^2 + 1/tau_k)).
    """
    m, n = w.shape
    fc.matmul("ep", m, n, m)
    prior = w @ w.T
    cov, mean = prior.copy(), b.copy()
    tau, nu = np.zeros(m), np.zeros(m)
    sweeps = 0
    for sweeps in range(1, EP_MAX_SWEEPS + 1):  # noqa: B007 (the count is reported)
        change = 0.0
        for k in range(m):
            cav_tau = 1.0 / cov[k, k] - tau[k]
            cav_nu = mean[k] / cov[k, k] - nu[k]
            cav_sd = 1.0 / math.sqrt(cav_tau)
            alpha = cav_nu / cav_tau / cav_sd
            lam, var_ratio = truncnorm.mean_var(np.array(-alpha), np.array(np.inf))
            tilted_mean = cav_sd * (alpha + float(lam))
            tilted_var = cav_sd**2 * max(float(var_ratio), 1e-300)
            new_tau = 1.0 / tilted_var - cav_tau
            new_nu = tilted_mean / tilted_var - cav_nu
            d_tau, d_nu = new_tau - tau[k], new_nu - nu[k]
            change = max(change, abs(d_tau) / (abs(new_tau) + 1e-300), abs(d_nu) / (abs(new_nu) + 1e-300))
            tau[k], nu[k] = new_tau, new_nu
            col = cov[:, k].copy()
            denom = 1.0 + d_tau * cov[k, k]
            mean += col * ((d_nu - d_tau * mean[k]) / denom)
            cov -= np.outer(col, col) * (d_tau / denom)
        fc.elementwise("ep", m * m * m, ops=4)
        fc.elementwise("ep", m, ops=20 + TN_OPS)
        if change < EP_TOL:
            break
    # Normaliser, with B = I + T^1/2 C T^1/2 so that nothing inverts a singular C.
    root_tau = np.sqrt(tau)
    chol = np.linalg.cholesky(np.eye(m) + root_tau[:, None] * prior * root_tau[None, :])
    fc.charge("ep", m**3 / 3 + 4 * m * m)
    site_mean = nu / tau
    diag = np.diag(cov)
    cav_var = 1.0 / (1.0 / diag - tau)
    cav_mean = cav_var * (mean / diag - nu)
    r = np.linalg.solve(chol, root_tau * (site_mean - b))
    log_z = (-np.sum(np.log(np.diag(chol))) + 0.5 * np.sum(np.log(tau)) - 0.5 * r @ r
             + np.sum(log_ndtr(cav_mean / np.sqrt(cav_var))) + 0.5 * np.sum(np.log(cav_var + 1.0 / tau))
             + np.sum((cav_mean - site_mean) ** 2 / (2.0 * (cav_var + 1.0 / tau))))
    return float(log_z), {"sweeps": sweeps, "converged": bool(change < EP_TOL)}


def pairwise(w: NDArray, b: NDArray, fc: FlopCounter) -> float:
    """Bethe-like cluster expansion truncated at pairs (exact for m <= 2)."""
    m, n = w.shape
    fc.matmul("pairwise", m, n, m)
    cov = w @ w.T
    sd = np.sqrt(np.diag(cov))
    alpha = b / sd
    rho = cov / np.outer(sd, sd)
    single = log_ndtr(alpha)
    i, j = np.triu_indices(m, 1)
    with np.errstate(divide="ignore"):
        pair = np.log(np.maximum(bvn_cdf(alpha[i], alpha[j], rho[i, j]), 0.0))
    fc.elementwise("pairwise", i.size, ops=60)
    fc.elementwise("pairwise", m * m, ops=3)
    return float(single.sum() + np.sum(pair - single[i] - single[j]))


def _cholesky_reordered(cov: NDArray, lower: NDArray, fc: FlopCounter) -> tuple[NDArray, NDArray]:
    """Cholesky factor with Genz's greedy ordering (smallest conditional mass first).

    Returns (L, order); X[order] = L z with z ~ N(0, I) and bounds lower[order] <= X[order] < inf.
    """
    d = cov.shape[0]
    cov = cov.copy()
    lower = lower.copy()
    order = np.arange(d)
    chol = np.zeros((d, d))
    z = np.zeros(d)
    for j in range(d):
        cm = chol[j:, :j] @ z[:j]
        s = np.sqrt(np.maximum(np.diag(cov)[j:] - np.sum(chol[j:, :j] ** 2, axis=1), 1e-300))
        k = j + int(np.argmin(truncnorm.log_mass((lower[j:] - cm) / s, np.inf)))
        for arr in (order, lower, z):
            arr[[j, k]] = arr[[k, j]]
        cov[[j, k]] = cov[[k, j]]
        cov[:, [j, k]] = cov[:, [k, j]]
        chol[[j, k]] = chol[[k, j]]
        pivot = cov[j, j] - chol[j, :j] @ chol[j, :j]
        if pivot <= 1e-12 * cov[j, j]:
            raise LowprobError("the constraint covariance W W^T is singular (m > n or dependent rows): "
                               "use method 'adf', 'pairwise' or 'mc'")
        chol[j, j] = math.sqrt(pivot)
        chol[j + 1:, j] = (cov[j + 1:, j] - chol[j + 1:, :j] @ chol[j, :j]) / chol[j, j]
        shifted = (lower[j] - chol[j, :j] @ z[:j]) / chol[j, j]
        z[j], _ = truncnorm.mean_var(np.array(shifted), np.array(np.inf))
        fc.matmul("botev", d - j, j + 1, 2)
        fc.elementwise("botev", d - j, ops=4 + TN_OPS)
    return chol, order


def _psi_terms(chol: NDArray, lower: NDArray, x: NDArray, mu: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    """Shifted lower bounds a_k = l_k - (L_strict x)_k - mu_k, and the truncated mean/variance there."""
    a = lower - (chol - np.eye(chol.shape[0])) @ x - mu
    mean, var = truncnorm.mean_var(a, np.full_like(a, np.inf))
    return a, mean, var


def _saddle_point(chol: NDArray, lower: NDArray, fc: FlopCounter) -> tuple[NDArray, NDArray, bool]:
    """Solve grad psi = 0 for (x, mu) with x_d = mu_d = 0 (Newton with analytic Jacobian, via hybr).

    psi(x, mu) = sum_k mu_k^2 / 2 - x_k mu_k + log(1 - Phi(a_k)). With m_k the truncated mean at a_k:
    d/dmu_k: mu_k - x_k + m_k = 0;  d/dx_j: -mu_j + sum_{k>j} L_kj m_k = 0.
    """
    from scipy.optimize import root

    d = chol.shape[0]
    if d == 1:  # one constraint: the untilted proposal is already exact
        return np.zeros(1), np.zeros(1), True
    strict = chol - np.eye(d)

    def grad(v: NDArray) -> tuple[NDArray, NDArray]:
        x = np.append(v[: d - 1], 0.0)
        mu = np.append(v[d - 1:], 0.0)
        _, mean, var = _psi_terms(chol, lower, x, mu)
        g_mu = (mu - x + mean)[:-1]
        g_x = (-mu + strict.T @ mean)[:-1]
        slope = 1.0 - var  # d m_k / d (shift of a_k) = 1 - var_k; a_k moves by -(L x)_k - mu_k
        dm_dx = -slope[:, None] * strict
        dm_dmu = -np.diag(slope)
        jac = np.block([[(dm_dx - np.eye(d))[:-1, :-1], (np.eye(d) + dm_dmu)[:-1, :-1]],
                        [(strict.T @ dm_dx)[:-1, :-1], (strict.T @ dm_dmu - np.eye(d))[:-1, :-1]]])
        fc.matmul("botev", 2 * d, 2 * d, 2 * d)
        return np.concatenate([g_mu, g_x]), jac

    x0 = np.zeros(2 * (d - 1))
    sol = root(grad, x0, jac=True, method="hybr")
    ok = bool(sol.success and np.all(np.isfinite(sol.x)))
    v = sol.x if ok else x0
    return np.append(v[: d - 1], 0.0), np.append(v[d - 1:], 0.0), ok


def botev(w: NDArray, b: NDArray, n_samples: int, seed: int, fc: FlopCounter) -> tuple[float, float, dict]:
    """Minimax-tilting importance sampler; returns (log P, relative SE, diagnostics)."""
    m, n = w.shape
    if m > n:
        raise LowprobError(f"botev needs m <= n (got m={m} > n={n}): W W^T is singular; use 'adf' or 'mc'")
    fc.matmul("botev", m, n, m)
    cov = w @ w.T
    chol, order = _cholesky_reordered(cov, -b, fc)
    diag = np.diag(chol).copy()
    chol = chol / diag[:, None]  # unit diagonal: z_k is then bounded below by a_k directly
    lower = -b[order] / diag
    x, mu, converged = _saddle_point(chol, lower, fc)
    a, _, _ = _psi_terms(chol, lower, x, mu)
    psi_star = float(np.sum(0.5 * mu**2 - x * mu + truncnorm.log_mass(a, np.inf)))

    check_array(f"botev's {n_samples:,} draws of {m:,} coordinates", (n_samples, m), fix="use fewer samples")
    rng = np.random.default_rng(seed)
    z = np.zeros((n_samples, m))
    psi = np.zeros(n_samples)
    for k in range(m):
        lo = lower[k] - z[:, :k] @ chol[k, :k] - mu[k]
        t = truncnorm.sample(lo, np.inf, rng.random(n_samples))
        z[:, k] = mu[k] + t
        psi += 0.5 * mu[k] ** 2 - z[:, k] * mu[k] + truncnorm.log_mass(lo, np.inf)
    fc.matmul("botev", n_samples, m, m // 2 + 1)  # the triangular dot products, ~ N m^2 in all
    fc.elementwise("botev", n_samples * m, ops=2 * TN_OPS + 6)
    log_p = float(logsumexp(psi) - math.log(n_samples))
    weights = np.exp(psi - psi.max())
    rel_se = float(weights.std(ddof=1) / weights.mean() / math.sqrt(n_samples))
    return log_p, rel_se, {"log_upper_bound": psi_star, "saddle_converged": converged}


def genz(w: NDArray, b: NDArray, maxpts: int, seed: int, p_scale: float, fc: FlopCounter) -> float:
    """scipy's Genz QMC with abseps = 1e-3 * p_scale (its ``releps`` is ignored in scipy 1.17)."""
    from scipy.stats import multivariate_normal

    m, n = w.shape
    if m > n:
        raise LowprobError(f"genz needs m <= n (got m={m} > n={n}): W W^T is singular; use 'adf' or 'mc'")
    fc.matmul("genz", m, n, m)
    fc.charge("genz", maxpts * (m * m + TN_OPS * m))  # an upper bound: scipy does not report its points
    cov = w @ w.T
    p = multivariate_normal.cdf(np.zeros(m), mean=-b, cov=cov, maxpts=maxpts, abseps=1e-3 * p_scale,
                                releps=0.0, rng=np.random.default_rng(seed))
    return math.log(p) if p > 0 else -math.inf


def monte_carlo(w: NDArray, b: NDArray, n_samples: int, seed: int, fc: FlopCounter,
                chunk: int = 65536) -> tuple[float, float | None, int]:
    """Plain sampling: (log P, relative SE, hits); with no hit log P = -inf and rel SE is None."""
    m, n = w.shape
    check_array(f"a chunk of Monte Carlo inputs of dimension {n:,}", (min(chunk, n_samples), n),
                fix="use a smaller input dimension")
    rng = np.random.default_rng(seed)
    hits, done = 0, 0
    while done < n_samples:
        k = min(chunk, n_samples - done)
        y = rng.standard_normal((k, n)) @ w.T + b
        hits += int(np.all(y > 0, axis=1).sum())
        done += k
    fc.matmul("mc", n_samples, n, m)
    fc.elementwise("mc", n_samples * m, ops=3)  # bias, compare, all-reduce
    if hits == 0:
        return -math.inf, None, 0
    p = hits / n_samples
    return math.log(p), math.sqrt((1 - p) / (p * n_samples)), hits


def orthant_prob(w: NDArray, b: NDArray, method: str = "botev", *, n_samples: int = 10_000, seed: int = 0,
                 maxpts: int | None = None) -> OrthantResult:
    """P(W x + b > 0 for every row), x ~ N(0, I), by ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise LowprobError(f"unknown orthant method {method!r}: choose one of {', '.join(METHODS)}")
    n_samples = check_samples(n_samples)
    seed = check_seed(seed)
    maxpts = None if maxpts is None else integer_in(maxpts, "maxpts")
    w, b = _check(w, b)
    fc = FlopCounter()
    start = time.perf_counter()
    rel_se: float | None = None
    extra: dict = {}
    used_seed, used_n = (None, None) if method in MECHANISTIC else (seed, n_samples)
    if method == "adf":
        log_p = adf(w, b, fc)
    elif method == "ep":
        log_p, extra = ep(w, b, fc)
    elif method == "pairwise":
        log_p = pairwise(w, b, fc)
    elif method == "botev":
        log_p, rel_se, extra = botev(w, b, n_samples, seed, fc)
    elif method == "genz":
        pts = maxpts or 2000 * w.shape[0]
        log_p = genz(w, b, pts, seed, math.exp(adf(w, b, fc)), fc)
        used_n = pts
    else:
        log_p, rel_se, hits = monte_carlo(w, b, n_samples, seed, fc)
        extra = {"hits": hits}
    # A probability cannot exceed 1; the pairwise expansion overshoots for strongly correlated rows.
    return OrthantResult(method, min(log_p, 0.0), rel_se, fc.total, time.perf_counter() - start,
                         method in MECHANISTIC, used_seed, used_n, extra)


def random_orthant_instance(m: int, n: int, beta: float, seed: int) -> tuple[NDArray, NDArray]:
    """W_ij ~ N(0, 1/n) and b_i = -beta ||w_i||: each neuron alone is on with probability Phi(-beta)."""
    m, n = integer_in(m, "m (neurons)"), integer_in(n, "n (input dimension)")
    beta = finite(beta, "beta (the bias in units of ||w_i||)")
    check_array(f"W of {m:,} neurons x {n:,} inputs", (m, n), fix="lower m or n")
    rng = np.random.default_rng(check_seed(seed))
    w = rng.standard_normal((m, n)) / math.sqrt(n)
    return w, -beta * np.linalg.norm(w, axis=1)
