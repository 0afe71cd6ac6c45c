"""The last position's argmax: fast for the shipped ``Transformer`` over a product space, the same on every path.

Ground truth only needs the last position's argmax, so over one product space (``supports``: each
position's token ids, as ``TokenDistribution.support_ids`` gives them):
- the first block's LayerNorm and Q/K/V projections depend on (position, token) alone and are
  precomputed once per support (``FirstBlockTable``: a lookup replaces them);
- the last block computes keys and values at every position but the query, attention output, MLP,
  final LayerNorm and unembedding only at the last position;
- the unembedding runs in row chunks and keeps only each row's winner and its margin over the
  runner-up, found block-wise (``top_two``, ``last_position_argmax``).
Batches are processed in chunks that keep the per-position activations cache-resident (256
sequences when blocks run at every position; measured ~2x faster on gelu-4l than 16k-sequence
batches). Floating-point order differs between paths — and, for the plain model itself, between batch
sizes — so "the argmax" of a row whose top-two float32 logits are within ``tie_tol`` is defined as the
argmax of a float64 copy of the model (``TieBreaker``, for any model of the protocol): every path,
batching and process then gives the same answer (tested), which exact tables resolving 1e-12 need.
Exact enumeration shares these pieces and adds prefix sharing (``prefix_tree.py``). ``FastArgmax``
is what ``Transformer.fast_argmax`` offers (an optional capability, ``models.protocol``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from lowprob.errors import LowprobError

if TYPE_CHECKING:  # types only: transformer.py imports this module to offer the fast path
    from lowprob.models.protocol import LanguageModel
    from lowprob.models.transformer import Block, Transformer

UNEMBED_CHUNK = 512
DEEP_CHUNK, SHALLOW_CHUNK = 256, 4096  # sequences per pass: with / without full-length blocks
TIE_TOL = 1e-3  # top-two float32 logits closer than this are settled in float64
VOCAB_BLOCK = 128  # vocabulary block of the top-two search


class FirstBlockTable:
    """The first block's input vector and its Q/K/V for every (position, supported token)."""

    def __init__(self, model: Transformer, supports: Sequence[Tensor]) -> None:
        T, first = len(supports), model.blocks[0]
        sizes = torch.tensor([len(support) for support in supports])
        self.offsets = torch.cumsum(sizes, 0) - sizes  # first table row of each position
        self.row_of = torch.zeros(T, model.d_vocab, dtype=torch.long)  # (position, token) -> table row
        with torch.no_grad():
            for pos, support in enumerate(supports):
                self.row_of[pos, support] = torch.arange(len(support))
            all_ids = torch.cat(list(supports))
            positions = torch.repeat_interleave(torch.arange(T), sizes)
            self.x0 = model.W_E[all_ids] + model.W_pos[positions]  # [rows, d]
            self.q0, self.k0, self.v0 = first.attn.qkv(first.ln1(self.x0))  # [rows, H, d_head] each

    def rows(self, tokens: Tensor) -> Tensor:
        """Table rows of a batch of sequences of the product space, [B, T]."""
        return self.offsets + self.row_of.gather(1, tokens.T).T


