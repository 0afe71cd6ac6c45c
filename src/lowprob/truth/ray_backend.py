"""Run ground-truth shards as Ray tasks (``pip install 'lowprob[ray]'``).

Each task computes one shard from (model, distribution, spec, shard index) alone — see
``compute.shard_task`` — so a retried or rescheduled task returns the same numbers. Results are
consumed in shard order through a bounded window of tasks in flight (``ray_map``), which keeps
checkpoints a simple prefix and exact-mode float sums in the same order as the local backend's.

Paper scale on a cluster: start Ray on every node (``ray start --head`` on one,
``ray start --address HEAD:6379`` on the others), then on the head
``lowprob ground-truth --model M --dist D --length paper --samples 4294967296 --shard-size 1048576
--backend ray --address auto --out D.safetensors --resume``. 4096 shards of 2^20 samples each; a
lost node only loses its shards in flight (Ray retries them) and the driver checkpoints after each.
``ray_session`` and ``window_size`` are shared with the benchmark's Ray runner (``bench/ray_runner.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from lowprob.errors import LowprobError

MAX_RETRIES = 3


def ray_session(address: str | None = None):
    """The ``ray`` module, initialised (a local instance unless ``address``) if the caller has not done it."""
    try:
        import ray  # an optional extra, heavy to import: only when a Ray backend is asked for
    except ImportError:
        raise LowprobError("the Ray backend needs Ray: pip install 'lowprob[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def window_size(ray) -> int:
    """Tasks kept in flight: two per cluster CPU, so no worker waits on the driver and memory stays bounded."""
    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def ray_map(function: Callable, shared: tuple, items: Iterable, address: str | None = None) -> Iterator[Any]:
    """``function(*shared, item)`` for each item, as Ray tasks of one CPU each (a local Ray instance unless
    ``address``), yielded in the items' order; ``shared`` goes to the object store once, not once per task."""
    ray = ray_session(address)
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=True)(function)
    refs = [ray.put(value) for value in shared]
    window = window_size(ray)
    pending: deque = deque()
    todo = iter(items)
    for item in todo:
        pending.append(task.remote(*refs, item))
        if len(pending) >= window:
            break
    while pending:
        result = ray.get(pending.popleft())
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(task.remote(*refs, nxt))
        yield result
