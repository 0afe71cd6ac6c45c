"""The sampling-efficiency ratio is 1 for sampling itself, and the mechanistic trap works."""

import numpy as np
import pytest

from lowprob.mlp.montecarlo import mc_moments
from lowprob.mlp.networks import random_mlp
from lowprob.mlp.scoreboard import (
    SamplingTrapped,
    bootstrap_mean_ci,
    means_ratio,
    mse_over_var,
    probability_ratio,
    trap_sampling,
)


def test_ratio_of_monte_carlo_at_its_expected_error_is_one():
    c_fwd, n = 1234.0, 5000
    assert means_ratio(1.0 / n, c_fwd, n * c_fwd) == pytest.approx(1.0)
    p = 1e-4
    assert probability_ratio(p, np.sqrt((1 - p) / (p * n)), c_fwd, n * c_fwd) == pytest.approx(1.0)


def test_mse_over_var_subtracts_the_ground_truth_floor():
    truth = np.zeros(4)
    err = mse_over_var(np.full(4, 0.1), truth, np.ones(4), truth_n=100)
    assert err["raw"] == pytest.approx(0.01) and err["corrected"] == pytest.approx(0.0)


def test_trap_blocks_sampling_and_restores_it():
    spec = random_mlp(3, 1, seed=0)
    with trap_sampling(), pytest.raises(SamplingTrapped):
        mc_moments(spec, 10, seed=0)
    with trap_sampling(), pytest.raises(SamplingTrapped):
        np.random.default_rng(0)
    assert mc_moments(spec, 10, seed=0).n_samples == 10


def test_bootstrap_interval_contains_the_mean():
    values = np.random.default_rng(1).normal(size=50)
    lo, hi = bootstrap_mean_ci(values)
    assert lo < values.mean() < hi
