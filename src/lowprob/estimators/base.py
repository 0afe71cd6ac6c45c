"""One API for every estimator: ``estimate(model, dist, event, method, budget, seed, **hyper)``.

An estimator is a function registered with its hyper-parameters' defaults. It returns the estimate,
a nominal 95% interval, the model calls it made and diagnostics; ``estimate`` validates the request
at the boundary, times the run, prices it in FLOPs and checks the result is a finite probability.
``budget`` counts samples pushed through the model (one sequence = one call, as in the paper).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from scipy import stats

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.events import Event


@dataclass(frozen=True)
class Cost:
    forward_passes: int
    backward_passes: int
    flops: float
    seconds: float


@dataclass(frozen=True)
class Estimate:
    method: str
    probability: float
    interval: tuple[float, float]
    budget: int
    seed: int
    cost: Cost
    diagnostics: dict[str, Any] = field(default_factory=dict)
    hyper: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "probability": self.probability, "interval": list(self.interval),
                "budget": self.budget, "seed": self.seed, "cost": asdict(self.cost),
                "diagnostics": self.diagnostics, "hyper": self.hyper}


@dataclass(frozen=True)
class RawEstimate:
    """What an estimator function returns; ``estimate`` turns it into an ``Estimate``."""

    probability: float
    interval: tuple[float, float]
    forward_passes: int
    backward_passes: int
    diagnostics: dict[str, Any]


EstimatorFn = Callable[..., RawEstimate]


@dataclass(frozen=True)
class Method:
    name: str
    fn: EstimatorFn
    defaults: dict[str, Any]
    description: str


METHODS: dict[str, Method] = {}


def register(name: str, description: str, **defaults: Any) -> Callable[[EstimatorFn], EstimatorFn]:
    """Register ``fn(model, dist, event, budget, generator, **hyper) -> RawEstimate`` as ``name``."""

    def wrap(fn: EstimatorFn) -> EstimatorFn:
        METHODS[name] = Method(name, fn, defaults, description)
        return fn

    return wrap


def poisson_upper(count: float = 0.0, level: float = 0.95) -> float:
    """Garwood's upper limit for a Poisson mean after ``count`` events (≈ 3.69 for none, at 95%).

    Samplers that saw no hit bound the probability by this many "hits' worth" of their largest weight.
    """
    return float(stats.chi2.ppf(1 - (1 - level) / 2, 2 * count + 2) / 2)


def score_and_gradient(model, event: Event, tokens: torch.Tensor):
    """Event score [B] (float64), indicator [B] and d score / d token embeddings [B, T, d_model].

    The gradient w.r.t. the one-hot input at (i, v) is then ``W_E[v] · grad[:, i]``: gradient methods
    evaluate it on each position's support only, never materialising a [B, T, vocab] one-hot tensor.
    """
    emb = model.W_E[tokens].detach().requires_grad_(True)
    with torch.enable_grad():
        resid = model.final_residual(emb)
        logits = resid @ model.W_U if model.b_U is None else resid @ model.W_U + model.b_U
        score = event.score(logits)
        (grad,) = torch.autograd.grad(score.sum(), emb)
    return score.detach().double(), event.indicator(logits.detach()), grad


def forward_flops(model, seq_len: int) -> float:
    """FLOPs of one sequence's forward pass to the last position's logits (2 per multiply-add).

    For the shipped transformer: every block at every position plus causal attention, and the
    unembedding at the last position only. Other protocol models: 2 x parameters x positions.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "d_mlp"):
        return 2.0 * sum(p.numel() for p in model.parameters()) * seq_len
    d, T = cfg.d_model, seq_len
    block = 2 * T * (4 * d * d + 2 * d * cfg.d_mlp) + 2 * T * T * d
    return float(cfg.n_layers * block + 2 * d * cfg.d_vocab)


def estimate(model, dist: TokenDistribution, event: Event, method: str = "itgis", budget: int = 4096,
             seed: int = 0, **hyper: Any) -> Estimate:
    """Estimate P(event) for inputs from ``dist``, spending ``budget`` model calls."""
    from lowprob import estimators  # noqa: F401  (registers the built-in methods)

    if method not in METHODS:
        raise LowprobError(f"unknown method {method!r}: choose one of {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise LowprobError(f"budget must be a positive integer (model calls), got {budget!r}")
    unknown = sorted(set(hyper) - set(spec.defaults))
    if unknown:
        valid = ", ".join(sorted(spec.defaults)) or "none"
        raise LowprobError(f"{method} has no hyper-parameter {', '.join(unknown)}; valid: {valid}")
    params = {**spec.defaults, **hyper}
    if "temperature" in params and not (isinstance(params["temperature"], (int, float))
                                        and math.isfinite(params["temperature"]) and params["temperature"] > 0):
        raise LowprobError(f"temperature must be a positive finite number, got {params['temperature']!r}")
    event.validate(model)
    dist.check_model(model)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    raw = spec.fn(model, dist, event, budget, generator, **params)
    seconds = time.perf_counter() - start
    lo, hi = raw.interval
    if not (math.isfinite(raw.probability) and raw.probability >= 0 and math.isfinite(lo) and math.isfinite(hi)
            and 0 <= lo <= hi):
        raise RuntimeError(f"{method} returned an invalid estimate {raw.probability} {raw.interval}: a bug")
    per_call = forward_flops(model, len(dist))
    flops = per_call * (raw.forward_passes + 2 * raw.backward_passes)  # a backward pass costs ~2 forwards
    cost = Cost(raw.forward_passes, raw.backward_passes, flops, seconds)
    return Estimate(method, float(raw.probability), (float(lo), float(hi)), budget, seed, cost,
                    raw.diagnostics, params)
