import math
import subprocess
import sys

import pytest
import torch
from scipy import stats

from lowprob import LowprobError
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.tiny import TINY_FAMILIES, tiny_distribution


@pytest.fixture
def dist():
    return TokenDistribution.from_positions(
        [0, ([5, 9, 12], [0.5, 0.25, 0.25]), 7, ([3, 1], [0.9, 0.1])], name="small")


def test_structure(dist):
    assert len(dist) == 4
    assert dist.support_sizes() == [1, 3, 1, 2]
    assert dist.support_size() == 6
    assert dist.constant_positions() == [0, 2]
    assert dist.variable_positions() == [1, 3]
    ids, probs = dist.support(3)  # sorted by token id
    assert ids.tolist() == [1, 3] and probs.tolist() == [0.1, 0.9]


def test_enumeration_sums_to_one_and_agrees_with_log_prob(dist):
    chunks = list(dist.enumerate(chunk_size=4))
    tokens = torch.cat([t for t, _ in chunks])
    logp = torch.cat([lp for _, lp in chunks])
    assert len(tokens) == 6 == len({tuple(t) for t in tokens.tolist()})
    assert math.isclose(logp.exp().sum().item(), 1.0, rel_tol=1e-12)
    torch.testing.assert_close(dist.log_prob(tokens), logp, rtol=0, atol=1e-14)
    assert dist.log_prob(tokens[:1]).item() == pytest.approx(math.log(0.5 * 0.1))


@pytest.mark.parametrize("name", list(TINY_FAMILIES))
def test_tiny_families_enumerate_exactly(name):
    d = tiny_distribution(name, vocab_size=64)
    assert d.support_size() <= 2**20
    total = 0.0
    seen = 0
    for tokens, logp in d.enumerate(chunk_size=1 << 15):
        torch.testing.assert_close(d.log_prob(tokens), logp, rtol=0, atol=1e-12)
        total += logp.exp().sum().item()
        seen += len(tokens)
    assert seen == d.support_size()
    assert total == pytest.approx(1.0, abs=1e-10)


def test_tiny_families_have_rare_sequences():
    d = tiny_distribution("tiny-zipf", vocab_size=64)
    smallest = sum(p.min().log().item() for _, p in (d.support(i) for i in range(len(d))))
    assert smallest < math.log(1e-9)


def test_log_prob_off_support_is_minus_inf(dist):
    tokens = torch.tensor([[0, 5, 7, 3], [0, 6, 7, 3], [0, 5, 7, 99], [1, 5, 7, 3]])
    lp = dist.log_prob(tokens)
    assert math.isfinite(lp[0]) and lp[1:].eq(-math.inf).all()


def test_sampling_frequencies_match_probabilities():
    d = tiny_distribution("tiny-zipf", vocab_size=64)
    n = 200_000
    samples = d.sample(n, torch.Generator().manual_seed(0))
    for pos in d.variable_positions():
        ids, probs = d.support(pos)
        counts = torch.stack([(samples[:, pos] == i).sum() for i in ids]).double()
        expected = probs * n
        big = expected >= 5  # pool rare cells so the chi-square approximation holds
        obs, exp = counts[big], expected[big]
        if (~big).any():
            obs = torch.cat([obs, counts[~big].sum(0, keepdim=True)])
            exp = torch.cat([exp, expected[~big].sum(0, keepdim=True)])
        _, p = stats.chisquare(obs.numpy(), exp.numpy())
        assert p > 1e-3, (pos, p)
    for pos in d.constant_positions():
        assert samples[:, pos].eq(d.support(pos)[0][0]).all()


def test_sampling_detects_a_wrong_distribution():
    """The chi-square check above has power: samples of one distribution fail against another."""
    d = tiny_distribution("tiny-zipf", vocab_size=64)
    ids, probs = d.support(1)
    wrong = TokenDistribution.from_positions([(ids, probs.flip(0))])
    samples = wrong.sample(200_000, torch.Generator().manual_seed(0))[:, 0]
    counts = torch.stack([(samples == i).sum() for i in ids]).double()
    _, p = stats.chisquare(counts.numpy(), (probs * 200_000).numpy())
    assert p < 1e-6


@pytest.mark.parametrize("n, message", [
    (-1, r"must be >= 0 \(an integer\), got -1"), (1.5, r"must be >= 0 \(an integer\), got 1.5"),
    (2**70, r"must be at most 2,147,483,648 \(one int64 row each, in one tensor: draw more in batches\)")])
