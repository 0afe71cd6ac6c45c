"""Forward-pass cost of the shipped models vs sequence length: what ground truth will cost.

Run: OMP_NUM_THREADS=1 python benchmarks/forward_cost.py
Prints sequences/s of the plain batched ``model.logits`` (no autograd, batch 4096) for each model and
length, and the projected hours for 2^24 samples of 8 distributions per model (the reference ground
truth of issue 4) with one shard process per core. One thread per process measures per-core
throughput, which is robust to other jobs on the machine; ground truth shards run one per core.
"""

import argparse
import os
import time

import torch

from lowprob import load_model
from lowprob.models.zoo import SHIPPED_CONFIGS

CORES = os.cpu_count() or 1

LENGTHS = (12, 15, 20, 25, 33)
BATCH = 4096
N_DISTS, N_SAMPLES = 8, 2**24


@torch.no_grad()
def throughput(model, length: int, repeats: int = 5) -> float:
    tokens = torch.randint(0, model.d_vocab, (BATCH, length), generator=torch.Generator().manual_seed(0))
    model.logits(tokens)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.logits(tokens).argmax(-1)
    return repeats * BATCH / (time.perf_counter() - start)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    print(f"threads per process: {torch.get_num_threads()}, cores: {CORES}")
    print(f"{'model':<9}" + "".join(f"{f'len {n} (seq/s)':>16}" for n in LENGTHS))
    hours = {n: 0.0 for n in LENGTHS}
    for name in SHIPPED_CONFIGS:
        model = load_model(name)
        rates = {n: throughput(model, n) for n in LENGTHS}
        for n in LENGTHS:
            hours[n] += N_DISTS * N_SAMPLES / (rates[n] * CORES / torch.get_num_threads()) / 3600
        print(f"{name:<9}" + "".join(f"{rates[n]:>16,.0f}" for n in LENGTHS))
    print(f"projected wall hours on {CORES} cores, 3 models x 8 distributions x 2^24 samples (plain path):")
    print(" ".join(f"len {n}: {hours[n]:.1f} h" for n in LENGTHS))


if __name__ == "__main__":
    main()
