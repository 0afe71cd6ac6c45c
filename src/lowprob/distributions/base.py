"""``TokenDistribution``: a product of independent per-position categoricals.

Every input distribution of the benchmark has this shape (some positions are constants), and the
shape is what makes exact enumeration, exact log-probabilities and per-position importance
proposals possible. Probabilities are kept in float64: ground truth sums products of up to ~30 of
them, and rare sequences reach 1e-40.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Union, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from lowprob.checks import integer_in
from lowprob.errors import LowprobError
from lowprob.files import atomic_write

PROB_ATOL = 1e-6  # how far a position's probabilities may sum from 1 without normalize=True
# A token id indexes an embedding row and a dense log-table column: no vocabulary reaches 2^31
MAX_TOKEN_ID = (1 << 31) - 1
# One draw is an int64 row per sample: past 2^31 rows a single tensor outgrows any machine's memory
MAX_SAMPLES = 1 << 31
FORMAT = "lowprob.TokenDistribution/1"

PositionSpec = Union[int, tuple[Sequence[int], Sequence[float]], tuple[Tensor, Tensor]]


def _check_ids(pos: int, low: int, high: int, vocab_size: int | None) -> None:
    """Token ids ``low .. high`` of position ``pos`` lie in the vocabulary (``0 .. MAX_TOKEN_ID`` without one)."""
    top = MAX_TOKEN_ID if vocab_size is None else vocab_size - 1
    if low < 0 or high > top:
        got = str(low) if low == high else f"{low}..{high}"
        raise LowprobError(f"position {pos}: token ids must lie in 0..{top}, got {got}")


class TokenDistribution:
    """Independent categorical per position; construct with :meth:`from_positions`."""

    def __init__(self, ids: list[Tensor], probs: list[Tensor], name: str = "") -> None:
        # Internal: callers use from_positions, which validates. Supports are sorted by token id so
        # equal distributions have equal hashes whatever order they were given in.
        self._ids = ids
        self._probs = probs
        self.name = name
        self.of_template = False  # its ids are a template's pieces and slot values (set by SlotDistribution.bind)
        self.vocab_size_hint = max(int(i.max()) for i in ids) + 1
        self._log_table: Tensor | None = None

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_positions(cls, positions: Sequence[PositionSpec], *, normalize: bool = False,
                       vocab_size: int | None = None, n_ctx: int | None = None,
                       name: str = "") -> TokenDistribution:
        """Build from one spec per position: an ``int`` (a constant token) or ``(ids, probs)``.

        Probabilities must be finite, non-negative and sum to 1 within ``PROB_ATOL`` unless
        ``normalize=True``; zero-probability tokens are dropped from the support.
        """
        if isinstance(positions, (str, bytes)) or not hasattr(positions, "__len__"):
            raise LowprobError(f"from_positions takes a list with one spec per position (an int, or (ids, probs)), "
                               f"got {positions!r}")
        if len(positions) == 0:
            raise LowprobError("a distribution needs at least one position")
        if n_ctx is not None and len(positions) > n_ctx:
            raise LowprobError(f"distribution has {len(positions)} positions but the model's n_ctx is "
                               f"{n_ctx}; shorten it")
        all_ids, all_probs = [], []
        for pos, spec in enumerate(positions):
            if isinstance(spec, bool):
                raise LowprobError(f"position {pos}: a bool is not a token id")
            if isinstance(spec, numbers.Integral) or (isinstance(spec, Tensor) and spec.dim() == 0):
                _check_ids(pos, int(spec), int(spec), vocab_size)  # before torch, which overflows past 2^63
                ids, probs = torch.tensor([int(spec)]), torch.ones(1, dtype=torch.float64)
            else:
                try:  # a pair: ints were taken above, by numbers.Integral, which mypy does not narrow by
                    raw_ids, raw_probs = cast("tuple[Any, Any]", spec)
                    ids = torch.as_tensor(raw_ids).reshape(-1)
                    probs = torch.as_tensor(raw_probs, dtype=torch.float64).reshape(-1).clone()
                except (TypeError, ValueError, RuntimeError):
                    raise LowprobError(f"position {pos}: give an int (constant token) or a pair "
                                       f"(ids, probs), got {type(spec).__name__}") from None
            if ids.dtype.is_floating_point or ids.dtype == torch.bool:
                raise LowprobError(f"position {pos}: token ids must be integers")
            ids = ids.long()
            if len(ids) != len(probs) or len(ids) == 0:
                raise LowprobError(f"position {pos}: {len(ids)} ids but {len(probs)} probabilities; "
                                   f"give one probability per token, at least one token")
            if not torch.isfinite(probs).all() or (probs < 0).any():
                raise LowprobError(f"position {pos}: probabilities must be finite and non-negative")
            _check_ids(pos, int(ids.min()), int(ids.max()), vocab_size)
            if len(torch.unique(ids)) != len(ids):
                raise LowprobError(f"position {pos}: a token id appears twice; merge its probabilities")
            total = float(probs.sum())
            if normalize:
                if total <= 0:
                    raise LowprobError(f"position {pos}: probabilities sum to 0; nothing to normalise")
                probs = probs / total
            elif abs(total - 1.0) > PROB_ATOL:
                raise LowprobError(f"position {pos}: probabilities sum to {total:.9g}, not 1 (tolerance "
                                   f"{PROB_ATOL}); fix them or pass normalize=True")
            keep = probs > 0
            ids, probs = ids[keep], probs[keep]
            order = torch.argsort(ids)
            all_ids.append(ids[order].contiguous())
            all_probs.append(probs[order].contiguous())
        return cls(all_ids, all_probs, name=name)

    def bind(self, model) -> tuple[object, TokenDistribution]:
        """The (model, distribution) pair estimators run on: these two as they are (see ``slots``)."""
        return model, self

    def check_model(self, model) -> None:
        """Raise a clear error if this distribution cannot be fed to ``model``."""
        if len(self) > model.n_ctx:
            raise LowprobError(f"distribution {self.name or ''} has {len(self)} positions but the model's "
                               f"n_ctx is {model.n_ctx}")
        if self.vocab_size_hint > model.d_vocab:
            raise LowprobError(f"distribution uses token id {self.vocab_size_hint - 1} but the model's "
                               f"vocabulary has {model.d_vocab} tokens")

    # --- structure ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return (f"TokenDistribution({self.name or 'unnamed'}: {len(self)} positions, supports "
                f"{self.support_sizes()}, hash {self.content_hash()[:12]})")

    def support(self, position: int) -> tuple[Tensor, Tensor]:
        """Token ids (sorted) and their probabilities at ``position``."""
        return self._ids[position], self._probs[position]

    def support_sizes(self) -> list[int]:
        return [len(i) for i in self._ids]

    def support_ids(self) -> list[Tensor]:
        """Every position's token ids (sorted): the product space, as the models' fast paths take it."""
        return list(self._ids)

    def support_size(self) -> int:
        """Number of sequences with positive probability (an exact Python int)."""
        return math.prod(self.support_sizes())

    def constant_positions(self) -> list[int]:
        return [i for i, ids in enumerate(self._ids) if len(ids) == 1]

    def variable_positions(self) -> list[int]:
        return [i for i, ids in enumerate(self._ids) if len(ids) > 1]

    # --- probability --------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` independent sequences, LongTensor [n, positions]."""
        n = integer_in(n, "the number of samples", low=0, high=MAX_SAMPLES,
                       why=" (one int64 row each, in one tensor: draw more in batches)")
        out = torch.empty(n, len(self), dtype=torch.long)
        for pos, (ids, probs) in enumerate(zip(self._ids, self._probs, strict=True)):
            if len(ids) == 1:
                out[:, pos] = ids[0]
            elif n:
                out[:, pos] = ids[torch.multinomial(probs, n, replacement=True, generator=generator)]
        return out

    def log_table(self) -> Tensor:
        """Dense [positions, vocab] table of log-probabilities (-inf off the support)."""
        if self._log_table is None:
            table = torch.full((len(self), self.vocab_size_hint), -math.inf, dtype=torch.float64)
            for pos, (ids, probs) in enumerate(zip(self._ids, self._probs, strict=True)):
                table[pos, ids] = probs.log()
            self._log_table = table
        return self._log_table

    def log_prob(self, tokens: Tensor) -> Tensor:
        """Log-probability of each sequence, float64 [n]; -inf for sequences off the support."""
        if tokens.dim() != 2 or tokens.shape[1] != len(self):
            raise LowprobError(f"tokens must have shape [n, {len(self)}], got {tuple(tokens.shape)}")
        table = self.log_table()
        inside = (tokens >= 0) & (tokens < table.shape[1])
        values = table.gather(1, tokens.clamp(0, table.shape[1] - 1).T.contiguous()).T
        return torch.where(inside, values, torch.tensor(-math.inf, dtype=torch.float64)).sum(dim=1)

    def enumerate(self, chunk_size: int = 1 << 16, start_chunk: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Every sequence of the support, in chunks: (tokens [c, positions], log-probabilities [c]).

        Sequences come in mixed-radix order (last position fastest), so chunk ``k`` covers flat
        indices ``[k * chunk_size, (k+1) * chunk_size)``; ``start_chunk`` skips the first chunks,
        which is how exact ground truth resumes.
        """
        if chunk_size < 1 or start_chunk < 0:
            raise LowprobError(f"chunk_size must be >= 1 and start_chunk >= 0, got {chunk_size}, {start_chunk}")
        total = self.support_size()
        sizes = torch.tensor(self.support_sizes(), dtype=torch.long)
        # strides[p] = product of sizes after p
        strides = torch.ones(len(self), dtype=torch.long)
        for p in range(len(self) - 2, -1, -1):
            strides[p] = strides[p + 1] * sizes[p + 1]
        for start in range(start_chunk * chunk_size, total, chunk_size):
            flat = torch.arange(start, min(start + chunk_size, total), dtype=torch.long)
            digits = (flat[:, None] // strides) % sizes
            tokens = torch.stack([ids[digits[:, p]] for p, ids in enumerate(self._ids)], dim=1)
            logp = torch.stack([probs[digits[:, p]].log() for p, probs in enumerate(self._probs)],
                               dim=1).sum(dim=1)
            yield tokens, logp

    # --- identity and files -------------------------------------------------------------------
    def content_hash(self) -> str:
        """sha256 of the supports and probabilities (not the name): ties files to this distribution."""
        h = hashlib.sha256(FORMAT.encode())
        for ids, probs in zip(self._ids, self._probs, strict=True):
            h.update(len(ids).to_bytes(8, "little"))
            h.update(ids.numpy().astype("<i8").tobytes())
            h.update(probs.numpy().astype("<f8").tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write a safetensors file ``load`` reads; atomic and honouring the umask, like every file we write."""
        tensors = {"ids": torch.cat(self._ids), "probs": torch.cat(self._probs),
                   "sizes": torch.tensor(self.support_sizes(), dtype=torch.long)}
        atomic_write(path, save(tensors, metadata={"format": FORMAT, "name": self.name, "sha256": self.content_hash()}))

    @classmethod
    def load(cls, path: str | Path) -> TokenDistribution:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, FileNotFoundError, OSError) as exc:
            raise LowprobError(f"cannot read distribution file {path}: {exc}") from None
        if meta.get("format") != FORMAT or set(tensors) != {"ids", "probs", "sizes"}:
            raise LowprobError(f"{path} is not a lowprob distribution file")
        sizes = tensors["sizes"].tolist()
        if sum(sizes) != len(tensors["ids"]) or len(tensors["ids"]) != len(tensors["probs"]):
            raise LowprobError(f"{path} is inconsistent (sizes do not match the data); it is corrupt")
        positions = list(zip(tensors["ids"].split(sizes), tensors["probs"].split(sizes), strict=True))
        try:
            dist = cls.from_positions(positions, name=meta.get("name", ""))
        except LowprobError as exc:
            raise LowprobError(f"{path} is corrupt: {exc}") from None
        if dist.content_hash() != meta.get("sha256"):
            raise LowprobError(f"{path} does not match its recorded sha256; the file is corrupt")
        return dist
