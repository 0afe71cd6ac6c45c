"""A GELU decoder-only transformer with TransformerLens-style weight names.

It implements the model protocol (``lowprob.models.protocol.LanguageModel``), its optional
capabilities (cached decoding, fast argmax and prefix sharing over a product space), and ``forward``
over all positions: pre-LayerNorm blocks,
causal multi-head attention scaled by 1/sqrt(d_head), a GELU MLP, learned absolute position
embeddings, a final LayerNorm and an unembedding with an optional bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lowprob.errors import LowprobError
from lowprob.models.argmax import FastArgmax
from lowprob.models.decoding import TransformerDecoding
from lowprob.models.gap_bounds import TransformerBounds
from lowprob.models.prefix_tree import PrefixTree

ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class TransformerConfig:
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    act_fn: str = "gelu"
    ln_eps: float = 1e-5
    unembed_bias: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LowprobError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise LowprobError(f"TransformerConfig: d_model ({self.d_model}) must be divisible by "
                               f"n_heads ({self.n_heads})")
        if self.act_fn not in ACTIVATIONS:
            raise LowprobError(f"TransformerConfig.act_fn must be one of {sorted(ACTIVATIONS)}, "
                               f"got {self.act_fn!r}")
        if not (self.ln_eps > 0 and self.init_std > 0):
            raise LowprobError("TransformerConfig: ln_eps and init_std must be positive")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LowprobError(f"TransformerConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        missing = sorted(f.name for f in fields(cls)
                         if f.name not in data and f.default is MISSING)
        if missing:
            raise LowprobError(f"TransformerConfig: missing field(s) {missing}")
        return cls(**data)


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.w.shape, self.w, self.b, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        h, d, k = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, k))
        self.W_K = nn.Parameter(torch.empty(h, d, k))
        self.W_V = nn.Parameter(torch.empty(h, d, k))
        self.W_O = nn.Parameter(torch.empty(h, k, d))
        self.b_Q = nn.Parameter(torch.zeros(h, k))
        self.b_K = nn.Parameter(torch.zeros(h, k))
        self.b_V = nn.Parameter(torch.zeros(h, k))
        self.b_O = nn.Parameter(torch.zeros(d))

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values [..., H, d_head] of normed vectors [..., d], in one matmul."""
        h, d, k = self.W_Q.shape
        weight = torch.cat([self.W_Q, self.W_K, self.W_V]).permute(1, 0, 2).reshape(d, 3 * h * k)
        bias = torch.cat([self.b_Q, self.b_K, self.b_V]).reshape(3 * h * k)
        out = torch.addmm(bias, x.reshape(-1, d), weight).view(*x.shape[:-1], 3, h, k)
        queries, keys, values = out.unbind(-3)
        return queries, keys, values

    def project_out(self, z: Tensor) -> Tensor:
        """Head outputs [..., H, d_head] -> residual-stream vectors [..., d] (W_O and b_O)."""
        h, k, d = self.W_O.shape
        return torch.addmm(self.b_O, z.reshape(-1, h * k), self.W_O.reshape(h * k, d)).view(*z.shape[:-2], d)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x))  # [B, H, T, d_head]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(d_head)
        return self.project_out(z.transpose(1, 2))


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.act = ACTIVATIONS[cfg.act_fn]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x @ self.W_in + self.b_in) @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln2 = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.mlp = MLP(cfg)

    def forward(self, resid: Tensor) -> Tensor:
        resid = resid + self.attn(self.ln1(resid))
        return resid + self.mlp(self.ln2(resid))


