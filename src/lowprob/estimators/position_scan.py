"""Exact position scans: every value of one position scored, the rest of a few base sequences held fixed.

Why. CEIS's first proposals tilt each position by the margin's gradient, a first-order guess of how
each value moves the margin. Some events need one specific token at a late position, and the gradient
at inputs without it does not point at it: on gelu-2l/spanish (target 2086, p ≈ 2e-6) the event needs
one of 3 tokens at position 13 of 15 and one of ~8 at position 14. Scored exactly from 64 random bases,
the 3 tokens rank 23 / 2 / 1.5 of 1,024 (median over bases) and 5 / 0 / 1 by the margin averaged over
the bases. Measured as CEIS's ``scan_fraction`` (an experiment; not the default: it rescues that
target and fails others, ``benchmarks/results/issue13/README.md``).

Cost. The base's positions before j are computed once (cached keys/values, ``models.decoding``) and
each value costs only its own segment j..T-1 through every block
(``Transformer.positions_flops``): the last positions are the cheap ones, so a scan walks back from the
last variable position for as long as its budget lasts. The score needs the logits of only a few
tokens: the event's own and the ``rivals`` strongest others of each base (found by one full forward
per base). Scores are computed on those columns, every other logit at −inf — an optimistic margin where
a value makes another token win, which is harmless in a proposal and costs 2 d (rivals + k) per value
instead of the 2 d V of a full unembedding (72% / 56% / 39% of a last-position segment's cost on the
shipped gelu-1l / 2l / 4l).

Only the shipped ``Transformer`` has the cached segments; for any other model ``available`` is False
and CEIS keeps the gradient everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lowprob.models.decoding import start_decoding
from lowprob.models.transformer import Transformer

RIVALS = 16  # strongest other tokens per base whose logits the scan computes


class PositionScan:
    """Mean scores of every supported value at a position over base sequences, and what that costs."""

    def __init__(self, model, event, score: Callable[[torch.Tensor], torch.Tensor], rivals: int = RIVALS) -> None:
        self.model, self.score, self.rivals = model, score, rivals
        self.named = torch.tensor(event.tokens_named(), dtype=torch.long)
        self.available = isinstance(model, Transformer)

    def flops(self, n_bases: int, position: int, n_values: int, length: int) -> float:
        """FLOPs of scanning ``position`` over ``n_values`` values from ``n_bases`` bases (not the bases' forwards)."""
        m = self.model
        per_value = m.positions_flops(position, length) + 2 * m.cfg.d_model * (self.rivals + len(self.named))
        return n_bases * (m.positions_flops(0, position) + n_values * per_value)

    @torch.no_grad()
    def columns(self, bases: torch.Tensor) -> torch.Tensor:
        """[B, k + rivals] vocabulary columns scored per base: the event's tokens, then the base's strongest others."""
        logits = self.model.logits(bases.to(self.model.device)).float()
        logits[:, self.named.to(logits.device)] = -torch.inf
        rivals = logits.topk(self.rivals, 1).indices.cpu()
        return torch.cat([self.named.expand(len(bases), -1), rivals], 1)

    @torch.no_grad()
    def __call__(self, bases: torch.Tensor, columns: torch.Tensor, position: int, values: torch.Tensor) -> torch.Tensor:
        """[n] the score of each of ``values`` at ``position``, averaged over ``bases`` [B, T] (float64, CPU)."""
        m, (B, T), n = self.model, bases.shape, len(values)
        if position == 0:
            raise ValueError("a scan needs a prefix to cache: position 0 is never scanned")
        state = start_decoding(m, bases[:, :position])
        state.select(torch.arange(B).repeat_interleave(n))
        state.extend(values.repeat(B))
        for t in range(position + 1, T):
            state.extend(bases[:, t].repeat_interleave(n))
        columns = columns.to(m.device)
        finals = state.final.view(B, n, -1)
        scores = []
        for b in range(B):  # one base at a time: [n, V] logits, all −inf but the scored columns
            few = finals[b] @ m.W_U[:, columns[b]]
            if m.b_U is not None:
                few = few + m.b_U[columns[b]]
            logits = torch.full((n, m.d_vocab), -torch.inf, device=m.device, dtype=few.dtype)
            logits[:, columns[b]] = few
            scores.append(self.score(logits).double().cpu())
        return torch.stack(scores).mean(0)
