"""The estimation methods: each one's name, description, hyper-parameters and smallest budget.

This is the one place a method is declared — its hyper-parameters with their defaults, what values
they accept and what they mean — and the one place a request is checked against that declaration.
It imports no torch, so the CLI can list the choices in ``--help`` and refuse a bad argument
before it spends seconds importing torch and loading a model; the implementation (a function
``fn(model, dist, event, budget, generator, **hyper) -> RawEstimate``) is imported on first use.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lowprob.checks import check_budget, integer
from lowprob.cost import GRADIENT_CALL
from lowprob.errors import LowprobError


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, the values it accepts (said in words) and its meaning."""

    default: Any
    accepts: Callable[[Any], bool]
    expected: str  # completes "must be ...", e.g. "a positive finite number"
    help: str
    tuned: bool = False  # a benchmark scale runs a grid of it and selects per target (leak-free)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def positive_number(default: float, help: str, tuned: bool = False) -> Param:
    return Param(default, lambda v: _is_number(v) and v > 0, "a positive finite number", help, tuned)


def positive_count(default: int | None, help: str) -> Param:
    """A positive integer; a ``None`` default means "chosen from the budget" and may be passed too."""
    accepts = (lambda v: v is None or _is_count(v)) if default is None else _is_count
    return Param(default, accepts, "a positive integer" + (" (or None: automatic)" if default is None else ""),
                 help)


def fraction(default: float, help: str, open_at_zero: bool = False) -> Param:
    if open_at_zero:
        return Param(default, lambda v: _is_number(v) and 0 < v < 1, "a number strictly between 0 and 1", help)
    return Param(default, lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)", help)


def count(default: int, help: str) -> Param:
    """A non-negative integer (0 switches the feature off)."""
    return Param(default, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                 "a non-negative integer", help)


def switch(default: bool, help: str) -> Param:
    return Param(default, lambda v: isinstance(v, bool), "True or False", help)


