"""A variant's rows against a baseline's on the same targets: typical accuracy, not the leak-free mean.

A screen (``ceis_cpu.py --max-targets 8``, 191 estimates) is too small for a leak-free mean that one
stalled target can decide, but it measures the typical estimate well: seed 0 against seed 1 of the same
method moves these figures by about 0.01-0.05 per model. Per model and overall, on the targets the
variant has: median |log10 q/p|, the mean Itakura-Saito loss of the raw estimate clipped at 3 (so no
single target dominates), estimates more than one / two decades off, zeros, and interval coverage.
``ceis_rb_half_cpu_*seed0.jsonl`` are the seed-0 rows of CEIS before its prior strength went to 1:

    PYTHONPATH=src python benchmarks/notebook/ceis-variants/ceis_screen_compare.py \\
        --base benchmarks/notebook/ceis-variants/ceis_rb_half_cpu_*seed0.jsonl \\
        --variant benchmarks/notebook/ceis-variants/screens/ceis_ps1_screen_seed0.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lowprob.evaluation import abs_log10_error, covered, is_loss, log_estimate
from lowprob.files import read_jsonl

MODELS = ("gelu-1l", "gelu-2l", "gelu-4l")


def keyed(paths: list[str]) -> dict[tuple, dict]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"no such rows file: {', '.join(missing)}")
    return {(r["model"], r["distribution"], r["target"], r["seed"]): r for path in paths for r in read_jsonl(path)}


def figures(rows: list[dict]) -> str:
    p = np.array([r["ground_truth"] for r in rows])
    q = np.array([r["probability"] for r in rows])
    lo, hi = np.array([r["interval"] for r in rows]).T
    err = abs_log10_error(p, q)
    loss = np.minimum(is_loss(np.log(p), log_estimate(q)), 3.0)
    return (f"{len(rows):4d} | {np.median(err):.3f} | {loss.mean():.3f} | {int((err > 1).sum())} | "
            f"{int((err > 2).sum())} | {int((q == 0).sum())} | {np.mean(covered(p, lo, hi)):.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", nargs="+", required=True, help="baseline rows (JSON lines)")
    parser.add_argument("--variant", nargs="+", required=True, help="rows of the variant(s), one file each")
    args = parser.parse_args()
    base = keyed(args.base)
    print("| rows | model | n | median abs log10 | clipped loss | > 1 decade | > 2 decades | zeros | coverage |")
    print("|---|---|---|---|---|---|---|---|---|")
    shown = None  # the baseline is printed again only for a variant with other targets
    for path in args.variant:
        variant = keyed([path])
        missing = [k for k in variant if k not in base]
        if missing:
            raise SystemExit(f"{path}: {len(missing)} targets are not in the baseline, e.g. {missing[0]}")
        tables = [(path.rsplit("/", 1)[-1], variant)]
        if set(variant) != shown:
            tables.insert(0, ("baseline", base))
            shown = set(variant)
        for label, path_rows in tables:
            for model in (*MODELS, "all"):
                keys = [k for k in variant if model in ("all", k[0])]
                print(f"| {label} | {model} | {figures([path_rows[k] for k in keys])} |")


if __name__ == "__main__":
    main()
