"""Input distributions: independent tokens per position, and prompt templates with random slots."""

from __future__ import annotations

from pathlib import Path

from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.paper import LENGTHS, PAPER_DISTRIBUTIONS, paper_distribution
from lowprob.distributions.tiny import TINY_FAMILIES, tiny_distribution
from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS, trigger_distribution
from lowprob.errors import LowprobError

__all__ = ["LENGTHS", "PAPER_DISTRIBUTIONS", "TINY_FAMILIES", "TRIGGER_DISTRIBUTIONS", "TokenDistribution",
           "distribution_names", "load_distribution", "paper_distribution", "tiny_distribution",
           "trigger_distribution"]


def distribution_names() -> list[str]:
    return [*PAPER_DISTRIBUTIONS, *TINY_FAMILIES]


def load_distribution(name: str, model, length: str = "cpu"):
    """A paper distribution, a tiny family, a trigger distribution (``trigger-p8``), a saved
    ``.safetensors`` distribution file, or a slot distribution (a ``.toml``/``.json`` prompt
    template), for ``model``."""
    if name in PAPER_DISTRIBUTIONS:
        return paper_distribution(name, model, length)
    if name in TINY_FAMILIES:
        return tiny_distribution(name, model.d_vocab)
    if name in TRIGGER_DISTRIBUTIONS:
        return trigger_distribution(name, getattr(model, "tokenizer", None))
    if name.endswith((".toml", ".json")):
        from lowprob.distributions.slots import SlotDistribution

        return SlotDistribution.load(name, getattr(model, "tokenizer", None))
    if name.endswith(".safetensors") or Path(name).is_file():
        dist = TokenDistribution.load(name)
        dist.check_model(model)
        return dist
    raise LowprobError(f"unknown distribution {name!r}: choose one of {', '.join(distribution_names())}, "
                       f"{', '.join(TRIGGER_DISTRIBUTIONS)} or give a distribution file")