# MHIS's, tilted's and smc's intervals are "sampling-only": on the `cpu` scale MHIS's covered 66% (a bias
# its chains share); on the shipped models' `generation` scale tilted's covered 74% and smc's 83% — a run
# that draws few of the rare prompts carrying most of the probability is low and narrow, and nothing
# inside the run shows it (benchmarks/notebook/generation-events/README.md, section 3).
INTERVAL_KINDS = {
    "exact": "an exact binomial interval: it covers at least at its nominal level",
    "approximate": "an approximate interval from the sampling variability of unbiased terms",
    "sampling-only": "reflects the sampling error its draws show only, not the method's own bias or approximation "
                     "error, nor mass its proposal seldom visits: the truth can lie far outside it",
}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    implementation: str  # "module:function"
    params: dict[str, Param] = field(default_factory=dict)
    min_budget: int = 1  # fewer model calls than this cannot give an estimate at all
    interval: str = "approximate"  # what the method's 95% interval accounts for: a key of INTERVAL_KINDS
    events: tuple[str, ...] = ("logits",)  # the event families it estimates: "logits", "generation"
    samples: bool = True  # draws weighted samples of the event, so Estimate.attribution() can read its hits
    # what one model call of the budget may execute (``lowprob.cost``), and the unit ``estimate``'s timed probe
    # prices a run in: forward-equivalents of one sequence (a backward costs one), or continuations of a prompt
    work: int = 1

    def resolve(self, budget: Any, hyper: dict[str, Any]) -> dict[str, Any]:
        """Check ``budget`` and ``hyper`` against the declaration; return the full hyper-parameters."""
        budget = check_budget(budget)
        if budget < self.min_budget:
            raise LowprobError(f"{self.name} needs a budget of at least {self.min_budget} model calls, got {budget}")
        unknown = sorted(set(hyper) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            raise LowprobError(f"{self.name} has no hyper-parameter {', '.join(unknown)}; valid: {valid}")
        # integers of any kind (numpy's) as plain ints: checked like them, and written to JSON like them
        hyper = {k: v if integer(v) is None else integer(v) for k, v in hyper.items()}
        for key, value in hyper.items():
            if not self.params[key].accepts(value):
                raise LowprobError(f"{self.name}: {key} must be {self.params[key].expected}, got {value!r}")
        return {**{k: p.default for k, p in self.params.items()}, **hyper}

    def tuned(self) -> list[str]:
        """The hyper-parameters a benchmark searches a grid of."""
        return [name for name, p in self.params.items() if p.tuned]

    def function(self) -> Callable[..., Any]:
        module, name = self.implementation.split(":")
        return getattr(importlib.import_module(module), name)


_TEMPERATURE = "tilt temperature: lower tilts harder toward the event"

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("naive", "hit fraction of plain samples, Clopper–Pearson interval", "lowprob.estimators.naive:naive",
           interval="exact", events=("logits", "generation")),
    Method("tilted", "importance sampling of continuations from next-token laws tilted toward the patterns "
           "(tilt adapted by cross-entropy inside the call; generation events)", "lowprob.estimators.tilted:tilted",
           {"rounds": positive_count(4, "adaptation rounds (the tilt is refitted after each)"),
            "rho": fraction(0.1, "share of a round kept as elites when fewer rows hit", open_at_zero=True),
            "adapt_fraction": fraction(0.25, "share of the budget spent adapting the tilt", open_at_zero=True),
            "defensive": fraction(0.2, "share of each step's law kept untilted (bounds the weights)"),
            "prompt_side": switch(True, "also propose prompts fitted to the pilot's hits (with the defensive share "
                                        "of the input distribution)")},
           min_budget=16, events=("generation",), interval="sampling-only"),  # 74% covered: see INTERVAL_KINDS
    Method("smc", "sequential Monte Carlo over partial continuations, resampled toward the patterns "
           "(splitting; generation events)", "lowprob.estimators.smc:smc",
           {"growth": positive_number(2.0, "log-potential gained per token of progress into a pattern"),
            "resample_below": fraction(0.5, "resample when the effective sample size falls below this share",
                                       open_at_zero=True),
            "replicates": positive_count(8, "independent runs whose spread gives the interval"),
            "adapt_fraction": fraction(0.25, "share of the budget for the tilt's pilot (0: the model's own law)"),
            "rounds": positive_count(4, "cross-entropy rounds of the pilot"),
            "rho": fraction(0.1, "share of a pilot round kept as elites when fewer rows hit", open_at_zero=True),
            "defensive": fraction(0.2, "share of each step's law kept untilted (bounds the weights)")},
           min_budget=32, events=("generation",), interval="sampling-only"),  # 83% covered: see INTERVAL_KINDS
    Method("itgis", "importance sampling with gradient-tilted independent tokens", "lowprob.estimators.itgis:itgis",
           {"temperature": positive_number(1.0, _TEMPERATURE, tuned=True),
            "batch_size": positive_count(None, "samples per adaptive round (default: min(256, budget/16))")},
           work=GRADIENT_CALL),  # a forward and a backward per sample
    Method("mhis", "Metropolis-Hastings importance sampling with gradient-informed proposals",
           "lowprob.estimators.mhis:mhis",
           {"temperature": positive_number(1.0, _TEMPERATURE, tuned=True),
            "chains": positive_count(None, "independent chains (default: min(32, budget))"),
            "burn_in_fraction": fraction(0.25, "share of each chain's steps discarded as burn-in")},
           interval="sampling-only", work=GRADIENT_CALL),  # the chains' spread cannot see a bias they all share
    Method("ceis", "cross-entropy importance sampling over a growing mixture of per-position proposals, the "
           "last position summed out exactly (adapts inside the call, nothing to tune; the default)",
           "lowprob.estimators.ceis:ceis",
           {"rho": fraction(0.1, "share of a stage kept as elites above the rising level", open_at_zero=True),
            "defensive": fraction(0.05, "mixture share of the input distribution (weights <= 1/defensive)",
                                  open_at_zero=True),
            "floor": fraction(0.01, "smallest mixture share of any other component", open_at_zero=True),
            "prior_strength": positive_number(1.0, "Dirichlet shrinkage of a fit, x support size"),
            "gradient_fraction": fraction(0.0625, "share of the budget for the gradient pilot", open_at_zero=True),
            "stage_fraction": fraction(0.04, "share of the work per cross-entropy stage", open_at_zero=True),
            "adapt_fraction": fraction(0.4, "largest share of the work spent adapting", open_at_zero=True),
            "elite_gradient": count(32, "best samples of a stage whose margin gradient tilts its fit"),
            "rao_blackwell": switch(True, "estimation phase: sum the last variable position out exactly, each "
                                          "sample's prefix scored with every completion"),
            "rb_share": Param(0.5, lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]",
                              "with rao_blackwell: share of the estimation phase's work for summed-out samples"),
            "probe": Param("templates", lambda v: v in ("templates", "always", "never"),
                           "one of templates, always, never",
                           "white-box swap scan (and a flattened component) on: template distributions only, any "
                           "distribution, or none"),
            "probe_fraction": fraction(0.25, "largest share of the work for the swap scan (skipped if it needs more)",
                                       open_at_zero=True),
            "climb_fraction": Param(0.25, lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)",
                                    "largest share of the work for climbing from the stages' best samples by exact "
                                    "single-position scans, where the stages drew no hit (0: off)"),
            "probe_bases": positive_count(None, "base inputs every support value is swapped into (default: as "
                                                "many as half the probe's share buys, 2 .. 16)")},
           min_budget=32, work=GRADIENT_CALL),  # a pilot, stages and an estimation phase need room
    Method("flat", "model-blind baseline: importance sampling from the input distribution mixed with the uniform "
           "law on each position's support", "lowprob.estimators.flat:flat",
           {"defensive": fraction(0.5, "share of the input distribution in the proposal (weights <= 1/defensive)",
                                  open_at_zero=True)},
           work=GRADIENT_CALL),  # given CEIS's executed compute: 2 x budget forwards
    Method("gld", "Gaussian fit to the target's logit gap, Φ(μ/σ) (activations shared across targets)",
           "lowprob.estimators.extrapolation:gld", min_budget=2, interval="sampling-only", samples=False),
    Method("qld", "quadratic logit decomposition along the min-norm accepting direction (shared activations)",
           "lowprob.estimators.extrapolation:qld", min_budget=2, interval="sampling-only", samples=False),
)}

