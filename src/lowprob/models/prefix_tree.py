"""Prefix-shared evaluation of a product space for the shipped ``Transformer`` (``Transformer.prefix_tree``).

A product space (each position's supported token ids, as ``TokenDistribution.support_ids`` gives
them) is a tree: level ``j`` fixes the token of the ``j``-th variable position, and a node's children
differ only from that position on. Causal attention makes every position's keys and values a function
of its prefix alone, so each node's per-layer keys/values are computed once and shared by all its
descendants; a leaf (a whole sequence) costs only its own segment — its last variable position and
the constant positions after it — through every layer, plus the unembedding. Constant positions
before the first variable one are computed once in all.

Sequences come out in ``TokenDistribution.enumerate`` order (mixed radix, last position fastest),
and any flat index range ``[start, stop)`` can be evaluated on its own, computing only the nodes
above it, so exact ground truth keeps its shards — a pure function of the shard index — and its
checkpoints unchanged. The tree is walked depth first in node batches, which bounds memory.
Arithmetic is float32 like the model's but in another order, so the winners come from
``argmax.last_position_argmax``: rows with a runner-up within ``tie_tol`` are settled in float64
(``argmax.TieBreaker``) as on every path, so every sequence gets the same argmax whatever the path.
The same tree gives the completions of the last variable position (``completion_residuals``), which
Rao–Blackwellised estimation sums over.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lowprob.errors import LowprobError
from lowprob.models.argmax import TIE_TOL, FirstBlockTable, TieBreaker, last_position_argmax

if TYPE_CHECKING:  # types only: transformer.py imports this module to offer prefix sharing
    from lowprob.models.transformer import Block, Transformer

LEAF_BATCH = 2048  # leaf positions per pass (sequences x segment length): keeps activations in cache
NODE_BATCH = 256  # inner-node positions per pass; bounds memory (a node holds every layer's keys/values)

Cache = list[tuple[Tensor, Tensor]]  # per layer: keys, values [N, H, positions, d_head]


def _attend(q: Tensor, k: Tensor, v: Tensor, q_index: Tensor, prefix: tuple[Tensor, Tensor] | None) -> Tensor:
    """Causal attention of a segment's queries over its parent's prefix and the segment itself.

    q [N, n, r, H, d_head] are queries at segment indices ``q_index`` [r]; k, v [N|1, n, s, H, d_head]
    the segment's own keys/values; ``prefix`` the parent's keys/values [N, H, a, d_head], shared by
    its n children without being copied. Returns head outputs [N, n, r, H, d_head]. Scores are laid
    out keys first, [N, H, keys, n * r]: a softmax over a short last axis is ~20x slower on CPU.
    """
    scale = 1 / math.sqrt(q.shape[-1])
    N, n, r, H, dk = q.shape
    s = k.shape[2]
    k, v = k.expand(N, -1, -1, -1, -1), v.expand(N, -1, -1, -1, -1)
    own = torch.einsum("bnrhk,bnshk->bhsnr", q, k) * scale
    future = torch.arange(s)[:, None, None] > q_index  # [s, 1, r]
    scores = own.masked_fill(future, -math.inf).reshape(N, H, s, n * r)
    if prefix is not None:
        k_pre, v_pre = prefix
        q_heads = q.permute(0, 3, 1, 2, 4).reshape(N, H, n * r, dk)
        scores = torch.cat([k_pre @ q_heads.transpose(-1, -2) * scale, scores], 2)  # [N, H, a + s, n r]
    weights = scores.softmax(2)
    a = scores.shape[2] - s
    z = torch.einsum("bhsnr,bnshk->bnrhk", weights[:, :, a:].reshape(N, H, s, n, r), v)
    if prefix is None:
        return z
    z_pre = weights[:, :, :a].transpose(-1, -2) @ v_pre  # [N, H, n r, d_head]
    return z + z_pre.view(N, H, n, r, dk).permute(0, 2, 3, 1, 4)


def _segment_block(block: Block, x: Tensor, qkv: tuple[Tensor, Tensor, Tensor] | None,
                   prefix: tuple[Tensor, Tensor] | None, last_only: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One block over a segment [N|1, n, s, d]: (output, keys, values); output at the last position only if asked.

    The residual additions are fused into the output projections (``addmm``): the same block up to
    float rounding, which the near-tie recomputation absorbs.
    """
    q, k, v = qkv if qkv is not None else block.attn.qkv(block.ln1(x))
    s = x.shape[2]
    q_index = torch.tensor([s - 1]) if last_only else torch.arange(s)
    if last_only:
        q, x = q[:, :, -1:], x[:, :, -1:]
    N = prefix[0].shape[0] if prefix is not None else q.shape[0]
    z = _attend(q.expand(N, -1, -1, -1, -1), k, v, q_index, prefix)  # [N, n, r, H, d_head]
    shape = (*z.shape[:3], x.shape[-1])
    attn, mlp = block.attn, block.mlp
    x = torch.addmm(x.expand(shape).reshape(-1, shape[-1]), z.reshape(-1, z.shape[-2] * z.shape[-1]),
                    attn.W_O.reshape(-1, shape[-1])).add_(attn.b_O)
    hidden = mlp.act(torch.addmm(mlp.b_in, block.ln2(x), mlp.W_in))
    return torch.addmm(x, hidden, mlp.W_out).add_(mlp.b_out).view(shape), k, v


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class PrefixTree:
    """Last-position argmax of every sequence of the product space ``supports``, in enumeration order, sharing
    prefixes."""

    def __init__(self, model: Transformer, supports: Sequence[Tensor], tie_tol: float = TIE_TOL) -> None:
        variable = [p for p, support in enumerate(supports) if len(support) > 1]
        if not variable:
            raise LowprobError("prefix sharing needs at least one variable position")
        self.model, self.supports, self.variable = model, list(supports), variable
        self.ties = TieBreaker(model, tie_tol)
        self.table = FirstBlockTable(model, supports)
        T = len(supports)
        bounds = [*variable, T]
        self.sizes = [len(supports[p]) for p in variable]  # children per node, level by level
        # leaves below one node of each level (level 0 is the root, level m a sequence)
        self.strides = [math.prod(self.sizes[j:]) for j in range(len(self.sizes) + 1)]
        # table rows of each level's segment [n_j, s_j]: the variable position's every token, then constants
        self.segment_rows = []
        for j, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            rows = self.table.offsets[lo:hi].repeat(self.sizes[j], 1)
            rows[:, 0] += torch.arange(self.sizes[j])
            self.segment_rows.append(rows)
        self.root = self._extend(None, self.table.offsets[: variable[0]][None], 1)[0] if variable[0] else None

    @property
    def n_recomputed(self) -> int:
        return self.ties.n_recomputed

    def _extend(self, cache: Cache | None, rows: Tensor, n_parents: int, leaf: bool = False):
        """Run a segment (table rows [n, s]) under each of ``n_parents`` nodes.

        Returns the last position's final-normed vectors [N * n, d] for a leaf segment, else the
        children's caches (parent prefix followed by the segment) in child order.
        """
        m = self.model
        last = len(m.blocks) - 1
        x = self.table.x0[rows][None]  # [1, n, s, d]: the same for every parent
        first_qkv = (self.table.q0[rows][None], self.table.k0[rows][None], self.table.v0[rows][None])
        new_cache: Cache = []
        for i, block in enumerate(m.blocks):
            prefix = cache[i] if cache is not None else None
            x, k, v = _segment_block(block, x, first_qkv if i == 0 else None, prefix, leaf and i == last)
            if not leaf:
                new_cache.append(self._child_cache(prefix, k, v, n_parents))
        if leaf:
            return None, m.ln_final(x.reshape(-1, x.shape[-1]))
        return new_cache, None

    @staticmethod
    def _child_cache(prefix: tuple[Tensor, Tensor] | None, k: Tensor, v: Tensor, N: int) -> tuple[Tensor, Tensor]:
        n, s, H, dk = k.shape[1:]
        own = [t.expand(N, -1, -1, -1, -1).permute(0, 1, 3, 2, 4) for t in (k, v)]  # [N, n, H, s, d_head]
        if prefix is None:
            keys, values = (t.reshape(N * n, H, s, dk) for t in own)
            return keys, values
        a = prefix[0].shape[2]
        keys, values = (torch.cat([p[:, None].expand(-1, n, -1, -1, -1), o], 3).reshape(N * n, H, a + s, dk)
                        for p, o in zip(prefix, own, strict=True))
        return keys, values

    @torch.no_grad()
    def argmax(self, start: int, stop: int, tokens: Tensor | None = None) -> Tensor:
        """Argmax of sequences ``start .. stop-1`` in enumeration order (``tokens``: those sequences, if at hand)."""
        if not 0 <= start <= stop <= self.strides[0]:
            raise LowprobError(f"sequence range {start}..{stop} is outside 0..{self.strides[0]}")
        if tokens is None:
            tokens = self._tokens(torch.arange(start, stop))
        out: list[Tensor] = []
        if stop > start:
            self._descend(0, 0, 1, self.root, start, stop, tokens, out)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)

    @torch.no_grad()
    def completion_residuals(self, tokens: Tensor) -> Tensor:
        """Final-normed last-position vectors of every completion of each row's prefix, [B, n, d].

        A row's prefix is its tokens before the last variable position (``tokens`` [B, T] are sequences
        of the product space; the rest of each row is ignored); its completions set that position to each
        of its n supported tokens, in support order, followed by the space's constants. Each
        prefix's keys/values are computed once and shared by its n completions, which cost only their own
        segment through every layer; ``model.unembed`` of the result gives their last-position logits.
        """
        j, n, seg = self.variable[-1], self.sizes[-1], self.segment_rows[-1]
        positions = 1 if len(self.model.blocks) == 1 else seg.shape[1]
        batch = max(1, LEAF_BATCH // (n * positions))
        rows = self.table.rows(tokens)[:, :j]
        if j == 0:  # no prefix: every row has the same completions
            resid = self._extend(None, seg, 1, leaf=True)[1]
            return resid.expand(len(tokens), -1, -1).contiguous() if len(tokens) else resid[:0].view(0, n, -1)
        out = [self._extend(self._extend(None, part, 1)[0], seg, len(part), leaf=True)[1]
               for part in rows.split(batch)]
        d = self.model.cfg.d_model
        return torch.cat(out).view(len(tokens), n, d) if out else torch.zeros(0, n, d)

    def completion_flops(self) -> tuple[float, float]:
        """FLOPs of ``completion_residuals`` and the unembedding of its output: (once, the first block's table
        of Q/K/V per supported (position, token), 2 × 3 d² a row; per row of ``tokens``, its prefix's positions
        once, then each of the n completions' segment through every layer and the unembedding). Every segment
        position is charged at every layer, although the last layer runs only the last position
        (``Transformer.positions_flops``); with n = 1 it is at least one forward."""
        m, T, j, n = self.model, len(self.supports), self.variable[-1], self.sizes[-1]
        d = m.cfg.d_model
        table = float(sum(len(support) for support in self.supports) * 2 * 3 * d * d)
        segment = m.positions_flops(j, T) + 2 * d * m.cfg.d_vocab
        return table, float(m.positions_flops(0, j) + n * segment)

    def _tokens(self, flat: Tensor) -> Tensor:
        """Sequences at flat enumeration indices (mixed radix, last position fastest)."""
        support_sizes = [len(support) for support in self.supports]
        sizes = torch.tensor(support_sizes)
        strides = torch.tensor([math.prod(support_sizes[p + 1:]) for p in range(len(sizes))])
        digits = (flat[:, None] // strides) % sizes
        return torch.stack([self.supports[p][digits[:, p]] for p in range(len(sizes))], dim=1)

    def _descend(self, j: int, lo: int, hi: int, cache: Cache | None, start: int, stop: int, tokens: Tensor,
                 out: list[Tensor]) -> None:
        """Evaluate the leaves in [start, stop) below nodes lo..hi-1 of level j (their caches in ``cache``)."""
        n, leaf = self.sizes[j], j + 1 == len(self.sizes)
        stride = self.strides[j + 1]
        first = max(lo, start // stride // n)  # parents with a child over [start, stop)
        end = min(hi, _ceil_div(_ceil_div(stop, stride), n))
        # rows of activations per child: the whole segment, but only its last position when the
        # segment is a leaf's and the model has one layer (the first layer's Q/K/V are table rows)
        positions = 1 if leaf and len(self.model.blocks) == 1 else self.segment_rows[j].shape[1]
        batch = max(1, (LEAF_BATCH if leaf else NODE_BATCH) // (n * positions))
        for p0 in range(first, end, batch):
            p1 = min(end, p0 + batch)
            sub = None if cache is None else [(k[p0 - lo:p1 - lo], v[p0 - lo:p1 - lo]) for k, v in cache]
            children, resid = self._extend(sub, self.segment_rows[j], p1 - p0, leaf)
            if leaf:
                c0, c1 = max(p0 * n, start), min(p1 * n, stop)
                resid = resid[c0 - p0 * n:c1 - p0 * n]
                span = tokens[c0 - start:c1 - start]
                winners = last_position_argmax(self.ties, resid, span.__getitem__)
                out.append(winners)
            else:
                self._descend(j + 1, p0 * n, p1 * n, children, start, stop, tokens, out)
