"""One API for every estimator: ``estimate(model, dist, event, method, budget, seed, **hyper)``.

An estimator is a function declared in ``estimators.catalog`` with its hyper-parameters. It returns
the estimate, a nominal 95% interval and diagnostics (a ``RawEstimate``); ``estimate`` validates the
request at the boundary, times the run, reads what it executed from the cost meter (``lowprob.cost``,
charged by the helpers below where they run the model) and turns it into an ``Estimate`` that names
what was estimated and lies in [0, 1]. ``budget`` counts model calls (one sequence = one call, as in
the paper); what a call may execute is the method's declared ``work`` (``lowprob.cost``).
Asked to (``max_seconds``, ``progress``), it first predicts the run's duration from a timed probe,
refuses a run past the limit and shows a bar for a long one, moved by the cost meter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from lowprob import checks, cost
from lowprob.attribution import Attribution, Hits, Labels, SampledHits, attribute
from lowprob.continuations import check_room, continue_prompts
from lowprob.distributions import bind
from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.estimators.catalog import (
    DEFAULT_METHODS,
    Method,
    get_method,
    methods_for,
    methods_with_samples,
)
from lowprob.estimators.warnings import warnings_for
from lowprob.events import Event, Generates, check_event
from lowprob.events import family as event_family
from lowprob.models.protocol import LanguageModel
from lowprob.progress import progress_bar
from lowprob.threads import torch_threads


@dataclass(frozen=True)
class Cost:
    """What an estimate executed (``lowprob.cost``): whole-sequence forward and backward passes, every FLOP
    (shared-prefix segments and decoding steps included; a backward priced as a forward), those FLOPs in forward
    passes of one input sequence (the unit a method's ``work`` per model call is declared in) and wall seconds."""

    forward_passes: int
    backward_passes: int
    flops: float
    seconds: float
    forward_equivalents: float


@dataclass(frozen=True)
class Estimate:
    """An estimate of P(event), what it was an estimate of, what it cost and how sure it is.

    ``interval`` is a nominal 95% interval and always lies in [0, 1], as does ``probability``.
    """

    method: str
    probability: float
    interval: tuple[float, float]
    budget: int
    seed: int
    cost: Cost
    diagnostics: dict[str, Any] = field(default_factory=dict)
    hyper: dict[str, Any] = field(default_factory=dict)
    model: str = ""  # the model's name (a shipped name or its directory's), "" if it has none
    distribution: str = ""  # the distribution's name, "" if it has none
    event: dict[str, Any] = field(default_factory=dict)  # Event.describe(): kind, token id and text
    interval_kind: str = "approximate"  # what the interval accounts for (estimators.catalog.INTERVAL_KINDS)
    # sentences saying why this estimate may be far off, read from the run's own draws (estimators.warnings)
    warnings: list[str] = field(default_factory=list)
    # the hits of a sampling method, for attribution(); never in to_json, so bench rows do not grow
    samples: SampledHits | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        lo, hi = self.interval
        if not (0 <= lo <= hi <= 1 and 0 <= self.probability <= 1):
            raise ValueError(f"an Estimate needs 0 <= lo <= hi <= 1 and 0 <= p <= 1, got {self.probability} "
                             f"{self.interval}")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "model": self.model, "distribution": self.distribution,
                "event": self.event, "probability": self.probability, "interval": list(self.interval),
                "interval_kind": self.interval_kind,
                "budget": self.budget, "seed": self.seed, "cost": asdict(self.cost),
                "warnings": self.warnings, "diagnostics": self.diagnostics, "hyper": self.hyper}

    def attribution(self, top: int | None = 3) -> Attribution:
        """Per variable position, the ``top`` input values whose probability the event raises most, with
        P(value | event) estimated from this estimate's weighted hits (``lowprob.attribution``)."""
        if self.samples is None:
            raise LowprobError(f"{self.method} draws no samples of the event, so it cannot attribute it; methods "
                               f"that can: {', '.join(methods_with_samples())}")
        return attribute(self.samples, top)

    def probe_ranking(self) -> list[str]:
        """The white-box probe's own ranking, for people (CEIS's swap scan; empty where none ran): per scanned
        slot or position, the values with the most evidence — their margin rise and push (``swap_scan``) —
        and what the probe cost. It reads the model, not the event's hits: a value can lead it and not hit."""
        scan = self.diagnostics.get("swap_scan")
        if scan is None or self.samples is None:
            return []
        if "skipped" in scan:
            return [f"probe (swap scan) skipped: {scan['skipped']}"]
        labels = self.samples.labels
        lines = [f"probe (swap scan, {scan['forward_passes']} forward passes): values that move the model most"]
        for pos, rows in scan["top"].items():
            cells = [f"{labels.value(int(pos), r['id'])!r} (margin {r['margin_shift']:+.2f}, push {r['push']:+.2f})"
                     for r in rows]
            lines.append(f"  {labels.position(int(pos))}: " + ", ".join(cells))
        return lines

    def summary(self) -> str:
        """One line for people: what was estimated, the estimate, its interval and its cost; then a line per
        warning."""
        lo, hi = self.interval
        caveat = "; sampling error only" if self.interval_kind == "sampling-only" else ""
        line = (f"{self.method}: P({self.event.get('label', 'event')}) = {self.probability:.4g}  "
                f"(95% interval {lo:.3g} .. {hi:.3g}{caveat})  model {self.model or 'unnamed'}, distribution "
                f"{self.distribution or 'unnamed'}; {self.cost.forward_passes} forward + "
                f"{self.cost.backward_passes} backward passes, {self.cost.flops:.3g} FLOPs, {self.cost.seconds:.2f} s")
        return "\n".join([line, *(f"warning: {w}" for w in self.warnings)])


