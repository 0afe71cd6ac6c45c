"""The rare end: CEIS before and after its climb, error against budget, and whether warnings say when it is off.

Run: OMP_NUM_THREADS=1 python benchmarks/rare_end.py compare --scale exact --seed 1 [--variants after]
     python benchmarks/rare_end.py compare-table
     OMP_NUM_THREADS=1 python benchmarks/rare_end.py budgets [--resume]
     python benchmarks/rare_end.py budgets-table
     python benchmarks/rare_end.py warnings

``compare``: CEIS before issue 29's climb (``climb_fraction`` 0) and the default, on every committed target
of a scale (`exact` or `cpu`, 24 pairs) at one seed, against the committed truths; rows in
``results/rare-end/compare-{scale}-s{seed}.jsonl`` (resumed). The "before" rows of the committed files were run
with the code before the climb (1809448), whose average weighted every sample equally.
``compare-table``: per decade of p, zeros, median |log10 q/p|, far misses, coverage and warnings.
``export``: one variant's rows in the form ``ceis_loss_anatomy.py --rows`` scores (leak-free IS loss against MHIS).
``trigger``: the default on the `trigger` scale's targets at seeds 0-3 against the committed CEIS rows.

``budgets``: for the `exact` scale's committed targets of gelu-1l on `hex` and `english` and gelu-2l on `hex`
nearest in log p to 1e-10, 1e-8 and 1e-6 (two each), the default method, ITGIS (temperature 1) and naive at
budgets 2^10 .. 2^16, seeds 0 and 1: rows in ``results/rare-end/budgets.jsonl``, written as they finish.
``budgets-table``: per decade and budget, the median |log10 q/p| (a zero scored at 1e-12) and the zeros, and the
smallest budget at which the median reaches 0.3 — against naive's 1/p, the saving a user gets.

``warnings``: of the estimates more than two decades low (a zero scored at 1e-12), the share that carry a
warning, and of the non-zero ones within a factor 3, the share that carry one wrongly, with
``lowprob.estimators.warnings`` applied to each row's diagnostics: the default's rows (reference runs and
``compare``) and CEIS's `cpu` rows before the climb (seeds 1 and 2).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

import lowprob
from lowprob.estimators.warnings import warnings_for
from lowprob.truth.reference import load_reference

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "rare-end"
PAIRS = (("gelu-1l", "hex"), ("gelu-1l", "english"), ("gelu-2l", "hex"))
DECADES = (1e-10, 1e-8, 1e-6)
BUDGETS = tuple(2 ** k for k in range(10, 17))
METHODS = {"ceis": {}, "itgis": {"temperature": 1.0}, "naive": {}}
SEEDS = (0, 1)
FLOOR = 1e-12  # a zero estimate is scored as this


def _targets(model: str, kind: str, p: torch.Tensor) -> list[int]:
    """The committed `exact` targets of the pair nearest in log p to each of ``DECADES``, two each."""
    committed = json.loads((RESULTS / "exact" / "rows" / model / f"{kind}.targets.json").read_text())["targets"]
    chosen: list[int] = []
    for d in DECADES:
        near = sorted((t for t in committed if t not in chosen), key=lambda t: abs(math.log10(float(p[t]) / d)))
        chosen += near[:2]
    return chosen


def budgets(args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "budgets.jsonl"
    done = set()
    if args.resume and path.exists():
        done = {(r["model"], r["dist"], r["target"], r["method"], r["budget"], r["seed"])
                for r in map(json.loads, path.read_text().splitlines())}
    elif path.exists():
        sys.exit(f"{path} exists: pass --resume to continue it, or move it away")
    torch.set_num_threads(1)
    for model_name, kind in PAIRS:
        model = lowprob.load_model(model_name)
        dist = lowprob.load_distribution(kind, model, length="exact")
        p = load_reference(model_name, kind, model, dist, length="exact").probabilities
        for t in _targets(model_name, kind, p):
            for method, hyper in METHODS.items():
                for budget in BUDGETS:
                    for seed in SEEDS:
                        if (model_name, kind, t, method, budget, seed) in done:
                            continue
                        e = lowprob.estimate(model, dist, lowprob.ArgmaxIs(t), method, budget, seed, **hyper)
                        row = {"model": model_name, "dist": kind, "target": t, "p": float(p[t]), "method": method,
                               "budget": budget, "seed": seed, "probability": e.probability,
                               "interval": list(e.interval), "flops": e.cost.flops, "seconds": e.cost.seconds,
                               "warnings": e.warnings}
                        with open(path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"{model_name}/{kind} {t:5} p={row['p']:.1e} {method:6} B={budget:6} s{seed} "
                              f"q={e.probability:.2e} {e.cost.seconds:.1f}s", flush=True)
    budgets_table(args)


def _error(q: float, p: float) -> float:
    return abs(math.log10(max(q, FLOOR) / p))


def budgets_table(args) -> None:
    rows = [json.loads(line) for line in (OUT / "budgets.jsonl").read_text().splitlines() if line]
    cells = defaultdict(list)
    for r in rows:
        decade = min(DECADES, key=lambda d: abs(math.log10(r["p"] / d)))
        cells[(decade, r["method"], r["budget"])].append(r)
    print("Median |log10 q/p| (zeros scored at 1e-12) / zeros, per decade of p and budget:\n")
    print("| p near | method | " + " | ".join(f"2^{int(math.log2(b))}" for b in BUDGETS) + " | budget for 0.3 |")
    print("|---|---|" + "---|" * (len(BUDGETS) + 1))
    for d in DECADES:
        for method in METHODS:
            out, reach = [], None
            for b in BUDGETS:
                rs = cells.get((d, method, b), [])
                if not rs:
                    out.append("")
                    continue
                med = statistics.median(_error(r["probability"], r["p"]) for r in rs)
                zeros = sum(r["probability"] == 0 for r in rs)
                out.append(f"{med:.2f} / {zeros}")
                if reach is None and med <= 0.3:
                    reach = b
            print(f"| {d:.0e} | {method} | " + " | ".join(out) + f" | {reach if reach else '> 2^16'} |")
    print("\nnaive needs ~3/p model calls to see one hit on average: 3e10, 3e8, 3e6 at these decades.")


def _warned(row: dict) -> list[str]:
    """A ``compare`` row's warnings as the library gives them now (from its diagnostics, where the row has them)."""
    if "diagnostics" not in row:
        return row["warnings"]
    return warnings_for("ceis", row["probability"], row["diagnostics"])


