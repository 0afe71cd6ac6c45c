"""Time per generation estimate, this tree against another (``--before``, e.g. a worktree of main), in one run.

Each (model, method) is timed at ``--budget`` continuations of ``--steps`` tokens (the event: the
target text within them, prompts from ``--dist``), one estimate per tree in a subprocess of its own
(``PYTHONPATH`` = that tree's ``src``), so both see the same machine at about the same time. With
``--seeds`` the same trees also make that many small estimates (``--check-budget``) of one target,
for the check that a change of the random stream left the estimator's law alone: the means of the
two sets and their standard errors are printed.

    git worktree add --detach /tmp/gen-before <commit>
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/generation_timing.py --before /tmp/gen-before/src \\
        --models gelu-1l --methods naive tilted smc
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def worker(args: argparse.Namespace) -> None:
    import torch

    import lowprob
    from lowprob.events import Generates

    torch.set_num_threads(1)
    for name in args.models:
        model = lowprob.load_model(name)
        dist = lowprob.load_distribution(args.dist, model, "cpu")
        event = Generates((tuple(model.tokenizer.encode(args.target)),), args.steps)
        for method in args.methods:
            for seed in args.worker_seeds:
                e = lowprob.estimate(model, dist, event, method=method, budget=args.budget, seed=seed)
                print(json.dumps({"model": name, "method": method, "seed": seed, "budget": args.budget,
                                  "probability": e.probability, "seconds": e.cost.seconds,
                                  "flops": e.cost.flops}), flush=True)


def run_tree(src: str, args: argparse.Namespace, budget: int, seeds: list[int], methods: list[str]) -> list[dict]:
    command = [sys.executable, __file__, "--worker", "--budget", str(budget), "--steps", str(args.steps),
               "--dist", args.dist, "--target", args.target, "--models", *args.models, "--methods", *methods,
               "--worker-seeds", *map(str, seeds)]
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the other tree's src directory")
    parser.add_argument("--models", nargs="+", default=["gelu-1l"])
    parser.add_argument("--methods", nargs="+", default=["naive", "tilted", "smc"])
    parser.add_argument("--dist", default="english")
    parser.add_argument("--target", default=" Spain")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=int, default=4096)
    parser.add_argument("--seeds", type=int, default=0, help="small estimates per tree for the equivalence check")
    parser.add_argument("--check-budget", type=int, default=256)
    parser.add_argument("--check-target", default=" elif")
    parser.add_argument("--check-methods", nargs="+", default=["tilted"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-seeds", nargs="+", type=int, default=[0], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    trees = {"after": SRC} | ({"before": args.before} if args.before else {})
    print(f"| model | method | budget × steps | {' | '.join(f'{t} s' for t in trees)} | speed-up | FLOPs |")
    print("|---|---|---|" + "---|" * len(trees) + "---|---|")
    for name in args.models:
        for method in args.methods:
            one = argparse.Namespace(**{**vars(args), "models": [name]})
            rows = {t: run_tree(src, one, args.budget, [0], [method])[0] for t, src in trees.items()}
            speed = f"{rows['before']['seconds'] / rows['after']['seconds']:.1f}x" if "before" in rows else "–"
            print(f"| {name} | {method} | {args.budget} × {args.steps} | "
                  + " | ".join(f"{r['seconds']:.1f}" for r in rows.values())
                  + f" | {speed} | {rows['after']['flops']:.3g} |", flush=True)
    if args.seeds:
        check = argparse.Namespace(**{**vars(args), "target": args.check_target, "models": args.models[:1]})
        print(f"\n{args.seeds} seeds at budget {args.check_budget}, target {args.check_target!r}, {args.models[0]}:")
        for t, src in trees.items():
            rows = run_tree(src, check, args.check_budget, list(range(args.seeds)), args.check_methods)
            for method in args.check_methods:
                v = [r["probability"] for r in rows if r["method"] == method]
                mean = sum(v) / len(v)
                sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
                print(f"  {t:6s} {method}: mean {mean:.4g} ± {sd / math.sqrt(len(v)):.2g} (SE), "
                      f"sd of one {sd:.3g}, {sum(r['seconds'] for r in rows if r['method'] == method):.0f} s in all")


if __name__ == "__main__":
    main()
