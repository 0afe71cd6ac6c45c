"""Ground truth: the argmax-token distribution of a model under an input distribution.

Two modes, one result type. *Exact* enumerates the whole product space in chunks and adds each
sequence's probability to its argmax token in float64. *Sampled* counts argmax tokens over N
samples drawn in fixed-size shards, each shard seeded from ``(seed, shard index)`` only, so the
totals do not depend on how shards are split across processes or in which order they run.
Ties in the argmax go to the lowest token id (``torch.argmax``).

With a ``checkpoint`` path, the totals so far and the finished shards are written atomically after
every shard; a rerun with the same arguments continues where the last one stopped, and its result
is bit-identical to an uninterrupted run's.

Exact mode evaluates each shard (a range of the enumeration order) with prefix sharing where the
model offers it (the shipped ``Transformer`` on the CPU, ``models/prefix_tree.py``); other models
use plain ``logits``. Every path gives the plain model's argmax for every sequence and adds the mass
in the same order, so the table — and a checkpoint — does not depend on the path. (Up to one caveat:
where a sequence's top two logits are within float32 rounding, ~1e-6, the plain model's own argmax
depends on the batch it is computed in, and the paths recompute such near-ties in different batches;
see benchmarks/RESULTS.md.) Before starting, a timed probe estimates how long the enumeration will
take, and a run past ``max_seconds`` is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from tqdm import tqdm

from lowprob import checks
from lowprob._version import __version__
from lowprob.distributions import TokenDistribution, bind
from lowprob.errors import LowprobError
from lowprob.files import atomic_write, dumps_json
from lowprob.models.argmax import TieBreaker
from lowprob.models.protocol import LanguageModel, capability, model_sha256
from lowprob.threads import torch_threads
from lowprob.truth.ray_backend import ray_map
from lowprob.truth.result import GroundTruth

EnumerationArgmax = Callable[[int, torch.Tensor], torch.Tensor]
SHARD_SIZE = 1 << 16
MAX_EXACT = 1 << 36  # sequences; a sanity bound: what limits exact mode is time (MAX_EXACT_SECONDS)
MAX_EXACT_SECONDS = 86_400.0  # exact runs estimated to take longer than a day are refused
MAX_SAMPLES = 1 << 40  # sampled runs: 12 days even at a million sequences a second
PROBE_SECONDS, PROBE_FREE = 0.25, 1 << 16  # timed-probe length; spaces this small are not probed
PLAIN_CHUNK = 512  # sequences per plain forward pass: small enough to stay in cache


def shard_seed(seed: int, shard: int) -> int:
    """A 63-bit seed for one shard, derived from the run's seed and the shard's index alone."""
    return int.from_bytes(hashlib.sha256(f"lowprob-gt:{seed}:{shard}".encode()).digest()[:8], "little") >> 1


def _offered(model, dist: TokenDistribution, name: str, fast: bool):
    """The fast path ``name`` that ``model`` offers over ``dist``'s space (``fast_argmax`` or ``prefix_tree``,
    optional capabilities of ``models.protocol``), or None: not offered, or ``fast`` is False."""
    offer = capability(model, name) if fast else None
    if offer is None:
        return None
    dist.check_model(model)
    return offer(dist.support_ids())


def argmax_function(model, dist: TokenDistribution, fast: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """Last-position argmax: the model's fast path if it offers one (the shipped ``Transformer`` on the CPU),
    plain ``logits`` otherwise (on the model's device, CPU ids in and out); near-ties settled in float64 on
    both (``models.argmax.TieBreaker``), so they agree row for row."""
    fast_argmax = _offered(model, dist, "fast_argmax", fast)
    if fast_argmax is not None:
        return fast_argmax.argmax
    ties = TieBreaker(model)

    @torch.no_grad()
    def plain(tokens: torch.Tensor) -> torch.Tensor:
        chunks = (chunk.to(model.device) for chunk in tokens.split(PLAIN_CHUNK))
        return torch.cat([ties.argmax(chunk, model.logits(chunk)).cpu() for chunk in chunks])

    return plain


def enumeration_argmax(model, dist: TokenDistribution, fast: bool = True) -> EnumerationArgmax:
    """``f(start, tokens)``: the argmax of the enumerated sequences ``start ..`` (``tokens``, in order).

    Prefix-shared when the model offers it (one variable position or more), else ``argmax_function`` on
    the tokens; the same argmax for every sequence either way.
    """
    tree = _offered(model, dist, "prefix_tree", fast) if dist.variable_positions() else None
    if tree is not None:
        return lambda start, tokens: tree.argmax(start, start + len(tokens), tokens)
    argmax = argmax_function(model, dist, fast)
    return lambda start, tokens: argmax(tokens)


@dataclass(frozen=True)
class JobSpec:
    """What a checkpoint belongs to; a resumed run must match it exactly."""

    model_sha256: str
    distribution_sha256: str
    exact: bool
    n: int  # sequences to enumerate or sample
    seed: int | None
    shard_size: int

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n / self.shard_size)

    def shard_len(self, shard: int) -> int:
        return min(self.shard_size, self.n - shard * self.shard_size)


def shard_argmax(model, dist: TokenDistribution, spec: JobSpec, fast: bool = True):
    """The argmax function ``shard_totals`` needs for this job: enumeration's or the sampled batches'."""
    return enumeration_argmax(model, dist, fast) if spec.exact else argmax_function(model, dist, fast)


def shard_totals(argmax, dist: TokenDistribution, d_vocab: int, spec: JobSpec, shard: int) -> torch.Tensor:
    """One shard's contribution: probability mass per argmax token (exact, float64) or counts (int64).

    ``argmax`` comes from ``shard_argmax``. A pure function of (model, distribution, spec, shard
    index), whichever process runs it and whichever argmax path: every path gives the plain model's
    argmax for every sequence, and exact mass is added in enumeration order.
    """
    if spec.exact:
        tokens, logp = next(dist.enumerate(spec.shard_size, start_chunk=shard))
        winners = argmax(shard * spec.shard_size, tokens)
        return torch.zeros(d_vocab, dtype=torch.float64).index_add_(0, winners, logp.exp())
    assert spec.seed is not None  # a sampled job always has its seed
    tokens = dist.sample(spec.shard_len(shard), torch.Generator().manual_seed(shard_seed(spec.seed, shard)))
    return torch.bincount(argmax(tokens), minlength=d_vocab)


def shard_task(model, dist: TokenDistribution, spec: JobSpec, fast: bool, shard: int) -> torch.Tensor:
    """One shard from its arguments alone, in one thread: what a Ray task runs (Ray gives it one CPU)."""
    torch.set_num_threads(1)
    return shard_totals(shard_argmax(model, dist, spec, fast), dist, model.d_vocab, spec, shard)


def exact_rate(argmax: EnumerationArgmax, dist: TokenDistribution, d_vocab: int) -> tuple[float, int]:
    """Sequences per second of exact enumeration in this process, from a timed probe: (rate, probe size).

    The probe is the real work (enumerate, argmax, float64 accumulation) on a range from the middle
    of the space, grown 4x at a time until it lasts ``PROBE_SECONDS``; a measured rate, not a FLOP
    count, so it includes overheads and this machine's current load.
    """
    n, size = dist.support_size(), 256
    while True:
        size = min(size, n)
        chunk = (n // size) // 2
        start = time.perf_counter()
        tokens, logp = next(dist.enumerate(size, start_chunk=chunk))
        torch.zeros(d_vocab, dtype=torch.float64).index_add_(0, argmax(chunk * size, tokens), logp.exp())
        elapsed = time.perf_counter() - start
        if elapsed >= PROBE_SECONDS or size == n:
            return size / max(elapsed, 1e-9), size
        size *= 4


def duration(seconds: float) -> str:
    """A human-readable duration: 42 s, 3.1 min, 5.2 h, 3.4 days."""
    for unit, length in (("days", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.2g} {unit}" if seconds < 10 * length else f"{seconds / length:,.0f} {unit}"
    return f"{seconds:.2g} s"


def _load_checkpoint(path: Path, spec: JobSpec) -> tuple[torch.Tensor, int] | None:
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            totals = f.get_tensor("totals")
    except (SafetensorError, OSError) as exc:
        raise LowprobError(f"checkpoint {path} is unreadable ({exc}); delete it to start over") from None
    if json.loads(meta.get("spec", "null")) != asdict(spec):
        raise LowprobError(f"checkpoint {path} belongs to another job (model, distribution, mode, n, seed or "
                           f"shard size differ); delete it or rerun with the same arguments")
    return totals, int(meta["shards_done"])


def _save_checkpoint(path: Path, spec: JobSpec, totals: torch.Tensor, shards_done: int) -> None:
    """Bytes first, then one atomic write: a failing disk is a user error naming ``path``, not a traceback."""
    atomic_write(path, save({"totals": totals}, metadata={"spec": dumps_json(asdict(spec)),
                                                          "shards_done": str(shards_done)}))


def ground_truth(model: LanguageModel, dist: TokenDistribution, *, exact: bool = False, samples: int | None = None,
                 seed: int = 0, shard_size: int = SHARD_SIZE, checkpoint: str | Path | None = None,
                 fast: bool = True, backend: str = "local", address: str | None = None,
                 progress: bool = False, max_seconds: float | None = MAX_EXACT_SECONDS) -> GroundTruth:
    """``exact=True`` enumerates the support; otherwise ``samples`` draws, seeded by ``seed``.

    Exact mode on the local backend first times a probe (``exact_rate``) and refuses, before any
    work, a run estimated to take longer than ``max_seconds`` (one day by default; ``None``: no
    limit). ``backend="ray"`` runs shards as Ray tasks (a local cluster, or ``address``; no time
    limit, as the cluster's rate is unknown until it runs); shard results are added in shard order,
    so every backend gives the same bits.
    """
    model, dist = bind(model, dist)
    if not isinstance(exact, bool) or exact == (samples is not None):
        raise LowprobError("choose exactly one of exact=True or samples=N")
    shard_size = checks.integer_in(shard_size, "shard_size")
    max_seconds = checks.time_limit(max_seconds)
    if exact and dist.support_size() > MAX_EXACT:
        raise LowprobError(f"the distribution has {dist.support_size():.3g} sequences, more than exact mode's "
                           f"2^36; use samples=N")
    if not exact:
        samples = checks.integer_in(samples, "samples", 1, MAX_SAMPLES, " (2^40: 12 days even at a million "
                                                                       "sequences a second)")
        seed = checks.check_seed(seed)
    if backend not in ("local", "ray"):
        raise LowprobError(f"backend must be 'local' or 'ray', got {backend!r}")
    if backend == "ray" and model.device.type != "cpu":
        raise LowprobError(f"Ray tasks run on CPUs, but the model is on {model.device}: load it on the CPU "
                           f"for backend='ray'")
    spec = JobSpec(model_sha256(model), dist.content_hash(), exact,
                   dist.support_size() if exact else cast(int, samples),  # exactly one of the two, checked above
                   None if exact else seed, shard_size)
    totals = torch.zeros(model.d_vocab, dtype=torch.float64 if exact else torch.long)
    done = 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and (state := _load_checkpoint(checkpoint, spec)) is not None:
        totals, done = state
    shards = range(done, spec.n_shards)
    remaining = spec.n - min(done * shard_size, spec.n)
    estimate = ""
    with torch_threads():  # the probe and the work alike
        if backend == "ray":
            results = ray_map(shard_task, (model, dist, spec, fast), shards, address)
        else:
            argmax = shard_argmax(model, dist, spec, fast)
            if exact and remaining > PROBE_FREE:
                rate, probed = exact_rate(argmax, dist, model.d_vocab)
                seconds = remaining / rate
                if max_seconds is not None and seconds > max_seconds:
                    raise LowprobError(
                        f"exact enumeration of {remaining:,} sequences would take about {duration(seconds)} here "
                        f"({rate:,.0f} sequences/s, measured by a timed probe of {probed:,} sequences), more than "
                        f"the limit of {duration(max_seconds)}: restrict the distribution (fewer variable "
                        f"positions or smaller supports), sample instead, or raise the limit")
                estimate = f"probe estimate {duration(seconds)} at {rate:,.0f} seq/s"
            results = (shard_totals(argmax, dist, model.d_vocab, spec, shard) for shard in shards)
        with tqdm(total=spec.n, initial=min(done * shard_size, spec.n), unit="seq", unit_scale=True,
                  disable=not progress, desc="exact" if exact else "sampled", postfix=estimate or None) as bar:
            for shard, result in zip(shards, results, strict=True):
                totals += result
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, spec, totals, shard + 1)
                bar.update(spec.shard_len(shard))
    ident = dict(model_sha256=spec.model_sha256, distribution_sha256=spec.distribution_sha256, version=__version__)
    if exact:
        return GroundTruth(totals, None, True, spec.n, None, **ident)
    return GroundTruth(totals.double() / spec.n, totals, False, spec.n, seed, **ident)
