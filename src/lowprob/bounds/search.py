"""Branch-and-bound over a product space: a proved [lower, upper] for P(event) (``lowprob.bound``).

A node fixes the first ``depth`` variable positions in branching order — the last variable position
first (it holds the query every head reads, which the network bound needs fixed), then the others
left to right — and leaves the rest open over their whole supports; its mass is the product of its
fixed tokens' probabilities. Nodes leave a queue by query token, likeliest first, and within one
by mass, largest first: the open mass (the gap between the bounds) shrinks nearly as fast as it can, and
whole query tokens get decided early, which is what an estimate of the open rest can use
(``bounded_estimate``):

- a node with one open position is closed by running its completions (``_Leaves``): the target's
  gap to a screen of likely rivals settles most of them without the full unembedding, the rest get
  the full logits, and near-ties are recomputed in float64 as exact ground truth settles them;
- another node is bounded through the network where the model has a bound (``network.py``), and
  is closed when the bound proves the event fails, or holds, for all its inputs; else it is split
  into its children. A depth where the bound closes too few nodes stops being bounded there.

The search stops when every input is decided or at a time or FLOP limit; it checkpoints its queue
and totals (JSON, atomically) and resumes from them.
"""

from __future__ import annotations

import copy
import heapq
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lowprob.bounds.result import Bounds, DepthStats
from lowprob.bounds.verdict import anchors, verdict
from lowprob.errors import LowprobError
from lowprob.events import Event
from lowprob.files import atomic_path, dumps_json, read_json
from lowprob.models.argmax import DEEP_CHUNK, SHALLOW_CHUNK, TIE_TOL, FastArgmax
from lowprob.models.protocol import capability
from lowprob.truth.compute import PLAIN_CHUNK

BOUND_TOL = 1e-6  # network-bound decisions clear the event's threshold by this (float64 rounding: ~1e-13)
ROUNDING = 1e-12  # relative outward widening of the reported bounds (float64 products and sums of masses)
BATCH = 16  # inner nodes bounded or split per step (a bound costs milliseconds: steps stay short)
LEAF_ROWS = 8192  # completions run per step
RIVALS = 64  # tokens in the screen besides the event's own
TRIAL_NODES = 8  # nodes bounded at a depth before its closing rate decides whether to go on bounding there
MIN_CLOSE_RATE = 0.125  # below this share of closed nodes, a depth's bounds cost more than they save
CHECKPOINT_SECONDS = 60.0
CHECKPOINT_VERSION = 1


class _Sum:
    """A compensated (Neumaier) running sum: open mass is a difference of sums near 1 otherwise."""

    def __init__(self, value: float = 0.0) -> None:
        self.total, self.carry = value, 0.0

    def add(self, x: float) -> None:
        t = self.total + x
        self.carry += (self.total - t) + x if abs(self.total) >= abs(x) else (x - t) + self.total
        self.total = t

    @property
    def value(self) -> float:
        return self.total + self.carry


@dataclass
class _Depth:
    nodes: int = 0
    bounded: int = 0
    proved_free: int = 0
    proved_certain: int = 0
    evaluated: int = 0
    mass_free: _Sum = field(default_factory=_Sum)
    mass_certain: _Sum = field(default_factory=_Sum)

    def frozen(self, depth: int) -> DepthStats:
        return DepthStats(depth, self.nodes, self.bounded, self.proved_free, self.proved_certain, self.evaluated,
                          self.mass_free.value, self.mass_certain.value)

    def bounding_pays(self) -> bool:
        closed = self.proved_free + self.proved_certain
        return self.bounded < TRIAL_NODES or closed >= MIN_CLOSE_RATE * self.bounded