DEFAULT_METHODS = {"logits": "ceis", "generation": "tilted"}  # per event family
DEFAULT_METHOD = DEFAULT_METHODS["logits"]


def methods_for(family: str) -> list[str]:
    """The methods that estimate events of ``family`` ("logits" or "generation"), sorted."""
    return sorted(name for name, m in METHODS.items() if family in m.events)


def methods_with_samples() -> list[str]:
    """The methods whose estimates keep weighted hits, so they can attribute the event to inputs, sorted."""
    return sorted(name for name, m in METHODS.items() if m.samples)


def register(method: Method) -> None:
    """Add ``method`` to the catalog, so ``estimate``, ``lowprob methods`` and the benchmark offer it.

    Its implementation is imported on first use, like the shipped methods'.
    """
    if not isinstance(method, Method):
        raise LowprobError(f"register takes a lowprob.estimators.catalog.Method, got {method!r}")
    if method.name in METHODS:
        raise LowprobError(f"a method named {method.name!r} is already registered: give yours another name "
                           f"(taken: {', '.join(sorted(METHODS))})")
    if method.interval not in INTERVAL_KINDS:
        raise LowprobError(f"{method.name}: interval must be one of {', '.join(INTERVAL_KINDS)}, "
                           f"got {method.interval!r}")
    METHODS[method.name] = method


def get_method(name: str) -> Method:
    if not isinstance(name, str) or name not in METHODS:
        raise LowprobError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]
