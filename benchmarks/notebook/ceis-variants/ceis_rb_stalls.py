"""CEIS with and without ``rao_blackwell`` on the targets where plain CEIS's levels stalled (issue 13).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/notebook/ceis-variants/ceis_rb_stalls.py --seeds 0 1

Prints per (pair, target, seed): the truth, each variant's estimate, q/p, hits (RB: prefixes with a
completion in the event, and completions), the interval's coverage, the CE levels and seconds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lowprob import ArgmaxIs, estimate
from lowprob.bench.scales import get_scale, load_problem
from lowprob.files import dumps_json

STALLS = (("gelu-1l", "camel", 335), ("gelu-4l", "hex", 54), ("gelu-2l", "camel", 1400))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=None, help="append rows here (JSON lines)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scale = get_scale("cpu")
    for model_name, dist_name, target in STALLS:
        model, dist, gt = load_problem(scale, model_name, dist_name)
        p = float(gt.probabilities[target])
        for seed in args.seeds:
            for rb in (False, True):
                start = time.perf_counter()
                e = estimate(model, dist, ArgmaxIs(target), method="ceis", budget=scale.budget, seed=seed,
                             rao_blackwell=rb)
                seconds = time.perf_counter() - start
                d = e.diagnostics
                extra = d.get("rao_blackwell", {})
                print(f"{model_name}/{dist_name} t={target} seed={seed} rb={rb!s:5s} p={p:.3e} q={e.probability:.3e} "
                      f"q/p={e.probability / p:.3g} hits={d['hits']} completions={extra.get('completion_hits', '-')} "
                      f"prefixes={extra.get('prefixes', '-')} cover={e.interval[0] <= p <= e.interval[1]} "
                      f"levels={d['levels']} flops={e.cost.flops:.3g} {seconds:.1f}s", flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(dumps_json({"model": model_name, "distribution": dist_name, "target": target,
                                            "seed": seed, "rao_blackwell": rb, "ground_truth": p,
                                            "probability": e.probability, "interval": list(e.interval),
                                            "cost": {**e.to_json()["cost"], "seconds": seconds},
                                            "diagnostics": d}) + "\n")


if __name__ == "__main__":
    main()