def warnings(args) -> None:
    """Share of far-low estimates that carry a warning, and of good ones that carry one wrongly, the warnings
    read from each row's diagnostics as the library gives them now: the default's reference rows (seed 0) and
    ``compare`` rows (seeds 1, 2), and CEIS's rows of the `cpu` scale before the climb (seeds 1, 2)."""
    def bench_rows(src: Path) -> list[tuple[float, float, dict]]:
        files = sorted(src.rglob("*.jsonl")) if src.is_dir() else [src]
        return [(r["probability"], r["ground_truth"], r["diagnostics"])
                for f in files for r in map(json.loads, f.read_text().splitlines())
                if r.get("method") == "ceis" and r.get("ground_truth")]

    tables = {"cpu seed 0, default": bench_rows(RESULTS / "cpu" / "rows"),
              "exact seed 0, default": bench_rows(RESULTS / "exact" / "rows")}
    for path in sorted(OUT.glob("compare-*.jsonl")):
        scale, seed = path.stem.split("-")[1:]
        tables[f"{scale} seed {seed[1:]}, default"] = [
            (r["probability"], r["p"], r["diagnostics"]) for r in map(json.loads, path.read_text().splitlines())
            if r["variant"] == "after"]
    for seed in (1, 2):
        tables[f"cpu seed {seed}, before the climb"] = bench_rows(RESULTS / "cpu-seeds" / f"ceis_seed{seed}.jsonl")
    print("| rows | estimates | > 2 decades low (zeros incl.) | of them warned | non-zero within x3 | of them warned | "
          "warned, all |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in tables.items():
        low = good = low_warned = good_warned = warned = 0
        for q, p, diagnostics in rows:
            said = bool(warnings_for("ceis", q, diagnostics))
            warned += said
            error = math.log10(max(q, FLOOR) / p)
            if error < -2:
                low, low_warned = low + 1, low_warned + said
            elif q > 0 and abs(error) <= math.log10(3):  # a zero is within x3 of nothing
                good, good_warned = good + 1, good_warned + said
        print(f"| {name} | {len(rows)} | {low} | {low_warned} ({low_warned / max(low, 1):.0%}) | {good} | "
              f"{good_warned} ({good_warned / max(good, 1):.1%}) | {warned / max(len(rows), 1):.0%} |")


VARIANTS = {"before": {"climb_fraction": 0.0}, "after": {}}  # CEIS before issue 29's climb, and the default


def compare(args) -> None:
    """CEIS as it is and with the climb, on a scale's committed targets and truths, at a seed of ``--seed``."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"compare-{args.scale}-s{args.seed}.jsonl"
    done = set()
    if path.exists():
        done = {(r["model"], r["dist"], r["target"], r["variant"])
                for r in map(json.loads, path.read_text().splitlines())}
    torch.set_num_threads(1)
    for f in sorted((RESULTS / args.scale / "rows").rglob("*.jsonl")):
        model_name, kind = f.parent.name, f.stem
        if args.models and model_name not in args.models:
            continue
        truth = {r["target"]: r["ground_truth"] for r in map(json.loads, f.read_text().splitlines())
                 if r["method"] == "ceis"}
        model = lowprob.load_model(model_name)
        dist = lowprob.load_distribution(kind, model, length=args.scale)
        for t, p in truth.items():
            for variant, hyper in VARIANTS.items():
                if (model_name, kind, t, variant) in done or variant not in args.variants:
                    continue
                e = lowprob.estimate(model, dist, lowprob.ArgmaxIs(t), "ceis", 4096, args.seed, **hyper)
                row = {"model": model_name, "dist": kind, "target": t, "p": p, "variant": variant, "seed": args.seed,
                       "probability": e.probability, "interval": list(e.interval), "flops": e.cost.flops,
                       "seconds": e.cost.seconds, "warnings": e.warnings, "diagnostics": e.diagnostics}
                with open(path, "a") as out:
                    out.write(json.dumps(row) + "\n")
        print(f"{model_name}/{kind} done", flush=True)


def compare_table(args) -> None:
    """Per scale and seed, per decade of p: CEIS before the climb and the default, on the targets both ran."""
    for path in sorted(OUT.glob("compare-*.jsonl")):
        rs = [json.loads(line) for line in path.read_text().splitlines()]
        both = set.intersection(*({(r["model"], r["dist"], r["target"]) for r in rs if r["variant"] == v}
                                  for v in VARIANTS))
        rs = [r for r in rs if (r["model"], r["dist"], r["target"]) in both]
        if not rs:
            continue
        print(f"\n{path.stem} ({len(both)} targets): zeros / median |log10 q/p| (zeros at 1e-12) / > 2 decades "
              f"low / > 2 decades high / covered by the 95% interval / warned, per decade of p")
        print("| decade | n | " + " | ".join(VARIANTS) + " |")
        print("|---|---|" + "---|" * len(VARIANTS))
        for d in [*sorted({math.floor(math.log10(r["p"])) for r in rs}), None]:
            cells, n = [], 0
            for v in VARIANTS:
                sel = [r for r in rs if r["variant"] == v and (d is None or math.floor(math.log10(r["p"])) == d)]
                n = len(sel)
                err = [math.log10(max(r["probability"], FLOOR) / r["p"]) for r in sel]
                cover = sum(r["interval"][0] <= r["p"] <= r["interval"][1] for r in sel)
                cells.append(f"{sum(r['probability'] == 0 for r in sel)} / {statistics.median(map(abs, err)):.2f} / "
                             f"{sum(e < -2 for e in err)} / {sum(e > 2 for e in err)} / {cover / n:.0%} / "
                             f"{sum(bool(_warned(r)) for r in sel)}")
            print(f"| {'all' if d is None else f'1e{d}'} | {n} | " + " | ".join(cells) + " |")


def trigger(args) -> None:
    """The default on the `trigger` scale's committed CEIS targets at seeds 0-3, against the committed estimates:
    how often each finds the planted trigger within x3 of its exact probability (rows ``trigger-check.jsonl``)."""
    from lowprob.truth.trigger import load_trigger_problem

    torch.set_num_threads(1)
    out = OUT / "trigger-check.jsonl"

    def found(q: float, p: float) -> bool:
        return q > 0 and abs(math.log10(q / p)) <= math.log10(3)

    before = after = n = 0
    with out.open("w") as f:
        for path in sorted((RESULTS / "trigger" / "bench" / "rows").rglob("*.jsonl")):
            rows = [r for r in map(json.loads, path.read_text().splitlines())
                    if r["method"] == "ceis" and r["seed"] in range(4)]
            if not rows:
                continue
            model, dist, _, _ = load_trigger_problem(rows[0]["model"], rows[0]["distribution"])
            for r in rows:
                e = lowprob.estimate(model, dist, lowprob.ArgmaxIs(r["target"]), budget=4096, seed=r["seed"])
                f.write(json.dumps({"model": r["model"], "dist": r["distribution"], "seed": r["seed"],
                                    "p": r["ground_truth"], "before": r["probability"], "after": e.probability,
                                    "warnings": e.warnings}) + "\n")
                before, after, n = (before + found(r["probability"], r["ground_truth"]),
                                    after + found(e.probability, r["ground_truth"]), n + 1)
    print(f"planted trigger found within x3: committed rows {before}/{n}, the default now {after}/{n}")


def export(args) -> None:
    """One variant of a ``compare`` file as rows ``ceis_loss_anatomy.py --rows`` reads (``ceis_cpu.py``'s fields)."""
    path = OUT / f"compare-{args.scale}-s{args.seed}.jsonl"
    with open(args.out, "w") as f:
        for r in map(json.loads, path.read_text().splitlines()):
            if r["variant"] == args.variant:
                f.write(json.dumps({"model": r["model"], "distribution": r["dist"], "target": r["target"],
                                    "seed": r["seed"], "method": "ceis", "ground_truth": r["p"],
                                    "probability": r["probability"], "interval": r["interval"]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    run = sub.add_parser("budgets")
    run.add_argument("--resume", action="store_true")
    sub.add_parser("budgets-table")
    sub.add_parser("warnings")
    cmp = sub.add_parser("compare")
    cmp.add_argument("--scale", choices=("exact", "cpu"), required=True)
    cmp.add_argument("--seed", type=int, required=True)
    cmp.add_argument("--models", nargs="*")
    cmp.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    sub.add_parser("compare-table")
    sub.add_parser("trigger")
    exp = sub.add_parser("export")
    exp.add_argument("--scale", choices=("exact", "cpu"), required=True)
    exp.add_argument("--seed", type=int, required=True)
    exp.add_argument("--variant", choices=list(VARIANTS), required=True)
    exp.add_argument("out")
    args = parser.parse_args()
    {"budgets": budgets, "budgets-table": budgets_table, "warnings": warnings, "compare": compare,
     "compare-table": compare_table, "export": export, "trigger": trigger}[args.part](args)


if __name__ == "__main__":
    main()
