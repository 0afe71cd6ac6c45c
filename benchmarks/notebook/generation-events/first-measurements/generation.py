"""Generation events on a shipped model: how many model calls the best method saves over plain sampling.

For each target text T (an event "T appears within --steps tokens sampled at temperature 1 after a
prompt from the distribution"), ``--seeds`` tilted estimates at ``--budget`` continuations each are
made. Their pooled mean (unbiased, ``seeds × budget`` continuations) is the reference p, their
spread the relative error RE of one estimate; plain sampling reaches the same RE with
(1 − p) / (p RE²) continuations, and the ratio of the two is the saving. SMC is run the same way
where ``--smc`` asks for it. Then one estimate per method at ``--time-budget`` is timed.
Rows go to ``--out`` (JSON lines, appended; a finished (model, target, method, seed) is skipped),
the table to stdout.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/notebook/generation-events/first-measurements/generation.py \\
        --model gelu-1l --dist english --targets ' Spain' ' import' ' the' --out gelu-1l.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import lowprob
from lowprob.events import Generates
from lowprob.files import dumps_json


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    model = lowprob.load_model(args.model)
    dist = lowprob.load_distribution(args.dist, model, "cpu")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["target"], r["method"], r["seed"], r["budget"]) for r in map(json.loads, out.open())} \
        if out.exists() else set()
    methods = ["tilted"] + (["smc"] if args.smc else [])
    with out.open("a") as f:
        for text in args.targets:
            event = Generates((tuple(model.tokenizer.encode(text)),), args.steps)
            jobs = [(m, s, args.budget) for m in methods for s in range(args.seeds)]
            jobs += [(m, 1000, args.time_budget) for m in [*methods, "naive"]] if args.time_budget else []
            for method, seed, budget in jobs:
                if (text, method, seed, budget) in done:
                    continue
                e = lowprob.estimate(model, dist, event, method=method, budget=budget, seed=seed)
                row = {"model": args.model, "distribution": dist.name, "target": text, "steps": args.steps,
                       "method": method, "seed": seed, "budget": budget, "probability": e.probability,
                       "interval": list(e.interval), "flops": e.cost.flops, "seconds": e.cost.seconds}
                f.write(dumps_json(row) + "\n")
                f.flush()
    summarise(out, args.budget)


def summarise(path: Path, budget: int) -> None:
    rows = [json.loads(line) for line in path.open()]
    print("| model | target | method | reference p (± SE) | RE of one estimate | naive calls for that RE | "
          f"calls at budget {budget} | saving | coverage |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["model"], r["target"], r["method"]) for r in rows if r["budget"] == budget})
    for model, target, method in keys:
        values = torch.tensor([r["probability"] for r in rows if (r["model"], r["target"], r["method"], r["budget"])
                               == (model, target, method, budget)], dtype=torch.float64)
        reference = [r for r in rows if (r["model"], r["target"], r["method"], r["budget"]) ==
                     (model, target, "tilted", budget)]
        p = sum(r["probability"] for r in reference) / len(reference)
        if p == 0 or len(values) < 2:
            continue
        re = float(values.std()) / p
        naive_calls = (1 - p) / (p * re * re) if re > 0 else math.inf
        cover = sum(r["interval"][0] <= p <= r["interval"][1] for r in rows
                    if (r["model"], r["target"], r["method"], r["budget"]) == (model, target, method, budget))
        se = float(torch.tensor([r["probability"] for r in reference]).std()) / math.sqrt(len(reference))
        print(f"| {model} | {target!r} | {method} | {p:.3g} ± {se:.2g} | {re:.2f} | {naive_calls:.3g} | {budget} | "
              f"{naive_calls / budget:.3g}x | {cover}/{len(values)} |")
    timed = [r for r in rows if r["seed"] == 1000]
    if timed:
        print("\n| model | target | method | budget | seconds | FLOPs |\n|---|---|---|---|---|---|")
        for r in timed:
            print(f"| {r['model']} | {r['target']!r} | {r['method']} | {r['budget']} | {r['seconds']:.1f} | "
                  f"{r['flops']:.3g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--dist", default="english")
    parser.add_argument("--targets", nargs="+")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--smc", action="store_true")
    parser.add_argument("--time-budget", type=int, default=0, help="also time one estimate per method at this budget")
    parser.add_argument("--out", required=True)
    parser.add_argument("--summary", action="store_true", help="only summarise --out")
    args = parser.parse_args()
    if args.summary:
        summarise(Path(args.out), args.budget)
    elif not (args.model and args.targets):
        parser.error("--model and --targets are needed unless --summary")
    else:
        run(args)


if __name__ == "__main__":
    main()
