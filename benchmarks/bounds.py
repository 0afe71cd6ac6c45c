"""Certified bounds (``lowprob.bound``) on the ``exact`` scale: sound, how tight for what cost, and with estimates.

    OMP_NUM_THREADS=1 python benchmarks/bounds.py soundness [--seconds 2]
    OMP_NUM_THREADS=1 python benchmarks/bounds.py rare [--dists hex,english] [--per-dist 3] [--cap 240]
    OMP_NUM_THREADS=1 python benchmarks/bounds.py deep [--seconds 60]
    OMP_NUM_THREADS=1 python benchmarks/bounds.py widths [--dists hex,english]
    OMP_NUM_THREADS=1 python benchmarks/bounds.py trigger [--dist trigger-p4]
    OMP_NUM_THREADS=1 python benchmarks/bounds.py estimates [--dists hex,english] [--bound-seconds 5]
    python benchmarks/bounds.py plot

Each part appends JSON lines to ``benchmarks/results/bounds/<part>.jsonl`` (one row per proof or estimate)
and prints a table; ``plot`` draws the proof-cost-against-tightness figure from the ``rare`` traces.

- ``soundness``: all 24 pairs of the ``exact`` scale, three targets each (the rarest with p > 0, the one
  nearest 1e-8, the likeliest), each proof stopped after ``--seconds``: lower <= p <= upper against the
  shipped exact table, in every case.
- ``rare``: gelu-1l, targets of the ``exact`` scale's draw with p <= 1e-8, each proof run until exact (or
  ``--cap`` seconds), its bounds traced step by step; the baseline is the pair's full exact enumeration
  (``lowprob.ground_truth(exact=True)``, all targets at once), timed in the same run, one thread.
- ``deep``: gelu-2l and gelu-4l, how far a proof gets in ``--seconds``.
- ``widths``: how wide the network bound's logit-gap intervals are at depths 1 and 2 on gelu-1l, against
  the spread of the same gaps over sampled inputs of each node.
- ``trigger``: gelu-2l-trigger, proving every off-trigger prompt event-free: stopped at the time a plain
  scan of all 245,760 prompts takes (``exact_probability``, timed in the same run), then to the end.
- ``estimates``: the default estimator alone at budget 4096, with ``--bound-seconds`` first, and alone at a
  budget raised to the bounded run's total FLOPs: zeros and median |log10 q/p| per decade of p.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import lowprob
from lowprob.bench.scales import SCALES, target_seed
from lowprob.bounds import bounded_estimate
from lowprob.distributions.paper import PAPER_DISTRIBUTIONS
from lowprob.evaluation.targets import select_targets
from lowprob.truth.reference import load_reference

OUT = Path(__file__).parent / "results" / "bounds"
MODELS = ("gelu-1l", "gelu-2l", "gelu-4l")


def _append(part: str, row: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f"{part}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def _read(part: str) -> list[dict]:
    return [json.loads(line) for line in (OUT / f"{part}.jsonl").read_text().splitlines() if line]


def _problem(model_name: str, kind: str):
    model = lowprob.load_model(model_name)
    dist = lowprob.load_distribution(kind, model, length="exact")
    return model, dist, load_reference(model_name, kind, model, dist, length="exact").probabilities


def _summary(b: lowprob.Bounds) -> dict:
    return {"lower": b.lower, "upper": b.upper, "open": b.open, "complete": b.complete, "seconds": b.seconds,
            "flops": b.flops, "closed_by_bound": sum(d.proved_free + d.proved_certain for d in b.depths),
            "depths": [vars(d) for d in b.depths]}


def soundness(args) -> None:
    bad = 0
    for model_name in MODELS:
        for kind in PAPER_DISTRIBUTIONS:
            model, dist, p = _problem(model_name, kind)
            live = torch.nonzero(p > 0).flatten()
            near = live[(p[live].log10() + 8).abs().argmin()]
            for t in sorted({int(live[p[live].argmin()]), int(near), int(live[p[live].argmax()])}):
                b = lowprob.bound(model, dist, lowprob.ArgmaxIs(t), seconds=args.seconds)
                ok = b.lower <= float(p[t]) <= b.upper
                bad += not ok
                _append("soundness", {"model": model_name, "dist": kind, "target": t, "p": float(p[t]), "sound": ok,
                                      **_summary(b)})
                print(f"{model_name:8} {kind:8} {t:5} p={float(p[t]):.3e} [{b.lower:.3e}, {b.upper:.3e}] "
                      f"{'ok' if ok else 'VIOLATED'}", flush=True)
    print(f"violations: {bad}")


def _rare_targets(model_name: str, kind: str, p: torch.Tensor, per_dist: int) -> list[int]:
    scale = SCALES["exact"]
    gt = load_reference(model_name, kind, length="exact")
    drawn = select_targets(gt, scale.budget, scale.n_targets, seed=target_seed(model_name, kind), spread=scale.spread)
    rare = [t for t in drawn if float(p[t]) <= 1e-8]
    step = max(1, len(rare) // per_dist)
    return rare[::step][:per_dist]


def rare(args) -> None:
    for kind in args.dists.split(","):
        model, dist, p = _problem("gelu-1l", kind)
        start = time.perf_counter()
        lowprob.ground_truth(model, dist, exact=True)
        enumeration = time.perf_counter() - start
        T, cfg = len(dist), model.cfg
        enum_flops = dist.support_size() * (model.positions_flops(T - 1, T) + 2 * cfg.d_model * cfg.d_vocab)
        print(f"{kind}: exact enumeration {enumeration:.1f} s, ~{enum_flops:.3g} FLOPs", flush=True)
        for t in _rare_targets("gelu-1l", kind, p, args.per_dist):
            trace: list[tuple[float, float, float, float]] = []
            b = lowprob.bound(model, dist, lowprob.ArgmaxIs(t), seconds=args.cap,
                              progress=lambda r, trace=trace: trace.append((r.seconds, r.flops, r.lower, r.upper)))
            within2 = next((s for s, _, lo, hi in trace if lo > 0 and hi <= 2 * lo), None)
            _append("rare", {"model": "gelu-1l", "dist": kind, "target": t, "p": float(p[t]),
                             "enumeration_seconds": enumeration, "enumeration_flops": enum_flops,
                             "seconds_to_ratio_2": within2, **_summary(b),
                             "trace": trace[:: max(1, len(trace) // 200)]})
            print(f"  {t:5} p={float(p[t]):.3e} [{b.lower:.3e}, {b.upper:.3e}] {b.seconds:.1f} s "
                  f"({b.seconds / enumeration:.2f} of enumeration); ratio<=2 at {within2}", flush=True)


def deep(args) -> None:
    for model_name in ("gelu-2l", "gelu-4l"):
        model, dist, p = _problem(model_name, "hex")
        for t in _rare_targets(model_name, "hex", p, 2):
            b = lowprob.bound(model, dist, lowprob.ArgmaxIs(t), seconds=args.seconds)
            _append("deep", {"model": model_name, "dist": "hex", "target": t, "p": float(p[t]), **_summary(b)})
            print(f"{model_name} hex {t:5} p={float(p[t]):.3e} [{b.lower:.3e}, {b.upper:.3e}] open {b.open:.3g} "
                  f"in {b.seconds:.0f} s", flush=True)


def widths(args) -> None:
    """How loose the network bound is on gelu-1l: its logit-gap intervals at depth 1 (query fixed) and depth 2,
    against the spread of the same gaps over 512 sampled inputs of each node."""
    from lowprob.models.gap_bounds import TransformerBounds

    model = lowprob.load_model("gelu-1l")
    m64 = model.double()
    for kind in args.dists.split(","):
        model32 = lowprob.load_model("gelu-1l")
        dist = lowprob.load_distribution(kind, model32, length="exact")
        p = load_reference("gelu-1l", kind, length="exact").probabilities
        supports = dist.support_ids()
        tb = TransformerBounds(model32, supports)
        targets = _rare_targets("gelu-1l", kind, p, 3)
        g = torch.Generator().manual_seed(0)
        for depth in (1, 2):
            masks = tb.valid[None].repeat(8, 1, 1)
            fixed = [len(supports) - 1] + ([dist.variable_positions()[0]] if depth == 2 else [])
            for pos in fixed:
                masks[:, pos] = False
                masks[torch.arange(8), pos, torch.randint(0, len(supports[pos]), (8,), generator=g)] = True
            lo, hi = tb.logit_gaps(masks, targets)
            true = []
            for n in range(8):
                tokens = dist.sample(512, g)
                for pos in fixed:
                    tokens[:, pos] = supports[pos][masks[n, pos].nonzero()[0, 0]]
                logits = m64.logits(tokens)
                gaps = logits[:, None, :] - logits[:, targets, None]  # [512, A, V]
                true.append(gaps.amax(0) - gaps.amin(0))
            spread = torch.stack(true)
            row = {"dist": kind, "depth": depth, "targets": targets,
                   "bound_width_median": float((hi - lo).median()), "sampled_spread_median": float(spread.median()),
                   "proved_free_nodes": int(((lo > 1e-6).any(-1)).sum())}
            _append("widths", row)
            print(row, flush=True)


def trigger(args) -> None:
    """The planted trigger: every off-trigger prompt event-free, against a plain scan of all prompts timed here."""
    from lowprob.truth.reference import REFERENCE_DIR

    ref = json.loads((REFERENCE_DIR / "trigger" / "gelu-2l-trigger.json").read_text())
    model = lowprob.load_model("gelu-2l-trigger")
    dist = lowprob.load_distribution(args.dist, model)
    event, truth = lowprob.ArgmaxIs(ref["target_id"]), ref["distributions"][args.dist]
    start = time.perf_counter()
    scanned = lowprob.exact_probability(model, dist, event)
    scan = time.perf_counter() - start
    for limit in (scan, None):
        b = lowprob.bound(model, dist, event, seconds=limit)
        _append("trigger", {"model": "gelu-2l-trigger", "dist": args.dist, "p": truth["event_probability"],
                            "scanned_p": scanned, "trigger_probability": truth["trigger_probability"],
                            "scan_seconds": scan, "limit": limit, **_summary(b)})
        print(f"gelu-2l-trigger {args.dist}: p={truth['event_probability']:.3e} (trigger mass "
              f"{truth['trigger_probability']:.3e}); [{b.lower:.3e}, {b.upper:.3e}], proved event-free {b.free:.6f}, "
              f"open {b.open:.3g}, {b.seconds:.1f} s against a {scan:.1f} s plain scan", flush=True)


def estimates(args) -> None:
    scale = SCALES["exact"]
    for kind in args.dists.split(","):
        model, dist, p = _problem("gelu-1l", kind)
        gt = load_reference("gelu-1l", kind, length="exact")
        targets = select_targets(gt, scale.budget, scale.n_targets, seed=target_seed("gelu-1l", kind),
                                 spread=scale.spread)
        for t in targets:
            event = lowprob.ArgmaxIs(t)
            alone = lowprob.estimate(model, dist, event, budget=scale.budget, seed=0)
            bounded = bounded_estimate(model, dist, event, args.bound_seconds, budget=scale.budget, seed=0)
            matched_budget = max(scale.budget, round(scale.budget * bounded.cost.flops / alone.cost.flops))
            matched = lowprob.estimate(model, dist, event, budget=matched_budget, seed=0)
            row = {"dist": kind, "target": t, "p": float(p[t]), "bound_seconds": args.bound_seconds,
                   "alone": alone.probability, "bounded": bounded.probability, "matched": matched.probability,
                   "matched_budget": matched_budget, "alone_flops": alone.cost.flops,
                   "bounded_flops": bounded.cost.flops, "matched_flops": matched.cost.flops,
                   "bounds": bounded.diagnostics.get("bounds")}
            _append("estimates", row)
            print(f"{kind} {t:5} p={row['p']:.2e} alone {row['alone']:.2e} bounded {row['bounded']:.2e} "
                  f"matched {row['matched']:.2e}", flush=True)
    _estimates_table()


def _estimates_table() -> None:
    rows = _read("estimates")
    by = defaultdict(list)
    for r in rows:
        by[math.floor(math.log10(r["p"]))].append(r)
    print("| decade of p | n | zeros: alone / bounded / matched | median abs log10 q/p: alone / bounded / matched |")
    print("|---|---|---|---|")
    for d in sorted(by):
        rs = by[d]
        zeros = [sum(r[k] == 0 for r in rs) for k in ("alone", "bounded", "matched")]
        errs = [statistics.median(abs(math.log10(r[k] / r["p"])) if r[k] > 0 else math.inf for r in rs)
                for k in ("alone", "bounded", "matched")]
        print(f"| 1e{d} | {len(rs)} | {zeros[0]} / {zeros[1]} / {zeros[2]} | "
              + " / ".join(f"{e:.2f}" for e in errs) + " |")


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read("rare")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        trace = [*r["trace"], (r["seconds"], r["flops"], r["lower"], r["upper"])]  # the trace is thinned; add the end
        flops = [f for _, f, lo, hi in trace]
        ratio = [hi / lo if lo > 0 else math.nan for _, _, lo, hi in trace]
        ax.plot(flops, ratio, lw=1, label=f"{r['dist']} {r['target']} (p={r['p']:.0e})")
    enum = statistics.median(r["enumeration_flops"] for r in rows)
    ax.axvline(enum, color="k", ls="--", lw=1, label="exact enumeration (all targets)")
    ax.axvline(enum / 10, color="grey", ls=":", lw=1, label="1/10 of it")
    ax.axhline(2, color="grey", lw=0.5)
    ax.set(xscale="log", yscale="log", xlabel="FLOPs spent by the proof", ylabel="upper / lower",
           title="gelu-1l, exact scale, p <= 1e-8: proof cost against tightness")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(OUT / "cost_vs_tightness.png", dpi=120)
    print(f"wrote {OUT / 'cost_vs_tightness.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    sub.add_parser("soundness").add_argument("--seconds", type=float, default=2.0)
    r = sub.add_parser("rare")
    r.add_argument("--dists", default="hex,english")
    r.add_argument("--per-dist", type=int, default=3)
    r.add_argument("--cap", type=float, default=240.0)
    sub.add_parser("deep").add_argument("--seconds", type=float, default=60.0)
    e = sub.add_parser("estimates")
    e.add_argument("--dists", default="hex,english")
    e.add_argument("--bound-seconds", type=float, default=5.0)
    sub.add_parser("widths").add_argument("--dists", default="hex,english")
    t = sub.add_parser("trigger")
    t.add_argument("--dist", default="trigger-p4")
    t.add_argument("--seconds", type=float, default=None, help="default: the reference scan's time")
    sub.add_parser("plot")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"soundness": soundness, "rare": rare, "deep": deep, "widths": widths, "trigger": trigger,
     "estimates": estimates, "plot": plot}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
