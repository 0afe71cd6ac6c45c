"""Executed vs accounted FLOPs: what a backward pass costs, and whether equal budgets are equal compute.

Run: OMP_NUM_THREADS=1 python benchmarks/executed_flops.py [--budget 4096]

Part 1, per sequence (each shipped model, ``hex`` at cpu length): the matrix-product FLOPs torch's
``FlopCounterMode`` counts for a forward pass to the last logits and for the backward pass with respect
to the input embeddings — the ratio the cost meter charges a backward at (``lowprob.cost``).
Part 2, whole estimates (gelu-2l / hex, the cpu scale's first targets): each gradient method's executed
matmul FLOPs next to the FLOPs its ``Estimate.cost`` reports, and CEIS's executed FLOPs over ITGIS's at
the same budget — 1.0 means the benchmark compares them at equal executed compute.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from lowprob import estimate, load_distribution, load_model
from lowprob.events import ArgmaxIs
from lowprob.models.zoo import SHIPPED_CONFIGS

TARGETS = (79, 753, 77)  # gelu-2l / hex targets of the cpu scale, p ≈ 4e-6, 2e-5 and 1e-4


def per_sequence(name: str) -> tuple[float, float]:
    """Executed matmul FLOPs per sequence of a forward pass and of the input-gradient backward pass."""
    model = load_model(name)
    tokens = load_distribution("hex", model, length="cpu").sample(64, torch.Generator().manual_seed(0))
    emb = model.W_E[tokens].detach().requires_grad_(True)
    with FlopCounterMode(display=False) as forward:
        score = model.unembed(model.final_residual(emb))[:, 0].sum()
    with FlopCounterMode(display=False) as backward:
        torch.autograd.grad(score, emb)
    return forward.get_total_flops() / len(tokens), backward.get_total_flops() / len(tokens)


def executed(model, dist, method: str, target: int, budget: int) -> tuple[float, float]:
    """(executed matmul FLOPs, the FLOPs the estimate reports) of one estimate."""
    with FlopCounterMode(display=False) as counter:
        est = estimate(model, dist, ArgmaxIs(target), method=method, budget=budget, seed=0)
    return float(counter.get_total_flops()), est.cost.flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=4096)
    budget = parser.parse_args().budget
    torch.set_num_threads(1)
    print("per sequence, hex at cpu length: executed matmul FLOPs (FlopCounterMode)")
    for name in SHIPPED_CONFIGS:
        fwd, bwd = per_sequence(name)
        print(f"  {name:<8} forward {fwd:.4g}  backward w.r.t. inputs {bwd:.4g}  backward/forward {bwd / fwd:.3f}")
    model = load_model("gelu-2l")
    dist = load_distribution("hex", model, length="cpu")
    print(f"whole estimates, gelu-2l / hex, budget {budget}: executed (matmul) and reported FLOPs")
    for target in TARGETS:
        runs = {m: executed(model, dist, m, target, budget) for m in ("itgis", "mhis", "ceis")}
        cells = "  ".join(f"{m} {ex:.3g} (reported {rep:.3g})" for m, (ex, rep) in runs.items())
        print(f"  target {target:>4}: {cells}  ceis/itgis executed {runs['ceis'][0] / runs['itgis'][0]:.2f}")


if __name__ == "__main__":
    main()
