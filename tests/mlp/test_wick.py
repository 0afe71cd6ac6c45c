"""Wick coefficients against direct numerical integration, and the bivariate Gaussian primitives."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from lowprob.mlp.gaussian import bvn_cdf, relu_product_mean
from lowprob.mlp.wick import hermite_e, wick_coefficients

SQRT_2PI = math.sqrt(2 * math.pi)
ALPHAS = [-8.0, -3.0, -0.7, 0.0, 1.3, 8.0]
pytestmark = pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")


def _quad_stein(f, mu, sigma, k, p, breakpoints=()):
    """(sigma^-k E[He_k(U) f(mu + sigma U)^p], sigma^-k E[|He_k(U) f^p|]) by adaptive quadrature.

    The second number is the integral's scale: quadrature cannot resolve a value much below
    ~1e-12 of it, so comparisons use it for their absolute tolerance.
    """

    def integrand(u, absolute=False):
        v = hermite_e(k, np.array(u))[k] * f(mu + sigma * u) ** p * math.exp(-0.5 * u * u) / SQRT_2PI
        return abs(v) if absolute else v

    pts = sorted({-12.0, 12.0, *(b for b in breakpoints if -12 < b < 12)})
    total, scale = (sum(integrate.quad(integrand, a, b, args=(absolute,), epsabs=1e-14, epsrel=1e-11,
                                       limit=200)[0] for a, b in itertools.pairwise(pts))
                    for absolute in (False, True))
    return total / sigma**k, scale / sigma**k


@pytest.mark.parametrize("activation, f, alphas, kmax, pmax", [
    ("relu", lambda z: max(z, 0.0), ALPHAS, 6, 4),  # the grid: k <= 6, p <= 4, |alpha| <= 8
    # built from the ReLU forms by reflection and differentiation, so a smaller grid suffices
    ("heaviside", lambda z: float(z > 0), [-3.0, 0.0, 1.3], 4, 3),
    ("abs", abs, [-3.0, 0.0, 1.3], 4, 3),
    ("sgn", lambda z: float(np.sign(z)), [-3.0, 0.0, 1.3], 4, 3),
])
def test_piecewise_closed_forms_match_quadrature(activation, f, alphas, kmax, pmax):
    sigma = 1.7
    mus = np.array(alphas) * sigma
    c = wick_coefficients(activation, mus, sigma**2, kmax=kmax, pmax=pmax)
    for j, mu in enumerate(mus):
        for k in range(kmax + 1):
            for p in range(1, pmax + 1):
                ref, scale = _quad_stein(f, mu, sigma, k, p, breakpoints=[-mu / sigma])
                assert c[k, p, j] == pytest.approx(ref, rel=1e-7, abs=1e-10 * scale + 1e-300), (k, p, mu)


def test_relu_known_values():
    """The spec's closed forms: c0 = mu Phi + s phi, c1 = Phi, E[ReLU^2] = (mu^2 + s^2) Phi + mu s phi."""
    mu, s = 0.4, 1.3
    a = mu / s
    c = wick_coefficients("relu", np.array([mu]), s * s, kmax=2, pmax=2)[:, :, 0]
    phi, Phi = stats.norm.pdf(a), stats.norm.cdf(a)
    assert c[0, 1] == pytest.approx(mu * Phi + s * phi, rel=1e-14)
    assert c[1, 1] == pytest.approx(Phi, rel=1e-14)
    assert c[2, 1] == pytest.approx(phi / s, rel=1e-14)
    assert c[0, 2] == pytest.approx((mu * mu + s * s) * Phi + mu * s * phi, rel=1e-13)
    assert c[2, 2] == pytest.approx(2 * Phi, rel=1e-14)  # k >= p: p! c[k-p+1, 1]


