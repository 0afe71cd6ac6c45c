"""Greedy completion: a quick look at what a model learned."""

from __future__ import annotations

import torch

from lowprob.checks import integer_in
from lowprob.errors import LowprobError
from lowprob.models.protocol import LanguageModel

# One forward pass per token, the window sliding past n_ctx: past this a "quick look" runs for hours
MAX_TOKENS = 1 << 14


@torch.no_grad()
def complete(model: LanguageModel, prompt: str, n_tokens: int = 20) -> str:
    """Append ``n_tokens`` greedy tokens to ``prompt``; the context is BOS plus the latest tokens."""
    if model.tokenizer is None:
        raise LowprobError("this model has no tokenizer, so it cannot complete text")
    n_tokens = integer_in(n_tokens, "--tokens", high=MAX_TOKENS,
                          why=" (one forward pass each: a quick look at the model, not a text generator)")
    tok = model.tokenizer
    ids = tok.encode(prompt)
    new: list[int] = []
    for _ in range(n_tokens):
        context = [tok.bos_id, *(ids + new)[-(model.n_ctx - 1):]]
        new.append(int(model.logits(torch.tensor([context])).argmax(-1)))
    return tok.decode(new)
