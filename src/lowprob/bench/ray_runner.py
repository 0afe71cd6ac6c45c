"""Run a benchmark's estimates as Ray tasks (``lowprob bench --backend ray``; ``pip install 'lowprob[ray]'``).

A task makes the rows of one chunk of a pair's jobs (up to ``CHUNK`` estimates) with ``rows.estimate_row``,
the function the local path uses, so its rows are the local rows up to ``cost.seconds`` and QLD/GLD's
``cache_hit`` diagnostic (what the worker happened to compute before, as after ``--resume``). Chunks
are consecutive slices of the plan's job list, so within a chunk QLD/GLD meet each seed's targets
together and share one activation set; a (method, seed) run is cut at most every ``CHUNK`` targets,
costing one more activation set per cut.

The driver loads each pair's model and distribution once and hands them to its tasks with ``ray.put``,
rather than each task calling ``load_problem``: tasks then need neither the ground truth (computed on
the fly at tiny scale, read from ``--ground-truth`` files on the driver's disk at paper scale) nor
any file of the driver's. Only the driver writes: it appends a chunk's rows as the chunk arrives, in
whatever order chunks finish, so a crash loses only the chunks in flight and ``--resume`` works as
after a local run. Ray retries a task whose worker died or that raised (``MAX_RETRIES``). Estimates run
with ``lowprob.threads``' budget, which in a Ray worker is the task's one CPU (Ray sets OMP_NUM_THREADS).

On a cluster: ``ray start`` on every node (see ``truth/ray_backend.py``), then on the head
``lowprob bench --scale paper --ground-truth gt --out results/paper --backend ray --address auto --resume``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from lowprob.bench.rows import PairContext, PairPlan, append_rows, estimate_row, pair_context, prepare_pair
from lowprob.bench.scales import Scale
from lowprob.truth.ray_backend import MAX_RETRIES, ray_session, window_size

CHUNK = 32  # estimates per task: seconds to minutes of work, many tasks per pair for a cluster


def rows_task(scale: Scale, pair: PairContext, jobs: list) -> list[dict]:
    """One task's rows: a chunk of a pair's jobs, made as the local backend makes them."""
    return [estimate_row(scale, pair, job) for job in jobs]


def _chunks(ray, scale: Scale, plans: list[PairPlan], out: Path, ground_truth_dir: Path | None
            ) -> Iterator[tuple[Path, object, list]]:
    """(rows file, pair context in the object store, jobs) per task; a pair is loaded when its first task is due."""
    for plan in plans:
        rows_path = prepare_pair(plan, out)
        pair_ref = ray.put(pair_context(scale, plan, ground_truth_dir))
        for i in range(0, len(plan.jobs), CHUNK):
            yield rows_path, pair_ref, plan.jobs[i:i + CHUNK]


def run_on_ray(scale: Scale, plans: list[PairPlan], out: Path, ground_truth_dir: Path | None,
               tick: Callable[[], None], address: str | None = None) -> None:
    """Make every plan's estimates as Ray tasks (a local Ray instance unless ``address``), appending rows here."""
    if not plans:  # a finished run resumed: no cluster to start
        return
    ray = ray_session(address)
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=True)(rows_task)
    todo = _chunks(ray, scale, plans, out, ground_truth_dir)
    pending: dict = {}  # task -> the rows file its rows go to

    def submit() -> None:
        item = next(todo, None)
        if item is not None:
            rows_path, pair_ref, jobs = item
            pending[task.remote(scale, pair_ref, jobs)] = rows_path

    for _ in range(window_size(ray)):
        submit()
    try:
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            rows_path = pending.pop(done)
            rows = ray.get(done)
            submit()
            append_rows(rows_path, rows, tick)
    finally:
        for ref in pending:  # after a failure: stop the rest rather than leave the cluster busy
            ray.cancel(ref)
