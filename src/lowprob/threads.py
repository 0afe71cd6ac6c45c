"""How many torch threads lowprob computes with: one per process unless you say otherwise.

lowprob's models are small, so intra-op threads buy little on an idle machine and cost several times
over on a busy one, where spinning threads fight for the cores (figures: ``benchmarks/RESULTS.md``,
"Start-up, loading, threads"). Parallel work in lowprob is done by processes
(``--workers``), each with its own thread budget. So every computing entry point (``estimate``,
``ground_truth``, the benchmark and its workers) runs with ``thread_count()`` threads:
``LOWPROB_THREADS`` if set, else ``OMP_NUM_THREADS`` if set (the usual way to ask for threads), else 1.
The previous setting is restored afterwards, so a library caller's own torch setting survives.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from lowprob.errors import LowprobError


def thread_count() -> int:
    """Threads per process: ``LOWPROB_THREADS``, else ``OMP_NUM_THREADS``, else 1."""
    for var in ("LOWPROB_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            if not value.isdigit() or int(value) < 1:
                raise LowprobError(f"{var} must be a positive integer, got {value!r}")
            return int(value)
    return 1


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (default ``thread_count()``), then restore the setting."""
    import torch

    n = thread_count() if n is None else n
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)
