"""Wall time of each estimator at a fixed budget on each shipped model.

Run: python benchmarks/estimator_timing.py [--budget 4096] [--dist hex]
Target: the argmax token of the first sample (so the estimate is non-trivial); one seed per cell.
"""

import argparse

import torch

import lowprob
from lowprob.estimators import METHODS
from lowprob.models.zoo import SHIPPED_CONFIGS
from lowprob.threads import thread_count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--dist", default="hex")
    args = parser.parse_args()
    methods = sorted(METHODS)
    print(f"threads {thread_count()} (lowprob.threads), budget {args.budget}, distribution {args.dist} (cpu length)")
    print(f"{'model':<9}" + "".join(f"{m + ' (s)':>14}" for m in methods))
    for name in SHIPPED_CONFIGS:
        model = lowprob.load_model(name)
        dist = lowprob.load_distribution(args.dist, model)
        with torch.no_grad():
            target = int(model.logits(dist.sample(1, torch.Generator().manual_seed(0))).argmax())
        times = [lowprob.estimate(model, dist, lowprob.ArgmaxIs(target), method=m, budget=args.budget).cost.seconds
                 for m in methods]
        print(f"{name:<9}" + "".join(f"{t:>14.2f}" for t in times))


if __name__ == "__main__":
    main()
