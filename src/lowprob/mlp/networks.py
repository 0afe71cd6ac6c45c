"""MLP specifications: seeded random networks and user-supplied weights.

Convention (ARC's): a network of ``depth`` linear layers, each followed by its activation;
``pre[l] = W[l] act[l-1] + b[l]`` with ``act[-1] = x ~ N(0, I)`` and ``act[l] = f_l(pre[l])``.
"4 hidden layers" therefore means the estimate of ``pre[4]`` in a depth-5 network. Weights are
stored (out, in).
"""

from __future__ import annotations

import hashlib
import itertools
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lowprob.checks import check_seed, integer_in
from lowprob.errors import LowprobError
from lowprob.mlp.activations import check_activation
from lowprob.mlp.limits import MAX_DEPTH, check_array

# What np.load raises for a file that is not a readable .npz: missing, empty, truncated, corrupt, pickled.
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class MLPSpec:
    """Weights (out, in), biases and one activation name per linear layer, in float64."""

    weights: tuple[NDArray, ...]
    biases: tuple[NDArray, ...]
    activations: tuple[str, ...]

    def __post_init__(self) -> None:
        if not (len(self.weights) == len(self.biases) == len(self.activations) >= 1):
            raise LowprobError("an MLP needs at least one layer and one weight matrix, bias vector and "
                               f"activation per layer (got {len(self.weights)}, {len(self.biases)}, "
                               f"{len(self.activations)})")
        for name in self.activations:
            check_activation(name)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise LowprobError(f"layer {i}: weight must be (out, in) and bias (out,), got {w.shape} "
                                   f"and {b.shape}")
            if i and w.shape[1] != self.weights[i - 1].shape[0]:
                raise LowprobError(f"layer {i}: input width {w.shape[1]} does not match layer {i - 1}'s "
                                   f"output width {self.weights[i - 1].shape[0]}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise LowprobError(f"layer {i}: weights and biases must be finite")

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def widths(self) -> list[int]:
        """Input width, then each layer's output width."""
        return [self.weights[0].shape[1], *(w.shape[0] for w in self.weights)]

    def content_hash(self) -> str:
        """Hash of every number and name: the key of the ground-truth cache."""
        h = hashlib.sha256()
        for w, b, a in zip(self.weights, self.biases, self.activations, strict=True):
            h.update(np.ascontiguousarray(w, dtype=np.float64).tobytes())
            h.update(np.ascontiguousarray(b, dtype=np.float64).tobytes())
            h.update(a.encode())
        return h.hexdigest()[:16]


def make_spec(weights: Iterable[ArrayLike], biases: Iterable[ArrayLike], activations: Iterable[str]) -> MLPSpec:
    """Build a spec from array-likes, converting to float64 (text or ragged lists are refused by name)."""
    try:
        ws = tuple(np.asarray(w, dtype=np.float64) for w in weights)
        bs = tuple(np.asarray(b, dtype=np.float64) for b in biases)
    except (TypeError, ValueError) as exc:
        raise LowprobError(f"MLP weights and biases must be arrays of real numbers: {exc}") from exc
    return MLPSpec(ws, bs, tuple(activations))


def activation_second_moment(activation: str, mean: float = 0.0) -> float:
    """E[f(Z)^2] for Z ~ N(mean, 1): He init divides by it so that variances are preserved."""
    from lowprob.mlp.wick import wick_coefficients

    return float(wick_coefficients(activation, np.array([mean]), np.array([1.0]), 0, 2)[0, 2, 0])


def random_mlp(width: int, depth: int, seed: int, activation: str = "relu", *, in_width: int | None = None,
               out_width: int | None = None, bias_mean: float = 0.0, bias_std: float = 0.0,
               convention: str = "arc") -> MLPSpec:
    """He-initialised random MLP: W_ij ~ N(0, w_var / fan_in).

    ``convention='arc'``: w_var = 1 on layer 0 (the input is N(0, I) already) and 1 / E[f(Z)^2]
    afterwards (2 for ReLU). ``'whestbench'``: w_var = 2 on every layer (WhestBench's challenge).
    Biases are ``bias_mean + bias_std * N(0, 1)``.
    """
    check_activation(activation)
    width = integer_in(width, "width")
    depth = integer_in(depth, "depth", 1, MAX_DEPTH, " layers (every estimator steps through them one by one)")
    in_width = width if in_width is None else integer_in(in_width, "in_width")
    out_width = width if out_width is None else integer_in(out_width, "out_width")
    if convention not in ("arc", "whestbench"):
        raise LowprobError(f"unknown convention {convention!r}: use 'arc' or 'whestbench'")
    widths = [in_width] + [width] * (depth - 1) + [out_width]
    check_array(f"the weights of a random MLP of width {width:,} and depth {depth:,}",
                (sum(a * b for a, b in itertools.pairwise(widths)),), fix="lower the width or the depth")
    rng = np.random.default_rng(check_seed(seed))
    later_var = 2.0 if convention == "whestbench" else 1.0 / activation_second_moment(activation, bias_mean)
    weights, biases = [], []
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        w_var = 1.0 if layer == 0 and convention == "arc" else later_var
        weights.append(rng.standard_normal((n_out, n_in)) * np.sqrt(w_var / n_in))
        biases.append(bias_mean + bias_std * rng.standard_normal(n_out))
    return make_spec(weights, biases, [activation] * depth)


def save_spec(spec: MLPSpec, path: Path) -> None:
    # values typed Any: numpy's stubs would check a dict of arrays against savez's allow_pickle: bool
    arrays: dict[str, Any] = {f"W{i}": w for i, w in enumerate(spec.weights)}
    arrays |= {f"b{i}": b for i, b in enumerate(spec.biases)}
    np.savez(path, activations=np.array(spec.activations), **arrays)


def load_spec(path: Path) -> MLPSpec:
    """Load user weights from an .npz with arrays W0, b0, W1, b1, ... and ``activations``."""
    how = "numpy.savez(path, W0=..., b0=..., W1=..., b1=..., activations=[...])"
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                arrays = {k: data[k] for k in data.files}  # read now: a corrupt member fails here, not later
    except _UNREADABLE as exc:
        why = "the file is empty" if isinstance(exc, EOFError) else exc
        raise LowprobError(f"cannot read MLP weights from {path} ({why}): write them with {how}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise LowprobError(f"{path} holds a single array (.npy), not an .npz archive: write the weights with {how}")
    depth = sum(1 for k in arrays if k.startswith("W"))
    needed = [k for i in range(max(depth, 1)) for k in (f"W{i}", f"b{i}")] + ["activations"]
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise LowprobError(f"{path} must hold arrays W0, b0, W1, b1, ... and 'activations'; "
                           f"missing: {', '.join(missing)}")
    acts = [str(a) for a in np.atleast_1d(arrays["activations"])]
    if len(acts) == 1:
        acts = acts * depth
    return make_spec([arrays[f"W{i}"] for i in range(depth)], [arrays[f"b{i}"] for i in range(depth)], acts)
