"""Regenerate the shipped reference ground truth: 3 models x 8 distributions at one length.

Run:   python benchmarks/reference_ground_truth.py [--length cpu|exact] [--workers 2 --worker I] [--threads 1]
At ``cpu`` length: exact where the product space allows (``icl``: 3.9M sequences), else
``REFERENCE_SAMPLES[model]`` samples with seed 0. At ``exact`` length (~2^24 sequences each): exact
enumeration, prefix-shared. Files go to ``lowprob.truth.reference.reference_path(model, dist)``; every shard is
checkpointed in ``….partial`` beside it, and a rerun resumes (commit the partial files to carry a
run across sessions). Pairs are split round-robin over ``--workers`` processes, one per core.

Summary: python benchmarks/reference_ground_truth.py --summary
prints, per finished table, its mode and size, how many tokens have p in [1e-7, 1e-4] and how many
qualify as targets of the cpu benchmark (budget 2^12).
"""

import argparse
import os
import time

from lowprob import load_distribution, load_model
from lowprob.distributions import PAPER_DISTRIBUTIONS
from lowprob.evaluation import candidate_targets
from lowprob.models.zoo import SHIPPED_CONFIGS
from lowprob.truth import GroundTruth, ground_truth
from lowprob.truth.compute import MAX_EXACT
from lowprob.truth.reference import REFERENCE_SAMPLES, reference_path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--length", choices=("cpu", "exact"), default="cpu")
    parser.add_argument("--summary", action="store_true", help="describe the finished tables and exit")
    args = parser.parse_args()
    os.environ["LOWPROB_THREADS"] = str(args.threads)  # what lowprob's ground_truth computes with
    pairs = [(m, d) for m in SHIPPED_CONFIGS for d in PAPER_DISTRIBUTIONS]
    if args.summary:
        summary(pairs, args.length)
        return
    for model_name, dist_name in pairs[args.worker::args.workers]:
        out = reference_path(model_name, dist_name, args.length)
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        model = load_model(model_name)
        dist = load_distribution(dist_name, model, args.length)
        exact = args.length == "exact" or dist.support_size() <= MAX_EXACT
        start, cpu_start = time.perf_counter(), time.process_time()
        gt = ground_truth(model, dist, exact=exact, samples=None if exact else REFERENCE_SAMPLES[model_name], seed=0,
                          checkpoint=out.with_name(out.name + ".partial"), progress=True)
        gt.save(out)
        out.with_name(out.name + ".partial").unlink(missing_ok=True)
        print(f"{model_name} {dist_name} {'exact' if exact else 'sampled'} n={gt.n_samples} "
              f"wall {time.perf_counter() - start:.0f}s cpu {time.process_time() - cpu_start:.0f}s (this run)",
              flush=True)


def summary(pairs: list[tuple[str, str]], length: str) -> None:
    decades = range(-12, -4)
    print("| model | distribution | ground truth | tokens with p in [1e-7, 1e-4] | cpu-benchmark candidates | "
          + " | ".join(f"[1e{d}, 1e{d + 1})" for d in decades) + " |")
    print("|---|---|---|---|---|" + "---|" * len(decades))
    for model_name, dist_name in pairs:
        path = reference_path(model_name, dist_name, length)
        if not path.exists():
            print(f"| {model_name} | {dist_name} | not computed yet | | |" + " |" * len(decades))
            continue
        gt = GroundTruth.load(path)
        p = gt.probabilities
        band = int(((p >= 1e-7) & (p <= 1e-4)).sum())
        per_decade = " | ".join(str(int(((p >= 10.0**d) & (p < 10.0 ** (d + 1))).sum())) for d in decades)
        mode = f"exact ({gt.n_samples:,} sequences)" if gt.exact else f"{gt.n_samples:,} samples"
        candidates = len(candidate_targets(gt, 1 << 12))
        print(f"| {model_name} | {dist_name} | {mode} | {band} | {candidates} | {per_decade} |")


if __name__ == "__main__":
    main()
