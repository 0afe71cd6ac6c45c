import itertools
import math

import pytest
import torch
from scipy import stats

from lowprob import LowprobError, Transformer
from lowprob.distributions.tiny import tiny_distribution
from lowprob.ground_truth import GroundTruth, ground_truth
from lowprob.ground_truth.compute import sampled_shard_counts

from .conftest import TINY


@pytest.fixture(scope="module")
def model():
    return Transformer(TINY, seed=0)


@pytest.fixture(scope="module")
def dist():
    return tiny_distribution("tiny-constants", vocab_size=TINY.d_vocab)


@pytest.fixture(scope="module")
def exact(model, dist):
    return ground_truth(model, dist, exact=True, shard_size=1000)


def test_exact_agrees_with_brute_force(model, dist, exact):
    supports = [list(zip(*(t.tolist() for t in dist.support(i)), strict=True)) for i in range(len(dist))]
    seqs, probs = [], []
    for combo in itertools.product(*supports):
        seqs.append([tok for tok, _ in combo])
        probs.append(math.prod(p for _, p in combo))
    with torch.no_grad():
        argmax = model.logits(torch.tensor(seqs)).argmax(-1).tolist()
    brute = [0.0] * model.d_vocab
    for a, p in zip(argmax, probs, strict=True):
        brute[a] += p
    torch.testing.assert_close(exact.probabilities, torch.tensor(brute, dtype=torch.float64), rtol=0, atol=1e-12)
    assert exact.probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert exact.exact and exact.n_samples == dist.support_size() == 8000 and exact.counts is None
    assert (exact.probabilities > 0).sum() > 3  # not degenerate: several argmax tokens


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square goodness of fit, cells with < 5 expected pooled; 0 if a count hits an impossible token."""
    if (counts[probs == 0] > 0).any():
        return 0.0
    n = counts.sum().item()
    expected = probs * n
    big = expected >= 5
    obs, exp = counts[big].double(), expected[big]
    if expected[~big].sum() > 0:
        obs = torch.cat([obs, counts[~big].sum(0, keepdim=True).double()])
        exp = torch.cat([exp, expected[~big].sum(0, keepdim=True)])
    return stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue


def test_sampled_counts_are_consistent_with_exact(model, dist, exact):
    sampled = ground_truth(model, dist, samples=50_000, seed=0, shard_size=1 << 13)
    assert sampled.counts.sum().item() == 50_000 and not sampled.exact
    torch.testing.assert_close(sampled.probabilities, sampled.counts.double() / 50_000)
    assert chi_square_p(sampled.counts, exact.probabilities) > 1e-3
    # the check has power: the same counts are rejected against another model's ground truth
    other = ground_truth(Transformer(TINY, seed=1), dist, exact=True)
    assert chi_square_p(sampled.counts, other.probabilities) < 1e-6


def test_sampled_totals_do_not_depend_on_shard_scheduling(model, dist):
    whole = ground_truth(model, dist, samples=10_000, seed=7, shard_size=3000)
    sizes = [3000, 3000, 3000, 1000]
    shuffled = sum(sampled_shard_counts(model, dist, 7, i, sizes[i]) for i in (3, 1, 0, 2))
    assert torch.equal(whole.counts, shuffled)
    again = ground_truth(model, dist, samples=10_000, seed=7, shard_size=3000)
    assert torch.equal(whole.counts, again.counts)
    assert not torch.equal(whole.counts, ground_truth(model, dist, samples=10_000, seed=8, shard_size=3000).counts)


def test_file_round_trip_and_hash_checks(model, dist, exact, tmp_path):
    path = tmp_path / "gt.safetensors"
    exact.save(path)
    back = GroundTruth.load(path, model, dist)
    assert torch.equal(back.probabilities, exact.probabilities)
    assert (back.exact, back.n_samples, back.model_sha256) == (True, 8000, exact.model_sha256)
    sampled = ground_truth(model, dist, samples=100, seed=3)
    sampled.save(path)
    assert torch.equal(GroundTruth.load(path).counts, sampled.counts)
    with pytest.raises(LowprobError, match="another model"):
        GroundTruth.load(path, Transformer(TINY, seed=1), dist)
    with pytest.raises(LowprobError, match="another distribution"):
        GroundTruth.load(path, model, tiny_distribution("tiny-uniform", vocab_size=TINY.d_vocab))
    path.write_bytes(b"junk")
    with pytest.raises(LowprobError, match="cannot read ground-truth file"):
        GroundTruth.load(path)


def test_public_api_call(model, dist, exact):
    import lowprob

    gt = lowprob.ground_truth(model, dist, exact=True)
    assert torch.equal(gt.probabilities, exact.probabilities)


def test_bad_requests_are_clear_errors(model, dist):
    with pytest.raises(LowprobError, match="exactly one of"):
        ground_truth(model, dist)
    with pytest.raises(LowprobError, match="exactly one of"):
        ground_truth(model, dist, exact=True, samples=10)
    with pytest.raises(LowprobError, match="samples must be >= 1"):
        ground_truth(model, dist, samples=0)
    wide = tiny_distribution("tiny-wide", vocab_size=TINY.d_vocab)
    from lowprob.distributions.base import TokenDistribution

    huge = TokenDistribution.from_positions([wide.support(1)] * 6)
    with pytest.raises(LowprobError, match="more than exact mode's 2\\^26"):
        ground_truth(model, huge, exact=True)
