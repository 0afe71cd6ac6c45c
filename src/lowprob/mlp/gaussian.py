"""Exact low-dimensional Gaussian primitives: the bivariate CDF and the bivariate ReLU moment."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr, owens_t

from lowprob.mlp.wick import VAR_FLOOR, std_normal_pdf

RHO_CLIP = 1.0 - 1e-12  # |rho| = 1 is a degenerate (one-dimensional) pair; stay just inside
RELU_PRODUCT_OPS = 60  # elementwise operations charged per pair by relu_product_mean


def bvn_cdf(h: NDArray, k: NDArray, rho: NDArray) -> NDArray:
    """Phi_2(h, k; rho) = P(U < h, V < k) for standard normals with correlation rho (Owen's T form).

    Phi_2 = (Phi(h) + Phi(k)) / 2 - T(h, a_h) - T(k, a_k) - beta, with beta = 1/2 when h and k
    have opposite signs. A zero argument is nudged to +1e-300, which leaves the value unchanged.
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (h, k, rho)))
    rho = np.clip(rho, -RHO_CLIP, RHO_CLIP)
    h = np.where(h == 0, 1e-300, h)
    k = np.where(k == 0, 1e-300, k)
    s = np.sqrt(1.0 - rho * rho)
    beta = np.where((h > 0) == (k > 0), 0.0, 0.5)
    return (0.5 * (ndtr(h) + ndtr(k)) - owens_t(h, (k - rho * h) / (h * s))
            - owens_t(k, (h - rho * k) / (k * s)) - beta)


def relu_product_mean(mu1: NDArray, mu2: NDArray, var1: NDArray, var2: NDArray, rho: NDArray) -> NDArray:
    """E[ReLU(X) ReLU(Y)] for a bivariate normal (X, Y), exactly.

    With alpha = mu / sigma, s = sqrt(1 - rho^2), L = Phi_2(alpha1, alpha2; rho) and
    A1 = phi(alpha1) Phi((alpha2 - rho alpha1) / s):
    mu1 mu2 L + mu1 s2 (A2 + rho A1) + mu2 s1 (A1 + rho A2)
    + s1 s2 [rho L - rho alpha1 A1 - rho alpha2 A2 + s exp(-Q/2) / (2 pi)].
    """
    s1, s2 = np.sqrt(np.maximum(var1, VAR_FLOOR)), np.sqrt(np.maximum(var2, VAR_FLOOR))
    rho = np.clip(rho, -RHO_CLIP, RHO_CLIP)
    a1, a2 = mu1 / s1, mu2 / s2
    s = np.sqrt(1.0 - rho * rho)
    big_l = bvn_cdf(a1, a2, rho)
    A1 = std_normal_pdf(a1) * ndtr((a2 - rho * a1) / s)
    A2 = std_normal_pdf(a2) * ndtr((a1 - rho * a2) / s)
    q = (a1 * a1 - 2 * rho * a1 * a2 + a2 * a2) / (s * s)
    return (mu1 * mu2 * big_l + mu1 * s2 * (A2 + rho * A1) + mu2 * s1 * (A1 + rho * A2)
            + s1 * s2 * (rho * big_l - rho * a1 * A1 - rho * a2 * A2 + s * np.exp(-0.5 * q) / (2 * np.pi)))

