"""Run ground-truth shards as Ray tasks (``pip install 'lowprob[ray]'``).

Each task computes one shard from (model, distribution, spec, shard index) alone — see
``shard_totals`` — so a retried or rescheduled task returns the same numbers. Results are consumed
in shard order through a bounded window of tasks in flight, which keeps checkpoints a simple prefix
and exact-mode float sums in the same order as the local backend's.

Paper scale on a cluster: start Ray on every node (``ray start --head`` on one,
``ray start --address HEAD:6379`` on the others), then on the head
``lowprob ground-truth --model M --dist D --length paper --samples 4294967296 --shard-size 1048576
--backend ray --address auto --out D.safetensors --resume``. 4096 shards of 2^20 samples each; a
lost node only loses its shards in flight (Ray retries them) and the driver checkpoints after each.
``ray_session`` and ``window_size`` are shared with the benchmark's Ray runner (``bench/ray_runner.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch

from lowprob.errors import LowprobError

MAX_RETRIES = 3


def _remote_shard():
    import ray

    @ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=True)
    def shard_task(model, dist, spec, shard: int, fast: bool) -> torch.Tensor:
        from lowprob.truth.compute import shard_argmax, shard_totals

        torch.set_num_threads(1)
        return shard_totals(shard_argmax(model, dist, spec, fast), dist, model.d_vocab, spec, shard)

    return shard_task


def ray_session(address: str | None = None):
    """The ``ray`` module, initialised (a local instance unless ``address``) if the caller has not done it."""
    try:
        import ray
    except ImportError:
        raise LowprobError("the Ray backend needs Ray: pip install 'lowprob[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def window_size(ray) -> int:
    """Tasks kept in flight: two per cluster CPU, so no worker waits on the driver and memory stays bounded."""
    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def ray_shards(model, dist, spec, shards: range, fast: bool, address: str | None = None) -> Iterator[torch.Tensor]:
    """Shard results in shard order, computed by Ray tasks (a local Ray instance unless ``address``)."""
    ray = ray_session(address)
    task = _remote_shard()
    model_ref, dist_ref, spec_ref = ray.put(model), ray.put(dist), ray.put(spec)
    window = window_size(ray)
    pending: deque = deque()
    todo = iter(shards)
    for shard in todo:
        pending.append(task.remote(model_ref, dist_ref, spec_ref, shard, fast))
        if len(pending) >= window:
            break
    while pending:
        result = ray.get(pending.popleft())
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(task.remote(model_ref, dist_ref, spec_ref, nxt, fast))
        yield result
