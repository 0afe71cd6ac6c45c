"""The Ray backend: same totals as the local backend, and a failing task is retried."""

import pytest
import torch

from lowprob import Transformer
from lowprob.distributions.tiny import tiny_distribution
from lowprob.truth import ground_truth

from .conftest import TINY, fails_once

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return Transformer(TINY, seed=0)


@pytest.mark.parametrize("mode", [dict(exact=True), dict(samples=30_000, seed=2)])
def test_ray_totals_equal_local_totals(model, mode):
    dist = tiny_distribution("tiny-constants", TINY.d_vocab)
    local = ground_truth(model, dist, shard_size=1000, **mode)
    remote = ground_truth(model, dist, shard_size=1000, backend="ray", **mode)
    assert torch.equal(local.probabilities, remote.probabilities)


def test_exact_tables_on_the_prefix_path_equal_local_tables(model):
    """Trailing constants (a leaf segment longer than one position) and shards cutting across subtrees."""
    from lowprob.distributions.base import TokenDistribution

    gen = torch.Generator().manual_seed(3)
    positions = [0, *((torch.randperm(TINY.d_vocab - 1, generator=gen)[:n] + 1,
                       torch.rand(n, generator=gen, dtype=torch.float64)) for n in (9, 7, 11)), 5, 6]
    dist = TokenDistribution.from_positions(positions, normalize=True, name="trailing constants")
    assert isinstance(model, Transformer) and dist.variable_positions()  # enumeration_argmax's prefix-tree case
    local = ground_truth(model, dist, exact=True, shard_size=97)
    remote = ground_truth(model, dist, exact=True, shard_size=97, backend="ray")
    assert torch.equal(local.probabilities, remote.probabilities)


@pytest.mark.parametrize(("name", "mode", "method"), [("tiny-zipf", dict(samples=8000, seed=1), "sample"),
                                                       ("tiny-constants", dict(exact=True), "enumerate")])
def test_a_task_that_fails_once_is_retried(model, tmp_path, name, mode, method):
    marker = tmp_path / "failed-once"
    base = tiny_distribution(name, TINY.d_vocab)
    remote = ground_truth(model, fails_once(base, method, marker), shard_size=1000, backend="ray", **mode)
    assert marker.exists()  # the failure did happen, and the run still finished
    local = ground_truth(model, base, shard_size=1000, **mode)
    assert torch.equal(remote.probabilities, local.probabilities)
    assert (remote.counts is None and local.counts is None) or torch.equal(remote.counts, local.counts)
