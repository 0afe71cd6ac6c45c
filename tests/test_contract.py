"""The contract every method of the catalog keeps, on a tiny exact problem per event family it declares.

The cases are read from ``estimators.catalog.METHODS`` when the tests are collected, so a method
registered there is held to the contract without editing this file. The contract: an ``Estimate``
with p and its interval in [0, 1], the interval kind the catalog declares, consistent costs and
strict JSON; the same seed gives the same estimate; a hyper-parameter the method does not declare, a
value a declared one does not accept, a budget below the method's minimum and an event of a family it
does not declare are refused with one ``LowprobError``; ``attribution()`` works iff it keeps samples.
Statistical accuracy is checked elsewhere, method by method, against the same kind of exact answers.
"""

import json
import math

import pytest
import torch

import lowprob
from lowprob import ArgmaxIs, LowprobError, Transformer, TransformerConfig, estimate
from lowprob.attribution import Attribution
from lowprob.continuations import exact_generation_probability
from lowprob.cost import BACKWARD_FORWARDS
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.tiny import tiny_distribution
from lowprob.estimators import Estimate
from lowprob.estimators.catalog import INTERVAL_KINDS, METHODS
from lowprob.events import Generates

TOY = TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32)
FAMILIES = ("logits", "generation")
BUDGET = 64  # the contract's budget, raised to a method's minimum where that is larger
ADAPTED = 700  # a budget past the first rounds of the adaptive methods, where every sampling method sees hits
CASES = [pytest.param(name, family, id=f"{name}-{family}") for name in sorted(METHODS)
         for family in METHODS[name].events]


@pytest.fixture(scope="module")
def toy():
    return Transformer(TOY, seed=0), tiny_distribution("tiny-uniform", TOY.d_vocab)


@pytest.fixture(scope="module")
def problems(toy):
    """Per event family: (distribution, event, its exact probability), an event near 5%, so that every
    sampling method sees hits and has something to attribute."""
    model, dist = toy
    exact = lowprob.ground_truth(model, dist, exact=True).probabilities
    target = int((exact - 0.05).abs().argmin())
    prompts = TokenDistribution.from_positions(
        [0, (torch.tensor([3, 5, 7, 9]), torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))], normalize=True)
    candidates = [(e, exact_generation_probability(model, prompts, e))
                  for e in (Generates(((t,),), steps=2) for t in range(1, TOY.d_vocab))]
    generates, p = min(candidates, key=lambda c: abs(c[1] - 0.05))
    return {"logits": (dist, ArgmaxIs(target), float(exact[target])), "generation": (prompts, generates, p)}


def budget_for(method: str, budget: int = BUDGET) -> int:
    return max(budget, METHODS[method].min_budget)


def comparable(e: Estimate) -> dict:
    """What the same seed must reproduce: everything but the wall time and whether a cache was hit, and the
    very samples that hit (a hit count alone can coincide between seeds)."""
    out = e.to_json()
    out["cost"] = {k: v for k, v in out["cost"].items() if k != "seconds"}
    out["diagnostics"] = {k: v for k, v in out["diagnostics"].items() if k != "cache_hit"}
    if e.samples is not None:
        hits = e.samples.hits
        out["hits"] = (hits.tokens.tolist(), hits.log_weight.tolist(), hits.units().tolist())
    return out


