"""CEIS with a hyper-parameter setting on every `exact` pair of one model, the committed targets, one seed.

Run: OMP_NUM_THREADS=1 python run_exact_pairs.py MODEL SEED OUT.jsonl '{"climb_fraction": 0.25}'
(resumes OUT; the rows carry variant "coord", which table.py relabels).
"""

import json
import sys
from pathlib import Path

import torch

import lowprob

model_name, seed, out, hyper = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(1)
rows = Path(__file__).parents[2] / "results" / "exact" / "rows" / model_name
done = {(r["dist"], r["target"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
model = lowprob.load_model(model_name)
for f in sorted(rows.glob("*.jsonl")):
    truth = {r["target"]: r["ground_truth"] for r in map(json.loads, f.read_text().splitlines())
             if r["method"] == "ceis"}
    dist = lowprob.load_distribution(f.stem, model, length="exact")
    for target, p in truth.items():
        if (f.stem, target) in done:
            continue
        e = lowprob.estimate(model, dist, lowprob.ArgmaxIs(target), "ceis", 4096, seed, **hyper)
        row = {"model": model_name, "dist": f.stem, "target": target, "p": p, "variant": "coord", "seed": seed,
               "probability": e.probability, "interval": list(e.interval), "climb": e.diagnostics.get("climb"),
               "warnings": e.warnings}
        with out.open("a") as o:
            o.write(json.dumps(row) + "\n")