class Transformer(nn.Module):
    """Decoder-only LM; ``seed`` makes the random initialisation reproducible."""

    def __init__(self, cfg: TransformerConfig, seed: int = 0, tokenizer: Any = None, name: str = "") -> None:
        super().__init__()
        if not isinstance(cfg, TransformerConfig):
            raise LowprobError(f"Transformer takes a TransformerConfig, got {cfg!r}")
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.name = name  # what results call the model: its shipped name or directory, "" for a toy
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        # a ModuleList, so that the blocks' parameters register, typed as the blocks it holds
        self.blocks = cast("Sequence[Block]", nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers)))
        self.ln_final = LayerNorm(cfg.d_model, cfg.ln_eps)
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab)) if cfg.unembed_bias else None
        self._init_weights(seed)

    def _init_weights(self, seed: int) -> None:
        """GPT-2 style: N(0, std), output projections scaled by 1/sqrt(2 n_layers), LN at identity."""
        gen = torch.Generator().manual_seed(seed)
        out_std = self.cfg.init_std / math.sqrt(2 * self.cfg.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf == "b" or leaf.startswith("b_"):
                    p.zero_()
                elif leaf == "w":
                    p.fill_(1.0)
                else:
                    std = out_std if leaf in ("W_O", "W_out") else self.cfg.init_std
                    p.copy_(torch.randn(p.shape, generator=gen) * std)

    # --- the model protocol -------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.cfg.n_ctx

    @property
    def d_vocab(self) -> int:
        return self.cfg.d_vocab

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def check_tokens(self, tokens: Tensor) -> None:
        """Raise a clear error for token batches the model cannot take."""
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            raise LowprobError("tokens must be a LongTensor of shape [batch, positions]")
        if not 1 <= tokens.shape[1] <= self.n_ctx:
            raise LowprobError(f"sequence length {tokens.shape[1]} is outside 1..n_ctx={self.n_ctx}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.d_vocab):
            raise LowprobError(f"token ids must lie in 0..{self.d_vocab - 1}; got "
                               f"{int(tokens.min())}..{int(tokens.max())}")

    def residual(self, token_embeddings: Tensor) -> Tensor:
        """Final-LayerNormed residual stream at every position, [B, T, d_model]."""
        resid = token_embeddings + self.W_pos[: token_embeddings.shape[1]]
        for block in self.blocks:
            resid = block(resid)
        return self.ln_final(resid)

    def final_residual(self, token_embeddings: Tensor) -> Tensor:
        """The last position's final-normed vector, the one ``W_U`` multiplies: [B, d_model]."""
        if token_embeddings.dim() != 3 or token_embeddings.shape[-1] != self.cfg.d_model:
            raise LowprobError(f"token_embeddings must have shape [batch, positions, "
                               f"{self.cfg.d_model}], got {tuple(token_embeddings.shape)}")
        if not 1 <= token_embeddings.shape[1] <= self.n_ctx:
            raise LowprobError(f"sequence length {token_embeddings.shape[1]} is outside "
                               f"1..n_ctx={self.n_ctx}")
        return self.residual(token_embeddings)[:, -1]

    def unembed(self, resid: Tensor) -> Tensor:
        logits = resid @ self.W_U
        return logits + self.b_U if self.b_U is not None else logits

    def logits(self, tokens: Tensor) -> Tensor:
        """Logits of the last position, [B, d_vocab]."""
        self.check_tokens(tokens)
        return self.unembed(self.final_residual(self.W_E[tokens]))

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits at every position, [B, T, d_vocab]."""
        self.check_tokens(tokens)
        return self.unembed(self.residual(self.W_E[tokens]))

    def flops_per_sequence(self, seq_len: int) -> float:
        """Every block at every position plus causal attention, and the unembedding at the last position only."""
        cfg = self.cfg
        d, T = cfg.d_model, seq_len
        block = 2 * T * (4 * d * d + 2 * d * cfg.d_mlp) + 2 * T * T * d
        return float(cfg.n_layers * block + 2 * d * cfg.d_vocab)

    def positions_flops(self, start: int, stop: int) -> float:
        """Positions ``start..stop-1`` through every block, each attending to all keys up to itself: what a
        segment costs on top of a cached prefix (c = 2 (4 d² + 2 d d_mlp) a position's block, 4 d a key)."""
        cfg = self.cfg
        d = cfg.d_model
        c = 2 * (4 * d * d + 2 * d * cfg.d_mlp)
        return float(cfg.n_layers * ((stop - start) * c + 4 * d * sum(k + 1 for k in range(start, stop))))

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- optional capabilities (models.protocol) ------------------------------------------------
    def start_decoding(self, prompts: Tensor) -> TransformerDecoding:
        """Cached decoding: per-layer keys and values kept, one new position per step."""
        return TransformerDecoding(self, prompts)

    def last_features(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The last position's logits [B, d_vocab], every block's MLP pre-activations there [B, F] (F = n_layers ·
        d_mlp) from one forward, and what each of those units writes into the residual stream per unit of
        its activation [F, d_model]: what a white-box probe reads."""
        self.check_tokens(tokens)
        resid = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        features = []
        for block in self.blocks:
            resid = resid + block.attn(block.ln1(resid))
            pre = block.ln2(resid) @ block.mlp.W_in + block.mlp.b_in
            features.append(pre[:, -1])
            resid = resid + block.mlp.act(pre) @ block.mlp.W_out + block.mlp.b_out
        readout = torch.cat([block.mlp.W_out for block in self.blocks])
        return self.unembed(self.ln_final(resid)[:, -1]), torch.cat(features, dim=-1), readout

    def fast_argmax(self, supports: Sequence[Tensor]) -> FastArgmax | None:
        """The last position's argmax over a product space, on the CPU (a GPU's plain batched forward is
        already cheap per sequence); None on another device."""
        return FastArgmax(self, supports) if self.device.type == "cpu" else None

    def gap_bounds(self, supports: Sequence[Tensor]) -> TransformerBounds | None:
        """Sound bounds on the last position's logit gaps over sets of sequences of a product space, for one block
        on the CPU; None otherwise (deeper models have no such bound yet)."""
        return TransformerBounds(self, supports) if self.device.type == "cpu" and self.cfg.n_layers == 1 else None

    def prefix_tree(self, supports: Sequence[Tensor]) -> PrefixTree | None:
        """Prefix-shared evaluation of a product space (at least one variable position), on the CPU only,
        like ``fast_argmax``; None on another device."""
        return PrefixTree(self, supports) if self.device.type == "cpu" else None
