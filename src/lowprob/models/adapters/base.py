"""What every adapter shares: shape checks, logits from embeddings, and a FLOP price."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lowprob.errors import LowprobError


class AdaptedLM(nn.Module):
    """A wrapped model; subclasses give ``W_E``, ``W_U``, ``b_U`` and ``hidden(embeddings)``."""

    def __init__(self, n_ctx: int, d_vocab: int, d_model: int, tokenizer: Any = None, name: str = "") -> None:
        super().__init__()
        size = getattr(tokenizer, "vocab_size", None)
        if size is not None and size > d_vocab:  # its ids >= d_vocab would index past the embedding
            raise LowprobError(f"the tokenizer has {size} tokens but {name or 'the model'} has {d_vocab} token ids: "
                               f"give the model's own tokenizer")
        self._n_ctx, self._d_vocab, self.d_model = int(n_ctx), int(d_vocab), int(d_model)
        self.tokenizer, self.name = tokenizer, name

    if TYPE_CHECKING:  # each subclass defines these; declared here only so the shared methods type-check
        @property
        def W_E(self) -> Tensor: ...

        @property
        def W_U(self) -> Tensor: ...

        @property
        def b_U(self) -> Tensor | None: ...

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def d_vocab(self) -> int:
        return self._d_vocab

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def hidden(self, token_embeddings: Tensor) -> Tensor:
        """Final-normed hidden states at every position, [B, T, d_model]."""
        raise NotImplementedError

    def final_residual(self, token_embeddings: Tensor) -> Tensor:
        if token_embeddings.dim() != 3 or token_embeddings.shape[-1] != self.d_model:
            raise LowprobError(f"token_embeddings must have shape [batch, positions, {self.d_model}], got "
                               f"{tuple(token_embeddings.shape)}")
        if not 1 <= token_embeddings.shape[1] <= self.n_ctx:
            raise LowprobError(f"sequence length {token_embeddings.shape[1]} is outside 1..n_ctx={self.n_ctx}")
        return self.hidden(token_embeddings)[:, -1]

    def unembed(self, resid: Tensor) -> Tensor:
        logits = resid @ self.W_U
        return logits + self.b_U if self.b_U is not None else logits

    def logits(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= self.n_ctx:
            raise LowprobError(f"tokens must have shape [batch, 1..{self.n_ctx}], got {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.d_vocab):
            raise LowprobError(f"token ids must lie in 0..{self.d_vocab - 1}")
        return self.unembed(self.final_residual(self.W_E[tokens]))

    def flops_per_sequence(self, seq_len: int) -> float:
        """2 FLOPs per weight per position outside the embeddings, attention scores, and one unembedding."""
        weights = sum(p.numel() for p in self.parameters()) - 2 * self.d_vocab * self.d_model
        return float(2 * max(weights, 0) * seq_len + 2 * seq_len * seq_len * self.d_model
                     + 2 * self.d_model * self.d_vocab)
