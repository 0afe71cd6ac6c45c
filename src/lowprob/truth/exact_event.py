"""Exact P(event) for any event, by enumerating a small input space.

A ground-truth table stores the argmax token's distribution, which answers argmax events only
(``GroundTruth.probability``). Any other event — top-k membership, a margin, a probability
threshold — is answered here by running every sequence and adding the probabilities of those where
the event holds, in float64; ``exact_conditionals`` also splits that mass by input value, the
exact answer an attribution (``lowprob.attribution``) estimates.
"""

from __future__ import annotations

import torch

from lowprob.distributions import TokenDistribution, bind
from lowprob.errors import LowprobError
from lowprob.events import Event, check_event
from lowprob.models.protocol import LanguageModel
from lowprob.threads import torch_threads
from lowprob.truth.compute import PLAIN_CHUNK

MAX_SEQUENCES = 1 << 26  # every sequence runs the whole model: beyond this, hours


def _event_mass(model: LanguageModel, dist: TokenDistribution, event: Event, chunk_size: int):
    """Every sequence of the (bound) distribution, in chunks: (distribution, tokens [B, T], the
    probability of each sequence where the event holds and 0 elsewhere, float64 [B])."""
    check_event(event, generation=False)
    model, dist = bind(model, dist)
    event.validate(model)
    if dist.support_size() > MAX_SEQUENCES:
        raise LowprobError(f"the distribution has {dist.support_size():.3g} sequences, more than exact "
                           f"enumeration's 2^26; estimate the event instead")
    with torch_threads():
        for tokens, logp in dist.enumerate(chunk_size):
            hit = event.indicator(model.logits(tokens.to(model.device))).cpu()
            yield dist, tokens, torch.where(hit, logp.exp(), torch.zeros_like(logp))


@torch.no_grad()
def exact_probability(model: LanguageModel, dist: TokenDistribution, event: Event,
                      chunk_size: int = PLAIN_CHUNK) -> float:
    """P(event) for inputs from ``dist``, exactly (support ≤ 2^26 sequences)."""
    total = torch.zeros((), dtype=torch.float64)
    for _, _, mass in _event_mass(model, dist, event, chunk_size):
        total += mass.sum()
    return float(total)


@torch.no_grad()
def exact_conditionals(model: LanguageModel, dist: TokenDistribution, event: Event,
                       chunk_size: int = PLAIN_CHUNK) -> list[torch.Tensor]:
    """P(x_i = v | event) for every position i of the (bound) distribution, over ``dist.support(i)`` in
    its order, exactly (support ≤ 2^26 sequences); NaN where the event never happens."""
    joint: list[torch.Tensor] | None = None
    for bound, tokens, mass in _event_mass(model, dist, event, chunk_size):
        if joint is None:
            joint = [torch.zeros(n, dtype=torch.float64) for n in bound.support_sizes()]
        for i, acc in enumerate(joint):
            acc.index_add_(0, torch.searchsorted(bound.support(i)[0], tokens[:, i].contiguous()), mass)
    assert joint is not None  # a support has at least one sequence, so there was a chunk
    total = joint[0].sum()
    return [j / total if total > 0 else torch.full_like(j, float("nan")) for j in joint]