def test_a_sample_count_that_is_no_count_of_rows_is_refused(dist, n, message):
    with pytest.raises(LowprobError, match=f"^the number of samples {message}"):
        dist.sample(n)


def test_saving_to_no_path_is_refused(dist):
    with pytest.raises(LowprobError, match=r"^give the file to write as a str or a pathlib\.Path, got None$"):
        dist.save(None)


def test_sampling_is_seeded(dist):
    a = dist.sample(50, torch.Generator().manual_seed(3))
    b = dist.sample(50, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_hash_is_stable_across_processes_and_order_insensitive(dist):
    code = ("from lowprob.distributions.base import TokenDistribution as T;"
            "print(T.from_positions([0, ([5, 9, 12], [0.5, 0.25, 0.25]), 7, ([3, 1], [0.9, 0.1])]).content_hash())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == dist.content_hash()
    reordered = TokenDistribution.from_positions([0, ([12, 5, 9], [0.25, 0.5, 0.25]), 7, ([1, 3], [0.1, 0.9])])
    assert reordered.content_hash() == dist.content_hash()


def test_hash_changes_when_any_probability_changes(dist):
    nudged = TokenDistribution.from_positions([0, ([5, 9, 12], [0.5, 0.25, 0.25]), 7,
                                               ([3, 1], [0.9 - 1e-12, 0.1 + 1e-12])])
    assert nudged.content_hash() != dist.content_hash()
    swapped_constant = TokenDistribution.from_positions([0, ([5, 9, 12], [0.5, 0.25, 0.25]), 8,
                                                         ([3, 1], [0.9, 0.1])])
    assert swapped_constant.content_hash() != dist.content_hash()


def test_save_load_round_trip(dist, tmp_path):
    dist.save(tmp_path / "d.safetensors")
    back = TokenDistribution.load(tmp_path / "d.safetensors")
    assert back.content_hash() == dist.content_hash() and back.name == "small"


def test_corrupt_file_is_refused(dist, tmp_path):
    path = tmp_path / "d.safetensors"
    dist.save(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10  # flip a bit in the last probability
    path.write_bytes(bytes(data))
    with pytest.raises(LowprobError, match="corrupt"):
        TokenDistribution.load(path)
    path.write_text("garbage")
    with pytest.raises(LowprobError, match="cannot read distribution file"):
        TokenDistribution.load(path)


def test_normalize_on_request():
    d = TokenDistribution.from_positions([([1, 2], [2.0, 6.0])], normalize=True)
    assert d.support(0)[1].tolist() == [0.25, 0.75]


@pytest.mark.parametrize("positions, kwargs, message", [
    ([], {}, "at least one position"),
    ([([1, 2], [0.5, 0.6])], {}, "position 0: probabilities sum to 1.1"),
    ([0, ([1, 2], [0.5, float("nan")])], {}, "position 1: probabilities must be finite"),
    ([([1, 2], [1.5, -0.5])], {}, "non-negative"),
    ([([1, 2], [0.5])], {}, "2 ids but 1 probabilities"),
    ([([1, 1], [0.5, 0.5])], {}, "appears twice"),
    ([([1, 40], [0.5, 0.5])], {"vocab_size": 32}, "must lie in 0..31"),
    ([-1], {}, r"^position 0: token ids must lie in 0\.\.2147483647, got -1$"),
    ([0, 2**70], {}, r"^position 1: token ids must lie in 0\.\.2147483647, got 1180591620717411303424$"),
    ([torch.tensor(40)], {"vocab_size": 32}, r"^position 0: token ids must lie in 0\.\.31, got 40$"),
    ([([1.5, 2.0], [0.5, 0.5])], {}, "must be integers"),
    ([True], {}, "bool"),
    (["a"], {}, "give an int"),
    ([0, 1, 2], {"n_ctx": 2}, "n_ctx is 2"),
    ([([1, 2], [0.0, 0.0])], {"normalize": True}, "sum to 0"),
])
def test_invalid_input_raises_clear_errors(positions, kwargs, message):
    with pytest.raises(LowprobError, match=message):
        TokenDistribution.from_positions(positions, **kwargs)


def test_check_model(tiny_model):
    ok = tiny_distribution("tiny-uniform", vocab_size=32)
    ok.check_model(tiny_model)
    with pytest.raises(LowprobError, match="vocabulary has 32"):
        tiny_distribution("tiny-uniform", vocab_size=64, seed=1).check_model(tiny_model)
    with pytest.raises(LowprobError, match="n_ctx is 8"):
        TokenDistribution.from_positions([0] * 9).check_model(tiny_model)
