"""Sampled continuations: the randomness of generation, drawn and weighed exactly.

A generation event (``events.Generates``) asks whether, after a prompt, ``steps`` tokens sampled at
``temperature`` (greedy at 0; optionally from the ``top_k`` tokens only) contain one of some token
sequences. ``continue_prompts`` draws those tokens for a batch of prompts, from the model's own
next-token law p or from a tilted law q = δ p + (1 − δ) p e^{β a} / Z, where a(y) = 1 when y
advances a partial match of a pattern (or starts one) and δ is a defensive share. Each row carries
log p/q of its tokens, exact because q is normalised per step, so the mean of (p/q) 1[match] is
unbiased for any β and δ. A row that has matched
stops: the event happened whatever follows, so its later tokens would have weight 1.

The one idea that makes it fast: only the patterns' few tokens can advance a match, so q/p takes
two values per row (one for them, one for every other token) and the tilt is a correction of a few
columns of p, never a pass over the vocabulary; each row's token is then drawn with one uniform by a
two-level inverse CDF (``draw_rows``).

``exact_generation_probability`` enumerates every continuation instead (with prefix sharing through
the decoding cache) for toy models and short horizons: the exact value estimators are tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from lowprob import cost
from lowprob.distributions import bind
from lowprob.errors import LowprobError
from lowprob.models.decoding import start_decoding
from lowprob.models.protocol import capability


def _decoding(model, prompt_length: int) -> tuple:
    """The model that runs the continuations and the prompts' length in its positions: ``model`` itself, or
    the one it names (``decoding_model``: a template's prompts in the real model's tokens, at their longest)."""
    named = capability(model, "decoding_model")
    return named(prompt_length) if named is not None else (model, prompt_length)


def check_room(model, prompt_length: int, steps: int) -> None:
    """Refuse, before any work, a horizon the model's context cannot hold: the prompt and every generated
    token but the last (which is drawn, never fed back) must fit in ``n_ctx`` positions."""
    model, prompt_length = _decoding(model, prompt_length)
    need = prompt_length + steps - 1
    if need > model.n_ctx:
        raise LowprobError(f"generates: a {prompt_length}-token prompt and steps={steps} need {need:,} positions, more "
                           f"than the model's context of {model.n_ctx}: use steps <= {model.n_ctx - prompt_length + 1}")


@dataclass(frozen=True)
class Patterns:
    """Token sequences to find in a continuation; match state = the continuation's tokens so far."""

    sequences: tuple[tuple[int, ...], ...]

    @cached_property
    def tokens(self) -> Tensor:
        """Long [C], sorted: the patterns' distinct tokens, the only ones that can ever advance a match."""
        return torch.tensor(sorted({t for seq in self.sequences for t in seq}), dtype=torch.long)

    @cached_property
    def _column(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self.tokens.tolist())}

    def matched(self, continuation: Tensor) -> Tensor:
        """Bool [B]: some pattern ends at the continuation's last token."""
        hit = torch.zeros(len(continuation), dtype=torch.bool, device=continuation.device)
        for seq in self.sequences:
            n = len(seq)
            if continuation.shape[1] >= n:
                hit |= (continuation[:, -n:] == torch.tensor(seq, device=continuation.device)).all(1)
        return hit

    def occurs(self, continuation: Tensor) -> Tensor:
        """Bool [B]: some pattern occurs anywhere in the continuation."""
        hit = torch.zeros(len(continuation), dtype=torch.bool)
        for seq in self.sequences:
            if continuation.shape[1] >= len(seq):
                windows = continuation.unfold(1, len(seq), 1)  # [B, positions, len(seq)]
                hit |= (windows == torch.tensor(seq)).all(2).any(1)
        return hit

    def progress(self, continuation: Tensor) -> Tensor:
        """Long [B]: the most tokens of some pattern's beginning that the continuation ends with."""
        out = torch.zeros(len(continuation), dtype=torch.long, device=continuation.device)
        t = continuation.shape[1]
        for seq in self.sequences:
            for k in range(1, min(len(seq), t + 1)):
                ends = (continuation[:, t - k:] == torch.tensor(seq[:k], device=continuation.device)).all(1)
                out = torch.where(ends, torch.clamp(out, min=k), out)
        return out

    def advancing(self, continuation: Tensor) -> Tensor:
        """Bool [B, C]: which of ``tokens`` extend a partial match of some pattern (or start one): token
        seq[k] of a pattern wherever the continuation ends with seq[:k].

        Kept over the patterns' tokens only, never the vocabulary: the tilt touches a handful of
        tokens per row, so it is applied as a sparse correction of the model's law."""
        column = self._column
        out = torch.zeros(len(continuation), len(column), dtype=torch.bool)
        t = continuation.shape[1]
        for seq in self.sequences:
            for k in range(min(len(seq) - 1, t) + 1):
                if k == 0:
                    out[:, column[seq[0]]] = True
                else:
                    out[:, column[seq[k]]] |= (continuation[:, t - k:] == torch.tensor(seq[:k])).all(1)
        return out


