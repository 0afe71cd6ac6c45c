"""One method on gelu-1l / `hex` (`exact` length), every committed target, budget 4096, printed as JSON lines.

Run: OMP_NUM_THREADS=1 python run_hex.py METHOD '{"pool": 16}' SEEDS (e.g. 0 or 0,1)
Each line: target, truth p, estimate q, |log10 q/p| (NaN for a zero), CEIS's committed error, the interval,
forward-equivalents, seconds and what splitting reports (reached, particles, levels, pilot levels).
"""

import json
import math
import sys
import time
from pathlib import Path

import torch

import lowprob

method, hyper, seeds = sys.argv[1], json.loads(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
torch.set_num_threads(1)
model = lowprob.load_model("gelu-1l")
dist = lowprob.load_distribution("hex", model, length="exact")
rows = Path(__file__).parents[2] / "results" / "exact" / "rows" / "gelu-1l" / "hex.jsonl"
ceis = {r["target"]: r for r in map(json.loads, rows.read_text().splitlines()) if r["method"] == "ceis"}


def error(q: float, p: float) -> float:
    return abs(math.log10(q / p)) if q > 0 else math.nan


for target, r in sorted(ceis.items(), key=lambda kv: kv[1]["ground_truth"]):
    p = r["ground_truth"]
    for seed in seeds:
        start = time.time()
        e = lowprob.estimate(model, dist, lowprob.ArgmaxIs(target), method, 4096, seed, **hyper)
        d = e.diagnostics
        print(json.dumps({"target": target, "p": p, "seed": seed, "q": e.probability, "err": error(e.probability, p),
                          "ceis_err": error(r["probability"], p), "lo": e.interval[0], "hi": e.interval[1],
                          "fe": round(e.cost.forward_equivalents), "s": round(time.time() - start, 2),
                          "reached": d.get("reached"), "n": d.get("particles"), "lv": len(d.get("levels", [])),
                          "pl": d.get("pilot_levels")}), flush=True)
