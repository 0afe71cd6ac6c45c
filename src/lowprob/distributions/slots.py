"""Slot distributions: a prompt template whose named slots are filled at random.

A file (TOML, or JSON with the same keys) gives the template and each slot's values and weights::

    template = "In{year}, the president{name} said"
    [slots.year]
    values = [" 2024", " 2028", " 2032"]
    weights = [0.6, 0.3, 0.1]          # optional: uniform when absent; must sum to 1 ± 1e-6
    [slots.name]
    values = [" Alice", " Bob Smith"]  # values may tokenize to different lengths

Each piece of text between slots and each value is tokenized on its own and the pieces are
concatenated; nothing is added that the template does not contain. The distribution is over slot
choices (independent categoricals, one per slot), so its log-probability is exact and it enumerates
when the product of the slots' sizes is small.

**The one idea.** Every estimator and exact ground truth already work on independent categoricals
over positions. A slot distribution *is* one, over slot values instead of tokens, once the model is
seen through the template: ``bind(model)`` returns that distribution over *value ids* (one unit per
slot, template pieces as constant units) and a ``TemplatedModel`` (``models/templated.py``) whose
input embedding of a value is its tokens' embeddings laid end to end. Its ``final_residual`` expands
each row into the real token sequence (grouping rows whose values have the same lengths) and runs the
real model, so gradients reach every token of a value: gradient methods tilt slot choices by the
first-order effect of all of a value's tokens. Values whose length differs from the current one shift later positions,
which the linear tilt ignores — that only makes a proposal less sharp, never an estimate biased.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.files import read_bytes, read_json
from lowprob.models.templated import TemplatedModel

WEIGHT_TOLERANCE = 1e-6
SLOT_KEYS = ("values", "weights")  # what a [slots.NAME] table may hold
SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Piece:
    """Fixed template text between slots."""

    text: str
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Slot:
    name: str
    values: tuple[str, ...]
    tokens: tuple[tuple[int, ...], ...]  # each value tokenized on its own
    weights: tuple[float, ...]  # normalised


class SlotDistribution:
    """Template pieces and slots, in template order."""

    def __init__(self, units: list[Piece | Slot], name: str = "") -> None:
        self.units = units
        self.name = name

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, template: str, slots: dict[str, dict], tokenizer, name: str = "") -> SlotDistribution:
        """Build from a template string and ``{slot: {"values": [...], "weights": [...]}}``."""
        if tokenizer is None:
            raise LowprobError("a slot distribution is text: the model needs a tokenizer")
        if not isinstance(template, str):
            raise LowprobError("template must be a string with {slot} placeholders")
        used = SLOT.findall(template)
        if not used:
            raise LowprobError("the template has no {slot}: nothing is random")
        missing = sorted(set(used) - set(slots))
        if missing:
            raise LowprobError(f"the template uses slot(s) {', '.join(missing)} that [slots] does not define")
        repeated = sorted({s for s in used if used.count(s) > 1})
        if repeated:
            raise LowprobError(f"slot(s) {', '.join(repeated)} appear more than once in the template; "
                               f"give each occurrence its own slot")
        unused = sorted(set(slots) - set(used))
        if unused:
            raise LowprobError(f"slot(s) {', '.join(unused)} are defined but not in the template")
        units: list[Piece | Slot] = []
        for i, piece in enumerate(SLOT.split(template)):
            if i % 2 == 1:
                units.append(_slot(piece, slots[piece], tokenizer))
            elif piece:
                units.append(Piece(piece, tuple(tokenizer.encode(piece))))
        return cls(units, name)

    @classmethod
    def load(cls, path: str | Path, tokenizer) -> SlotDistribution:
        """A ``.toml`` or ``.json`` file with ``template`` and ``[slots.NAME]`` tables."""
        path = Path(path)
        if path.suffix == ".json":
            spec = read_json(path)
        else:
            data = read_bytes(path)
            try:
                spec = tomllib.loads(data.decode("utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise LowprobError(f"{path} is not valid TOML: {exc}") from None
        if not isinstance(spec, dict) or "template" not in spec or not isinstance(spec.get("slots"), dict):
            raise LowprobError(f"{path} needs a `template` string and `[slots.NAME]` tables")
        unknown = sorted(set(spec) - {"template", "slots"})
        if unknown:
            raise LowprobError(f"{path}: unknown key(s) {', '.join(unknown)}; expected template and slots")
        try:
            return cls.from_spec(spec["template"], spec["slots"], tokenizer, name=path.stem)
        except LowprobError as exc:  # what is wrong inside the file: name the file too
            raise LowprobError(f"{path}: {exc}") from None

    # --- structure ----------------------------------------------------------------------------
    @property
    def slots(self) -> list[Slot]:
        return [u for u in self.units if isinstance(u, Slot)]

    def support_size(self) -> int:
        return math.prod(len(s.values) for s in self.slots)

    def lengths(self) -> tuple[int, int]:
        """The shortest and longest token sequence the template can produce."""
        fixed = sum(len(u.tokens) for u in self.units if isinstance(u, Piece))
        return (fixed + sum(min(map(len, s.tokens)) for s in self.slots),
                fixed + sum(max(map(len, s.tokens)) for s in self.slots))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s.name}: {len(s.values)}" for s in self.slots)
        lo, hi = self.lengths()
        return f"SlotDistribution({self.name or 'unnamed'}: slots {sizes}; {lo}..{hi} tokens)"

    def sample_texts(self, n: int, generator: torch.Generator) -> list[str]:
        """``n`` filled templates, for people to look at."""
        choices = [torch.multinomial(torch.tensor(s.weights), n, replacement=True, generator=generator)
                   for s in self.slots]
        texts = []
        for row in range(n):
            picks = iter([s.values[int(c[row])] for s, c in zip(self.slots, choices, strict=True)])
            texts.append("".join(next(picks) if isinstance(u, Slot) else u.text for u in self.units))
        return texts

    # --- the bridge to estimators ---------------------------------------------------------------
    def bind(self, model) -> tuple[TemplatedModel, TokenDistribution]:
        """The model seen through the template, and the distribution over value ids it reads."""
        _, hi = self.lengths()
        if hi > model.n_ctx:
            raise LowprobError(f"the template can produce {hi} tokens but the model's n_ctx is {model.n_ctx}")
        if max((t for u in self.units for seq in _sequences(u) for t in seq), default=0) >= model.d_vocab:
            raise LowprobError("the tokenizer produced ids outside the model's vocabulary")
        sequences: list[tuple[int, ...]] = []
        positions: list[int | tuple[Tensor, Tensor]] = []
        for u in self.units:
            start = len(sequences)
            sequences.extend(_sequences(u))
            if isinstance(u, Slot):
                positions.append((torch.arange(start, len(sequences)), torch.tensor(u.weights, dtype=torch.float64)))
            else:
                positions.append(start)
        if len(sequences) > model.d_vocab:
            raise LowprobError(f"the template and its slots have {len(sequences)} pieces and values, more than the "
                               f"model's {model.d_vocab} input ids that lowprob numbers them with")
        templated = TemplatedModel(model, sequences, n_units=len(self.units), longest=hi)
        dist = TokenDistribution.from_positions(positions, normalize=True, name=self.name)
        dist.of_template = True
        return templated, dist

    def unit_labels(self) -> list[tuple[str, dict[int, str]]]:
        """Per unit of the bound distribution, its name (a slot's name, a piece's text) and the text of
        each of its value ids, numbered as ``bind`` numbers them."""
        labels, start = [], 0
        for u in self.units:
            texts = u.values if isinstance(u, Slot) else (u.text,)
            labels.append((u.name if isinstance(u, Slot) else repr(u.text),
                           {start + k: text for k, text in enumerate(texts)}))
            start += len(texts)
        return labels


def _slot(name: str, spec: dict, tokenizer) -> Slot:
    if not isinstance(spec, dict) or not isinstance(spec.get("values"), list) or not spec["values"]:
        raise LowprobError(f"slot {name}: give a non-empty list `values`")
    unknown = sorted(set(spec) - set(SLOT_KEYS))
    if unknown:  # a misspelt `weights` would otherwise leave the slot uniform without a word
        raise LowprobError(f"slot {name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SLOT_KEYS)}")
    values = spec["values"]
    if not all(isinstance(v, str) and v for v in values):
        raise LowprobError(f"slot {name}: every value must be a non-empty string")
    if len(set(values)) != len(values):
        raise LowprobError(f"slot {name}: values repeat; merge them and add their weights")
    weights = spec.get("weights")
    if weights is None:
        weights = [1 / len(values)] * len(values)
    if (not isinstance(weights, list) or len(weights) != len(values)
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
                       for w in weights)):
        raise LowprobError(f"slot {name}: weights must be {len(values)} positive numbers, one per value")
    if abs(sum(weights) - 1) > WEIGHT_TOLERANCE:
        raise LowprobError(f"slot {name}: weights sum to {sum(weights):.9g}; they must sum to 1 ± {WEIGHT_TOLERANCE}")
    tokens = tuple(tuple(tokenizer.encode(v)) for v in values)
    return Slot(name, tuple(values), tokens, tuple(w / sum(weights) for w in weights))


def _sequences(unit: Piece | Slot) -> list[tuple[int, ...]]:
    return list(unit.tokens) if isinstance(unit, Slot) else [unit.tokens]
