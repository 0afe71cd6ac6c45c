"""Checks of the public API's arguments at the boundary: what the caller passed, against what it must be.

A model name where a loaded model belongs, a number where an event belongs, ``1.5`` samples: each
becomes one ``LowprobError`` that says what to pass instead, before any work — not an
``AttributeError`` from deep inside. Torch-free at import (the CLI's catalog checks use ``integer``),
and at the bottom of the layers, so it imports nothing of lowprob's but errors: a check that must
know a domain type lives with the type (``distributions.bind``, ``events.check_event``).
"""

from __future__ import annotations

import math
import operator
from typing import Any

from lowprob.errors import LowprobError


def integer(value: Any) -> int | None:
    """``value`` as a plain ``int`` when it is an integer of any kind (``numbers.Integral``: numpy's
    and 0-dim integer tensors included) but not a bool; else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def integer_in(value: Any, name: str, low: int = 1, high: int | None = None, why: str = "") -> int:
    """An integer of any kind in ``low .. high`` as a plain ``int``, or a LowprobError naming ``name``
    (and ``why`` the ceiling is where it is)."""
    n = integer(value)
    if n is None or n < low:
        raise LowprobError(f"{name} must be >= {low} (an integer), got {value!r}")
    if high is not None and n > high:
        raise LowprobError(f"{name} must be at most {high:,}{why}, got {n:,}")
    return n


# Past 2^40 model calls a run finishes nowhere (12 days even at a million calls a second), and some methods
# hold a share of the budget in memory at once (CEIS's pilot: a sixteenth of its sequences).
MAX_BUDGET = 1 << 40


def check_budget(budget: Any) -> int:
    """``budget`` (model calls) as a plain ``int`` in 1 .. 2^40; any integer type is accepted (numpy's too)."""
    n = integer(budget)
    if n is None or n < 1:
        raise LowprobError(f"budget must be a positive integer (model calls), got {budget!r}")
    if n > MAX_BUDGET:
        raise LowprobError(f"budget must be at most 2^40 = {MAX_BUDGET:,} model calls (12 days even at a million "
                           f"calls a second), got {n:,}")
    return n


# torch's CPU generator (Mersenne Twister) keeps the low 32 bits of a seed: seeds 2^32, 2^33 and 2^63 all
# draw seed 0's numbers, so a seed is refused from 2^32 on rather than silently aliased
MAX_SEED = (1 << 32) - 1


def check_seed(seed: Any) -> int:
    """``seed`` as a plain ``int`` in 0 .. 2^32 - 1; any integer type is accepted (numpy's too)."""
    n = integer(seed)
    if n is None or n < 0:
        raise LowprobError(f"seed must be a non-negative integer, got {seed!r}")
    if n > MAX_SEED:
        raise LowprobError(f"seed must be below 2^32 = {MAX_SEED + 1:,} (torch's generator keeps 32 bits of a seed: "
                           f"{n} would draw seed {n & MAX_SEED}'s numbers), got {n}")
    return n


def time_limit(value: Any) -> float | None:
    """``max_seconds``: None (no limit) or a number of seconds >= 0 (``math.inf`` is no limit too); a NaN
    would turn every comparison, so the limit, off."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise LowprobError(f"the time limit (max_seconds; --max-hours on the command line) must be a number "
                           f">= 0 or None, got {value!r}")
    return float(value)


def named(value: Any) -> str:
    """How an error message names what a caller passed: its value, or its type when that says more."""
    if value is None or isinstance(value, (str, int, float)):
        return repr(value) if value is None else f"the {type(value).__name__} {value!r}"
    return f"a {type(value).__qualname__}"


def check_model(model: Any) -> None:
    """Refuse what is not a loaded language model (its name, say), with how to load one."""
    if not all(hasattr(model, a) for a in ("W_E", "n_ctx", "d_vocab", "logits", "final_residual")):
        hint = f": load it with lowprob.load_model({str(model)!r})" if isinstance(model, str) else ""
        raise LowprobError(f"model must be a language model (lowprob.load_model returns one; see "
                           f"lowprob.models.LanguageModel), got {named(model)}{hint}")
