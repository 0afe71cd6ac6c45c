"""The Ray backend: same totals as the local backend, and a failing task is retried."""

import pytest
import torch

from lowprob import Transformer
from lowprob.distributions.tiny import tiny_distribution
from lowprob.truth import ground_truth

from .conftest import TINY

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


def test_a_task_that_fails_once_is_retried(model, tmp_path):
    from lowprob.distributions.base import TokenDistribution

    marker = tmp_path / "failed-once"

    class FlakyDistribution(TokenDistribution):
        """Fails the first time shard data is drawn in any worker, then behaves."""

        def sample(self, n, generator=None):
            if not marker.exists():
                marker.write_text("x")
                raise RuntimeError("injected worker failure")
            return super().sample(n, generator)

    base = tiny_distribution("tiny-zipf", TINY.d_vocab)
    flaky = FlakyDistribution([base.support(i)[0] for i in range(len(base))],
                              [base.support(i)[1] for i in range(len(base))], name=base.name)
    remote = ground_truth(model, flaky, samples=8000, seed=1, shard_size=1000, backend="ray")
    assert marker.exists()  # the failure did happen, and the run still finished
    local = ground_truth(model, base, samples=8000, seed=1, shard_size=1000)
    assert torch.equal(remote.counts, local.counts)