def _tempered(logits: Tensor, temperature: float, top_k: int | None) -> Tensor:
    """logits / T with all but the top k set to −inf (T > 0): the sampling law's logits."""
    scaled = logits if temperature == 1 else logits / temperature
    if top_k is not None and top_k < logits.shape[1]:
        kth = scaled.topk(top_k, dim=1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, -torch.inf)
    return scaled


def next_token_log_probs(logits: Tensor, temperature: float, top_k: int | None) -> Tensor:
    """log p(y) [B, d_vocab] of the sampling law: softmax(logits / T) over the top k (greedy: T = 0).

    Float64, for exact enumeration; sampling uses ``next_token_probs``."""
    if temperature == 0:
        out = torch.full_like(logits, -torch.inf, dtype=torch.float64)
        return out.scatter_(1, logits.argmax(1, keepdim=True), 0.0)
    return _tempered(logits.double(), temperature, top_k).log_softmax(1)


def next_token_probs(logits: Tensor, temperature: float, top_k: int | None) -> Tensor:
    """p(y) [B, d_vocab] of the sampling law in the logits' precision (float32 for the shipped models).

    Float32 is enough for the law itself (each entry to ~1e-7 relative); what must be float64 are
    the sums a draw compares against, which ``draw_rows`` accumulates in float64."""
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(1, logits.argmax(1, keepdim=True), 1.0)
    return _tempered(logits, temperature, top_k).softmax(1)


BLOCK = 64  # tokens per block of the two-level inverse CDF in ``draw_rows``


def in_blocks(weights: Tensor) -> tuple[Tensor, Tensor]:
    """``weights`` [B, V] as blocks [B, V / BLOCK, BLOCK] (zero-padded) and the blocks' sums, float64."""
    n, v = weights.shape
    if v % BLOCK:
        weights = torch.nn.functional.pad(weights, (0, -v % BLOCK))
    blocks = weights.view(n, -1, BLOCK)
    return blocks, blocks.sum(2).double()  # a float32 sum of 64 entries: ~1e-7 of the block's own mass


def draw_rows(blocks: Tensor, sums: Tensor, generator: torch.Generator) -> Tensor:
    """One token per row [B] (CPU) from the law ∝ the weights ``in_blocks`` returned, one uniform each.

    Inverse CDF in two levels: a block by the cumulated block sums, then a token by the float64
    cumulated weights inside it, so every token — one of mass 1e-12 next to one of mass 0.9 included
    — is drawn with its probability to ~1e-7 relative, while the only passes over the whole
    [B, V] tensor are a float32 block sum (a float64 cumulative sum of every row costs ~20× more, and
    ``torch.multinomial`` draws one exponential variate per entry, ~60× more)."""
    n = len(blocks)
    cum = sums.cumsum(1)  # [B, blocks]
    rows = torch.arange(n, device=blocks.device)
    u = torch.rand(n, generator=generator, dtype=torch.float64).to(blocks.device) * cum[:, -1]
    # rounding can put u at the total: never step past the last block (or token) with mass
    b = torch.minimum(torch.searchsorted(cum, u[:, None], right=True)[:, 0], (cum < cum[:, -1:]).sum(1))
    inner = blocks[rows, b].double().cumsum(1)  # [B, BLOCK]
    before = torch.where(b > 0, cum[rows, (b - 1).clamp(min=0)], 0.0)
    rest = (u - before) / sums[rows, b] * inner[:, -1]  # where u falls in the block, on the block's own scale
    i = torch.minimum(torch.searchsorted(inner, rest[:, None], right=True)[:, 0], (inner < inner[:, -1:]).sum(1))
    return (b * BLOCK + i).cpu()


