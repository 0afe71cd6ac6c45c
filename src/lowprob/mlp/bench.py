"""The benchmark behind ``lowprob mlp bench``: rows (JSON lines) for means, tails and orthants.

Every row records its seeds, FLOPs (under ``flops.py``'s rules), wall time and whether the method
was mechanistic (checked with ``trap_sampling``). Monte Carlo baselines are measured in the same run:
its MSE/Var at equal FLOPs is C_fwd / F, at equal wall time 1 / (rate * seconds), with the rate
measured here; real MC runs at a few budgets check that 1/N law.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lowprob.errors import LowprobError
from lowprob.files import atomic_write, dumps_json, output_lock, prepare_output, read_json, read_jsonl
from lowprob.mlp.flops import forward_flops
from lowprob.mlp.montecarlo import ground_truth, mc_moments, mc_throughput
from lowprob.mlp.networks import random_mlp
from lowprob.mlp.orthant import MECHANISTIC, orthant_prob, random_orthant_instance
from lowprob.mlp.propagation import estimate_means
from lowprob.mlp.scoreboard import means_ratio, mse_over_var, probability_ratio, trap_sampling
from lowprob.mlp.tails import tail_network, tail_probs

MEAN_METHODS: dict[str, dict] = {
    "K1": {"K": 1},
    "K2": {"K": 2},
    "K2-exact-pair": {"K": 2, "pair": "exact"},
    "K3": {"K": 3, "kappa3": "factored"},
    "K3-f32": {"K": 3, "kappa3": "factored", "dtype": "float32"},
}


@dataclass
class BenchConfig:
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    hidden: int = 4  # estimate E[pre[hidden]] in a network of hidden + 1 linear layers
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    gt_samples: dict[int, int] = field(default_factory=lambda: {32: 2**24, 64: 2**24, 128: 2**23, 256: 2**23})
    mc_budgets: list[int] = field(default_factory=lambda: [1000, 10000])
    timing_repeats: int = 3
    tail_width: int = 256
    tail_hidden: int = 3
    tail_threshold: float = 3.0
    tail_seeds: list[int] = field(default_factory=lambda: [0])
    tail_gt_samples: int = 2**23
    orthant_dim: int = 50
    orthant_betas: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4])  # P ~ 1e-16 .. 1e-30
    orthant_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    orthant_reference_samples: int = 400_000
    botev_samples: list[int] = field(default_factory=lambda: [10_000, 50_000])
    genz_maxpts: int = 200_000
    orthant_mc_samples: int = 1_000_000

    @classmethod
    def quick(cls) -> BenchConfig:
        """A seconds-long configuration for smoke tests."""
        return cls(widths=[8, 16], hidden=2, seeds=[0], gt_samples={8: 20000, 16: 20000}, mc_budgets=[500],
                   timing_repeats=1, tail_width=16, tail_hidden=1, tail_threshold=1.5, tail_gt_samples=20000,
                   orthant_dim=6, orthant_betas=[0.5], orthant_seeds=[0], orthant_reference_samples=20000,
                   botev_samples=[2000], genz_maxpts=20000, orthant_mc_samples=20000)


def _timed(fn: Callable, repeats: int):
    """Run ``fn`` ``repeats`` times; return the last result and the median wall time."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def _ground_truth(spec, n_samples: int, seed: int, cache: Path, layer: int):
    """Cached ground truth with a progress bar over its samples."""
    with tqdm(total=n_samples, desc=f"ground truth n={spec.widths[1]}", unit="x", leave=False,
              unit_scale=True, delay=1.0) as bar:  # cached truths return before the bar shows
        return ground_truth(spec, n_samples, seed, cache_dir=cache, layers=[layer], progress=bar.update)


def expected_rows(cfg: BenchConfig, tasks: list[str]) -> int:
    counts = {"means": len(cfg.widths) * len(cfg.seeds) * (len(MEAN_METHODS) + len(cfg.mc_budgets)),
              "tails": 2 * len(cfg.tail_seeds),
              "orthant": len(cfg.orthant_betas) * len(cfg.orthant_seeds) * (5 + len(cfg.botev_samples))}
    return sum(counts[t] for t in tasks)


def _mechanistic(fn: Callable):
    with trap_sampling():
        return fn()


