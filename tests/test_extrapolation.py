"""QLD and GLD against closed forms and Gaussian ground truth."""

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from lowprob import ArgmaxIs, Transformer, TransformerConfig, estimate
from lowprob.distributions.tiny import tiny_distribution
from lowprob.estimators.extrapolation import gld_probability, min_norm_point, qld_probability


@pytest.mark.parametrize("seed", range(5))
def test_min_norm_point_solves_the_least_distance_program(seed):
    rng = np.random.default_rng(seed)
    g, h = rng.normal(size=(6, 5)), rng.normal(size=6)
    x = min_norm_point(g, h)
    assert (g @ x - h).min() >= -1e-9
    ref = optimize.minimize(lambda v: v @ v, np.full(5, 3.0), method="SLSQP",
                            constraints=[{"type": "ineq", "fun": lambda v: g @ v - h}], options={"ftol": 1e-14})
    assert np.linalg.norm(x) == pytest.approx(np.linalg.norm(ref.x), abs=1e-6)


def test_min_norm_point_reports_infeasibility_and_the_origin():
    assert min_norm_point(np.array([[1.0], [-1.0]]), np.array([1.0, 1.0])) is None  # x >= 1 and x <= -1
    assert np.allclose(min_norm_point(np.array([[1.0, 0.0]]), np.array([-2.0])), 0.0)  # 0 already feasible


@pytest.fixture(scope="module")
def gaussian_problem():
    """Activations that are exactly Gaussian, and P(argmax = t) from 4M fresh draws."""
    rng = np.random.default_rng(0)
    d, vocab = 8, 40
    mean, mix = rng.normal(size=d), rng.normal(size=(d, d)) / math.sqrt(d)
    w = torch.tensor(rng.normal(size=(d, vocab)))
    b = torch.tensor(rng.normal(size=vocab) * 0.1)
    acts = torch.tensor(mean + rng.normal(size=(1 << 15, d)) @ mix.T)
    big = torch.tensor(mean + rng.normal(size=(4_000_000, d)) @ mix.T)
    counts = torch.bincount(torch.cat([(c @ w + b).argmax(-1) for c in big.split(1 << 19)]), minlength=vocab)
    return acts, w, b, counts.double() / len(big)


def test_qld_is_exact_for_gaussian_activations(gaussian_problem):
    acts, w, b, truth = gaussian_problem
    targets = [t for t in range(len(truth)) if 1e-4 < truth[t] < 2e-2]
    assert len(targets) >= 8
    log_ratios = []
    for t in targets:
        p, diag = qld_probability(acts, w, b, t)
        assert diag["direction"] == "min-norm"
        log_ratios.append(math.log(p / truth[t].item()))
    assert max(map(abs, log_ratios)) < math.log(1.35), log_ratios  # the reference code's bugs give 10-1000x
    assert abs(np.mean(log_ratios)) < 0.08


def test_qld_when_the_target_is_already_the_argmax_at_the_mean(gaussian_problem):
    acts, w, b, truth = gaussian_problem
    t = int((acts.mean(0) @ w + b).argmax())
    p, diag = qld_probability(acts, w, b, t)
    assert diag["direction"] == "tightest-constraint"
    assert p == pytest.approx(truth[t].item(), rel=0.1)


def test_gld_matches_its_closed_form_for_two_tokens():
    rng = np.random.default_rng(1)
    d = 6
    mean, mix = rng.normal(size=d), rng.normal(size=(d, d)) / math.sqrt(d)
    w, b = torch.tensor(rng.normal(size=(d, 2))), torch.tensor([0.3, 1.9])
    u = (w[:, 0] - w[:, 1]).numpy()
    mu, sigma = u @ mean + 0.3 - 1.9, math.sqrt(u @ mix @ mix.T @ u)  # Δ is exactly N(mu, sigma^2)
    acts = torch.tensor(mean + rng.normal(size=(50_000, d)) @ mix.T)
    p, (lo, hi), diag = gld_probability(acts, w, b, 0)
    assert diag["mu"] == pytest.approx(mu, abs=4 * sigma / math.sqrt(50_000))
    assert lo <= stats.norm.cdf(mu / sigma) <= hi and p == pytest.approx(stats.norm.cdf(mu / sigma), rel=0.1)


def test_qld_and_gld_through_the_api_share_activations():
    model = Transformer(TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=16, n_ctx=8, d_vocab=32,
                                          init_std=0.3), seed=0)
    dist = tiny_distribution("tiny-zipf", 32)
    first = estimate(model, dist, ArgmaxIs(3), method="qld", budget=2048, seed=0)
    second = estimate(model, dist, ArgmaxIs(4), method="qld", budget=2048, seed=0)
    again = estimate(model, dist, ArgmaxIs(3), method="qld", budget=2048, seed=0)
    assert not first.diagnostics["cache_hit"] and second.diagnostics["cache_hit"]
    assert again.probability == first.probability and again.interval == first.interval
    assert first.diagnostics["activations_shared"] and first.cost.forward_passes == 2048
    for est in (first, second, estimate(model, dist, ArgmaxIs(3), method="gld", budget=2048, seed=0)):
        assert math.isfinite(est.probability) and 0 <= est.interval[0] <= est.probability <= est.interval[1]
