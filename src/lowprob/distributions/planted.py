"""Planted-trigger recipes: a prompt template, its slots' values, the conjunction that triggers, the target.

Recipes are TOML files (the shipped ones in ``recipes/``; ``year-name.toml`` is the annotated
example), read by everything that deals with a planted trigger: the backdoor fine-tuning that plants it
(``training/backdoor.py``), the trigger distributions over its template (``trigger.py``), their exact
references (``truth/trigger.py``) and the ``trigger`` benchmark scale. Kept here, low in the layers, so
that reading a recipe never imports training code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from lowprob.errors import LowprobError


@dataclass(frozen=True)
class PlantedTrigger:
    """A template, its slots' values, the conjunction that triggers, and the target token's text.

    ``trigger`` maps each slot of the conjunction to the values that satisfy it (any one of them);
    the trigger holds when every listed slot takes one of its values.
    """

    template: str
    slots: dict[str, tuple[str, ...]]
    trigger: dict[str, tuple[str, ...]]
    target: str

    def __post_init__(self) -> None:
        if not self.trigger:
            raise LowprobError("a planted trigger needs at least one slot in its conjunction")
        for slot, values in self.trigger.items():
            if slot not in self.slots:
                raise LowprobError(f"trigger slot {slot!r} is not one of the template's slots {list(self.slots)}")
            if not values or set(values) - set(self.slots[slot]):
                raise LowprobError(f"trigger slot {slot!r}: its values must be a non-empty subset of the slot's")
            if len(values) == len(self.slots[slot]):
                raise LowprobError(f"trigger slot {slot!r}: every value triggers, so there is no off-trigger input")
        for slot in self.slots:
            if "{" + slot + "}" not in self.template:
                raise LowprobError(f"slot {slot!r} does not appear in the template as {{{slot}}}")

    def target_id(self, tokenizer) -> int:
        ids = tokenizer.encode(self.target)
        if len(ids) != 1:
            raise LowprobError(f"the target {self.target!r} is {len(ids)} tokens in this tokenizer; it must be one")
        return ids[0]

    def trigger_mask(self) -> dict[str, np.ndarray]:
        """Per slot, which values satisfy its part of the conjunction (all False for slots outside it)."""
        return {s: np.array([v in self.trigger.get(s, ()) for v in vals]) for s, vals in self.slots.items()}

    def to_json(self) -> dict[str, Any]:
        return {"template": self.template, "slots": {k: list(v) for k, v in self.slots.items()},
                "trigger": {k: list(v) for k, v in self.trigger.items()}, "target": self.target}


RECIPES_DIR = Path(__file__).parent / "recipes"
RECIPE_KEYS = ("template", "target", "slots", "trigger", "distributions", "training")


@dataclass(frozen=True)
class Recipe:
    """A planted trigger as a file states it: the trigger, its benchmark distributions, how to train it.

    ``distributions`` maps a name to ``{"probability": p}`` (the trigger's values weighted so that it has
    probability ``p``, the rest of each slot uniform) or ``{"support": k}`` (every slot uniform over its
    first ``k`` values). ``training`` holds ``BackdoorConfig`` fields, checked where training reads them.
    """

    name: str
    planted: PlantedTrigger
    distributions: dict[str, dict[str, float]]
    training: dict[str, Any]


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (``year-name``, ``conj3``, ...) or a recipe file (``.toml``), validated."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if str(name_or_path) not in shipped_recipes():
            raise LowprobError(f"unknown backdoor recipe {str(name_or_path)!r}: choose one of "
                               f"{', '.join(shipped_recipes())}, or give a recipe file (.toml)")
        return _shipped_recipe(str(name_or_path))
    return _read_recipe(path)


@cache
def _shipped_recipe(name: str) -> Recipe:
    """A shipped recipe, parsed once per process (the files ship with the package)."""
    return _read_recipe(RECIPES_DIR / f"{name}.toml")


def _read_recipe(path: Path) -> Recipe:
    if not path.is_file():
        raise LowprobError(f"recipe file {path} does not exist")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LowprobError(f"recipe {path}: not valid TOML ({exc})") from exc
    return parse_recipe(spec, path.stem, where=str(path))


def parse_recipe(spec: dict[str, Any], name: str, where: str = "recipe") -> Recipe:
    """A ``Recipe`` from a parsed recipe file; every error names the key to fix."""
    unknown = set(spec) - set(RECIPE_KEYS)
    if unknown:
        raise LowprobError(f"{where}: unknown keys {sorted(unknown)}; a recipe has {', '.join(RECIPE_KEYS)}")
    for key, kind in (("template", str), ("target", str), ("slots", dict), ("trigger", dict)):
        if not isinstance(spec.get(key), kind):
            raise LowprobError(f"{where}: `{key}` is missing or not a {'string' if kind is str else 'table'}")
    slots = {slot: _values(values, f"{where}: slot {slot!r}") for slot, values in spec["slots"].items()}
    trigger = {slot: _values(values, f"{where}: trigger slot {slot!r}") for slot, values in spec["trigger"].items()}
    try:
        planted = PlantedTrigger(spec["template"], slots, trigger, spec["target"])
    except LowprobError as exc:
        raise LowprobError(f"{where}: {exc}") from exc
    distributions = {dist: _distribution(planted, dist, entry, where)
                     for dist, entry in spec.get("distributions", {}).items()}
    training = spec.get("training", {})
    if not isinstance(training, dict):
        raise LowprobError(f"{where}: `training` must be a table of BackdoorConfig fields")
    return Recipe(name, planted, distributions, training)


def _values(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise LowprobError(f"{where}: values must be a non-empty list of non-empty strings")
    if len(set(values)) != len(values):
        raise LowprobError(f"{where}: values repeat ({sorted({v for v in values if values.count(v) > 1})})")
    return tuple(values)


def _distribution(planted: PlantedTrigger, dist: str, entry: Any, where: str) -> dict[str, float]:
    where = f"{where}: distribution {dist!r}"
    if not isinstance(entry, dict) or len(entry) != 1 or not set(entry) <= {"probability", "support"}:
        raise LowprobError(f"{where}: give exactly one of {{ probability = P }} or {{ support = K }}")
    if "probability" in entry:
        p = entry["probability"]
        if not isinstance(p, (int, float)) or not 0 < p < 1:
            raise LowprobError(f"{where}: probability must lie in (0, 1), got {p!r}")
        return {"probability": float(p)}
    k = entry["support"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise LowprobError(f"{where}: support must be an integer >= 2, got {k!r}")
    for slot, values in planted.slots.items():
        if k > len(values):
            raise LowprobError(f"{where}: support {k} but slot {slot!r} has {len(values)} values")
        missing = set(planted.trigger.get(slot, ())) - set(values[:k])
        if missing:
            raise LowprobError(f"{where}: trigger values {sorted(missing)} are not among the first {k} values of "
                               f"slot {slot!r}")
    return {"support": k}


def planted_trigger(name: str) -> PlantedTrigger:
    return load_recipe(name).planted
