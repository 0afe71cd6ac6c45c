"""Trigger distributions: a planted trigger's template with weights that make the trigger rare.

Every distribution of a family fills the same template from the same slot values (those of a
``PlantedTrigger``, see ``planted.py``); only the weights differ. Each slot of the
conjunction gives its trigger values, together, the weight ``q = p ** (1 / k)`` (``k`` slots in the
conjunction), split evenly among them; the other values share ``1 - q`` evenly; slots outside the
conjunction are uniform. The trigger's probability is then ``p`` by construction — the product of the
trigger values' slot weights — while the space (and which prompts trigger) stays the same, so one
enumeration of a model over the space answers every member of the family exactly.
"""

from __future__ import annotations

import math

from lowprob.distributions.planted import PlantedTrigger, planted_trigger
from lowprob.distributions.slots import SlotDistribution
from lowprob.errors import LowprobError

# name -> (planted trigger recipe, probability of the trigger)
TRIGGER_DISTRIBUTIONS: dict[str, tuple[str, float]] = {
    f"trigger-p{e}": ("year-name", 10.0 ** -e) for e in (4, 6, 8, 10)
}


def trigger_weights(planted: PlantedTrigger, probability: float) -> dict[str, list[float]]:
    """Slot weights under which ``planted``'s conjunction has probability ``probability``."""
    if not 0 < probability < 1:
        raise LowprobError(f"a trigger probability must lie in (0, 1), got {probability!r}")
    share = probability ** (1 / len(planted.trigger))
    weights = {}
    for slot, values in planted.slots.items():
        chosen = planted.trigger.get(slot, ())
        if not chosen:
            weights[slot] = [1 / len(values)] * len(values)
            continue
        rest = len(values) - len(chosen)
        weights[slot] = [share / len(chosen) if v in chosen else (1 - share) / rest for v in values]
    return weights


def trigger_probability(dist: SlotDistribution, planted: PlantedTrigger) -> float:
    """The trigger's probability under ``dist``: the product over the conjunction's slots of the
    weight its trigger values carry (exact, up to float64 rounding)."""
    by_name = {s.name: s for s in dist.slots}
    return math.prod(sum(w for v, w in zip(by_name[slot].values, by_name[slot].weights, strict=True) if v in values)
                     for slot, values in planted.trigger.items())


def trigger_spec(name: str) -> tuple[str, float]:
    if name not in TRIGGER_DISTRIBUTIONS:
        raise LowprobError(f"unknown trigger distribution {name!r}: choose one of {', '.join(TRIGGER_DISTRIBUTIONS)}")
    return TRIGGER_DISTRIBUTIONS[name]


def trigger_distribution(name: str, tokenizer) -> SlotDistribution:
    """A member of a trigger family, by name (``trigger-p8``: the trigger has probability 1e-8)."""
    recipe, probability = trigger_spec(name)
    return weighted_template(planted_trigger(recipe), probability, tokenizer, name)


def weighted_template(planted: PlantedTrigger, probability: float, tokenizer, name: str = "") -> SlotDistribution:
    """``planted``'s template as a slot distribution under which its trigger has ``probability``."""
    weights = trigger_weights(planted, probability)
    spec = {slot: {"values": list(values), "weights": weights[slot]} for slot, values in planted.slots.items()}
    return SlotDistribution.from_spec(planted.template, spec, tokenizer, name=name)
