"""Wall time and FLOPs of each estimator (events on the last logits) at a fixed budget on each shipped model.

Run: python benchmarks/estimator_timing.py [--budget 4096] [--dist hex] [--repeats 3]
Target: the argmax token of the first sample (so the estimate is non-trivial). Each cell is the median
of ``--repeats`` seeds, methods interleaved so a change in machine load hits them alike; GFLOPs show
that the methods are compared at equal work, as ``Estimate.cost`` prices it (``lowprob.cost``).
"""

import argparse
import statistics

import torch

import lowprob
from lowprob.estimators.catalog import methods_for
from lowprob.models.zoo import SHIPPED_CONFIGS
from lowprob.threads import thread_count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--dist", default="hex")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    methods = methods_for("logits")
    print(f"threads {thread_count()} (lowprob.threads), budget {args.budget}, distribution {args.dist} (cpu length), "
          f"median of {args.repeats} seeds")
    print(f"{'model':<9}" + "".join(f"{m + ' s (GFLOP)':>20}" for m in methods))
    for name in SHIPPED_CONFIGS:
        model = lowprob.load_model(name)
        dist = lowprob.load_distribution(args.dist, model)
        with torch.no_grad():
            target = int(model.logits(dist.sample(1, torch.Generator().manual_seed(0))).argmax())
        runs = {m: [] for m in methods}
        for seed in range(args.repeats):
            for m in methods:
                runs[m].append(lowprob.estimate(model, dist, lowprob.ArgmaxIs(target), method=m,
                                                budget=args.budget, seed=seed).cost)
        cells = [f"{statistics.median(c.seconds for c in runs[m]):.2f} ({runs[m][0].flops / 1e9:.1f})" for m in methods]
        print(f"{name:<9}" + "".join(f"{c:>20}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