@dataclass(frozen=True)
class RawEstimate:
    """What an estimator function returns; ``estimate`` turns it into an ``Estimate``."""

    probability: float
    interval: tuple[float, float]
    diagnostics: dict[str, Any]
    hits: Hits | None = None  # the samples that hit, weighted for the input distribution (sampling methods)


def score_and_gradient(model: LanguageModel, event: Event, tokens: torch.Tensor,
                       score: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Event score [B] (float64), indicator [B] and d score / d token embeddings [B, T, d_model].

    ``score`` replaces ``event.score`` when a method follows another quantity (CEIS: the margin).
    Token ids come from the CPU; score and indicator go back there, the gradient stays on the model's
    device for ``one_hot_scores``. The gradient w.r.t. the one-hot input at (i, v) is
    ``W_E[v] · grad[:, i]``: gradient methods evaluate it on each position's support only, never
    materialising a [B, T, vocab] one-hot tensor.
    """
    emb = model.W_E[tokens.to(model.device)].detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model.unembed(model.final_residual(emb))
        values = (score or event.score)(logits)
        (grad,) = torch.autograd.grad(values.sum(), emb)
    cost.charge_passes(model.flops_per_sequence(tokens.shape[1]), len(tokens), backward=True)
    return values.detach().double().cpu(), event.indicator(logits.detach()).cpu(), grad


def happened(model: LanguageModel, event: Event | Generates, tokens: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
    """Whether the event happened for each input [B] (CPU): one forward per input for a logits event;
    for a generation event, a continuation sampled from the model."""
    if isinstance(event, Generates):
        return continue_prompts(model, tokens, event, generator).hit
    return outcomes(model, event, tokens)[1]


@torch.no_grad()
def outcomes(model: LanguageModel, event: Event, tokens: torch.Tensor,
             score: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Event score [B] (float64) and indicator [B] on the CPU, for CPU token ids; logits stay on the device."""
    logits = model.logits(tokens.to(model.device))
    cost.charge_passes(model.flops_per_sequence(tokens.shape[1]), len(tokens))
    return (score or event.score)(logits).double().cpu(), event.indicator(logits).cpu()


PROBE_SECONDS = 0.1  # the timed probe grows until it lasts this long (or reaches PROBE_ROWS)
PROBE_ROWS = 1024
PROGRESS_SECONDS = 10.0  # with progress=True, runs predicted longer than this show a bar


def estimate(model: LanguageModel, dist: TokenDistribution, event: Event | Generates, method: str | None = None,
             budget: int = 4096, seed: int = 0, *, max_seconds: float | None = None, progress: bool = False,
             **hyper: Any) -> Estimate:
    """Estimate P(event) for inputs from ``dist``, spending ``budget`` model calls.

    Every method goes through here: the request is checked against the method's declaration
    (``estimators.catalog``), the run is timed and priced in FLOPs, and the result is put in [0, 1]
    — an importance-sampling average can exceed 1 and a bound built from a largest weight can too,
    while the truth cannot (the unclipped value is kept in the diagnostics). With ``max_seconds``, a
    run that a timed probe predicts to take longer is refused before any work (None: no limit);
    with ``progress``, one predicted past ``PROGRESS_SECONDS`` shows a bar on stderr. Neither
    changes the estimate: the probe draws from a generator of its own.
    """
    check_event(event)
    family = event_family(event)
    method = method or DEFAULT_METHODS[family]
    spec = get_method(method)
    budget, seed = checks.check_budget(budget), checks.check_seed(seed)
    params = spec.resolve(budget, hyper)
    max_seconds = checks.time_limit(max_seconds)
    if family not in spec.events:
        raise LowprobError(f"{method} does not estimate {family} events; methods that do: "
                           f"{', '.join(methods_for(family))}")
    source = dist
    model, dist = bind(model, dist)
    event.validate(model)
    if isinstance(event, Generates):
        check_room(model, len(dist), event.steps)
    generator = torch.Generator().manual_seed(seed)
    with torch_threads(), _planned(model, dist, event, spec, budget, max_seconds, progress) as watch:
        start = time.perf_counter()
        with cost.metered(watch) as spent:
            raw = spec.function()(model, dist, event, budget, generator, **params)
        seconds = time.perf_counter() - start
    p, (lo, hi) = raw.probability, raw.interval
    if not all(math.isfinite(v) and v >= 0 for v in (p, lo, hi)) or lo > hi:
        raise RuntimeError(f"{method} returned an invalid estimate {p} {raw.interval}: a bug")
    diagnostics = raw.diagnostics if p <= 1 else {**raw.diagnostics, "unclipped_probability": p}
    tokenizer = getattr(model, "tokenizer", None)
    samples = None if raw.hits is None else SampledHits(raw.hits, dist, Labels(source, tokenizer))
    executed = Cost(spent.forward_passes, spent.backward_passes, spent.flops, seconds,
                    spent.flops / model.flops_per_sequence(len(dist)))
    return Estimate(method, min(float(p), 1.0), (min(float(lo), 1.0), min(float(hi), 1.0)), budget, seed, executed,
                    diagnostics, params, model=getattr(model, "name", "") or "", distribution=dist.name,
                    event=event.describe(tokenizer), interval_kind=spec.interval, samples=samples,
                    warnings=warnings_for(method, min(float(p), 1.0), diagnostics))


def _planned(model: LanguageModel, dist: TokenDistribution, event: Event | Generates, spec: Method, budget: int,
             max_seconds: float | None, progress: bool
             ) -> AbstractContextManager[Callable[[cost.Meter], None] | None]:
    """What to run the estimate inside: nothing, unless a limit or a bar was asked for; then a timed probe
    predicts the run's seconds from its work (``spec.work`` units per model call), a run past
    ``max_seconds`` is refused, and a long one gets a progress bar, yielding the cost meter's watcher that
    moves it (forward passes' worth of FLOPs, or continuations: what each started prompt is charged as)."""
    if max_seconds is None and not progress:
        return nullcontext()
    from lowprob.truth.compute import duration

    total = spec.work * budget
    per_unit = _seconds_per_unit(model, dist, event, total)
    seconds = total * per_unit
    units = "continuations" if isinstance(event, Generates) else "forward passes"
    if max_seconds is not None and seconds > max_seconds:
        raise LowprobError(
            f"{spec.name} at budget {budget:,} would take about {duration(seconds)} here ({total:,} {units} at "
            f"{1 / per_unit:,.0f} a second, timed by a probe), more than the limit of {max_seconds / 3600:.3g} h: "
            f"lower the budget, or raise the limit (--max-hours H; max_seconds=None in Python) if you mean it")
    if not progress or seconds <= PROGRESS_SECONDS:
        return nullcontext()
    return _watched(progress_bar(total, "cont" if isinstance(event, Generates) else "seq", spec.name,
                                 f"probe estimate {duration(seconds)}"),
                    None if isinstance(event, Generates) else model.flops_per_sequence(len(dist)))


@contextmanager
def _watched(bar: AbstractContextManager[Callable[[float], None]], per_unit_flops: float | None
             ) -> Iterator[Callable[[cost.Meter], None]]:
    """The bar's ``show`` as a cost-meter watcher: FLOPs in forward passes, or (None) the continuations started."""
    with bar as show:
        if per_unit_flops is None:
            yield lambda m: show(m.forward_passes)
        else:
            yield lambda m: show(m.flops / per_unit_flops)


def _seconds_per_unit(model: LanguageModel, dist: TokenDistribution, event: Event | Generates, total: int) -> float:
    """Seconds per unit of work — one sequence's forward pass, or one continuation of a generation event —
    timed on the real thing (``happened`` on sequences from ``dist``), grown 4x at a time until it lasts
    ``PROBE_SECONDS``: a measured rate, overheads and this machine's load included. Its draws come from a
    generator of its own, so the run's are untouched."""
    generator = torch.Generator().manual_seed(0)
    n = min(8, total)
    while True:
        tokens = dist.sample(n, generator)
        start = time.perf_counter()
        happened(model, event, tokens, generator)
        elapsed = time.perf_counter() - start
        if elapsed >= PROBE_SECONDS or n >= min(PROBE_ROWS, total):
            return max(elapsed, 1e-9) / n
        n = min(4 * n, PROBE_ROWS, total)
