"""Monte Carlo: honest standard errors, float64 accumulation, the cached ground truth, FLOP rules."""

import numpy as np
import pytest
from scipy import stats

from lowprob.errors import LowprobError
from lowprob.mlp.flops import FlopCounter, forward_flops
from lowprob.mlp.montecarlo import ground_truth, mc_moments
from lowprob.mlp.networks import load_spec, random_mlp, save_spec


def test_standard_errors_cover_the_exact_mean():
    """95% intervals around MC means of a one-layer ReLU net (exact mean known) over 200 seeds.

    Coordinates within a seed are correlated, so the binomial band uses the 200 seeds only:
    coverage must lie within 0.95 +- 4 sqrt(0.95 * 0.05 / 200) = [0.888, 1.0].
    """
    spec = random_mlp(6, 1, seed=4, bias_std=0.5)
    sd = np.linalg.norm(spec.weights[0], axis=1)
    b = spec.biases[0]
    exact = b * stats.norm.cdf(b / sd) + sd * stats.norm.pdf(b / sd)
    covered = []
    for seed in range(200):
        r = mc_moments(spec, 400, seed=seed, dtype="float64")
        covered.append(np.abs(r.act_mean[0] - exact) <= 1.96 * r.act_se(0))
    coverage = np.mean(covered)
    assert 0.888 < coverage < 0.995, coverage


def test_mse_over_var_is_one_over_n():
    """E[MSE] = mean Var / N: over 40 seeds the average of N * MSE / Var must be 1 within ~3 SE."""
    spec = random_mlp(16, 3, seed=1)
    gt = mc_moments(spec, 400_000, seed=999, layers=[2], dtype="float64")
    n = 200
    ratios = [np.mean((mc_moments(spec, n, seed=s, layers=[2]).pre_mean[2] - gt.pre_mean[2]) ** 2)
              / np.mean(gt.pre_var[2]) * n for s in range(40)]
    assert abs(np.mean(ratios) - 1.0 - n / gt.n_samples) < 3 * np.std(ratios) / np.sqrt(40)


def test_chunked_float64_statistics_match_one_pass_numpy():
    """Chan's chunk merge must reproduce numpy's one-pass mean and variance of the same draws."""
    import torch

    spec = random_mlp(5, 2, seed=0)
    n, chunk = 5000, 700
    gen = torch.Generator().manual_seed(3)
    x = np.concatenate([torch.randn(min(chunk, n - i), 5, generator=gen, dtype=torch.float64).numpy()
                        for i in range(0, n, chunk)])
    r = mc_moments(spec, n, seed=3, chunk=chunk, dtype="float64")
    pre0 = x @ spec.weights[0].T + spec.biases[0]
    np.testing.assert_allclose(r.pre_mean[0], pre0.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.pre_var[0], pre0.var(0, ddof=1), rtol=1e-10)


def test_ground_truth_is_cached_by_content(tmp_path):
    spec = random_mlp(4, 2, seed=0)
    first = ground_truth(spec, 3000, seed=1, cache_dir=tmp_path, layers=[1])
    assert len(list(tmp_path.glob("gt-*.npz"))) == 1
    again = ground_truth(spec, 3000, seed=1, cache_dir=tmp_path, layers=[1])
    np.testing.assert_array_equal(first.pre_mean[1], again.pre_mean[1])
    assert again.pre_mean[0] is None and again.seconds == first.seconds
    other = random_mlp(4, 2, seed=1)
    ground_truth(other, 3000, seed=1, cache_dir=tmp_path, layers=[1])
    assert len(list(tmp_path.glob("gt-*.npz"))) == 2


def test_forward_flops_rules():
    # 2 m n per matrix-vector product, plus bias and activation per output
    assert forward_flops([3, 4, 5]) == 2 * 3 * 4 + 2 * 4 + 2 * 4 * 5 + 2 * 5
    fc = FlopCounter()
    fc.matmul("a", 2, 3, 4)
    fc.reduce("b", 10, count=2)
    fc.elementwise("b", 7, ops=2)
    assert fc.by_region == {"a": 48.0, "b": 18.0 + 14.0}
    assert mc_moments(random_mlp(3, 2, seed=0), 10, seed=0).flops == 10 * forward_flops([3, 3, 3])


def test_spec_roundtrip_and_validation(tmp_path):
    spec = random_mlp(5, 3, seed=2, bias_std=0.1)
    save_spec(spec, tmp_path / "net.npz")
    assert load_spec(tmp_path / "net.npz").content_hash() == spec.content_hash()
    np.savez(tmp_path / "bad.npz", W0=np.ones((2, 3)))
    with pytest.raises(LowprobError, match="missing: b0, activations"):
        load_spec(tmp_path / "bad.npz")
    with pytest.raises(LowprobError, match="n_samples must be >= 2"):
        mc_moments(spec, 1, seed=0)
