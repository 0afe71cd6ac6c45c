"""Wick (Stein) coefficients ``c[k, p] = E[d^k/dz^k act(z)^p]`` for ``z ~ N(mu, var)``.

They are the per-neuron numbers through which every nonlinearity enters cumulant propagation:
by Stein's identity ``E[He_k(U) f(mu + sigma U)] = sigma^k E[f^(k)(Z)]``, so an input cumulant
entry touching a neuron k times multiplies that neuron's ``c[k, p]``.

ReLU and its relatives have closed forms (derivatives are distributional: ReLU'' is a Dirac delta);
smooth activations use 100-node Gauss-Hermite quadrature, exact for polynomials of degree < 200.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from lowprob.mlp.activations import ACTIVATIONS, PIECEWISE, check_activation
from lowprob.mlp.flops import FlopCounter

VAR_FLOOR = 1e-10  # truncated expansions can make variances negative or zero [ARC]
QUADRATURE_NODES = 100
CLOSED_FORM_OPS = 12  # elementwise operations charged per closed-form coefficient and neuron

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def std_normal_pdf(x: NDArray) -> NDArray:
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def hermite_e(k: int, x: NDArray) -> list[NDArray]:
    """Probabilists' Hermite polynomials He_0..He_k at x (three-term recursion)."""
    out = [np.ones_like(x), x.copy()]
    for j in range(1, k):
        out.append(x * out[j] - j * out[j - 1])
    return out[: k + 1]


def _relu_p1(alpha: NDArray, sigma: NDArray, kmax: int) -> list[NDArray]:
    """c[k, 1] for ReLU, k = 0..kmax: E[ReLU], Phi(alpha), then (-1)^k sigma^(1-k) He_(k-2) phi."""
    pdf, cdf = std_normal_pdf(alpha), ndtr(alpha)
    out = [sigma * (alpha * cdf + pdf), cdf]
    he = hermite_e(max(kmax - 2, 0), alpha)
    out += [(-1) ** k * sigma ** (1 - k) * he[k - 2] * pdf for k in range(2, kmax + 1)]
    return out[: kmax + 1]


def _relu_moments(alpha: NDArray, sigma: NDArray, qmax: int) -> list[NDArray]:
    """E[ReLU(Z)^q], q = 0..qmax, from the partial moments M_j = E[U^j; U > -alpha].

    (mu + sigma U)^q = sigma^q (alpha + U)^q, and M_j = (j-1) M_(j-2) + (-alpha)^(j-1) phi(alpha).
    """
    pdf = std_normal_pdf(alpha)
    partial = [ndtr(alpha), pdf]
    for j in range(2, qmax + 1):
        partial.append((j - 1) * partial[j - 2] + (-alpha) ** (j - 1) * pdf)
    return [sigma**q * sum(math.comb(q, j) * alpha ** (q - j) * partial[j] for j in range(q + 1))
            for q in range(qmax + 1)]


def _relu(mu: NDArray, sigma: NDArray, kmax: int, pmax: int) -> NDArray:
    alpha = mu / sigma
    p1 = _relu_p1(alpha, sigma, kmax + 1)
    moments = _relu_moments(alpha, sigma, pmax)
    out = np.zeros((kmax + 1, pmax + 1, *mu.shape))
    out[0, 0] = 1.0
    for p in range(1, pmax + 1):
        for k in range(kmax + 1):
            # d^p (z^p H(z)) = p! H(z); below order p the derivative is p!/(p-k)! ReLU^(p-k).
            out[k, p] = (math.factorial(p) * p1[k - p + 1] if k >= p
                         else math.factorial(p) / math.factorial(p - k) * moments[p - k])
    return out


def _heaviside(mu: NDArray, sigma: NDArray, kmax: int, pmax: int) -> NDArray:
    """H^p = H and H = ReLU', so c[k, p] = ReLU's c[k + 1, 1]."""
    p1 = _relu_p1(mu / sigma, sigma, kmax + 1)
    out = np.zeros((kmax + 1, pmax + 1, *mu.shape))
    out[0, 0] = 1.0
    out[:, 1:] = np.stack(p1[1:])[:, None]
    return out


def _mirror(closed_form, mu: NDArray, sigma: NDArray, kmax: int, pmax: int, parity: int) -> NDArray:
    """f(z)^p + s_p f(-z)^p, whose derivatives pick up (-1)^k; s_p = 1 (abs) or (-1)^p (sgn)."""
    ks = np.arange(kmax + 1).reshape(-1, 1, *([1] * mu.ndim))
    ps = np.arange(pmax + 1).reshape(1, -1, *([1] * mu.ndim))
    sign = (-1.0) ** ks * (-1.0) ** (parity * ps)
    out = closed_form(mu, sigma, kmax, pmax) + sign * closed_form(-mu, sigma, kmax, pmax)
    out[0, 0] = 1.0
    return out


def _quadrature(name: str, mu: NDArray, sigma: NDArray, kmax: int, pmax: int) -> NDArray:
    import torch

    nodes, weights = np.polynomial.hermite_e.hermegauss(QUADRATURE_NODES)
    weights = weights / weights.sum()
    z = torch.from_numpy(mu[..., None] + sigma[..., None] * nodes)
    f = ACTIVATIONS[name](z).numpy()
    he = hermite_e(kmax, nodes)
    powers = [np.ones_like(f)]
    for _ in range(pmax):
        powers.append(powers[-1] * f)
    return np.stack([np.stack([(powers[p] * (he[k] * weights)).sum(-1) / sigma**k
                               for p in range(pmax + 1)]) for k in range(kmax + 1)])


def wick_coefficients(activation: str, mu: ArrayLike, var: ArrayLike, kmax: int, pmax: int,
                      fc: FlopCounter | None = None) -> NDArray:
    """Array ``c`` of shape (kmax+1, pmax+1, *mu.shape) with ``c[k, p] = E[d^k act(Z)^p]``.

    ``var`` is floored at 1e-10 so that a truncated expansion's negative variance cannot produce
    NaN; Z is then (almost) deterministic and the coefficients are those of a narrow Gaussian.
    """
    check_activation(activation)
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.sqrt(np.maximum(np.broadcast_to(np.asarray(var, dtype=np.float64), mu.shape), VAR_FLOOR))
    if activation == "relu":
        out = _relu(mu, sigma, kmax, pmax)
    elif activation == "heaviside":
        out = _heaviside(mu, sigma, kmax, pmax)
    elif activation == "abs":
        out = _mirror(_relu, mu, sigma, kmax, pmax, parity=0)
    elif activation == "sgn":
        out = _mirror(_heaviside, mu, sigma, kmax, pmax, parity=1)
    else:
        out = _quadrature(activation, mu, sigma, kmax, pmax)
    if fc is not None:
        ops = CLOSED_FORM_OPS if activation in PIECEWISE else 3 * QUADRATURE_NODES
        fc.elementwise("wick", mu.size * (kmax + 1) * (pmax + 1), ops)
    return out
