"""Forward-pass cost of the shipped models vs sequence length: what ground truth will cost.

Run: python benchmarks/forward_cost.py
Prints sequences/s of the plain batched ``model.logits`` (no autograd, batch 4096, all threads) for
each model and length, and the projected CPU-hours for 2^24 samples of 8 distributions per model
(the reference ground truth of issue 4) — the figure that fixed the ``cpu`` length at 15 tokens.
"""

import time

import torch

from lowprob import load_model
from lowprob.models.zoo import SHIPPED_CONFIGS

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
    print(f"threads: {torch.get_num_threads()}")
    print(f"{'model':<9}" + "".join(f"{f'len {n} (seq/s)':>16}" for n in LENGTHS))
    hours = {n: 0.0 for n in LENGTHS}
    for name in SHIPPED_CONFIGS:
        model = load_model(name)
        rates = {n: throughput(model, n) for n in LENGTHS}
        for n in LENGTHS:
            hours[n] += N_DISTS * N_SAMPLES / rates[n] / 3600
        print(f"{name:<9}" + "".join(f"{rates[n]:>16,.0f}" for n in LENGTHS))
    print("projected hours, 3 models x 8 distributions x 2^24 samples (plain path):")
    print(" ".join(f"len {n}: {hours[n]:.1f} h" for n in LENGTHS))


if __name__ == "__main__":
    main()
