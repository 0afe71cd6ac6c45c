"""Exact-enumeration throughput: prefix-shared enumeration against the plain and fast paths.

Run: OMP_NUM_THREADS=1 python benchmarks/exact_throughput.py [--dist english] [--positions 1,7,13,14]
     [--top 16] [--seconds 20] [--models gelu-1l,gelu-4l]

The shipped distribution (``cpu`` length) is restricted to an enumerable space: at ``--positions``
its ``--top`` most likely tokens (renormalised), elsewhere its most likely token as a constant. Per
model, three exact-mode paths run the same shards (2^14 sequences, ``shard_totals``: enumeration,
argmax, float64 accumulation), interleaved shard by shard so that load from other jobs on the
machine falls on all three alike: the plain chunked path (``fast=False``), the fast last-position
path (exact mode's default before prefix sharing), and prefix-shared enumeration (today's default).
Printed: sequences/s, the ratios, and the prefix path's FLOP rate (counted per sequence from the
tree, ``prefix_flops``) as a share of the fp32 matmul peak measured in the same run
(``gt_throughput.matmul_peak``).
"""

import argparse
import time

import torch
from gt_throughput import matmul_peak

from lowprob import load_distribution, load_model
from lowprob.distributions.base import TokenDistribution
from lowprob.truth.compute import JobSpec, argmax_function, enumeration_argmax, shard_totals

SHARD = 1 << 14


def restrict(dist: TokenDistribution, positions: list[int], top: int) -> TokenDistribution:
    """``top`` most likely tokens (renormalised) at ``positions``, the most likely one elsewhere."""
    out = []
    for p in range(len(dist)):
        ids, probs = dist.support(p)
        order = probs.argsort(descending=True)
        out.append((ids[order[:top]], probs[order[:top]]) if p in positions else int(ids[order[0]]))
    return TokenDistribution.from_positions(out, normalize=True, name=f"{dist.name} restricted")


def prefix_flops(cfg, dist: TokenDistribution) -> float:
    """Multiply-adds x2 per enumerated sequence of prefix-shared enumeration (LayerNorms, softmax not counted)."""
    d, f, V, L = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_layers
    variable = dist.variable_positions()
    bounds, sizes = [0, *variable, len(dist)], [1, *(dist.support_sizes()[p] for p in variable)]
    total, nodes = 0.0, 1
    for j in range(len(bounds) - 1):
        nodes *= sizes[j]
        a, s = bounds[j], bounds[j + 1] - bounds[j]
        leaf = j == len(bounds) - 2
        attn = sum(4 * d * (a + i + 1) for i in range(s))  # scores and weighted values, every query
        per_layer = attn + s * (2 * d * d + 4 * d * f)  # plus output projection and MLP
        cost = L * per_layer + (L - 1) * s * 6 * d * d  # Q/K/V from the table in the first layer
        if leaf:  # last layer: keys/values everywhere, the rest at the last position only
            cost -= per_layer - (4 * d * (a + s) + 2 * d * d + 4 * d * f)
            cost += 2 * d * V
        total += nodes * cost
    return total / dist.support_size()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dist", default="english")
    parser.add_argument("--positions", default="1,7,13,14")
    parser.add_argument("--top", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="per model, all three paths together")
    parser.add_argument("--models", default="gelu-1l,gelu-4l")
    args = parser.parse_args()
    positions = [int(p) for p in args.positions.split(",")]
    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()}, measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; {args.dist} "
          f"(cpu length) restricted to its top {args.top} tokens at positions {positions}, the mode elsewhere")
    print("| model | sequences | plain chunked (seq/s) | fast last-position (seq/s) | prefix-shared (seq/s) | "
          "vs plain | vs fast | prefix GFLOP/s | % of peak | rows recomputed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = load_model(name)
        dist = restrict(load_distribution(args.dist, model), positions, args.top)
        spec = JobSpec("", "", True, dist.support_size(), None, SHARD)
        tree = model.prefix_tree(dist.support_ids())
        fast = argmax_function(model, dist)
        paths = {"plain": enumeration_argmax(model, dist, fast=False),
                 "fast": lambda start, tokens, f=fast: f(tokens),
                 "prefix": lambda start, tokens, t=tree: t.argmax(start, start + len(tokens), tokens)}
        seconds, sequences = dict.fromkeys(paths, 0.0), dict.fromkeys(paths, 0)
        results = {}
        with torch.no_grad():
            for argmax in paths.values():  # warm-up
                shard_totals(argmax, dist, model.d_vocab, spec, 0)
            shard, begin = 0, time.perf_counter()
            while time.perf_counter() - begin < args.seconds:
                for key, argmax in paths.items():
                    start = time.perf_counter()
                    results[key] = shard_totals(argmax, dist, model.d_vocab, spec, shard)
                    seconds[key] += time.perf_counter() - start
                    sequences[key] += spec.shard_len(shard)
                assert torch.equal(results["prefix"], results["plain"]), "prefix-shared and plain shards differ"
                shard = (shard + 1) % spec.n_shards
        rate = {key: sequences[key] / seconds[key] for key in paths}
        gflops = rate["prefix"] * prefix_flops(model.cfg, dist) / 1e9
        print(f"| {name} | {dist.support_size():,} | {rate['plain']:,.0f} | {rate['fast']:,.0f} | "
              f"{rate['prefix']:,.0f} | {rate['prefix'] / rate['plain']:.2f}x | {rate['prefix'] / rate['fast']:.2f}x "
              f"| {gflops:.1f} | {100 * gflops * 1e9 / peak:.1f}% | {tree.n_recomputed:,} |")


if __name__ == "__main__":
    main()
