"""Trigger distributions: a planted trigger's template filled so that the trigger is rare.

A recipe (``planted.py``) names its family of distributions, of one of two kinds:

* ``probability = p`` — the rarity lives in the weights. Every member fills the template from all the
  slot values; each slot of the conjunction gives its trigger values, together, the weight
  ``q = p ** (1 / k)`` (``k`` slots in the conjunction), split evenly among them, and the other values
  share ``1 - q`` evenly; slots outside the conjunction are uniform. A model-blind proposal that
  flattens the weights finds such a trigger.
* ``support = k`` — the rarity is combinatorial: every slot is uniform over its first ``k`` values
  (the trigger's among them), so a one-value-per-slot trigger over ``m`` slots has probability ``k^-m``.

Either way every member lives inside the space of all the recipe's slot values, so one enumeration of
a model over that space answers the whole family exactly.
"""

from __future__ import annotations

import math

from lowprob.distributions.planted import PlantedTrigger, load_recipe, shipped_recipes
from lowprob.distributions.slots import SlotDistribution
from lowprob.errors import LowprobError

# name -> (shipped recipe, its [distributions] entry: {"probability": p} or {"support": k})
TRIGGER_DISTRIBUTIONS: dict[str, tuple[str, dict[str, float]]] = {
    dist: (recipe, entry) for recipe in shipped_recipes() for dist, entry in load_recipe(recipe).distributions.items()
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


def trigger_spec(name: str) -> tuple[str, dict[str, float]]:
    if name not in TRIGGER_DISTRIBUTIONS:
        raise LowprobError(f"unknown trigger distribution {name!r}: choose one of {', '.join(TRIGGER_DISTRIBUTIONS)}")
    return TRIGGER_DISTRIBUTIONS[name]


def trigger_distribution(name: str, tokenizer) -> SlotDistribution:
    """A member of a trigger family, by name (``trigger-p8``: the trigger has probability 1e-8)."""
    recipe, entry = trigger_spec(name)
    return recipe_distribution(load_recipe(recipe).planted, entry, tokenizer, name)


def recipe_distribution(planted: PlantedTrigger, entry: dict[str, float], tokenizer, name: str = ""
                        ) -> SlotDistribution:
    """``planted``'s template under a recipe's distribution entry (``{"probability": p}`` or ``{"support": k}``)."""
    if "probability" in entry:
        return weighted_template(planted, entry["probability"], tokenizer, name)
    k = int(entry["support"])
    spec = {slot: {"values": list(values[:k])} for slot, values in planted.slots.items()}
    return SlotDistribution.from_spec(planted.template, spec, tokenizer, name=name)


def weighted_template(planted: PlantedTrigger, probability: float, tokenizer, name: str = "") -> SlotDistribution:
    """``planted``'s template as a slot distribution under which its trigger has ``probability``."""
    weights = trigger_weights(planted, probability)
    spec = {slot: {"values": list(values), "weights": weights[slot]} for slot, values in planted.slots.items()}
    return SlotDistribution.from_spec(planted.template, spec, tokenizer, name=name)
