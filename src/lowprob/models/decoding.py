"""Incremental decoding: extend every row of a batch by one token for the price of one position.

Estimators of events on generated text sample continuations token by token, and the SMC ones
resample partial continuations. ``start_decoding(model, prompts)`` returns a ``Decoding``: the
next-token logits of every row, ``extend(tokens)`` (append one token per row, computing only the new
position against the cached keys and values) and ``select(rows)`` (keep, drop or duplicate rows, as
resampling does). Both change the state in place, as Hugging Face caches do.

Cached decoding is an optional capability a model offers (``start_decoding``, ``models.protocol``):
the shipped ``Transformer`` (per-layer keys and values kept here), Hugging Face adapters (the model's
own cache) and templated models (one cache per prompt length) do. Any other model of the protocol is
decoded by recomputing the whole sequence at every step — correct, and priced honestly by
``positions_per_step`` (a full sequence per row and step).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor

from lowprob.errors import LowprobError
from lowprob.models.protocol import capability


class Decoding:
    """Rows of token sequences being extended; ``logits`` [B, d_vocab] are their next-token logits."""

    logits: Tensor
    tokens: Tensor  # [B, T] every row's tokens so far (on the model's device)

    def extend(self, tokens: Tensor) -> None:
        raise NotImplementedError

    def select(self, rows: Tensor) -> None:
        """Keep, drop, reorder or duplicate rows; keeping every row in order changes nothing and copies nothing."""
        if len(rows) == len(self.logits) and torch.equal(rows.cpu(), torch.arange(len(rows))):
            return
        self._select(rows)

    def _select(self, rows: Tensor) -> None:
        raise NotImplementedError

    def positions_per_step(self) -> int:
        """Positions the model computes per row at the next ``extend``: 1 when cached, the length otherwise."""
        return 1


def start_decoding(model, prompts: Tensor) -> Decoding:
    """Decoding of ``prompts`` [B, T] (token ids, any device), cached if ``model`` offers it."""
    if prompts.dim() != 2 or prompts.shape[1] < 1:
        raise LowprobError(f"prompts must have shape [batch, positions >= 1], got {tuple(prompts.shape)}")
    prompts = prompts.to(model.device)
    cached = capability(model, "start_decoding")
    return cached(prompts) if cached is not None else RecomputedDecoding(model, prompts)


def _check_room(model, length: int) -> None:
    if length > model.n_ctx:
        raise LowprobError(f"the prompt and continuation need {length} positions, more than the model's "
                           f"context of {model.n_ctx}: use fewer steps or a shorter prompt")


class TransformerDecoding(Decoding):
    """The shipped ``Transformer`` with its per-layer keys and values [B, H, T, d_head] cached."""

    @torch.no_grad()
    def __init__(self, model, prompts: Tensor) -> None:
        _check_room(model, prompts.shape[1])
        self.model, self.tokens = model, prompts
        resid = model.W_E[prompts] + model.W_pos[: prompts.shape[1]]
        # keys and values live in buffers [B, H, capacity, d_head] filled up to the current length: a
        # step writes one position instead of copying the cache (torch.cat did); the capacity doubles
        # when full, up to the context
        self.cache: list[tuple[Tensor, ...]] = []  # per layer: (keys, values)
        n, t = prompts.shape
        capacity = min(model.n_ctx, 2 * t)
        for block in model.blocks:
            q, k, v = (t_.transpose(1, 2) for t_ in block.attn.qkv(block.ln1(resid)))
            keys = k.new_empty(n, k.shape[1], capacity, k.shape[3])
            values = torch.empty_like(keys)
            keys[:, :, :t], values[:, :, :t] = k, v
            self.cache.append((keys, values))
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            resid = resid + block.attn.project_out(z.transpose(1, 2))
            resid = resid + block.mlp(block.ln2(resid))
        self.logits = model.unembed(model.ln_final(resid[:, -1]))

    @torch.no_grad()
    def extend(self, tokens: Tensor) -> None:
        model, t = self.model, self.tokens.shape[1]
        _check_room(model, t + 1)
        tokens = tokens.to(model.device)
        resid = model.W_E[tokens] + model.W_pos[t]  # [B, d]
        if t == self.cache[0][0].shape[2]:
            rows, capacity = torch.arange(len(tokens), device=tokens.device), min(model.n_ctx, 2 * t)
            self.cache = [tuple(_gather_filled(c, rows, t, capacity) for c in pair) for pair in self.cache]
        for i, block in enumerate(model.blocks):
            q, k, v = block.attn.qkv(block.ln1(resid))  # [B, H, d_head]
            keys, values = self.cache[i]
            keys[:, :, t], values[:, :, t] = k, v
            z = F.scaled_dot_product_attention(q[:, :, None], keys[:, :, : t + 1], values[:, :, : t + 1])[:, :, 0]
            resid = resid + block.attn.project_out(z)
            resid = resid + block.mlp(block.ln2(resid))
        self.tokens = torch.cat([self.tokens, tokens[:, None]], 1)
        self.logits = model.unembed(model.ln_final(resid))

    def _select(self, rows: Tensor) -> None:
        rows, t = rows.to(self.tokens.device), self.tokens.shape[1]
        self.cache = [tuple(_gather_filled(c, rows, t) for c in pair) for pair in self.cache]
        self.tokens, self.logits = self.tokens[rows], self.logits[rows]


def _gather_filled(buffer: Tensor, rows: Tensor, t: int, capacity: int | None = None) -> Tensor:
    """A new buffer [len(rows), H, capacity, d_head] holding ``rows`` of ``buffer``'s first ``t`` positions."""
    capacity = capacity or buffer.shape[2]
    out = buffer.new_empty(len(rows), buffer.shape[1], capacity, buffer.shape[3])
    out[:, :, :t] = buffer[rows, :, :t]
    return out


