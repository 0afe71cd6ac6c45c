"""Tiny enumerable distribution families for tests and exact benchmarks.

Each family's product space is at most 2^20 sequences, so ground truth is exact enumeration, and
its weights are Zipf-skewed so that some outputs of even a random model are rare (p <= 1e-6).
Supports are drawn from ``1 .. vocab_size-1`` with a fixed seed (token 0 is the BOS constant at
position 0), so the same family works with a 32-token toy model and with the shipped models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError


@dataclass(frozen=True)
class TinyFamily:
    """``layout``: one entry per position after BOS: a support size, or ``None`` for a constant."""

    layout: tuple[int | None, ...]
    zipf: float  # p_k ∝ (k+1)^-zipf over the support, in a random order


TINY_FAMILIES: dict[str, TinyFamily] = {
    "tiny-uniform": TinyFamily((16, 16, 16), zipf=0.0),                    # 4,096 sequences
    "tiny-zipf": TinyFamily((24, 24, 24, 24), zipf=2.0),                   # 331,776
    "tiny-constants": TinyFamily((20, None, 20, None, 20), zipf=1.5),      # 8,000
    "tiny-long": TinyFamily((8, 8, 8, 8, 8, 8), zipf=2.5),                 # 262,144
    "tiny-wide": TinyFamily((1000, 1000), zipf=1.2),                       # up to 1,000,000
}


def tiny_distribution(name: str, vocab_size: int, seed: int = 0) -> TokenDistribution:
    """The tiny family ``name`` over a ``vocab_size``-token vocabulary (supports capped at vocab-1)."""
    if name not in TINY_FAMILIES:
        raise LowprobError(f"unknown tiny distribution {name!r}: choose one of {', '.join(TINY_FAMILIES)}")
    if vocab_size < 3:
        raise LowprobError(f"tiny distributions need a vocabulary of at least 3 tokens, got {vocab_size}")
    family = TINY_FAMILIES[name]
    gen = torch.Generator().manual_seed(seed)
    positions: list = [0]
    for size in family.layout:
        if size is None:
            positions.append(int(torch.randint(1, vocab_size, (1,), generator=gen)))
            continue
        size = min(size, vocab_size - 1)
        ids = torch.randperm(vocab_size - 1, generator=gen)[:size] + 1
        weights = (torch.arange(1, size + 1, dtype=torch.float64) ** -family.zipf)
        positions.append((ids, weights[torch.randperm(size, generator=gen)]))
    return TokenDistribution.from_positions(positions, normalize=True, vocab_size=vocab_size, name=name)