def test_smooth_quadrature_is_exact_for_polynomials():
    mu, s = np.array([0.3, -1.1]), np.array([0.8, 1.5])
    c = wick_coefficients("cube", mu, s**2, kmax=4, pmax=2)
    # E[Z^3] = mu^3 + 3 mu s^2; E[(z^3)'] = 3 E[Z^2]; E[(z^3)'''] = 6; E[(z^6)] = 15 s^6 + ...
    np.testing.assert_allclose(c[0, 1], mu**3 + 3 * mu * s**2, rtol=1e-12)
    np.testing.assert_allclose(c[1, 1], 3 * (mu**2 + s**2), rtol=1e-12)
    np.testing.assert_allclose(c[3, 1], 6.0, rtol=1e-12)
    np.testing.assert_allclose(c[4, 1], 0.0, atol=1e-9)
    m6 = mu**6 + 15 * mu**4 * s**2 + 45 * mu**2 * s**4 + 15 * s**6
    np.testing.assert_allclose(c[0, 2], m6, rtol=1e-12)


def test_tanh_quadrature_matches_adaptive_quadrature():
    """100-node Gauss-Hermite converges geometrically for tanh, limited by its poles at +-i pi/2: ~1e-7."""
    mu, s = 0.6, 1.4
    c = wick_coefficients("tanh", np.array([mu]), s * s, kmax=4, pmax=2)[:, :, 0]
    for k in range(5):
        for p in (1, 2):
            ref, scale = _quad_stein(math.tanh, mu, s, k, p)
            assert c[k, p] == pytest.approx(ref, abs=1e-6 * scale)


def test_variance_floor_keeps_coefficients_finite():
    c = wick_coefficients("relu", np.array([0.0, 1.0, -1.0]), np.array([-1.0, 0.0, 1e-30]), kmax=4, pmax=4)
    assert np.all(np.isfinite(c))


def test_bvn_cdf_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, k = rng.normal(scale=2, size=2)
        rho = rng.uniform(-0.95, 0.95)
        ref = stats.multivariate_normal(cov=[[1, rho], [rho, 1]]).cdf([h, k])
        assert bvn_cdf(h, k, rho) == pytest.approx(ref, abs=1e-7)
    assert bvn_cdf(0.0, 0.0, 0.5) == pytest.approx(1 / 3, rel=1e-14)  # 1/4 + arcsin(rho) / (2 pi)


@pytest.mark.parametrize("mu1, mu2, s1, s2, rho", [
    (0.3, -0.5, 1.0, 1.4, 0.6), (-1.2, 0.8, 0.7, 1.1, -0.4), (2.0, 1.5, 1.0, 0.5, 0.9),
    (0.0, 0.0, 1.0, 1.0, 0.0),
])
def test_relu_product_mean_matches_double_integral(mu1, mu2, s1, s2, rho):
    a1, a2 = mu1 / s1, mu2 / s2
    s = math.sqrt(1 - rho * rho)

    def integrand(u2, u1):  # X = mu1 + s1 u1, Y = mu2 + s2 (rho u1 + s u2), on the region X, Y > 0
        return ((mu1 + s1 * u1) * (mu2 + s2 * (rho * u1 + s * u2))
                * math.exp(-0.5 * (u1 * u1 + u2 * u2)) / (2 * math.pi))

    ref, _ = integrate.dblquad(integrand, -a1, 12, lambda u1: (-a2 - rho * u1) / s, lambda u1: 12,
                               epsabs=1e-12, epsrel=1e-10)
    got = relu_product_mean(np.array(mu1), np.array(mu2), np.array(s1**2), np.array(s2**2), np.array(rho))
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-12)


def test_relu_product_mean_zero_means_is_arc_cosine_kernel():
    rho = np.linspace(-0.9, 0.9, 7)
    theta = np.arccos(rho)
    ref = 1.5 * 0.8 * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    np.testing.assert_allclose(relu_product_mean(0 * rho, 0 * rho, 1.5**2, 0.8**2, rho), ref, rtol=1e-12)
