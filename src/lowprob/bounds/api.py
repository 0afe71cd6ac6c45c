"""``lowprob.bound``: checks the request, runs the branch-and-bound search, and returns ``Bounds``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lowprob.bounds.result import Bounds
from lowprob.bounds.search import Search
from lowprob.distributions import bind
from lowprob.errors import LowprobError
from lowprob.events import Event
from lowprob.threads import torch_threads


def _positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise LowprobError(f"{name} must be a positive number (or None: no limit), got {value!r}")
    return float(value)


def bound(model, dist, event: Event, seconds: float | None = None, flops: float | None = None, *,
          checkpoint: str | os.PathLike | None = None, resume: bool = False,
          progress: Callable[[Bounds], None] | None = None) -> Bounds:
    """A proved interval ``lower ≤ P(event) ≤ upper`` for inputs from ``dist`` (see ``Bounds``).

    The search runs until every input is decided (then the bounds meet) or until ``seconds`` of wall time or
    ``flops`` FLOPs are spent (None: no limit), whichever comes first. With ``checkpoint``, the search's state
    is written there atomically every minute and at the end; ``resume`` continues from it (the limits count
    the time and FLOPs already spent). ``progress`` is called with the bounds so far after every step.
    """
    seconds, flops = _positive("seconds", seconds), _positive("flops", flops)
    path = Path(checkpoint) if checkpoint is not None else None
    if resume and path is None:
        raise LowprobError("resume needs the checkpoint to resume from (checkpoint=PATH; --checkpoint on the CLI)")
    model, dist = bind(model, dist)
    with torch_threads():
        search = Search(model, dist, event)
        if resume and path is not None:
            search.load(path)
        return search.run(seconds, flops, path, progress)