class HuggingFaceDecoding(Decoding):
    """A Hugging Face causal LM with its own key/value cache (``cache`` in transformers 5,
    ``past_key_values`` before: the name is read from the model's signature)."""

    @torch.no_grad()
    def __init__(self, model, prompts: Tensor) -> None:
        _check_room(model, prompts.shape[1])
        self.model, self.tokens = model, prompts
        params = inspect.signature(model.hf.forward).parameters
        self.cache_name = "cache" if "cache" in params else "past_key_values"
        self._run(prompts, None)

    def _run(self, input_ids: Tensor, cache) -> None:
        passed = {} if cache is None else {self.cache_name: cache}
        out = self.model.hf(input_ids=input_ids, use_cache=True, **passed)
        self.cache, self.logits = out[self.cache_name], out.logits[:, -1]

    @torch.no_grad()
    def extend(self, tokens: Tensor) -> None:
        _check_room(self.model, self.tokens.shape[1] + 1)
        tokens = tokens.to(self.tokens.device)
        self._run(tokens[:, None], self.cache)
        self.tokens = torch.cat([self.tokens, tokens[:, None]], 1)

    def _select(self, rows: Tensor) -> None:
        rows = rows.to(self.tokens.device)
        self.cache.reorder_cache(rows)
        self.tokens, self.logits = self.tokens[rows], self.logits[rows]


class RecomputedDecoding(Decoding):
    """Any model of the protocol: the whole sequence is run again at every step."""

    @torch.no_grad()
    def __init__(self, model, prompts: Tensor) -> None:
        _check_room(model, prompts.shape[1])
        self.model, self.tokens = model, prompts
        self.logits = model.logits(prompts)

    @torch.no_grad()
    def extend(self, tokens: Tensor) -> None:
        _check_room(self.model, self.tokens.shape[1] + 1)
        self.tokens = torch.cat([self.tokens, tokens.to(self.tokens.device)[:, None]], 1)
        self.logits = self.model.logits(self.tokens)

    def _select(self, rows: Tensor) -> None:
        rows = rows.to(self.tokens.device)
        self.tokens, self.logits = self.tokens[rows], self.logits[rows]

    def positions_per_step(self) -> int:
        return self.tokens.shape[1] + 1


class GroupedDecoding(Decoding):
    """Rows whose prompts have different lengths (a template's values): one decoding per length,
    seen as one batch. ``logits`` and ``extend``/``select`` use the batch's row order."""

    def __init__(self, groups: list[tuple[Tensor, Decoding]], n: int) -> None:
        self.groups = [state for _, state in groups]
        self.group_of = torch.empty(n, dtype=torch.long)  # batch row -> its group
        self.index_in = torch.empty(n, dtype=torch.long)  # batch row -> its row in that group
        for g, (rows, _) in enumerate(groups):
            rows = rows.cpu()
            self.group_of[rows], self.index_in[rows] = g, torch.arange(len(rows))
        self._gather_logits()

    def _gather_logits(self) -> None:
        first = self.groups[0].logits
        self.logits = first.new_empty(len(self.group_of), first.shape[1])
        for g, state in enumerate(self.groups):
            rows = (self.group_of == g).nonzero()[:, 0]
            self.logits[rows.to(first.device)] = state.logits[self.index_in[rows].to(first.device)]

    def extend(self, tokens: Tensor) -> None:
        tokens = tokens.cpu()
        for g, state in enumerate(self.groups):
            rows = (self.group_of == g).nonzero()[:, 0]
            if len(rows):  # a group whose rows were all dropped stays as it is, unused
                state.extend(tokens[rows[self.index_in[rows].argsort()]])
        self._gather_logits()

    def _select(self, rows: Tensor) -> None:
        rows = rows.cpu()
        group_of, index_in = self.group_of[rows], self.index_in[rows]
        self.index_in = torch.empty_like(index_in)
        for g, state in enumerate(self.groups):
            mine = (group_of == g).nonzero()[:, 0]
            state.select(index_in[mine])
            self.index_in[mine] = torch.arange(len(mine))
        self.group_of = group_of
        self._gather_logits()

    def positions_per_step(self) -> int:
        return max(state.positions_per_step() for state in self.groups)
