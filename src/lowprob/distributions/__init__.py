"""Input distributions: independent tokens per position, and prompt templates with random slots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lowprob.checks import check_model, named
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.paper import LENGTHS, PAPER_DISTRIBUTIONS, paper_distribution
from lowprob.distributions.slots import SlotDistribution
from lowprob.distributions.tiny import TINY_FAMILIES, tiny_distribution
from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS, trigger_distribution
from lowprob.errors import LowprobError

__all__ = ["LENGTHS", "PAPER_DISTRIBUTIONS", "TINY_FAMILIES", "TRIGGER_DISTRIBUTIONS", "SlotDistribution",
           "TokenDistribution", "bind", "distribution_names", "load_distribution", "paper_distribution",
           "tiny_distribution", "trigger_distribution"]


def distribution_names() -> list[str]:
    return [*PAPER_DISTRIBUTIONS, *TINY_FAMILIES]


def load_distribution(name: str | os.PathLike, model, length: str = "cpu"):
    """A paper distribution, a tiny family, a trigger distribution (``trigger-p8``), a saved
    ``.safetensors`` distribution file, or a slot distribution (a ``.toml``/``.json`` prompt
    template, a ``str`` or a ``pathlib.Path``), for ``model``. ``length`` picks a paper
    distribution's variant; every other kind has one length, so another ``length`` is refused."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise LowprobError(f"a distribution is a name ({', '.join(distribution_names())}, "
                           f"{', '.join(TRIGGER_DISTRIBUTIONS)}) or a file path, got {name!r}")
    check_model(model)
    if length != "cpu" and name not in PAPER_DISTRIBUTIONS:
        raise LowprobError(f"length {length!r} picks a variant of a paper distribution "
                           f"({', '.join(PAPER_DISTRIBUTIONS)}); {name} has one length: leave length (--length) "
                           f"at its default, cpu")
    if name in PAPER_DISTRIBUTIONS:
        return paper_distribution(name, model, length)
    if name in TINY_FAMILIES:
        return tiny_distribution(name, model.d_vocab)
    if name in TRIGGER_DISTRIBUTIONS:
        return trigger_distribution(name, getattr(model, "tokenizer", None))
    if Path(name).is_dir():
        raise LowprobError(f"{name} is a directory: give a template file (.toml or .json) or a distribution "
                           f"file (.safetensors)")
    if name.endswith((".toml", ".json")):
        return SlotDistribution.load(name, getattr(model, "tokenizer", None))
    if name.endswith(".safetensors") or Path(name).is_file():
        dist = TokenDistribution.load(name)
        dist.check_model(model)
        return dist
    raise LowprobError(f"unknown distribution {name!r}: choose one of {', '.join(distribution_names())}, "
                       f"{', '.join(TRIGGER_DISTRIBUTIONS)} or give a distribution file")


def bind(model: Any, dist: Any) -> tuple[Any, TokenDistribution]:
    """``dist.bind(model)`` checked: the (model, distribution) pair every estimator and table runs on.

    Refuses, by what they should be, a model that is not a loaded language model (its name, say)
    and a distribution that is not one (its name, say), then checks the two fit each other.
    """
    if not isinstance(dist, (TokenDistribution, SlotDistribution)):
        hint = f": load it with lowprob.load_distribution({str(dist)!r}, model)" if isinstance(dist, str) else ""
        raise LowprobError(f"dist must be a distribution (a TokenDistribution, or a template from "
                           f"lowprob.load_distribution), got {named(dist)}{hint}")
    check_model(model)
    model, dist = dist.bind(model)
    dist.check_model(model)
    return model, dist