def means_rows(cfg: BenchConfig, cache: Path, done: set[str]) -> Iterator[dict]:
    depth = cfg.hidden + 1
    layer = cfg.hidden
    for width in cfg.widths:
        for seed in cfg.seeds:
            spec = random_mlp(width, depth, seed)
            c_fwd = forward_flops(spec.widths)
            rate = None
            gt = None
            for name, options in [*MEAN_METHODS.items(), *((f"MC-{n}", None) for n in cfg.mc_budgets)]:
                key = f"means/{width}/{seed}/{name}"
                if key in done:
                    continue
                if gt is None:
                    gt = _ground_truth(spec, cfg.gt_samples[width], 10_000 + seed, cache, layer)
                    rate = mc_throughput(spec)
                row = {"key": key, "task": "means", "width": width, "hidden": cfg.hidden, "layer": layer,
                       "seed": seed, "method": name, "gt_samples": gt.n_samples, "gt_seed": gt.seed,
                       "c_fwd": c_fwd, "mc_rate": rate}
                if options is None:
                    n = int(name.split("-")[1])
                    mc_seed = 20_000 + seed
                    res, seconds = _timed(partial(mc_moments, spec, n, mc_seed, layers=[layer]),
                                          cfg.timing_repeats)
                    estimate, flops, mech = res.pre_mean[layer], res.flops, False
                    row |= {"mc_seed": mc_seed, "options": {"n_samples": n}}
                else:
                    est, seconds = _timed(partial(_mechanistic, partial(estimate_means, spec, full_last=False,
                                                                        **options)), cfg.timing_repeats)
                    estimate, flops, mech = est.pre_mean[layer], est.flops, est.mechanistic
                    row |= {"options": est.options, "flops_by_region": est.flops_by_region}
                err = mse_over_var(estimate, gt.pre_mean[layer], gt.pre_var[layer], gt.n_samples)
                row |= {"mse_over_var": err["corrected"], "mse_over_var_raw": err["raw"],
                        "gt_floor": err["floor"], "var": err["var"], "flops": flops, "seconds": seconds,
                        "mechanistic": mech, "mc_equal_flops": c_fwd / flops,
                        "mc_equal_time": 1.0 / (rate * seconds),
                        "R": means_ratio(max(err["corrected"], err["floor"]), c_fwd, flops)}
                yield row


def tails_rows(cfg: BenchConfig, cache: Path, done: set[str]) -> Iterator[dict]:
    for seed in cfg.tail_seeds:
        spec = tail_network(cfg.tail_width, cfg.tail_hidden, cfg.tail_threshold, seed)
        last = spec.depth - 1
        c_fwd = forward_flops(spec.widths)
        gt = None
        for K in (2, 3):
            key = f"tails/{cfg.tail_width}/{seed}/K{K}"
            if key in done:
                continue
            if gt is None:
                gt = _ground_truth(spec, cfg.tail_gt_samples, 30_000 + seed, cache, last)
            est, seconds = _timed(partial(_mechanistic, partial(tail_probs, spec, K)), cfg.timing_repeats)
            p_true = gt.act_mean[last]
            resolved = p_true * gt.n_samples >= 100  # ground-truth relative SE <= 10%
            rel = np.abs(est.p - p_true) / np.where(p_true > 0, p_true, np.nan)
            mse = float(np.mean((est.p - p_true)[resolved] ** 2)) if resolved.any() else math.nan
            pvar = float(np.mean((p_true * (1 - p_true))[resolved])) if resolved.any() else math.nan
            yield {"key": key, "task": "tails", "width": cfg.tail_width, "hidden": cfg.tail_hidden,
                   "threshold": cfg.tail_threshold, "seed": seed, "method": f"K{K}",
                   "gt_samples": gt.n_samples,
                   "gt_seed": gt.seed, "c_fwd": c_fwd, "flops": est.estimate.flops, "seconds": seconds,
                   "mechanistic": est.estimate.mechanistic, "n_clamped": int(est.clamped.sum()),
                   "p_true": p_true.tolist(), "p_hat": est.p.tolist(), "p_raw": est.raw.tolist(),
                   "median_rel_err_resolved": float(np.nanmedian(rel[resolved])) if resolved.any() else None,
                   "median_abs_log_ratio_resolved": float(np.median(np.abs(np.log(
                       np.maximum(est.p[resolved], 1e-300) / p_true[resolved])))) if resolved.any() else None,
                   "R_tail": pvar * c_fwd / (mse * est.estimate.flops) if resolved.any() else None}


