"""Cumulant propagation: exact cases, dense == factored, and accuracy ordering against sampling."""

import numpy as np
import pytest
from scipy import stats

from lowprob.errors import LowprobError
from lowprob.mlp.montecarlo import mc_moments
from lowprob.mlp.networks import make_spec, random_mlp
from lowprob.mlp.propagation import estimate_means
from lowprob.mlp.scoreboard import mse_over_var, trap_sampling

VARIANTS = [(1, {}), (2, {}), (2, {"pair": "exact"}), (3, {"kappa3": "dense"}), (3, {"kappa3": "factored"})]


@pytest.mark.parametrize("K, options", VARIANTS)
def test_one_layer_equals_closed_form_relu_mean(K, options):
    """After one ReLU the pre-activations are exactly Gaussian: every K must give E[ReLU] exactly."""
    spec = random_mlp(12, 2, seed=3, bias_std=0.7)
    est = estimate_means(spec, K, **options)
    w0, b0, w1, b1 = spec.weights[0], spec.biases[0], spec.weights[1], spec.biases[1]
    sd = np.linalg.norm(w0, axis=1)
    relu_mean = b0 * stats.norm.cdf(b0 / sd) + sd * stats.norm.pdf(b0 / sd)
    np.testing.assert_allclose(est.act_mean[0], relu_mean, rtol=1e-13)
    np.testing.assert_allclose(est.pre_mean[1], w1 @ relu_mean + b1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(est.pre_var[0], sd**2, rtol=1e-13)


def test_square_then_cube_chain_gives_fifteen():
    """x ~ N(0,1), y = x^2, E[y^3] = E[x^6] = 15: needs kappa3 of y (K = 3); K = 2 misses it (gives 7)."""
    spec = make_spec([[[1.0]], [[1.0]]], [[0.0], [0.0]], ["square", "cube"])
    assert estimate_means(spec, 3, kappa3="dense").act_mean[1][0] == pytest.approx(15.0, rel=1e-12)
    assert estimate_means(spec, 3, kappa3="factored").act_mean[1][0] == pytest.approx(15.0, rel=1e-12)
    assert estimate_means(spec, 2).act_mean[1][0] == pytest.approx(7.0, rel=1e-12)


def test_quadratic_network_is_exact_at_k3():
    """x -> (W0 x + b0)^2 -> W1 . + b1 -> square: Isserlis gives the exact mean of the last activation."""
    rng = np.random.default_rng(0)
    w0, w1 = rng.normal(size=(5, 4)) / 2, rng.normal(size=(3, 5)) / 2
    b0, b1 = rng.normal(size=5), rng.normal(size=3)
    spec = make_spec([w0, w1], [b0, b1], ["square", "square"])
    s = w0 @ w0.T
    mean_y = b0**2 + np.diag(s)
    cov_y = 2 * s**2 + 4 * np.outer(b0, b0) * s
    mean_z = w1 @ mean_y + b1
    exact = mean_z**2 + np.diag(w1 @ cov_y @ w1.T)
    np.testing.assert_allclose(estimate_means(spec, 3).act_mean[1], exact, rtol=1e-11)
    assert not np.allclose(estimate_means(spec, 2).act_mean[1], exact, rtol=1e-3)


@pytest.mark.parametrize("K", [2, 3])
def test_identity_network_keeps_exact_gaussian(K):
    spec = random_mlp(6, 3, seed=1, activation="identity", bias_std=0.5)
    est = estimate_means(spec, K)
    w = spec.weights[2] @ spec.weights[1] @ spec.weights[0]
    np.testing.assert_allclose(est.pre_var[2], np.diag(w @ w.T), rtol=1e-10)


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_dense_and_factored_kappa3_agree(dtype, tol):
    spec = random_mlp(10, 5, seed=7, bias_std=0.3)
    dense = estimate_means(spec, 3, kappa3="dense")
    factored = estimate_means(spec, 3, kappa3="factored", dtype=dtype)
    for a, b in zip(dense.pre_mean + dense.pre_kappa3, factored.pre_mean + factored.pre_kappa3, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("activation, bias_std", [("relu", 0.0), ("gelu", 0.0), ("tanh", 0.5)])
def test_k_ordering_against_sampling(activation, bias_std):
    """n = 32, 3 hidden layers: MSE/Var must fall with K (the spec's [V] table: 3.6e-2, 3.4e-3, 8e-4
    at 4 hidden layers). 400k samples put the ground truth's floor at 2.5e-6, far below K = 3.
    (tanh gets biases: without them every mean is 0 by symmetry and all K are trivially exact.)"""
    spec = random_mlp(32, 4, seed=0, activation=activation, bias_std=bias_std)
    gt = mc_moments(spec, 400_000, seed=11, layers=[3], dtype="float64")
    errs = []
    for K in (1, 2, 3):
        est = estimate_means(spec, K)
        errs.append(mse_over_var(est.pre_mean[3], gt.pre_mean[3], gt.pre_var[3], gt.n_samples)["corrected"])
    assert errs[0] > 2 * errs[1] > 4 * errs[2] > 0, errs


def test_estimates_are_mechanistic_and_finite_even_when_dead():
    """Huge negative biases kill every neuron: variances hit the floor, nothing may become NaN."""
    base = random_mlp(8, 4, seed=2)
    spec = make_spec(base.weights, [np.full(8, -30.0)] * 4, base.activations)
    with trap_sampling():
        for K, options in VARIANTS:
            est = estimate_means(spec, K, **options)
            assert all(np.all(np.isfinite(m)) for m in est.pre_mean + est.act_mean)
            assert est.mechanistic


def test_average_metric_is_close_to_exact_for_iid_weights():
    spec = random_mlp(64, 4, seed=5)
    exact, avg = (estimate_means(spec, 3, metric=m).pre_mean[3] for m in ("exact", "average"))
    assert np.max(np.abs(exact - avg)) < 0.05 * np.std(exact)


def test_flops_grow_with_the_right_power_of_width():
    """Dense cost is O(n^(K+1)) (K = 1: n^2, K = 2: n^3, K = 3 dense: n^4); factored K = 3 is O(n^3)."""
    def growth(K, n, **options):
        f = [estimate_means(random_mlp(m, 3, seed=0), K, **options).flops for m in (n, 2 * n)]
        return np.log2(f[1] / f[0])

    assert 1.7 < growth(1, 128) <= 2.0
    assert 2.7 < growth(2, 64) <= 3.0
    assert 3.6 < growth(3, 24, kappa3="dense") <= 4.0
    assert 2.7 < growth(3, 48, kappa3="factored") <= 3.0


def test_bad_options_raise_user_errors():
    spec = random_mlp(4, 2, seed=0)
    with pytest.raises(LowprobError, match="K must be"):
        estimate_means(spec, 5)
    with pytest.raises(LowprobError, match="metric"):
        estimate_means(spec, 2, metric="fancy")
    with pytest.raises(LowprobError, match="pair='exact'"):
        estimate_means(spec, 3, pair="exact")
