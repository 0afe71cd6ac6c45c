"""A method (CEIS, the default, unless --method) at other seeds or settings on `cpu` pairs, next to MHIS and ITGIS.

For each chosen pair it runs the method on the pair's committed targets (``benchmarks/results/cpu/
rows/{model}/{dist}.jsonl``, whose rows carry the ground truth) and prints, per seed:

* mean leave-one-out IS loss (log-affine fit on the other targets; a method with no temperature has
  no selection step, so this is its leak-free score), the optimal constant's, and the unfit IS loss of
  the raw estimates (zeros at the 1e-12 floor);
* zero estimates, coverage of the nominal-95% interval (the method's, the plain compound-Poisson one
  and the CLT one from the diagnostics), median |log10 q/p|;
* mean FLOPs and median seconds per estimate;

next to MHIS's and ITGIS's leak-free loss, zeros, coverage and FLOPs from ``scores.csv``. Rows are
appended to ``--out`` (JSON lines) so a later run can re-score them without re-estimating
(``ceis_loss_anatomy.py --rows``). The default's seeds 1 and 2: ``benchmarks/results/cpu-seeds/``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ceis_cpu.py gelu-1l/hex gelu-2l/english --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from lowprob import ArgmaxIs, estimate
from lowprob.bench.scales import get_scale, load_problem
from lowprob.evaluation import abs_log10_error, covered, is_loss, log_estimate, loo_constant_losses, loo_losses
from lowprob.files import dumps_json

CPU = Path(__file__).parent / "results" / "cpu"


def committed(model: str, dist: str) -> dict[str, dict]:
    """MHIS's and ITGIS's leak-free figures on one pair, from the committed scores."""
    out = {}
    with (CPU / "scores.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["model"] == model and r["distribution"] == dist]
    for method in ("mhis", "itgis"):
        rs = [r for r in rows if r["method"] == method]
        out[method] = {"loss": np.mean([float(r["loss"]) for r in rs]),
                       "zeros": np.mean([r["zero"] == "True" for r in rs]),
                       "coverage": np.mean([r["covered"] == "True" for r in rs]),
                       "log10": np.median([float(r["abs_log10_error"]) for r in rs]),
                       "gflops": np.mean([float(r["flops"]) for r in rs]) / 1e9,
                       "seconds": np.median([float(r["seconds"]) for r in rs])}
    return out


def pair_targets(model: str, dist: str) -> list[int]:
    return json.loads((CPU / "rows" / model / f"{dist}.targets.json").read_text())["targets"]


def score(rows: list[dict]) -> dict:
    p = np.array([r["ground_truth"] for r in rows])
    q = np.array([r["probability"] for r in rows])
    lo, hi = np.array([r["interval"] for r in rows]).T
    clo, chi = np.array([r["diagnostics"]["clt_interval"] for r in rows]).T
    plo, phi = np.array([r["diagnostics"].get("compound_poisson_interval", r["interval"]) for r in rows]).T
    return {"loss": float(loo_losses(np.log(p), log_estimate(q)).mean()),
            "unfit": float(is_loss(np.log(p), log_estimate(q)).mean()),
            "constant": float(loo_constant_losses(np.log(p)).mean()),
            "zeros": float(np.mean(q == 0)), "coverage": float(np.mean(covered(p, lo, hi))),
            "clt_coverage": float(np.mean(covered(p, clo, chi))),
            "cp_coverage": float(np.mean(covered(p, plo, phi))),
            "log10": float(np.median(abs_log10_error(p, q))),
            "gflops": float(np.mean([r["cost"]["flops"] for r in rows])) / 1e9,
            "seconds": float(np.median([r["cost"]["seconds"] for r in rows]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pairs", nargs="+", help="model/distribution, e.g. gelu-1l/hex")
    parser.add_argument("--method", default="ceis")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hyper", default="{}", help="JSON hyper-parameters")
    parser.add_argument("--max-targets", type=int, default=None, help="every k-th target, to fit a time budget")
    parser.add_argument("--out", type=Path, default=None, help="append rows here (JSON lines)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    hyper = json.loads(args.hyper)
    scale = get_scale("cpu")
    header = (f"{'pair':22s} {'method':6s} {'seed':>4s} {'loss':>7s} {'const':>6s} {'unfit':>7s} {'zeros':>6s} "
              f"{'cover':>6s} "
              f"{'cpcov':>6s} {'cltcov':>6s} {'|log10|':>7s} {'GFLOP':>6s} {'sec':>6s}")
    print(header)
    for pair in args.pairs:
        model_name, dist_name = pair.split("/")
        model, dist, gt = load_problem(scale, model_name, dist_name)
        targets = pair_targets(model_name, dist_name)
        if args.max_targets and len(targets) > args.max_targets:
            targets = [targets[i] for i in np.linspace(0, len(targets) - 1, args.max_targets).round().astype(int)]
        for name, c in committed(model_name, dist_name).items():
            print(f"{pair:22s} {name:6s} {'cpu':>4s} {c['loss']:7.3f} {'':>6s} {'':>7s} {c['zeros']:6.0%} "
                  f"{c['coverage']:6.0%} "
                  f"{'':>6s} {'':>6s} {c['log10']:7.2f} {c['gflops']:6.1f} {c['seconds']:6.2f}")
        for seed in args.seeds:
            rows = []
            for t in targets:
                start = time.perf_counter()
                e = estimate(model, dist, ArgmaxIs(t), method=args.method, budget=scale.budget, seed=seed, **hyper)
                rows.append({"model": model_name, "distribution": dist_name, "target": t, "seed": seed,
                             "method": args.method, "hyper": hyper, "ground_truth": float(gt.probabilities[t]),
                             "probability": e.probability, "interval": list(e.interval),
                             "cost": {**e.to_json()["cost"], "seconds": time.perf_counter() - start},
                             "diagnostics": e.diagnostics})
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as f:
                    f.writelines(dumps_json(r) + "\n" for r in rows)
            s = score(rows)
            print(f"{pair:22s} {args.method:6s} {seed:4d} {s['loss']:7.3f} {s['constant']:6.3f} {s['unfit']:7.3g} "
                  f"{s['zeros']:6.0%} "
                  f"{s['coverage']:6.0%} {s['cp_coverage']:6.0%} {s['clt_coverage']:6.0%} {s['log10']:7.2f} "
                  f"{s['gflops']:6.1f} {s['seconds']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
