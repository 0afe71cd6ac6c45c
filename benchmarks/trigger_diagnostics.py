"""Why methods fail on the planted trigger: a summary of the `trigger` bench rows' diagnostics.

Per method and trigger distribution (both models, every seed, every temperature): how many estimates
are zero, how many hit the event at all, the median hits, the median estimate over the truth, and each
method's own tell — CEIS's last level (0 = its adaptive stages reached the event), MHIS's acceptance
rate, GLD's fitted Gaussian of the logit difference. The figures of benchmarks/results/trigger/README.md.

    python benchmarks/trigger_diagnostics.py benchmarks/results/trigger/bench
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from lowprob.bench.score import load_rows


def tell(method: str, rows: list[dict]) -> str:
    d = [r["diagnostics"] for r in rows]
    if method == "ceis":
        last = [x["levels"][-1] for x in d]
        return f"last level: median {np.median(last):.2f}, reached 0 in {sum(v >= 0 for v in last)}/{len(last)}"
    if method == "mhis":
        return f"acceptance {np.median([x['acceptance_rate'] for x in d]):.2f}"
    if method == "gld":
        return f"logit gap ~ N({np.median([x['mu'] for x in d]):.1f}, {np.median([x['sigma'] for x in d]):.2f}²)"
    if method == "qld":
        return f"min-norm {np.median([x['min_norm'] for x in d]):.1f}"
    return ""


def main(directory: str) -> None:
    groups = defaultdict(list)
    for r in load_rows(directory):
        groups[(r["method"], r["distribution"])].append(r)
    order = {"trigger-p4": 0, "trigger-p6": 1, "trigger-p8": 2, "trigger-p10": 3}
    print("| method | distribution | estimates | zero | with hits | median hits | median log10 q/p (non-zero) | tell |")
    print("|---|---|---|---|---|---|---|---|")
    for (method, dist), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
        hits = [r["diagnostics"].get("hits") for r in rows]
        nonzero = [np.log10(r["probability"] / r["ground_truth"]) for r in rows if r["probability"] > 0]
        counted = [h for h in hits if h is not None]
        print(f"| {method} | {dist} | {len(rows)} | {sum(r['probability'] == 0 for r in rows)} | "
              f"{sum(h > 0 for h in counted) if counted else '–'} | {np.median(counted) if counted else '–'} | "
              f"{f'{np.median(nonzero):+.1f}' if nonzero else '–'} | {tell(method, rows)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", nargs="?", default="benchmarks/results/trigger/bench",
                        help="a trigger-scale bench directory")
    main(parser.parse_args().directory)
