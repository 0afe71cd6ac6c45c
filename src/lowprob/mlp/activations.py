"""The activation functions, defined once (in torch) for sampling and for quadrature alike."""

from __future__ import annotations

from collections.abc import Callable

import torch

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "heaviside": lambda x: (x > 0).to(x.dtype),
    "abs": torch.abs,
    "sgn": torch.sign,
    "gelu": torch.nn.functional.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "square": torch.square,
    "cube": lambda x: x * x * x,
    "identity": lambda x: x,
}

# Activations with a kink or jump: Gauss-Hermite quadrature would converge slowly for them, so
# their Wick coefficients use the closed forms in ``wick.py``.
PIECEWISE = frozenset({"relu", "heaviside", "abs", "sgn"})


def check_activation(name: str) -> str:
    from lowprob.errors import LowprobError

    if name not in ACTIVATIONS:
        raise LowprobError(f"unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}")
    return name
