"""Sound bounds on the last position's logit gaps over a set of inputs (a node of the product space).

A node leaves some positions open over a subset of their support and fixes the others. For the
shipped ``Transformer`` with one block and the last position fixed, everything up to attention is an
explicit finite set: each position's keys and values depend on its own token only. Per head, the
attention output is a ratio ``Σ_p e^{s_p} v_p / Σ_p e^{s_p}`` over independent per-position choices,
and the extreme of a coordinate of it is a fractional programme solved exactly by Dinkelbach's
method (``_ratio_bounds``), because ``max_x Σ_p (a_p − λ b_p)`` separates over positions. That gives
a box per head on the attention output and exact ranges along the directions that matter most (the
centred residual's coordinates, two directions that bound σ from below, the likeliest rivals' logit
gaps); the rest is bounded through the boxes:

- LayerNorm: ``(w ⊙ W)·LN(r) = c·r / σ(r) + const`` with ``c`` centred, so a direction's range
  divided by the range of σ, capped by ``‖c‖√d`` (Cauchy–Schwarz). σ's floor comes from one exactly
  bounded direction (an input of the node's own) and from the centred vector's box, its ceiling from the box.
- GELU/ReLU: monotone pieces, with the activation's global minimum where an interval contains it.
- the logit gap ``l_v − l_a`` through the final LayerNorm, for every token v at once.

Everything runs in float64 and holds for exact arithmetic up to float64 rounding (relative
~1e-13); callers decide with a margin above that (``lowprob.bounds``). ``Transformer.gap_bounds``
offers it (an optional capability, ``models.protocol``) for one-block models on the CPU.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lowprob.errors import LowprobError

DINKELBACH_STEPS = 12  # each step is exact in the limit; the certificate below is sound after any number
REFINED = 8  # rivals per node re-bounded with exact attention ranges
NODE_CHUNK = 16  # nodes per vectorised pass (memory ~ chunk × heads × d_head × positions × support)


def _activation_floor(name: str) -> float:
    """A sound lower bound on the activation over the reals (GELU's dip is at x ≈ −0.75)."""
    if name == "relu":
        return 0.0
    x = torch.linspace(-3, 0, 300_001, dtype=torch.float64)
    act = F.gelu(x, approximate="tanh" if name == "gelu_tanh" else "none")
    return float(act.min()) - 1e-7  # grid step 1e-5, curvature < 1: the true minimum is within 1e-10


def activation_interval(lo: Tensor, hi: Tensor, act, name: str, floor: float) -> tuple[Tensor, Tensor]:
    """Range of the activation ``act`` (called ``name``) over [lo, hi]: increasing right of its minimum,
    decreasing left of it."""
    f_lo, f_hi = act(lo), act(hi)
    low = torch.minimum(f_lo, f_hi)
    if name != "relu":  # the dip lies in (−1, −0.5): an interval reaching into it may go lower than its ends
        low = torch.where((lo < -0.5) & (hi > -1.0), torch.minimum(low, torch.full_like(low, floor)), low)
    return low, torch.maximum(f_lo, f_hi)


def variance_interval(lo: Tensor, hi: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Sound range of ``var(x) + eps`` (mean over the last axis) for x in the box [lo, hi].

    Lower: ``min_t mean(dist(t, [lo_i, hi_i])²)`` — a convex function of t minimised by bisection on its
    derivative, minus its slope times the final bracket (convexity makes that a certificate). Upper:
    every coordinate at its farthest end from the box's mean range.
    """
    d = lo.shape[-1]
    a, b = lo.amin(-1, keepdim=True), hi.amax(-1, keepdim=True)
    for _ in range(64):
        t = (a + b) / 2
        slope = ((t - hi).clamp(min=0) - (lo - t).clamp(min=0)).sum(-1, keepdim=True)
        a, b = torch.where(slope < 0, t, a), torch.where(slope < 0, b, t)
    t = (a + b) / 2
    phi = (((t - hi).clamp(min=0) ** 2 + (lo - t).clamp(min=0) ** 2).sum(-1, keepdim=True)) / d
    slope = 2 * ((t - hi).clamp(min=0) - (lo - t).clamp(min=0)).sum(-1, keepdim=True) / d
    var_lo = (phi - slope.abs() * (b - a)).clamp(min=0).squeeze(-1)
    m_lo, m_hi = lo.mean(-1, keepdim=True), hi.mean(-1, keepdim=True)
    far = torch.maximum((hi - m_lo).abs(), (lo - m_hi).abs())
    var_hi = (far ** 2).mean(-1)
    return var_lo + eps, var_hi + eps


def divide_by_positive(lo: Tensor, hi: Tensor, d_lo: Tensor, d_hi: Tensor) -> tuple[Tensor, Tensor]:
    """Range of n / d for n in [lo, hi] and d in [d_lo, d_hi] with d_lo > 0."""
    return (torch.where(lo >= 0, lo / d_hi, lo / d_lo), torch.where(hi >= 0, hi / d_lo, hi / d_hi))


def _ratio_bounds(values: Tensor, weights: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Exact-up-to-a-certificate range of ``Σ_p w_p(x_p) a_p(x_p) / Σ_p w_p(x_p)`` over independent choices.

    ``values`` [..., P, K] are a_p(k), ``weights`` [..., P, K] positive w_p(k), ``valid`` [..., P, K] the
    allowed choices (at least one per position). Dinkelbach's iteration from a feasible ratio λ picks,
    per position, the choice maximising w (a − λ); ``F(λ) = max Σ_p w_p (a_p − λ)`` then certifies
    ``max ratio ≤ λ + F(λ) / min Σ w``. Returns (min, max) over the last two axes.
    """
    def upper(a: Tensor) -> Tensor:
        neg = torch.tensor(-math.inf, dtype=a.dtype)
        w_min = weights.masked_fill(~valid, math.inf).amin(-1).sum(-1)
        lam = a.masked_fill(~valid, math.inf).amin(-1).amin(-1)  # a feasible lower bound to start from
        for _ in range(DINKELBACH_STEPS):
            gain = torch.where(valid, weights * (a - lam[..., None, None]), neg)
            pick = gain.argmax(-1, keepdim=True)
            w = weights.gather(-1, pick).squeeze(-1)
            lam = (w * a.gather(-1, pick).squeeze(-1)).sum(-1) / w.sum(-1)
        gap = torch.where(valid, weights * (a - lam[..., None, None]), neg).amax(-1).sum(-1)
        return lam + gap.clamp(min=0) / w_min

    return -upper(-values), upper(values)


class TransformerBounds:
    """Bounds on ``l_v − l_a`` (every token v, anchor tokens a) at the last position, for nodes of a product space.

    Built once per (model, supports) for the shipped ``Transformer`` with one block; ``logit_gaps`` takes
    nodes as masks over each position's support.
    """

    def __init__(self, model, supports: Sequence[Tensor]) -> None:
        if len(model.blocks) != 1:
            raise LowprobError(f"gap bounds cover one-block transformers; this one has {len(model.blocks)} blocks")
        self.T, self.K = len(supports), max(len(s) for s in supports)
        cfg = model.cfg
        self.act, self.floor = cfg.act_fn, _activation_floor(cfg.act_fn)
        with torch.no_grad():
            p = {name: t.detach().to("cpu", torch.float64) for name, t in model.named_parameters()}
        self.p, self.eps = p, cfg.ln_eps
        ids = torch.zeros(self.T, self.K, dtype=torch.long)
        self.valid = torch.zeros(self.T, self.K, dtype=torch.bool)  # padding of short supports
        for pos, support in enumerate(supports):
            ids[pos, : len(support)] = support
            self.valid[pos, : len(support)] = True
        self.block = copy.deepcopy(model.blocks[0]).double()  # the block's own code, in float64
        self.x0 = p["W_E"][ids] + p["W_pos"][: self.T, None]  # [T, K, d]
        with torch.no_grad():
            self.q, self.k, self.v = self.block.attn.qkv(self.block.ln1(self.x0))  # [T, K, H, e] each
        self.scale = 1 / math.sqrt(cfg.d_head)
        d = cfg.d_model
        self.center = torch.eye(d, dtype=torch.float64) - 1 / d
        w2 = p["blocks.0.ln2.w"]
        self.hidden_dirs = (w2[:, None] * p["blocks.0.mlp.W_in"]).T  # [d_mlp, d], centred below
        self.hidden_dirs = self.hidden_dirs - self.hidden_dirs.mean(-1, keepdim=True)
        self.hidden_bias = p["blocks.0.ln2.b"] @ p["blocks.0.mlp.W_in"] + p["blocks.0.mlp.b_in"]

    # --- attention, as exact per-head ranges along directions ------------------------------------
    def _attention(self, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(query rows [N], softmax weights up to a constant [N, H, T, K], allowed choices [N, T, K])."""
        valid = masks & self.valid
        query = valid[:, -1].float().argmax(-1)
        scores = torch.einsum("nhe,tkhe->nhtk", self.q[-1, query], self.k) * self.scale
        scores = scores.masked_fill(~valid[:, None], -math.inf)
        weights = (scores - scores.amax((-1, -2), keepdim=True)).exp()
        return query, weights, valid

    def _head_ranges(self, per_head: Tensor, weights: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Exact range [N, D] of ``Σ_h g_h · z_h`` for per-head directions ``per_head`` [D, H, e], summed
        head by head (each head's range is exact; their sum is sound)."""
        if per_head.dim() == 3:
            per_head = per_head[None]
        a = torch.einsum("nDhe,tkhe->nDhtk", per_head, self.v)  # [N|1, D, H, T, K]
        N, D = len(weights), per_head.shape[1]
        lo, hi = _ratio_bounds(a.expand(N, -1, -1, -1, -1), weights[:, None].expand(-1, D, -1, -1, -1),
                               valid[:, None, None].expand(-1, D, a.shape[2], -1, -1))
        return lo.sum(-1), hi.sum(-1)

    def _exact(self, dirs: Tensor, base: Tensor, weights: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Range [N, D] of ``dirs · r`` where r = base + Σ_h W_O[h]ᵀ z_h, head by head exact."""
        per_head = torch.einsum("hed,...d->...he", self.p["blocks.0.attn.W_O"], dirs)
        lo, hi = self._head_ranges(per_head, weights, valid)
        shift = (base @ dirs.T) if dirs.dim() == 2 else torch.einsum("nd,nDd->nD", base, dirs)
        return lo + shift, hi + shift

    def _boxed(self, dirs: Tensor, base: Tensor, z_mid: Tensor, z_rad: Tensor) -> tuple[Tensor, Tensor]:
        """Range [N, D] of ``dirs · r`` from a box on each head's output: cheap, looser."""
        W_O = self.p["blocks.0.attn.W_O"]  # [H, e, d]
        per_head = torch.einsum("hed,Dd->Dhe", W_O, dirs).reshape(len(dirs), -1)  # [D, H e]
        mid = base @ dirs.T + z_mid.flatten(1) @ per_head.T
        rad = z_rad.flatten(1) @ per_head.abs().T
        return mid - rad, mid + rad

    def flops(self, nodes: int, anchors: int) -> float:
        """What ``logit_gaps`` costs for ``nodes`` nodes, multiply-adds counted twice: the ratio bounds (each head's
        output box, the centred residual's coordinates, the two σ directions and the refined rivals; about five
        operations per candidate, per Dinkelbach step and certificate, for the minimum and the maximum) and the
        matrix products through the MLP and the unembedding."""
        p = self.p
        H, e, d = p["blocks.0.attn.W_O"].shape
        m, V = p["blocks.0.mlp.W_out"].shape[0], p["W_U"].shape[1]
        problems = H * e + (d + 2 + anchors * REFINED) * H
        ratios = problems * self.T * self.K * 5 * (DINKELBACH_STEPS + 1) * 2
        products = 2 * (2 * m * (H * e + d) + anchors * V * (H * e + m) * 2 + 2 * d * d)
        return float(nodes * (ratios + products))

    # --- the public bound --------------------------------------------------------------------------
    @torch.no_grad()
    def logit_gaps(self, masks: Tensor, anchors: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Bounds (lo, hi) [N, A, V] on ``l_v − l_a`` over every input of each node.

        ``masks`` [N, T, K] bool: the allowed support indices of each position (the last fixed).
        """
        if bool(((masks & self.valid)[:, -1].sum(-1) != 1).any()):
            raise LowprobError("logit_gaps needs the last position fixed in every node")
        parts = [self._gaps(chunk, list(anchors)) for chunk in masks.split(NODE_CHUNK)]
        return torch.cat([lo for lo, _ in parts]), torch.cat([hi for _, hi in parts])

    def _gaps(self, masks: Tensor, anchors: list[int]) -> tuple[Tensor, Tensor]:
        p, d = self.p, self.center.shape[0]
        W_O, W_out, b_out = p["blocks.0.attn.W_O"], p["blocks.0.mlp.W_out"], p["blocks.0.mlp.b_out"]
        query, weights, valid = self._attention(masks)
        N, H = weights.shape[:2]
        base = self.x0[-1, query] + p["blocks.0.attn.b_O"]  # [N, d]
        values = self.v.permute(2, 3, 0, 1)[None].expand(N, -1, -1, -1, -1)  # [N, H, e, T, K]
        z_lo, z_hi = _ratio_bounds(values, weights[:, :, None].expand_as(values),
                                   valid[:, None, None].expand_as(values))
        z_mid, z_rad = (z_hi + z_lo) / 2, (z_hi - z_lo) / 2
        # one input of the node, computed exactly: its centred residuals give directions for σ's lower bounds
        ref = valid.float().argmax(-1)  # [N, T]
        w_ref = weights.gather(-1, ref[:, None, :, None].expand(-1, H, -1, 1)).squeeze(-1)  # [N, H, T]
        v_ref = self.v[torch.arange(self.T), ref]  # [N, T, H, e]
        z_ref = torch.einsum("nht,nthe->nhe", w_ref, v_ref) / w_ref.sum(-1)[..., None]
        r_ref = base + torch.einsum("nhe,hed->nd", z_ref, W_O)
        c_lo, c_hi = self._exact(self.center, base, weights, valid)  # the centred residual
        u = _unit(r_ref @ self.center)[:, None]  # [N, 1, d]
        var_lo, var_hi = variance_interval(c_lo, c_hi, self.eps)
        var_lo = torch.maximum(var_lo, _square_floor(*self._exact(u, base, weights, valid)).squeeze(-1) / d + self.eps)
        s_lo, s_hi = var_lo.sqrt()[:, None], var_hi.sqrt()[:, None]
        h_lo, h_hi = normalized_range(*self._boxed(self.hidden_dirs, base, z_mid, z_rad), s_lo, s_hi,
                                      self.hidden_dirs.norm(dim=-1), d)
        a_lo, a_hi = activation_interval(h_lo + self.hidden_bias, h_hi + self.hidden_bias, self.block.mlp.act,
                                           self.act, self.floor)
        a_mid, a_rad = (a_hi + a_lo) / 2, (a_hi - a_lo) / 2

        def through_mlp(dirs: Tensor, r_lo: Tensor, r_hi: Tensor) -> tuple[Tensor, Tensor]:
            """Range of ``dirs · (r + MLP(r))`` given the range of ``dirs · r`` (dirs [N|1, D, d])."""
            mlp = torch.einsum("md,nDd->nDm", W_out, dirs)
            mid = torch.einsum("nm,nDm->nD", a_mid, mlp) + torch.einsum("d,nDd->nD", b_out, dirs)
            rad = torch.einsum("nm,nDm->nD", a_rad, mlp.abs())
            return r_lo + mid - rad, r_hi + mid + rad

        r2_ref = r_ref + self.block.mlp(self.block.ln2(r_ref))
        f_lo, f_hi = variance_interval(*through_mlp(self.center[None], c_lo, c_hi), self.eps)
        u2 = _unit(r2_ref @ self.center)[:, None]
        f_lo = torch.maximum(f_lo, _square_floor(*through_mlp(u2, *self._exact(u2, base, weights, valid)))
                             .squeeze(-1) / d + self.eps)
        sf_lo, sf_hi = f_lo.sqrt()[:, None], f_hi.sqrt()[:, None]
        W_U, wf, bf = p["W_U"], p["ln_final.w"], p["ln_final.b"]
        b_U = p.get("b_U")
        los, his = [], []
        for a in anchors:
            diff = W_U - W_U[:, a : a + 1]  # [d, V]
            dirs = (wf[:, None] * diff).T
            dirs = dirs - dirs.mean(-1, keepdim=True)  # [V, d], centred: the final LayerNorm's mean drops out
            const = bf @ diff + (b_U - b_U[a] if b_U is not None else 0.0)
            norms = dirs.norm(dim=-1)
            g_lo, g_hi = normalized_range(*through_mlp(dirs[None], *self._boxed(dirs, base, z_mid, z_rad)),
                                          sf_lo, sf_hi, norms, d)
            # the likeliest deciders, re-bounded with exact attention ranges
            top = ((g_lo + g_hi) / 2).topk(min(REFINED, dirs.shape[0]), -1).indices  # [N, R]
            sel = dirs[top]  # [N, R, d]
            e_lo, e_hi = normalized_range(*through_mlp(sel, *self._exact(sel, base, weights, valid)), sf_lo, sf_hi,
                                          norms[top], d)
            g_lo = g_lo.scatter(-1, top, torch.maximum(g_lo.gather(-1, top), e_lo))
            g_hi = g_hi.scatter(-1, top, torch.minimum(g_hi.gather(-1, top), e_hi))
            los.append(g_lo + const)
            his.append(g_hi + const)
        return torch.stack(los, 1), torch.stack(his, 1)


def normalized_range(lo: Tensor, hi: Tensor, s_lo: Tensor, s_hi: Tensor, norms: Tensor, d: int
                     ) -> tuple[Tensor, Tensor]:
    """Range of ``c·x / σ(x)`` (c centred, σ the LayerNorm's) from the range [lo, hi] of ``c·x`` and [s_lo, s_hi]
    of σ, capped by Cauchy–Schwarz: ``|c·x| ≤ ‖c‖ ‖x − mean x‖ ≤ ‖c‖ √d σ(x)`` whatever the input."""
    g_lo, g_hi = divide_by_positive(lo, hi, s_lo, s_hi)
    cap = norms * math.sqrt(d)
    return g_lo.clamp(min=-cap), g_hi.clamp(max=cap)


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-300)


def _square_floor(lo: Tensor, hi: Tensor) -> Tensor:
    """min of x² over [lo, hi]."""
    return torch.where(lo > 0, lo, torch.where(hi < 0, -hi, torch.zeros_like(lo))) ** 2