class _Leaves:
    """Runs every completion of nodes with one open position and says which hit the event.

    On the shipped transformer the final residuals come from the fast path and a screen of likely rivals
    settles most inputs before the full unembedding; any other model of the protocol runs plainly.
    """

    def __init__(self, model, supports: list[Tensor], event: Event) -> None:
        self.model, self.event = model, event
        offer = capability(model, "fast_argmax")
        self.fast: FastArgmax | None = offer(supports) if offer is not None else None
        self.anchors = list(anchors(event))
        self.rivals: Counter[int] = Counter()
        self._double: Any = None  # the float64 copy of the model, made on the first near-tie
        T = len(supports)
        self.sequence_flops = model.flops_per_sequence(T)
        if self.fast is not None:
            cfg = model.cfg
            self.resid_flops = (model.positions_flops(T - 1, T) if cfg.n_layers == 1
                                else self.sequence_flops - 2 * cfg.d_model * cfg.d_vocab)
        self.flops = 0.0

    def screen(self) -> list[int]:
        return sorted({*self.anchors, *(t for t, _ in self.rivals.most_common(RIVALS))})

    @torch.no_grad()
    def hits(self, tokens: Tensor, position: int | None = None, support: Tensor | None = None) -> Tensor:
        """Bool [B]: the event at each sequence, as exact ground truth decides it. Given an open ``position``
        and its ``support``, the sequences are the completions of each row of ``tokens``, row after row."""
        m = self.model
        if position is not None and support is not None:
            full = tokens[:, None].repeat(1, len(support), 1)
            full[:, :, position] = support
            if self.fast is not None and m.cfg.n_layers == 1 and position < tokens.shape[1] - 1:
                resid = self.fast.completion_resid(tokens, position, support).flatten(0, 1)
                return self._from_resid(full.view(-1, tokens.shape[-1]), resid)
            tokens = full.view(-1, tokens.shape[-1])
        if self.fast is not None:  # in cache-sized chunks, as the fast argmax runs
            chunk = SHALLOW_CHUNK if m.cfg.n_layers == 1 else DEEP_CHUNK
            return self._from_resid(tokens, torch.cat([self.fast.last_resid(c) for c in tokens.split(chunk)]))
        self.flops += len(tokens) * self.sequence_flops
        logits = torch.cat([m.logits(c) for c in tokens.split(PLAIN_CHUNK)])
        return self._screened(tokens, lambda ids: logits[:, ids], lambda rows: logits[rows])

    def _from_resid(self, tokens: Tensor, resid: Tensor) -> Tensor:
        """From final residuals: the screen's logits cost ``2 d`` a token, the full unembedding only where needed."""
        m, d = self.model, self.model.cfg.d_model
        self.flops += len(tokens) * (self.resid_flops + 2 * d * (len(self.anchors) + RIVALS))

        def screen_logits(ids: Tensor) -> Tensor:
            return resid @ m.W_U[:, ids] + (m.b_U[ids] if m.b_U is not None else 0)

        def full_logits(rows: Tensor) -> Tensor:
            self.flops += len(rows) * 2 * d * m.cfg.d_vocab
            return m.unembed(resid[rows])

        return self._screened(tokens, screen_logits, full_logits)

    def _screened(self, tokens: Tensor, screen_logits: Callable[[Tensor], Tensor],
                  full_logits: Callable[[Tensor], Tensor]) -> Tensor:
        """The screen first: a likely rival ahead of the event's tokens by more than the tie tolerance settles an
        input without its other logits; the rest are decided on all of them."""
        screen = torch.tensor(self.screen())
        logits = screen_logits(screen)
        where = torch.searchsorted(screen, torch.tensor(self.anchors))
        gaps = logits[:, None, :] - logits[:, where, None]
        free, _ = verdict(self.event, gaps, gaps, TIE_TOL, vocab=screen)  # a subset of rivals proves "free" only
        rows = torch.nonzero(~free).flatten()
        if not len(rows):
            return torch.zeros(len(tokens), dtype=torch.bool)
        return self._decide(tokens, full_logits(rows), rows)

    def _decide(self, tokens: Tensor, logits: Tensor, rows: Tensor) -> Tensor:
        """The event at ``tokens[rows]`` from their float32 ``logits``, near-ties recomputed in float64."""
        self.rivals.update(logits.argmax(-1).tolist())
        gaps = logits[:, None, :] - logits[:, self.anchors, None]
        no, yes = verdict(self.event, gaps, gaps, TIE_TOL)
        hit = torch.zeros(len(tokens), dtype=torch.bool)
        hit[rows] = yes
        close = rows[~(no | yes)]
        if len(close):  # near-ties: the float64 model decides, as the exact tables do
            if self._double is None:
                self._double = copy.deepcopy(self.model).double()
            hit[close] = self.event.indicator(self._double.logits(tokens[close]))
            self.flops += len(close) * self.sequence_flops
        return hit