def last_position_output(block: Block, resid: Tensor, q_last: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The block's output at the last position: attention of one query over all positions, then MLP."""
    scores = torch.einsum("bhk,bthk->bht", q_last, k) / math.sqrt(q_last.shape[-1])
    z = torch.einsum("bht,bthk->bhk", scores.softmax(-1), v)
    x = resid[:, -1] + block.attn.project_out(z)
    return x + block.mlp(block.ln2(x))


def _full_block_from_qkv(block: Block, resid: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """A whole block given its (precomputed) Q/K/V at every position, [B, T, H, d_head] each."""
    z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
    x = resid + block.attn.project_out(z.transpose(1, 2))
    return x + block.mlp(block.ln2(x))


def top_two(logits: Tensor, block: int = VOCAB_BLOCK) -> tuple[Tensor, Tensor]:
    """Each row's argmax and its margin over the runner-up (0 for exact ties), [B] each.

    The vocabulary is cut into blocks: a vectorised max per block, then the top two of the block
    maxima and of the winning block only; about 2x cheaper than ``topk(2)`` over the whole row.
    """
    B, V = logits.shape
    if V % block or V // block < 2:
        top = logits.topk(2, dim=-1)
        return top.indices[:, 0], top.values[:, 0] - top.values[:, 1]
    blocks = logits.view(B, V // block, block)
    outer = blocks.amax(-1).topk(2, dim=-1)
    inner = blocks[torch.arange(B), outer.indices[:, 0]].topk(2, dim=-1)
    runner_up = torch.maximum(inner.values[:, 1], outer.values[:, 1])
    return outer.indices[:, 0] * block + inner.indices[:, 0], inner.values[:, 0] - runner_up


class TieBreaker:
    """Settles near-ties: the argmax of rows whose float32 top two are within ``tol``, in float64.

    The float64 copy of the model is made on first need; ``n_recomputed`` counts the rows settled.
    """

    def __init__(self, model, tol: float = TIE_TOL) -> None:
        self.model, self.tol = model, tol
        self.n_recomputed = 0
        self._double: LanguageModel | None = None

    @torch.no_grad()
    def settle(self, winners: Tensor, margins: Tensor, tokens_of: Callable[[Tensor], Tensor]) -> Tensor:
        """``winners`` with every row whose margin is ≤ tol (exact ties included) recomputed in float64."""
        close = margins <= self.tol
        n_close = int(close.sum())
        if n_close:
            if self._double is None:
                self._double = copy.deepcopy(self.model).double()
            winners = winners.clone()
            winners[close] = self._double.logits(tokens_of(close)).argmax(-1)
            self.n_recomputed += n_close
        return winners

    def argmax(self, tokens: Tensor, logits: Tensor) -> Tensor:
        """The argmax of float32 ``logits`` of ``tokens``, near-ties settled."""
        winners, margins = top_two(logits)
        return self.settle(winners, margins, lambda rows: tokens[rows])


def last_position_argmax(ties: TieBreaker, resid: Tensor, tokens_of: Callable[[Tensor], Tensor]) -> Tensor:
    """Argmax of ``model.unembed(resid)`` per row, near-ties settled by ``ties``.

    ``resid`` [B, d] is final-normed; ``tokens_of(rows)`` gives the sequences of the rows (a bool
    mask). The unembedding runs in row chunks so each [chunk, vocab] block stays in cache and only the
    winner and its margin leave it.
    """
    winners, margins = zip(*(top_two(ties.model.unembed(r)) for r in resid.split(UNEMBED_CHUNK)), strict=True)
    return ties.settle(torch.cat(winners), torch.cat(margins), tokens_of)


class FastArgmax:
    """``argmax(tokens)`` equal to ``model.logits(tokens).argmax(-1)`` for tokens of the product space ``supports``."""

    def __init__(self, model: Transformer, supports: Sequence[Tensor], tie_tol: float = TIE_TOL) -> None:
        self.model, self.ties = model, TieBreaker(model, tie_tol)
        self.table = FirstBlockTable(model, supports)

    @property
    def n_recomputed(self) -> int:
        return self.ties.n_recomputed

    @torch.no_grad()
    def last_resid(self, tokens: Tensor) -> Tensor:
        """The final-normed last-position vector by the fast path (not bit-identical to the plain one)."""
        m, t = self.model, self.table
        rows = t.rows(tokens)
        resid = t.x0[rows]
        k, v = t.k0[rows], t.v0[rows]
        last = len(m.blocks) - 1
        if last == 0:
            out = last_position_output(m.blocks[0], resid, t.q0[rows[:, -1]], k, v)
        else:
            resid = _full_block_from_qkv(m.blocks[0], resid, t.q0[rows], k, v)
            for block in m.blocks[1:last]:
                resid = block(resid)
            block = m.blocks[last]
            q, k, v = block.attn.qkv(block.ln1(resid))
            out = last_position_output(block, resid, q[:, -1], k, v)
        return m.ln_final(out)

    @torch.no_grad()
    def completion_resid(self, tokens: Tensor, position: int, support: Tensor) -> Tensor:
        """``last_resid`` of every completion of ``position`` over ``support`` [n] for each row of ``tokens`` [L, T]
        (whose own token there is ignored), [L, n, d], for one block and ``position`` before the last: the rows'
        other positions are attended to once, the open one per completion."""
        m, t = self.model, self.table
        T = tokens.shape[1]
        if len(m.blocks) != 1 or position == T - 1:
            raise LowprobError("completion_resid takes one block and a position before the last; run last_resid "
                               "on the completions otherwise")
        base = tokens.clone()
        base[:, position] = support[0]  # a stand-in: the open position's row is not read
        rows = t.rows(base)
        open_rows = t.offsets[position] + t.row_of[position, support]  # [n]
        block = m.blocks[0]
        q = t.q0[rows[:, -1]]  # [L, H, e]
        scale = 1 / math.sqrt(q.shape[-1])
        others = torch.arange(T) != position
        k, v = t.k0[rows[:, others]], t.v0[rows[:, others]]  # [L, T-1, H, e]
        s_fixed = torch.einsum("lhe,lthe->lht", q, k) * scale
        s_open = torch.einsum("lhe,nhe->lhn", q, t.k0[open_rows]) * scale
        top = torch.maximum(s_fixed.amax(-1, keepdim=True), s_open)  # [L, H, n]
        w_fixed = (s_fixed[:, :, None, :] - top[..., None]).exp()  # [L, H, n, T-1]
        w_open = (s_open - top).exp()  # [L, H, n]
        z = (torch.einsum("lhnt,lthe->lnhe", w_fixed, v)
             + w_open.permute(0, 2, 1)[..., None] * t.v0[open_rows][None])
        z = z / (w_fixed.sum(-1) + w_open).permute(0, 2, 1)[..., None]
        x = t.x0[rows[:, -1]][:, None] + block.attn.project_out(z)  # [L, n, d]
        return m.ln_final(x + block.mlp(block.ln2(x)))

    @torch.no_grad()
    def argmax(self, tokens: Tensor) -> Tensor:
        chunk = SHALLOW_CHUNK if len(self.model.blocks) == 1 else DEEP_CHUNK
        return torch.cat([self._argmax(part) for part in tokens.split(chunk)])

    def _argmax(self, tokens: Tensor) -> Tensor:
        return last_position_argmax(self.ties, self.last_resid(tokens), lambda rows: tokens[rows])