@pytest.mark.parametrize(("method", "family"), CASES)
def test_an_estimate_keeps_the_contract(toy, problems, method, family):
    model, _ = toy
    dist, event, _ = problems[family]
    spec, budget = METHODS[method], budget_for(method)
    e = estimate(model, dist, event, method=method, budget=budget, seed=0)
    assert isinstance(e, Estimate) and (e.method, e.budget, e.seed) == (method, budget, 0)
    assert e.hyper == spec.resolve(budget, {})
    lo, hi = e.interval
    assert all(math.isfinite(v) for v in (e.probability, lo, hi))
    assert 0 <= e.probability <= 1 and 0 <= lo <= hi <= 1
    assert e.interval_kind == spec.interval and spec.interval in INTERVAL_KINDS
    assert e.event == event.describe(None)
    c = e.cost
    assert all(type(n) is int and n >= 0 for n in (c.forward_passes, c.backward_passes)), c
    # within the work the catalog declares per model call, in forward-equivalents
    assert c.forward_passes > 0 and c.forward_passes + BACKWARD_FORWARDS * c.backward_passes <= spec.work * budget, c
    assert math.isfinite(c.flops) and c.flops > 0 and c.seconds >= 0, c
    json.dumps(e.to_json(), allow_nan=False)  # strict JSON


@pytest.mark.parametrize(("method", "family"), CASES)
def test_the_same_seed_gives_the_same_estimate_and_a_sane_one(toy, problems, method, family):
    """Sane: within a factor of 10 of the exact 5%, wider than the extrapolations' bias there, so that
    nonsense that ``estimate`` clips into [0, 1] is caught."""
    model, _ = toy
    dist, event, p = problems[family]
    budget = budget_for(method, ADAPTED)
    a, b = (estimate(model, dist, event, method=method, budget=budget, seed=11) for _ in range(2))
    assert comparable(a) == comparable(b)
    other = estimate(model, dist, event, method=method, budget=budget, seed=12)  # allowed to differ from a
    for e in (a, other):
        assert p / 10 <= e.probability <= 10 * p, (e.probability, p)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_what_the_method_does_not_declare_is_refused(toy, problems, method):
    model, _ = toy
    spec = METHODS[method]
    dist, event, _ = problems[spec.events[0]]
    budget = budget_for(method)
    with pytest.raises(LowprobError, match=f"{method} has no hyper-parameter not_a_parameter"):
        estimate(model, dist, event, method=method, budget=budget, not_a_parameter=1)
    for name in spec.params:
        with pytest.raises(LowprobError, match=f"{method}: {name} must be"):
            estimate(model, dist, event, method=method, budget=budget, **{name: "not a value"})
    too_small = spec.min_budget - 1
    with pytest.raises(LowprobError, match="needs a budget of at least" if too_small else "positive integer"):
        estimate(model, dist, event, method=method, budget=too_small)
    for family in sorted(set(FAMILIES) - set(spec.events)):
        other_dist, other_event, _ = problems[family]
        with pytest.raises(LowprobError, match=f"{method} does not estimate {family} events"):
            estimate(model, other_dist, other_event, method=method, budget=budget)


@pytest.mark.parametrize(("method", "family"), CASES)
def test_attribution_works_iff_the_method_keeps_samples(toy, problems, method, family):
    model, _ = toy
    dist, event, _ = problems[family]
    e = estimate(model, dist, event, method=method, budget=budget_for(method, ADAPTED), seed=0)
    if METHODS[method].samples:
        attribution = e.attribution()
        assert isinstance(attribution, Attribution) and attribution.hits > 0 and attribution.rows
    else:
        with pytest.raises(LowprobError, match=f"{method} draws no samples of the event"):
            e.attribution()


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("budget", [2, 16, 32])
def test_every_method_at_tiny_budgets_gives_an_interval_inside_0_1(toy, method, budget):
    model, dist = toy

    def event(target: int):  # a generation-only method gets "the next token is the target"
        return ArgmaxIs(target) if "logits" in METHODS[method].events else Generates(((target,),), steps=1)

    if budget < METHODS[method].min_budget:
        with pytest.raises(LowprobError, match=f"{method} needs a budget of at least"):
            estimate(model, dist, event(0), method=method, budget=budget, seed=0)
        return
    for target in range(0, TOY.d_vocab, 5):
        e = estimate(model, dist, event(target), method=method, budget=budget, seed=0)
        assert 0 <= e.interval[0] <= e.interval[1] <= 1 and 0 <= e.probability <= 1, (target, e)
