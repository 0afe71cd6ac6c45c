"""CEIS settings on the `cpu` targets the default misses by decades, at seeds it was not selected on.

The ten targets are those whose leak-free loss exceeded 10 for the default (prior strength 1) at seed 0
(the `cpu` benchmark's rows) or seed 1 (``benchmarks/results/cpu-seeds/ceis_seed1.jsonl``). They decide the
per-model means, and a 191-target screen rarely contains them. Rerunning them at other seeds (2, 3, 4
by default) avoids the selection bias of judging a remedy on the very runs that failed: any re-roll of
a failed run looks better. Prints, per setting, the median log10 q/p, how many estimates are more than
one / two decades low, zeros and interval coverage, then the log10 q/p of each estimate.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/notebook/ceis-variants/ceis_hard_targets.py '{}' '{"rho": 0.05}'
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from lowprob import ArgmaxIs, estimate
from lowprob.bench.scales import get_scale, load_problem
from lowprob.evaluation import covered, log_estimate

HARD = (("gelu-1l", "hex", 324), ("gelu-1l", "english", 643), ("gelu-1l", "camel", 335),
        ("gelu-1l", "spanish", 2930), ("gelu-2l", "camel", 1400), ("gelu-2l", "english", 2813),
        ("gelu-2l", "spanish", 2086), ("gelu-2l", "if", 2624), ("gelu-4l", "caps", 261), ("gelu-4l", "hex", 54))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help="JSON hyper-parameters per setting ('{}': the default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    scale = get_scale("cpu")
    problems = {(m, d): load_problem(scale, m, d) for m, d, _ in HARD}
    for setting in args.settings:
        hyper = json.loads(setting)
        truth, estimates, intervals = [], [], []
        for model_name, dist_name, target in HARD:
            model, dist, gt = problems[model_name, dist_name]
            for seed in args.seeds:
                e = estimate(model, dist, ArgmaxIs(target), method="ceis", budget=scale.budget, seed=seed, **hyper)
                truth.append(float(gt.probabilities[target]))
                estimates.append(e.probability)
                intervals.append(e.interval)
        p, q = np.array(truth), np.array(estimates)
        lo, hi = np.array(intervals).T
        err = (log_estimate(q) - np.log(p)) / np.log(10)  # signed log10 q/p, zeros at the scoring floor
        print(f"{setting}: median log10 q/p {np.median(err):+.2f}, more than 1 / 2 decades low "
              f"{int((err < -1).sum())} / {int((err < -2).sum())} of {len(err)}, zeros {int((q == 0).sum())}, "
              f"coverage {np.mean(covered(p, lo, hi)):.0%}")
        print("   " + " ".join(f"{x:+.1f}" for x in err), flush=True)

if __name__ == "__main__":
    main()
