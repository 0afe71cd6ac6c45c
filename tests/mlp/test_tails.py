"""Tail probabilities from the propagated description."""

import numpy as np
import pytest
from scipy import stats

from lowprob.errors import LowprobError
from lowprob.mlp.montecarlo import mc_moments
from lowprob.mlp.networks import random_mlp
from lowprob.mlp.tails import tail_network, tail_probs


@pytest.mark.parametrize("K", [1, 2, 3])
def test_gaussian_readout_is_exact(K):
    """With no hidden layer z = W x - t is Gaussian, so every K gives Phi(-t / ||w||)."""
    spec = tail_network(8, hidden=0, threshold=2.5, seed=0)
    sd = np.linalg.norm(spec.weights[0], axis=1)
    np.testing.assert_allclose(tail_probs(spec, K).p, stats.norm.sf(2.5 / sd), rtol=1e-12)


def test_edgeworth_beats_gaussian_and_stays_in_range():
    """One ReLU layer, n = 16, t = 1.5: compare with 400k samples on the well-resolved neurons."""
    spec = tail_network(16, hidden=1, threshold=1.5, seed=3)
    gt = mc_moments(spec, 400_000, seed=5, layers=[1], dtype="float64")
    p = gt.act_mean[1]
    ok = p * gt.n_samples > 400  # relative SE < 5%
    errs = {K: np.median(np.abs(tail_probs(spec, K).p[ok] / p[ok] - 1)) for K in (2, 3)}
    assert errs[3] < errs[2], errs
    est = tail_probs(spec, 3)
    assert np.all((est.p >= 0) & (est.p <= 1))
    np.testing.assert_array_equal(est.clamped, (est.raw < 0) | (est.raw > 1))


def test_needs_heaviside_readout():
    with pytest.raises(LowprobError, match="heaviside"):
        tail_probs(random_mlp(4, 2, seed=0), 2)