def orthant_rows(cfg: BenchConfig, done: set[str]) -> Iterator[dict]:
    d = cfg.orthant_dim
    c_fwd = 2.0 * d * d + 3 * d
    methods = [("adf", {}), ("ep", {}), ("pairwise", {}), ("genz", {"maxpts": cfg.genz_maxpts})]
    methods += [(f"botev-{n}", {"n_samples": n}) for n in cfg.botev_samples]
    methods += [("mc", {"n_samples": cfg.orthant_mc_samples})]
    for beta in cfg.orthant_betas:
        for seed in cfg.orthant_seeds:
            w, b = random_orthant_instance(d, d, beta, seed)
            ref = None
            for name, options in methods:
                key = f"orthant/{d}/{beta}/{seed}/{name}"
                if key in done:
                    continue
                if ref is None:
                    ref = orthant_prob(w, b, "botev", n_samples=cfg.orthant_reference_samples,
                                       seed=40_000 + seed)
                method = name.split("-")[0]
                run = partial(orthant_prob, w, b, method, seed=50_000 + seed, **options)
                if method in MECHANISTIC:
                    res, seconds = _timed(partial(_mechanistic, run), cfg.timing_repeats)
                else:
                    res, seconds = _timed(run, 1)
                rel_err = abs(math.expm1(res.log_p - ref.log_p)) if math.isfinite(res.log_p) else 1.0
                yield {"key": key, "task": "orthant", "m": d, "n": d, "beta": beta, "seed": seed,
                       "method": name, "log10_p_ref": ref.log_p / math.log(10), "ref_rel_se": ref.rel_se,
                       "ref_samples": ref.n_samples, "ref_seed": ref.seed,
                       "log10_p": res.log_p / math.log(10) if math.isfinite(res.log_p) else None,
                       "rel_err": rel_err, "rel_se": res.rel_se, "flops": res.flops, "seconds": seconds,
                       "mechanistic": res.mechanistic, "method_seed": res.seed, "n_samples": res.n_samples,
                       "extra": res.extra,
                       "R": probability_ratio(math.exp(ref.log_p), rel_err, c_fwd, res.flops)}


def run_bench(out: Path, cfg: BenchConfig, tasks: list[str], resume: bool, progress: bool = False,
              force: bool = False) -> list[dict]:
    """Append rows to ``out/rows.jsonl`` (skipping keys already there when ``resume``); return all rows.

    Rows already in ``out`` are continued only with ``resume`` (under the same configuration) and
    discarded only with ``force``: a forgotten flag must not delete hours of results. The run holds
    ``out``'s lock, so a second run into it fails at once instead of writing every row twice. With
    ``progress``, a bar counts rows on stderr from the moment ``out`` is accepted: a refused run
    prints its error alone.
    """
    out = Path(out)
    rows_path = prepare_output(out / "rows.jsonl", overwrite=resume or force,
                               hint="pass --resume to continue that run, --force to start over, "
                                    "or choose another --out")
    config = dumps_json(asdict(cfg), indent=1)
    with output_lock(out, "lowprob mlp bench"):
        rows = []
        if resume:
            config_path = out / "config.json"
            if config_path.exists() and read_json(config_path) != json.loads(config):
                raise LowprobError(f"{out} holds a run of another configuration ({config_path}): --resume "
                                   f"continues only the same one; pass --force to start over instead")
            rows = read_jsonl(rows_path, repair=True)  # a crash can leave a torn last line
        else:
            rows_path.unlink(missing_ok=True)
        done = {r["key"] for r in rows}
        atomic_write(out / "config.json", config.encode())
        cache = out / "ground_truth"
        generators = {"means": partial(means_rows, cfg, cache, done),
                      "tails": partial(tails_rows, cfg, cache, done),
                      "orthant": partial(orthant_rows, cfg, done)}
        with rows_path.open("a") as fh, tqdm(total=expected_rows(cfg, tasks), desc="bench rows", unit="row",
                                             disable=not progress) as bar:
            for task in tasks:
                for row in generators[task]():
                    fh.write(dumps_json(row) + "\n")
                    fh.flush()
                    rows.append(row)
                    bar.set_postfix_str(row["key"])
                    bar.update()
    return rows
