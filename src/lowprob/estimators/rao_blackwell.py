"""Rao–Blackwellisation over the last variable position: the event's exact conditional probability.

For a sequence x drawn from a proposal, ``h(x) = Σ_v D_j(v) 1[event(x with position j set to v)]``,
j the last variable position (every position after it is a constant), is the probability of the
event given x's other positions. Averaging ``w_{-j}(x) h(x)``, ``w_{-j}`` the importance weight of
the other positions only, estimates P(event) without bias and with less variance than averaging
``w(x) 1[event(x)]``; it is 0 only when no completion of any drawn prefix is in the event.

Cost. Each prefix needs all n = |support_j| completions. Where the model offers prefix sharing (an
optional capability: the shipped ``Transformer`` on the CPU) they share the prefix's keys/values
(``PrefixTree.completion_residuals``), so a prefix costs its positions < j once and each completion
only positions j..T-1 through every layer plus the unembedding (``PrefixTree.completion_flops``):

    prefix_flops = L (j c + 4 d Σ_{k<j} (k+1)) + n [L ((T-j) c + 4 d Σ_{k=j}^{T-1} (k+1)) + 2 d V]

with c = 2 (4 d² + 2 d d_mlp) the per-position block cost and 4 d × keys per query the attention
(scores and values), the convention of ``Transformer.flops_per_sequence``; with n = 1 it is at
least one forward. The first block's table of Q/K/V per supported (position, token) is charged once
per call. Any other model evaluates the n completions as full sequences through ``model.logits`` and
is charged n forwards per prefix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lowprob import cost
from lowprob.distributions.base import TokenDistribution
from lowprob.models.protocol import capability

ROWS_PER_CHUNK = 1024  # completions per unembedding / plain forward chunk


class LastPositionSums:
    """Scores and event indicators of every completion at the last variable position, and their price."""

    def __init__(self, model, dist: TokenDistribution, event, score: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.model, self.event, self.score = model, event, score
        T = len(dist)
        self.position = dist.variable_positions()[-1]
        ids, probs = dist.support(self.position)
        self.ids, self.probs = ids, probs.double()
        self.n = len(ids)
        offer = capability(model, "prefix_tree")
        self.tree = offer(dist.support_ids()) if offer is not None else None
        if self.tree is not None:
            self.fixed_flops, self.prefix_flops = self.tree.completion_flops()
            cost.charge(self.fixed_flops)  # the tree's first-block table, built above
        else:
            self.fixed_flops = 0.0
            self.prefix_flops = float(self.n * model.flops_per_sequence(T))

    def completions(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, n, T]: each row with position j set to every supported token."""
        out = tokens[:, None, :].repeat(1, self.n, 1)
        out[:, :, self.position] = self.ids
        return out

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score (float64) and indicator of every completion of each row of ``tokens``, [B, n] each."""
        B = len(tokens)
        if self.tree is not None:
            cost.charge(B * self.prefix_flops)
            rows = self.tree.completion_residuals(tokens).view(B * self.n, -1)
            logits = (self.model.unembed(r) for r in rows.split(ROWS_PER_CHUNK))
        else:
            seqs = self.completions(tokens).view(B * self.n, -1)
            cost.charge_passes(self.model.flops_per_sequence(tokens.shape[1]), B * self.n)
            logits = (self.model.logits(s.to(self.model.device)) for s in seqs.split(ROWS_PER_CHUNK))
        scores, hits = [], []
        for chunk in logits:
            scores.append(self.score(chunk).double().cpu())
            hits.append(self.event.indicator(chunk).cpu())
        if not scores:
            return torch.zeros(0, self.n, dtype=torch.float64), torch.zeros(0, self.n, dtype=torch.bool)
        return torch.cat(scores).view(B, self.n), torch.cat(hits).view(B, self.n)
