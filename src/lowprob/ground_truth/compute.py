"""Ground truth: the argmax-token distribution of a model under an input distribution.

Two modes, one result type. *Exact* enumerates the whole product space in chunks and adds each
sequence's probability to its argmax token in float64. *Sampled* counts argmax tokens over N
samples drawn in fixed-size shards, each shard seeded from ``(seed, shard index)`` only, so the
totals do not depend on how shards are split across processes or in which order they run.
Ties in the argmax go to the lowest token id (``torch.argmax``).
"""

from __future__ import annotations

import hashlib
import math

import torch
from tqdm import tqdm

from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.ground_truth.result import GroundTruth, model_sha256

SHARD_SIZE = 1 << 16
MAX_EXACT = 1 << 26  # sequences; beyond this, sample


def shard_seed(seed: int, shard: int) -> int:
    """A 63-bit seed for one shard, derived from the run's seed and the shard's index alone."""
    return int.from_bytes(hashlib.sha256(f"lowprob-gt:{seed}:{shard}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def argmax_tokens(model, tokens: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    return torch.cat([model.logits(chunk).argmax(-1) for chunk in tokens.split(batch_size)])


@torch.no_grad()
def sampled_shard_counts(model, dist: TokenDistribution, seed: int, shard: int, n: int) -> torch.Tensor:
    """Argmax counts (int64 [d_vocab]) of shard ``shard``: ``n`` samples from its own generator."""
    tokens = dist.sample(n, torch.Generator().manual_seed(shard_seed(seed, shard)))
    return torch.bincount(argmax_tokens(model, tokens), minlength=model.d_vocab)


def ground_truth(model, dist: TokenDistribution, *, exact: bool = False, samples: int | None = None,
                 seed: int = 0, shard_size: int = SHARD_SIZE, progress: bool = False) -> GroundTruth:
    """``exact=True`` enumerates (support ≤ 2^26); otherwise ``samples`` draws, seeded by ``seed``."""
    from lowprob import __version__

    dist.check_model(model)
    if exact == (samples is not None):
        raise LowprobError("choose exactly one of exact=True or samples=N")
    if shard_size < 1:
        raise LowprobError(f"shard_size must be >= 1, got {shard_size}")
    ident = dict(model_sha256=model_sha256(model), distribution_sha256=dist.content_hash(), version=__version__)
    if exact:
        size = dist.support_size()
        if size > MAX_EXACT:
            raise LowprobError(f"the distribution has {size:.3g} sequences, more than exact mode's 2^26; "
                               f"use samples=N")
        probs = torch.zeros(model.d_vocab, dtype=torch.float64)
        with torch.no_grad(), tqdm(total=size, unit="seq", disable=not progress, desc="exact") as bar:
            for tokens, logp in dist.enumerate(shard_size):
                probs.index_add_(0, argmax_tokens(model, tokens), logp.exp())
                bar.update(len(tokens))
        return GroundTruth(probs, None, True, size, None, **ident)
    if samples < 1:
        raise LowprobError(f"samples must be >= 1, got {samples}")
    counts = torch.zeros(model.d_vocab, dtype=torch.long)
    n_shards = math.ceil(samples / shard_size)
    with tqdm(total=samples, unit="seq", disable=not progress, desc="sampled") as bar:
        for shard in range(n_shards):
            n = min(shard_size, samples - shard * shard_size)
            counts += sampled_shard_counts(model, dist, seed, shard, n)
            bar.update(n)
    return GroundTruth(counts.double() / samples, counts, False, samples, seed, **ident)