@dataclass
class Draw:
    """One step's tokens [B] and, per row, log q/p of the token, P(advancing set) under p, and whether the
    token advanced a match (all on the CPU)."""

    token: Tensor
    log_ratio: Tensor
    p_advance: Tensor
    advanced: Tensor


def draw_tilted(logits: Tensor, event, patterns: Patterns, continuation: Tensor, beta: float, defensive: float,
                generator: torch.Generator) -> Draw:
    """Next tokens from q = δ p + (1 − δ) p e^{β a} / Z (δ = ``defensive``), with q/p exact per row.

    With P the advancing set's mass under p, Z = 1 + P (e^β − 1), so q/p is one constant c for
    tokens that do not advance and c' for those that do: the law is p with a few entries per row
    scaled by c'/c, and log q/p of the drawn token is log c or log c'."""
    probs = next_token_probs(logits, event.temperature, event.top_k)
    blocks, sums = in_blocks(probs)
    tokens = patterns.tokens.to(probs.device)
    adv = patterns.advancing(continuation)  # [B, C]
    at_tokens = probs[:, tokens].double().cpu()  # [B, C]
    total = sums.sum(1).cpu()
    p_adv = ((at_tokens * adv).sum(1) / total).clamp(0, 1)
    z = 1 + p_adv * math.expm1(beta)
    log_c = torch.log(defensive + (1 - defensive) / z)
    log_c_adv = torch.log(defensive + (1 - defensive) * math.exp(beta) / z)
    if beta != 0:  # scale the advancing entries by c'/c, and their blocks' sums: a sparse write of C columns
        scale = torch.where(adv, (log_c_adv - log_c).exp()[:, None], 1.0)
        blocks.view(len(blocks), -1)[:, tokens] *= scale.to(probs.dtype).to(probs.device)
        sums.scatter_add_(1, (tokens // BLOCK).expand(len(adv), -1), (at_tokens * (scale - 1)).to(sums.device))
    y = draw_rows(blocks, sums, generator)
    column = torch.searchsorted(patterns.tokens, y).clamp(max=len(patterns.tokens) - 1)
    rows = torch.arange(len(y))
    advanced = (patterns.tokens[column] == y) & adv[rows, column]
    return Draw(y, torch.where(advanced, log_c_adv, log_c), p_adv, advanced)


@dataclass
class Continuations:
    """What ``continue_prompts`` returns, on the CPU: per row the event and log p/q of its tokens."""

    hit: Tensor  # bool [B]
    log_weight: Tensor  # float64 [B]
    advance: Tensor  # float64 [B, steps]: p(advancing set) at each step (NaN once stopped), for adapting β
    took: Tensor  # bool [B, steps]: whether the token drawn at each step advanced a match


@torch.no_grad()
def continue_prompts(model, prompts: Tensor, event, generator: torch.Generator, beta: float = 0.0,
                     defensive: float = 0.0) -> Continuations:
    """Continue each prompt by up to ``event.steps`` tokens, tilted by ``beta`` towards the patterns.

    Each step draws from the mixture ``defensive`` p + (1 − ``defensive``) q_β: a token that does not
    advance a match keeps at least the ``defensive`` share of its probability, so a path through
    such tokens (a match that starts late) is still drawn and its weight is at most
    ``defensive``^-(its non-advancing steps). Each draw takes one uniform per row from ``generator``
    (a CPU generator: the same uniforms on any device).

    The decoding is charged to the cost meter (``flops_of``): the prompts as whole forwards, then each
    extension.
    """
    check_room(model, prompts.shape[1], event.steps)
    state, patterns = start_decoding(model, prompts), Patterns(event.patterns)
    n, steps = len(prompts), event.steps
    live = torch.arange(n)  # rows of the batch still running, as indices into the output
    hit = torch.zeros(n, dtype=torch.bool)
    log_w = torch.zeros(n, dtype=torch.float64)
    advance = torch.full((n, steps), torch.nan, dtype=torch.float64)
    took = torch.zeros(n, steps, dtype=torch.bool)
    extended_rows = extended_positions = 0
    continuation = torch.zeros(n, 0, dtype=torch.long)
    for t in range(steps):
        step = draw_tilted(state.logits, event, patterns, continuation, beta, defensive, generator)
        y = step.token
        log_w[live] -= step.log_ratio
        advance[live, t], took[live, t] = step.p_advance, step.advanced
        continuation = torch.cat([continuation, y[:, None]], 1)
        done = patterns.matched(continuation)
        hit[live[done]] = True
        keep = (~done).nonzero()[:, 0]
        if t == steps - 1 or len(keep) == 0:
            break
        live, continuation = live[keep], continuation[keep]  # a matched row stops
        state.select(keep)
        extended_positions += len(keep) * state.positions_per_step()
        extended_rows += len(keep)
        state.extend(y[keep])
    cost.charge(flops_of(model, n, prompts.shape[1], event, extended_rows, extended_positions), forwards=n)
    return Continuations(hit, log_w, advance, took)


@torch.no_grad()
def sample_continuations(model, prompts: Tensor, event, generator: torch.Generator) -> Tensor:
    """Continuations [B, ``event.steps``] of ``prompts`` from the model's own law, never stopped early (charged
    to the cost meter): one draw tells, for any number of patterns, whether each occurs (sampled truth)."""
    check_room(model, prompts.shape[1], event.steps)
    state = start_decoding(model, prompts)
    out = torch.zeros(len(prompts), event.steps, dtype=torch.long)
    for t in range(event.steps):
        out[:, t] = draw_rows(*in_blocks(next_token_probs(state.logits, event.temperature, event.top_k)), generator)
        if t < event.steps - 1:
            state.extend(out[:, t])
    rows = len(prompts) * (event.steps - 1)
    cost.charge(flops_of(model, len(prompts), prompts.shape[1], event, rows, rows * state.positions_per_step()),
                forwards=len(prompts))
    return out


def flops_of(model, prompts: int, prompt_length: int, event, extended_rows: int, extended_positions: int
             ) -> float:
    """FLOPs of decoding: the prompts as whole sequences, then each extension's positions at their
    share of a prompt-plus-continuation sequence, plus one unembedding per extended row."""
    model, prompt_length = _decoding(model, prompt_length)
    length = prompt_length + event.steps
    unembed = 2 * model.W_U.shape[0] * model.W_U.shape[1]
    per_position = (model.flops_per_sequence(length) - unembed) / length
    return (prompts * model.flops_per_sequence(prompt_length) + extended_positions * per_position
            + extended_rows * unembed)


@torch.no_grad()
def exact_generation_probability(model, dist, event, max_rows: int = 1 << 20) -> float:
    """P(event) exactly: every prompt of ``dist`` and every continuation with nonzero probability.

    Rows are (prompt, partial continuation) with their probability; a matched row adds its mass and
    stops, the others branch over their next tokens. Refused when a step would hold more than
    ``max_rows`` rows (vocabulary^steps grows fast: this is for toy models and short horizons).
    """
    model, dist = bind(model, dist)  # a template: its value ids, read by the templated model
    event.validate(model)
    check_room(model, len(dist), event.steps)
    if dist.support_size() > max_rows:
        raise LowprobError(f"{dist.support_size()} prompts: more than exact enumeration's {max_rows} rows")
    branching = 1 if event.temperature == 0 else min(event.top_k or model.d_vocab, model.d_vocab)
    chunk = max(1, max_rows // branching ** event.steps)  # prompts whose trees fit in max_rows together
    total, patterns = 0.0, Patterns(event.patterns)
    for prompts, log_d in dist.enumerate(chunk):
        state = start_decoding(model, prompts)
        log_mass = log_d.double()
        continuation = torch.zeros(len(prompts), 0, dtype=torch.long)
        for t in range(event.steps):
            log_p = next_token_log_probs(state.logits, event.temperature, event.top_k).cpu()
            row, y = torch.isfinite(log_p).nonzero(as_tuple=True)
            if len(row) > max_rows:
                raise LowprobError(f"step {t + 1} would hold {len(row)} continuations, more than {max_rows}: "
                                   f"use fewer steps, a smaller top_k or a smaller vocabulary")
            log_mass = log_mass[row] + log_p[row, y]
            continuation = torch.cat([continuation[row], y[:, None]], 1)
            done = patterns.matched(continuation)
            total += float(log_mass[done].exp().sum())
            keep = (~done).nonzero()[:, 0]
            if t == event.steps - 1 or len(keep) == 0:
                break
            state.select(row[keep])
            state.extend(y[keep])
            log_mass, continuation = log_mass[keep], continuation[keep]
    return total
