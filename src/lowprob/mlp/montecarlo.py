"""Monte Carlo baselines and the ground truth: per-layer means and variances from N(0, I) inputs.

Forward passes run in torch (float32 by default, as in ARC's baseline) in chunks; every chunk's
mean and centred sum of squares are merged in float64 (Chan's update), so a 10^8-sample ground truth
loses no digits to accumulation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from lowprob.checks import check_seed, integer_in
from lowprob.errors import LowprobError
from lowprob.files import dumps_json
from lowprob.mlp.flops import forward_flops
from lowprob.mlp.limits import check_samples
from lowprob.mlp.networks import MLPSpec

_FIELDS = ("pre_mean", "pre_var", "act_mean", "act_var")


@dataclass
class MCResult:
    """Per-layer sample means and variances (float64) of ``pre[l]`` and ``act[l]`` (None if not kept)."""

    n_samples: int
    seed: int
    pre_mean: list[NDArray | None]
    pre_var: list[NDArray | None]
    act_mean: list[NDArray | None]
    act_var: list[NDArray | None]
    flops: float
    seconds: float
    meta: dict = field(default_factory=dict)

    def pre_se(self, layer: int) -> NDArray:
        return np.sqrt(kept(self.pre_var, layer) / self.n_samples)

    def act_se(self, layer: int) -> NDArray:
        return np.sqrt(kept(self.act_var, layer) / self.n_samples)


def kept(values: list[NDArray | None], layer: int) -> NDArray:
    """``values[layer]`` of an ``MCResult`` field, refused if that layer's statistics were not kept."""
    value = values[layer]
    if value is None:
        raise LowprobError(f"layer {layer}'s statistics were not kept: include it in layers")
    return value


class _Moments:
    """Running mean and centred sum of squares per coordinate, merged chunk by chunk in float64."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, chunk) -> None:
        import torch

        k = chunk.shape[0]
        mean = (chunk.sum(0, dtype=torch.float64) / k).cpu().numpy()
        m2 = (chunk * chunk).sum(0, dtype=torch.float64).cpu().numpy() - k * mean * mean
        total = self.count + k
        delta = mean - self.mean
        self.mean = self.mean + delta * k / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * k / total
        self.count = total

    @property
    def var(self) -> NDArray:
        return np.maximum(self.m2, 0.0) / max(self.count - 1, 1)


def mc_moments(spec: MLPSpec, n_samples: int, seed: int, *, layers: Sequence[int] | None = None,
               chunk: int = 8192, dtype: str = "float32", device: str = "cpu",
               progress: Callable[[int], None] | None = None) -> MCResult:
    """Sample ``n_samples`` inputs x ~ N(0, I) (torch generator seeded with ``seed``) and run the net.

    Statistics are kept for ``layers`` only (default: all); the other layers' entries are None.

    FLOPs are charged per sample by :func:`lowprob.mlp.flops.forward_flops`; random numbers are
    free, as in ARC's accounting.
    """
    import torch

    from lowprob.mlp.activations import ACTIVATIONS

    n_samples = check_samples(n_samples)
    seed = check_seed(seed)
    chunk = integer_in(chunk, "chunk")  # a chunk of 0 would loop for ever
    tdtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype)
    if tdtype is None:
        raise LowprobError(f"dtype must be float32 or float64 (got {dtype!r})")
    gen = torch.Generator(device=device).manual_seed(seed)
    weights = [torch.as_tensor(w, dtype=tdtype, device=device) for w in spec.weights]
    biases = [torch.as_tensor(b, dtype=tdtype, device=device) for b in spec.biases]
    acts = [ACTIVATIONS[a] for a in spec.activations]
    keep = set(range(spec.depth) if layers is None else layers)
    stats = [[_Moments(), _Moments()] if layer in keep else None for layer in range(spec.depth)]
    start = time.perf_counter()
    done = 0
    with torch.no_grad():
        while done < n_samples:
            k = min(chunk, n_samples - done)
            h = torch.randn(k, spec.widths[0], generator=gen, dtype=tdtype, device=device)
            for layer, (w, b, f) in enumerate(zip(weights, biases, acts, strict=True)):
                h = torch.addmm(b, h, w.T)
                kept = stats[layer]
                if kept:
                    kept[0].add(h)
                h = f(h)
                if kept:
                    kept[1].add(h)
            done += k
            if progress is not None:
                progress(k)
    seconds = time.perf_counter() - start
    def collect(which: int, attr: str) -> list:
        return [getattr(st[which], attr) if st else None for st in stats]

    return MCResult(n_samples, seed, collect(0, "mean"), collect(0, "var"),
                    collect(1, "mean"), collect(1, "var"),
                    flops=n_samples * forward_flops(spec.widths), seconds=seconds,
                    meta={"dtype": dtype, "device": device, "chunk": chunk})


def mc_throughput(spec: MLPSpec, seconds: float = 0.5, chunk: int = 8192, dtype: str = "float32") -> float:
    """Samples per second of the leanest sampler: forward passes plus a running sum of the last layer.

    This is the rate against which "equal wall time" is judged (no per-layer statistics).
    """
    import torch

    from lowprob.mlp.activations import ACTIVATIONS

    tdtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.as_tensor(w, dtype=tdtype) for w in spec.weights]
    biases = [torch.as_tensor(b, dtype=tdtype) for b in spec.biases]
    acts = [ACTIVATIONS[a] for a in spec.activations]
    total = torch.zeros(spec.widths[-1], dtype=torch.float64)
    done, start = 0, time.perf_counter()
    with torch.no_grad():
        while done == 0 or time.perf_counter() - start < seconds:
            h = torch.randn(chunk, spec.widths[0], generator=gen, dtype=tdtype)
            for w, b, f in zip(weights, biases, acts, strict=True):
                h = f(torch.addmm(b, h, w.T))
            total += h.sum(0, dtype=torch.float64)
            done += chunk
    return done / (time.perf_counter() - start)


def ground_truth(spec: MLPSpec, n_samples: int, seed: int, cache_dir: Path | None = None,
                 layers: Sequence[int] | None = None, **kwargs) -> MCResult:
    """A large Monte Carlo run, cached under ``cache_dir`` by the network's content hash, N and seed.

    The ground truth's own standard error is kept: benchmark MSEs subtract ``se^2`` (the floor).
    """
    path = None
    if cache_dir is not None:
        which = "all" if layers is None else "-".join(map(str, sorted(layers)))
        path = Path(cache_dir) / f"gt-{spec.content_hash()}-n{n_samples}-s{seed}-l{which}.npz"
        if path.exists():
            data = np.load(path, allow_pickle=False)
            meta = json.loads(str(data["meta"]))
            pre_mean, pre_var, act_mean, act_var = (
                [data[f"{f}{i}"] if f"{f}{i}" in data.files else None for i in range(spec.depth)] for f in _FIELDS)
            return MCResult(n_samples, seed, pre_mean, pre_var, act_mean, act_var, flops=float(data["flops"]),
                            seconds=float(data["seconds"]), meta=meta)
    result = mc_moments(spec, n_samples, seed, layers=layers, **kwargs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{f}{i}": getattr(result, f)[i] for f in _FIELDS for i in range(spec.depth)
                  if getattr(result, f)[i] is not None}
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, flops=result.flops, seconds=result.seconds,
                            meta=dumps_json(result.meta), **arrays)
        tmp.replace(path)
    return result
