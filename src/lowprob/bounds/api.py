"""``lowprob.bound``: checks the request, runs the branch-and-bound search, and returns ``Bounds``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lowprob.bounds.result import Bounds
from lowprob.bounds.search import Search
from lowprob.distributions import TokenDistribution, bind
from lowprob.errors import LowprobError
from lowprob.estimators import Cost, Estimate, estimate
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


def bounded_estimate(model, dist, event: Event, bound_seconds: float, method: str | None = None, budget: int = 4096,
                     seed: int = 0, **estimate_options: Any) -> Estimate:
    """Prove what ``bound_seconds`` allow, then estimate only what is left open (``lowprob estimate --bound-seconds``).

    The search branches first on the query position (the last variable one). Its tokens whose whole subtree is
    decided add their proved-certain mass exactly; the estimator runs on the distribution restricted to the
    other tokens, and its estimate and interval are scaled by their mass (within a still-open token's subtree
    the proposal is not narrowed further). An estimate outside the proved bounds is put back inside them — the
    truth is there — and flagged: ``diagnostics["bounds"]["estimate_outside"]`` holds the unclipped value. A
    proof that completes is the answer itself (interval kind ``exact``), and nothing is sampled.
    """
    seconds = _positive("bound_seconds", bound_seconds)
    model, dist = bind(model, dist)
    with torch_threads():
        search = Search(model, dist, event)
        proof = search.run(seconds, None, None, None)
    report: dict[str, Any] = {k: v for k, v in proof.to_json().items()
                              if k in ("lower", "upper", "free", "certain", "open", "complete", "flops", "seconds")}
    if proof.complete:
        cost = Cost(0, 0, proof.flops, proof.seconds, proof.flops / model.flops_per_sequence(len(dist)))
        return Estimate("bound", proof.lower, (proof.lower, proof.upper), budget, seed, cost, {"bounds": report},
                        model=getattr(model, "name", "") or "", distribution=dist.name,
                        event=event.describe(getattr(model, "tokenizer", None)),
                        interval_kind="exact")
    open_tokens = search.open_queries()
    pos = search.order[0]
    ids, probs = dist.support(pos)
    outside = float(search.certain_by_query[~open_tokens].sum())
    mass = float(probs[open_tokens].sum())
    positions = [(s_ids.tolist(), s_probs.tolist()) for s_ids, s_probs in (dist.support(i) for i in range(len(dist)))]
    positions[pos] = (ids[open_tokens].tolist(), probs[open_tokens].tolist())
    restricted = TokenDistribution.from_positions(positions, normalize=True, name=dist.name)
    est = estimate(model, restricted, event, method=method, budget=budget, seed=seed, **estimate_options)
    q = outside + mass * est.probability
    lo, hi = (outside + mass * v for v in est.interval)
    clipped = min(max(q, proof.lower), proof.upper)
    report.update(open_query_tokens=int(open_tokens.sum()), open_query_mass=mass, certain_outside=outside,
                  estimate_outside=None if clipped == q else q)
    cost = Cost(est.cost.forward_passes, est.cost.backward_passes, est.cost.flops + proof.flops,
                est.cost.seconds + proof.seconds,
                (est.cost.flops + proof.flops) / model.flops_per_sequence(len(dist)))
    interval = (min(max(lo, proof.lower), clipped), max(min(hi, proof.upper), clipped))
    said = [f"on the open rest: {w}" for w in est.warnings]
    if clipped != q:
        said.append(f"the estimate {q:.4g} fell outside the proved bounds and was put back inside them")
    return replace(est, probability=clipped, interval=interval, cost=cost, distribution=dist.name,
                   diagnostics={**est.diagnostics, "bounds": report}, warnings=said)