class Search:
    """The state of one proof: the queue of open nodes, the masses decided, the work spent."""

    def __init__(self, model, dist, event: Event) -> None:
        from lowprob.models.protocol import model_sha256

        anchors(event)  # refuses what is not a logits event with a margin, saying which are
        if model.device.type != "cpu":
            raise LowprobError("certified bounds run on the CPU: load the model without a device (or device='cpu')")
        event.validate(model)
        self.model, self.dist, self.event = model, dist, event
        self.supports = dist.support_ids()
        self.probs = [dist.support(i)[1].double() for i in range(len(dist))]
        variable = dist.variable_positions()
        self.order = [variable[-1], *variable[:-1]] if variable else []
        offer = capability(model, "gap_bounds")
        self.network = offer(self.supports) if offer is not None else None
        self.leaves = _Leaves(model, self.supports, event)
        self.base = torch.stack([s[0] for s in self.supports])
        self.identity = {"model_sha256": model_sha256(model), "distribution_sha256": dist.content_hash(),
                         "event": event.describe()}
        self.depths = [_Depth() for _ in range(max(len(self.order), 1))]
        self.certain, self.free = _Sum(), _Sum()
        # certain mass per token of the first branched position: what an estimate of the open rest adds exactly
        self.certain_by_query = torch.zeros(self._fanout(0), dtype=torch.float64)
        self.flops, self.seconds = 0.0, 0.0
        self.queue: list[tuple[float, float, int, tuple[int, ...]]] = [(-2.0, -1.0, 0, ())]
        self.open = _Sum(1.0)
        self._count = 1

    # --- nodes -------------------------------------------------------------------------------------
    @property
    def leaf_depth(self) -> int:
        return max(len(self.order) - 1, 0)

    def _mass(self, prefix: tuple[int, ...]) -> float:
        return math.prod(float(self.probs[self.order[i]][k]) for i, k in enumerate(prefix))

    def _push(self, mass: float, prefix: tuple[int, ...]) -> None:
        query = float(self.probs[self.order[0]][prefix[0]]) if prefix else 2.0
        heapq.heappush(self.queue, (-query, -mass, self._count, prefix))
        self._count += 1

    def _tokens(self, prefix: tuple[int, ...]) -> Tensor:
        tokens = self.base.clone()
        for i, k in enumerate(prefix):
            tokens[self.order[i]] = self.supports[self.order[i]][k]
        return tokens

    def _close(self, prefix: tuple[int, ...], mass: float, certain: bool) -> None:
        depth = len(prefix)
        self.open.add(-mass)
        (self.certain if certain else self.free).add(mass)
        if certain and prefix:
            self.certain_by_query[prefix[0]] += mass
        stats = self.depths[depth]
        (stats.mass_certain if certain else stats.mass_free).add(mass)

    def _split(self, mass: float, prefix: tuple[int, ...]) -> None:
        probs = self.probs[self.order[len(prefix)]].tolist()
        for k, p in enumerate(probs):
            if p > 0:
                self._push(mass * p, (*prefix, k))
        self.open.add(-mass)
        self.open.add(math.fsum(mass * p for p in probs if p > 0))

    # --- steps -------------------------------------------------------------------------------------
    def step(self) -> None:
        """Take the largest-mass node, and with it more of its depth, and decide or split them."""
        depth = len(self.queue[0][3])
        batch: list[tuple[float, tuple[int, ...]]] = []
        limit = max(1, LEAF_ROWS // self._fanout(depth)) if depth == self.leaf_depth else BATCH
        rest = []
        while self.queue and len(batch) < limit:
            item = heapq.heappop(self.queue)
            if len(item[3]) == depth:
                batch.append((-item[1], item[3]))
            else:
                rest.append(item)
            if len(rest) > 4 * limit:
                break
        for item in rest:
            heapq.heappush(self.queue, item)
        self.depths[depth].nodes += len(batch)
        if depth == self.leaf_depth:
            self._evaluate(depth, batch)
        elif depth > 0 and self.network is not None and self.depths[depth].bounding_pays():
            self._bound(depth, batch)
        else:
            for mass, prefix in batch:
                self._split(mass, prefix)

    def _fanout(self, depth: int) -> int:
        return len(self.supports[self.order[depth]]) if self.order else 1

    def _evaluate(self, depth: int, batch: list[tuple[float, tuple[int, ...]]]) -> None:
        before = self.leaves.flops
        if not self.order:  # no variable position: the one sequence
            hit = self.leaves.hits(self.base[None])
            self._close((), batch[0][0], bool(hit[0]))
        else:
            pos = self.order[-1]
            support, probs = self.supports[pos], self.probs[pos]
            rows = torch.stack([self._tokens(prefix) for _, prefix in batch])
            hits = self.leaves.hits(rows, pos, support).view(len(batch), len(support))
            for (mass, prefix), hit in zip(batch, hits, strict=True):
                self.open.add(-mass)
                certain = math.fsum((mass * probs[hit]).tolist())
                if prefix:
                    self.certain_by_query[prefix[0]] += certain
                elif len(self.order) == 1:  # the root is the leaf: its open position is the query
                    self.certain_by_query += mass * probs * hit
                free = math.fsum((mass * probs[~hit]).tolist())
                self.certain.add(certain)
                self.free.add(free)
                self.depths[depth].mass_certain.add(certain)
                self.depths[depth].mass_free.add(free)
        self.depths[depth].evaluated += len(batch)
        self.flops += self.leaves.flops - before

    def _bound(self, depth: int, batch: list[tuple[float, tuple[int, ...]]]) -> None:
        assert self.network is not None
        masks = self.network.valid[None].repeat(len(batch), 1, 1)
        for n, (_, prefix) in enumerate(batch):
            for i, k in enumerate(prefix):
                masks[n, self.order[i]] = False
                masks[n, self.order[i], k] = True
        lo, hi = self.network.logit_gaps(masks, anchors(self.event))
        free, certain = verdict(self.event, lo, hi, BOUND_TOL)
        self.flops += self.network.flops(len(batch), len(anchors(self.event)))
        stats = self.depths[depth]
        stats.bounded += len(batch)
        stats.proved_free += int(free.sum())
        stats.proved_certain += int(certain.sum())
        for (mass, prefix), no, yes in zip(batch, free.tolist(), certain.tolist(), strict=True):
            if no or yes:
                self._close(prefix, mass, yes)
            else:
                self._split(mass, prefix)

    # --- running, results, checkpoints -------------------------------------------------------------
    def run(self, seconds: float | None, flops: float | None, checkpoint: Path | None,
            progress: Callable[[Bounds], None] | None) -> Bounds:
        start, saved = time.perf_counter(), time.perf_counter()
        spent = self.seconds
        while self.queue:
            self.seconds = spent + time.perf_counter() - start
            if (seconds is not None and self.seconds >= seconds) or (flops is not None and self.flops >= flops):
                break
            self.step()
            if progress is not None:
                progress(self.result(exact_open=False))
            if checkpoint is not None and time.perf_counter() - saved >= CHECKPOINT_SECONDS:
                self.save(checkpoint)
                saved = time.perf_counter()
        self.seconds = spent + time.perf_counter() - start
        if checkpoint is not None:
            self.save(checkpoint)
        return self.result()

    def result(self, exact_open: bool = True) -> Bounds:
        open_mass = math.fsum(-item[1] for item in self.queue) if exact_open else max(self.open.value, 0.0)
        certain = self.certain.value
        complete = not self.queue
        lower = certain * (1 - ROUNDING)
        upper = lower if complete else min(1.0, (certain + open_mass) * (1 + ROUNDING))
        if complete:  # every input decided: the certain mass is P itself, up to the rounding of its sum
            lower, upper = certain * (1 - ROUNDING), min(1.0, certain * (1 + ROUNDING))
        return Bounds(lower, upper, self.free.value, certain, open_mass if not complete else 0.0, complete,
                      self.flops, self.seconds, model=getattr(self.model, "name", "") or "",
                      distribution=self.dist.name, event=self.event.describe(getattr(self.model, "tokenizer", None)),
                      depths=tuple(d.frozen(i) for i, d in enumerate(self.depths)),
                      network_bound="" if self.network is None else "one-block attention, exact per-head ranges")

    def open_queries(self) -> Tensor:
        """Bool over the first branched position's support: the tokens below which some mass is still open."""
        if not self.order:
            return torch.ones(1, dtype=torch.bool)
        out = torch.zeros(self._fanout(0), dtype=torch.bool)
        for *_, prefix in self.queue:
            if not prefix:
                return torch.ones_like(out)
            out[prefix[0]] = True
        return out

    def save(self, path: Path) -> None:
        state: dict[str, Any] = {
            "version": CHECKPOINT_VERSION, "identity": self.identity, "seconds": self.seconds, "flops": self.flops,
            "certain": [self.certain.total, self.certain.carry], "free": [self.free.total, self.free.carry],
            "depths": [{**vars(d), "mass_free": [d.mass_free.total, d.mass_free.carry],
                        "mass_certain": [d.mass_certain.total, d.mass_certain.carry]} for d in self.depths],
            "rivals": sorted(self.leaves.rivals.items()), "leaf_flops": self.leaves.flops,
            "certain_by_query": self.certain_by_query.tolist(),
            "queue": [list(item[3]) for item in sorted(self.queue)],
        }
        with atomic_path(path) as tmp:
            tmp.write_text(dumps_json(state))

    def load(self, path: Path) -> None:
        state = read_json(path, missing="no checkpoint to resume from")
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise LowprobError(f"{path} is not a lowprob bound checkpoint (version {CHECKPOINT_VERSION})")
        if state["identity"] != self.identity:
            raise LowprobError(f"{path} is the checkpoint of another proof (model, distribution or event differ): "
                               f"give another --checkpoint, or drop --resume to start over")

        def summed(pair: list[float]) -> _Sum:
            s = _Sum(pair[0])
            s.carry = pair[1]
            return s

        self.seconds, self.flops = float(state["seconds"]), float(state["flops"])
        self.certain, self.free = summed(state["certain"]), summed(state["free"])
        self.depths = [replace(_Depth(**{k: v for k, v in d.items() if not k.startswith("mass")}),
                               mass_free=summed(d["mass_free"]), mass_certain=summed(d["mass_certain"]))
                       for d in state["depths"]]
        self.leaves.rivals = Counter({int(t): int(c) for t, c in state["rivals"]})
        self.leaves.flops = float(state["leaf_flops"])
        self.certain_by_query = torch.tensor(state["certain_by_query"], dtype=torch.float64)
        self.queue = []
        self._count = 0
        for prefix in state["queue"]:
            self._push(self._mass(tuple(prefix)), tuple(prefix))
        self.open = _Sum(math.fsum(-item[1] for item in self.queue))
