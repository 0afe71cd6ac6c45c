"""What bounds on logit gaps prove about an event: event-free, event-certain, or neither.

Every logits event of ``lowprob.events`` is decided by gaps ``l_v − l_a`` between token v's logit
and an anchor's (the event's own tokens): given lower and upper bounds on those gaps over a set of
inputs, ``verdict`` says for which sets the event fails for every input, and for which it holds for
every input. A decision needs the bound to clear the event's threshold by ``tol``, so that rounding
in the bound's own arithmetic cannot flip it. Exact gaps (lo = hi) with ``tol`` the tie tolerance
decide single inputs, leaving near-ties to a float64 recomputation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lowprob.errors import LowprobError
from lowprob.events import ArgmaxIn, ArgmaxIs, Event, InTopK, MarginAtLeast, ProbabilityAbove

BOUNDABLE = (ArgmaxIs, ArgmaxIn, InTopK, MarginAtLeast, ProbabilityAbove)


def anchors(event: Event) -> tuple[int, ...]:
    """The tokens whose logits the event's gaps are taken from."""
    if not isinstance(event, BOUNDABLE):
        raise LowprobError(f"certified bounds cover the logits events argmax-is, argmax-in, top-k, margin and "
                           f"prob-above; not {type(event).__name__}")
    return event.tokens_named()


def verdict(event: Event, lo: Tensor, hi: Tensor, tol: float, vocab: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(free, certain) bool [N] from bounds lo ≤ l_v − l_a ≤ hi, [N, A, V] (A = ``anchors(event)``).

    ``vocab``: the token ids along the V axis (default: every token, in order). Given a subset, "free" is
    still proved (rivals left out can only add to it) but "certain" is not: read only the first result.
    """
    N, _, V = lo.shape
    vocab = torch.arange(V) if vocab is None else vocab
    if isinstance(event, ArgmaxIn):
        inside = torch.isin(vocab, torch.tensor(event.tokens))
        # some outsider beats every insider / some insider beats every outsider
        free = ((lo > tol).all(1) & ~inside).any(-1)
        certain = (hi[:, :, ~inside] < -tol).all(-1).any(-1)
        return free, certain
    token = anchors(event)[0]
    others = vocab != token
    g_lo, g_hi = lo[:, 0, others], hi[:, 0, others]
    if isinstance(event, ArgmaxIs):
        return (g_lo > tol).any(-1), (g_hi < -tol).all(-1)
    if isinstance(event, InTopK):
        return (g_lo > tol).sum(-1) >= event.k, (g_hi >= -tol).sum(-1) < event.k
    if isinstance(event, MarginAtLeast):
        floor = torch.full((N, 1), -math.inf, dtype=lo.dtype)  # the max over no rival
        return (torch.cat([g_lo, floor], -1).amax(-1) > -event.margin + tol,
                torch.cat([g_hi, floor], -1).amax(-1) < -event.margin - tol)
    assert isinstance(event, ProbabilityAbove)
    # log P(token) = −logsumexp_v (l_v − l_token), the token itself included with gap 0
    limit = -math.log(event.q)
    zero = torch.zeros(N, 1, dtype=lo.dtype)
    return (torch.cat([g_lo, zero], -1).logsumexp(-1) > limit + tol,
            torch.cat([g_hi, zero], -1).logsumexp(-1) < limit - tol)
