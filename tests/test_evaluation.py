"""Losses, fits, leave-one-out and temperature selection against hand-computed cases."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from lowprob.evaluation import (
    ZERO_FLOOR,
    abs_log10_error,
    candidate_targets,
    covered,
    fit_log_affine,
    is_loss,
    log_estimate,
    loo_constant_losses,
    loo_losses,
    plain_sampling_wnrv,
    select,
    select_targets,
    target_range,
    work_normalised_variance,
)
from lowprob.evaluation.loss import held_out_fits, loo_fitted
from lowprob.truth import GroundTruth

P = np.array([3e-9, 2e-7, 1e-6, 4e-6, 1e-5, 7e-5, 1e-4])


def L(p, q):
    return p / q - math.log(p / q) - 1


def test_is_loss_by_hand():
    assert is_loss(np.log(1e-6), np.log(1e-6)) == 0
    assert is_loss(np.log(2e-6), np.log(1e-6)) == pytest.approx(1 - math.log(2), rel=1e-12)
    assert is_loss(np.log(1e-6), np.log(2e-6)) == pytest.approx(0.5 + math.log(2) - 1, rel=1e-12)
    assert is_loss(0.0, np.log(1 + 1e-9)) == pytest.approx(0.5e-18, rel=1e-6)  # no cancellation near 0


def test_exact_method_has_zero_loss():
    assert np.abs(loo_losses(np.log(P), np.log(P))).max() < 1e-12


@pytest.mark.parametrize(("scale", "power"), [(10.0, 1.0), (0.01, 1.0), (3.0, 2.0), (1.0, 0.5)])
def test_log_affine_bias_is_removed_by_the_fit(scale, power):
    q = scale * P**power
    a, _ = fit_log_affine(np.log(P), np.log(q))
    assert a == pytest.approx(1 / power, rel=1e-9)
    assert np.abs(loo_losses(np.log(P), np.log(q))).max() < 1e-10
    assert is_loss(np.log(P), np.log(q)).mean() > 0.1  # unfit, the bias costs


def test_fit_matches_a_general_optimiser():
    rng = np.random.default_rng(0)
    lp = np.log(P)
    lq = 0.7 * lp + rng.normal(0, 1.5, len(P)) - 2
    a, b = fit_log_affine(lp, lq)
    res = minimize(lambda x: is_loss(lp, x[0] * lq + x[1]).mean(), [1.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
    assert (a, b) == pytest.approx(tuple(res.x), abs=1e-5)
    assert is_loss(lp, a * lq + b).mean() <= res.fun + 1e-12


def test_loo_by_hand():
    p = np.array([1e-6, 1e-5, 1e-4])
    q = np.array([1e-6, 1e-5, 1e-3])
    # held out 0: the fit through (1e-5, 1e-5) and (1e-3, 1e-4) is a = 1/2, b = ln(1e-5)/2
    q0 = math.exp(0.5 * math.log(1e-6) + 0.5 * math.log(1e-5))
    assert loo_losses(np.log(p), np.log(q))[0] == pytest.approx(L(1e-6, q0), rel=1e-9)


def test_equal_estimates_fit_to_the_mean():
    p = np.array([1e-6, 2e-6, 6e-6])
    a, b = fit_log_affine(np.log(p), np.log(np.full(3, 1e-9)))
    assert a == 0 and math.exp(b) == pytest.approx(3e-6, rel=1e-12)  # no information: the optimal constant


def test_optimal_constant_loo_by_hand():
    p = np.array([1e-6, 2e-6, 3e-6])
    losses = loo_constant_losses(np.log(p))
    assert losses == pytest.approx([L(1e-6, 2.5e-6), L(2e-6, 2e-6), L(3e-6, 1.5e-6)], rel=1e-9)


def test_zero_estimate_is_scored_at_the_floor():
    q = P.copy()
    q[2] = 0.0
    assert log_estimate(q)[2] == math.log(ZERO_FLOOR)
    losses = loo_losses(np.log(P), log_estimate(q))
    assert losses[2] == pytest.approx(L(P[2], ZERO_FLOOR), rel=1e-6)  # the others' fit is exact: a=1, b=0
    always_zero = loo_losses(np.log(P), log_estimate(np.zeros_like(P)))
    assert always_zero == pytest.approx(loo_constant_losses(np.log(P)), rel=1e-9)  # the fit makes it a constant
    assert abs_log10_error(P[2], 0.0) == pytest.approx(math.log10(P[2] / ZERO_FLOOR))


def noisy(k, n, seed):
    rng = np.random.default_rng(seed)
    lp = np.log(10 ** rng.uniform(-8, -4, n))
    lq = lp[None] + rng.normal(0, 1, (k, n)) * np.arange(1, k + 1)[:, None]
    return lp, lq


def test_nested_fits_leave_both_targets_out():
    lp, lq = noisy(3, 6, 2)
    nested = held_out_fits(lp, lq)
    for i in range(6):
        for j in range(6):
            a, b = fit_log_affine(lp, lq, ~np.isin(np.arange(6), [i, j]))
            np.testing.assert_allclose(nested[:, i, j], np.minimum(a * lq[:, j] + b, 0.0), rtol=1e-12)
    np.testing.assert_array_equal(np.diagonal(nested, axis1=1, axis2=2), loo_fitted(lp, lq))


def test_selection_prefers_the_accurate_temperature():
    lp, lq = noisy(4, 16, 0)
    lq[2] = lp + 0.3  # a constant bias only: perfect after the fit
    for sel in select(lp, lq):  # leak-free and oracle
        assert (sel.choice == 2).all()
        assert np.abs(sel.losses).max() < 1e-10


def test_leak_free_choice_ignores_the_scored_target():
    lp, lq = noisy(5, 12, 1)
    sel, _ = select(lp, lq)
    for i in range(len(lp)):
        moved = lp.copy()
        moved[i] += 5.0  # change target i's truth wildly: its temperature must not move
        assert select(moved, lq)[0].choice[i] == sel.choice[i]
    # the oracle does look at it: some perturbation changes its choice
    assert any(select(np.where(np.arange(12) == i, lp + 8, lp), lq)[1].choice[0] != select(lp, lq)[1].choice[0]
               for i in range(12))


def test_leak_free_is_not_better_than_the_oracle_on_average():
    worse = [(sel := select(*noisy(6, 24, s)))[0].losses.mean() >= sel[1].losses.mean() - 1e-12
             for s in range(20)]
    assert sum(worse) >= 15


def gt_from_counts(counts, exact=False):
    counts = torch.tensor(counts, dtype=torch.int64)
    n = int(counts.sum())
    return GroundTruth(counts.double() / n, None if exact else counts, exact, n, 0, "m", "d", "t")


def test_targets_lie_in_the_measurable_rare_range():
    counts = [0, 3, 7, 8, 9, 50, 100, 160, 161, 1000, 0]
    counts.append(1_000_000 - sum(counts))
    gt = gt_from_counts(counts)
    r = target_range(gt, budget=4096)
    assert r.low == 8e-6 and r.high == 0.65 / 4096
    assert candidate_targets(gt, 4096).tolist() == [3, 4, 5, 6]  # 8 <= count <= 158.7
    picked = select_targets(gt, 4096, 3, seed=5)
    assert picked == sorted(picked) and set(picked) <= {3, 4, 5, 6} and len(picked) == 3
    assert picked == select_targets(gt, 4096, 3, seed=5)
    assert select_targets(gt, 4096, 32, seed=5) == [3, 4, 5, 6]
    exact = GroundTruth(torch.tensor([1e-10, 2e-9, 1e-4, 1 - 1e-4 - 2e-9 - 1e-10], dtype=torch.float64),
                        None, True, 100, None, "m", "d", "t")
    assert candidate_targets(exact, 4096).tolist() == [1, 2]


def test_unfit_metrics_by_hand():
    assert covered([1e-6, 1e-6, 1e-6], [0, 2e-6, 1e-6], [1e-6, 3e-6, 1e-6]).tolist() == [True, False, True]
    assert work_normalised_variance(1e-3, [1e-3, 3e-3], [100, 100]) == pytest.approx(2e-6 / 1e-6 * 100)
    assert plain_sampling_wnrv(0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        work_normalised_variance(1e-3, [1e-3], [1])


def test_spread_targets_are_evenly_spaced_in_log_p():
    from lowprob.evaluation import select_targets
    from lowprob.truth import GroundTruth

    p = torch.zeros(400, dtype=torch.float64)
    p[:300] = torch.logspace(-13, -4, 300, dtype=torch.float64)  # 300 tokens from 1e-13 to 1e-4
    p[300] = 1 - p.sum()
    gt = GroundTruth(p, None, True, 1, None, "m", "d", "0")
    targets = select_targets(gt, 4096, 14, seed=0, spread=(1e-12, 1e-5))
    logs = sorted(math.log10(p[t]) for t in targets)
    assert len(targets) == 14 and logs[0] >= -12 and logs[-1] <= -5
    gaps = [b - a for a, b in itertools.pairwise(logs)]
    assert max(gaps) < 0.6 and min(gaps) > 0.4  # 7 decades / 14 targets = 0.5 apart
    assert select_targets(gt, 4096, 500, seed=0, spread=(1e-12, 1e-5)) == sorted(
        int(i) for i in torch.nonzero((p >= 1e-12) & (p <= 1e-5)).flatten())  # asked for more: all of them
