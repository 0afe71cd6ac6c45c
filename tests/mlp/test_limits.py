"""The public lowprob.mlp functions refuse careless values up front, in one line that says what to fix:
arrays that cannot fit, sample counts that never finish, seeds outside 0 .. 2^32 - 1, unreadable weights."""

import math

import numpy as np
import pytest

from lowprob.errors import LowprobError
from lowprob.mlp.montecarlo import mc_moments
from lowprob.mlp.networks import load_spec, make_spec, random_mlp
from lowprob.mlp.orthant import orthant_prob, random_orthant_instance
from lowprob.mlp.propagation import estimate_means
from lowprob.mlp.tails import tail_network

BIG = 2**70


@pytest.fixture
def ceiling_500kb(monkeypatch):
    """A machine-independent memory ceiling of 500 kB."""
    from lowprob.mlp import limits

    monkeypatch.setattr(limits, "memory_ceiling", lambda: (500_000, "a test's 1 MB"))


@pytest.mark.parametrize(("call", "match"), [
    (lambda: random_mlp(BIG, 5, 0), "weights of a random MLP of width 1,180,591,620,717,411,303,424 .* would need"),
    (lambda: random_mlp(10**6, 2, 0), r"would need 1.49e\+4 GiB \(2,000,000,000,000 numbers"),
    (lambda: random_mlp(8, 2, -1), "seed must be a non-negative integer"),
    (lambda: random_mlp(8, 2, 2**32), "seed must be below 2"),
    (lambda: random_mlp(8, 10**9, 0), "depth must be at most 10,000 layers"),
    (lambda: random_mlp(8.5, 2, 0), r"width must be >= 1 \(an integer\)"),
    (lambda: random_mlp(8, 2, 0, in_width=0), "in_width must be >= 1"),
    (lambda: tail_network(8, 1, math.nan, 0), "threshold must be a finite number"),
    (lambda: tail_network(8, -1, 1.0, 0), "hidden must be >= 0"),
    (lambda: random_orthant_instance(BIG, 5, 0.3, 0), "W of 1,180,591,620,717,411,303,424 neurons .* would need"),
    (lambda: random_orthant_instance(5, 5, math.nan, 0), "beta .* must be a finite number"),
    (lambda: random_orthant_instance(5, 5, 0.3, -1), "seed must be a non-negative integer"),
    (lambda: make_spec([["a", "b"]], [[0.0]], ["relu"]), "arrays of real numbers"),
])
def test_public_functions_refuse_careless_values(call, match):
    with pytest.raises(LowprobError, match=match):
        call()


def test_samplers_refuse_counts_that_never_finish_and_bad_seeds():
    spec = random_mlp(4, 2, 0)
    with pytest.raises(LowprobError, match=r"n_samples must be at most 1,099,511,627,776 .*12 days"):
        mc_moments(spec, BIG, 0)
    with pytest.raises(LowprobError, match="seed must be a non-negative integer"):
        mc_moments(spec, 100, -1)
    with pytest.raises(LowprobError, match="chunk must be >= 1"):
        mc_moments(spec, 100, 0, chunk=0)
    w, b = random_orthant_instance(3, 4, 0.3, 0)
    with pytest.raises(LowprobError, match="n_samples must be at most"):
        orthant_prob(w, b, "mc", n_samples=BIG)
    with pytest.raises(LowprobError, match="seed must be a non-negative integer"):
        orthant_prob(w, b, "mc", seed=-1)
    with pytest.raises(LowprobError, match="botev's 1,000,000,000,000 draws of 3 coordinates would need"):
        orthant_prob(w, b, "botev", n_samples=10**12)


def test_propagation_refuses_the_state_that_cannot_fit(ceiling_500kb):
    spec = random_mlp(100, 5, 0)  # weights: 400 kB
    assert estimate_means(spec, 2).pre_mean[-1].shape == (100,)  # covariance: 80 kB
    with pytest.raises(LowprobError, match=r"K=3's factored kappa3 at width 100 and depth 5 would need 0.000671 GiB "
                                           r"\(100 x 900 numbers of 8 bytes\), past the 0.000466 GiB"):
        estimate_means(spec, 3)
    with pytest.raises(LowprobError, match="K=3's dense kappa3"):
        estimate_means(spec, 3, kappa3="dense")


def test_memory_ceiling_is_half_of_a_lower_ulimit(monkeypatch):
    from lowprob.mlp import limits

    if limits.resource is None:
        pytest.skip("no resource module (Windows)")
    monkeypatch.setattr(limits.resource, "getrlimit", lambda _: (8 << 30, limits.resource.RLIM_INFINITY))
    assert limits.memory_ceiling()[0] <= 4 << 30
    with pytest.raises(LowprobError, match=r"past the .* one array may take \(half of "):
        random_mlp(40_000, 2, 0)  # 23.8 GiB of weights


@pytest.mark.parametrize(("content", "match"), [
    (b"", r"cannot read MLP weights from .*\(the file is empty\): write them with numpy.savez"),
    (b"PK\x03\x04 truncated", "File is not a zip file"),
])
def test_unreadable_weights_are_refused(tmp_path, content, match):
    (tmp_path / "w.npz").write_bytes(content)
    with pytest.raises(LowprobError, match=match):
        load_spec(tmp_path / "w.npz")


def test_a_single_npy_array_is_not_weights(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((2, 2)))
    with pytest.raises(LowprobError, match=r"holds a single array \(.npy\), not an .npz archive"):
        load_spec(tmp_path / "w.npy")
