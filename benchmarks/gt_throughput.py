"""Ground-truth throughput: the fast last-position argmax path against plain batched ``model.logits``.

Run: python benchmarks/gt_throughput.py [--dist english] [--batch 16384] [--seconds 4]
Prints, per shipped model, samples/s measured in the same run (sampling included, as ground truth
does it) of: plain ``model.logits`` on the whole batch; the library's plain path (the same, in
cache-sized chunks); the fast path. The speed-up is against the better plain figure. Also the fast
path's FLOP rate as a fraction of this machine's fp32 peak, measured here as the best rate of a
1024^3 matmul.
"""

import argparse
import math
import time

import torch

from lowprob import load_distribution, load_model
from lowprob.models.zoo import SHIPPED_CONFIGS
from lowprob.truth.compute import argmax_function


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def fast_flops(cfg, T: int) -> float:
    """Multiply-adds x2 of the fast path per sequence (first block's projections are table lookups)."""
    d, f, V, L = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_layers
    attn_all = 2 * T * T * d  # scores and weighted values, causal (half of 2 x 2 T^2 d)
    full = 2 * 3 * T * d * d + attn_all + 2 * T * d * d + 4 * T * d * f
    first = attn_all + 2 * T * d * d + 4 * T * d * f if L > 1 else 0
    last = 2 * 2 * T * d * d + 2 * d * d + 4 * T * d + 2 * d * d + 4 * d * f + 2 * d * V
    return first + max(L - 2, 0) * full + last


def rate(fn, dist, batch: int, seconds: float) -> float:
    gen = torch.Generator().manual_seed(0)
    fn(dist.sample(batch, gen))  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(dist.sample(batch, gen))
        n += batch
    return n / (time.perf_counter() - start)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dist", default="english")
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()}, measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s, "
          f"distribution {args.dist} (cpu length)")
    print("| model | plain, one batch (seq/s) | plain, chunked (seq/s) | fast (seq/s) | speed-up | "
          "fast GFLOP/s | % of peak | rows recomputed |")
    print("|---|---|---|---|---|---|---|---|")
    for name in SHIPPED_CONFIGS:
        model = load_model(name)
        dist = load_distribution(args.dist, model)
        fast = model.fast_argmax(dist.support_ids())
        whole = rate(lambda x, m=model: m.logits(x).argmax(-1), dist, args.batch, args.seconds)
        chunked = rate(argmax_function(model, dist, fast=False), dist, args.batch, args.seconds)
        fast_rate = rate(fast.argmax, dist, args.batch, args.seconds)
        gflops = fast_rate * fast_flops(model.cfg, len(dist)) / 1e9
        print(f"| {name} | {whole:,.0f} | {chunked:,.0f} | {fast_rate:,.0f} | {fast_rate / max(whole, chunked):.2f}x "
              f"| {gflops:.1f} | {100 * gflops * 1e9 / peak:.1f}% | {fast.n_recomputed:,} |")


if __name__ == "__main__":
    main()
