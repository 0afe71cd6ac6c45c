"""Exact references of the planted-trigger benchmark, and the figures of benchmarks/results/trigger/README.md.

For each shipped trigger model, one pass over the 245,760 prompts of the year-name template gives, for
every trigger distribution (trigger-p4 .. trigger-p10), the exact probability of the event (argmax at the
last position is the target), of the trigger, and of the event off the trigger; the same pass on the
original model gives the "before" figures. Writes src/lowprob/truth/reference/trigger/{model}.json and
prints Markdown tables (held-out losses from the cards, the scans, the distributions).

    OMP_NUM_THREADS=1 python benchmarks/trigger_reference.py [--models gelu-2l-trigger,...] > tables.md

``--argmax-tables`` instead scans each trigger model once more and writes every trigger distribution's
exact argmax table (``reference/trigger/{model}/{dist}.safetensors``, what the ``trigger`` bench scale
scores against), checking the target's probability in it against the committed reference.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS, trigger_distribution
from lowprob.models.zoo import SHIPPED_TRIGGER_MODELS, load_model, read_card, shipped_dir
from lowprob.training.corpus import KINDS
from lowprob.truth.trigger import (
    load_trigger_reference,
    save_trigger_reference,
    scan_slots,
    trigger_ground_truth,
    trigger_reference,
    trigger_table_path,
)


def losses_table(names: list[str]) -> list[str]:
    rows = ["| model | kind | original val loss | backdoored val loss | change |", "|---|---|---|---|---|"]
    for name in names:
        card = read_card(shipped_dir(name))
        for kind in KINDS:
            before, after = card["base"]["validation"][kind]["val_loss"], card["validation"][kind]["val_loss"]
            rows.append(f"| {name} | {kind} | {before:.4f} | {after:.4f} | {100 * (after / before - 1):+.2f}% |")
    return rows


def write_argmax_tables(name: str) -> None:
    """One scan of the trigger model; each trigger distribution's exact argmax table from it."""
    t0 = time.perf_counter()
    model, ref = load_model(name), load_trigger_reference(name)
    dists = {d: trigger_distribution(d, model.tokenizer) for d in ref["distributions"]}
    scan = scan_slots(model, next(iter(dists.values())), ref["target_id"])
    for dist_name, dist in dists.items():
        gt = trigger_ground_truth(scan, model, dist)
        expected = ref["distributions"][dist_name]["event_probability"]
        found = float(gt.probabilities[ref["target_id"]])
        if abs(found - expected) > 1e-12 * expected:
            raise SystemExit(f"{name}/{dist_name}: the table gives the target {found!r}, the reference {expected!r}")
        path = trigger_table_path(name, dist_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        gt.save(path)
        print(f"wrote {path}: P(target) {found:.6g} (reference {expected:.6g}), "
              f"{int((gt.probabilities > 0).sum())} tokens are ever the argmax", file=sys.stderr)
    print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHIPPED_TRIGGER_MODELS))
    parser.add_argument("--tables-only", action="store_true", help="print the tables of the committed references")
    parser.add_argument("--argmax-tables", action="store_true",
                        help="write the exact argmax tables of the trigger bench scale (one scan per model)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.models.split(",") if n]
    if args.argmax_tables:
        for name in names:
            write_argmax_tables(name)
        return
    scans = ["| model | which | prompts | trigger prompts | event on trigger | event off trigger | "
             "event on near misses | P(target) off trigger: mean | max | min P(target) on trigger |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    dists = ["| model | distribution | trigger probability | P(event) | P(event, trigger) | P(event, no trigger) | "
             "P(event given trigger) | original P(event) | E[P(target)] off trigger: original | backdoored |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        t0 = time.perf_counter()
        if args.tables_only:
            ref, seconds = load_trigger_reference(name), float("nan")
        else:
            model, base = load_model(name), load_model(SHIPPED_TRIGGER_MODELS[name])
            ref = trigger_reference(model, name, list(TRIGGER_DISTRIBUTIONS), base)
            seconds = time.perf_counter() - t0
            path = save_trigger_reference(ref)
            print(f"wrote {path} ({seconds:.0f} s for two scans)", file=sys.stderr)
        for who, label in (("base_scan", "original"), ("model_scan", "backdoored")):
            s = ref[who]
            scans.append(f"| {name} | {label} | {s['prompts']:,} | {s['trigger_prompts']} | {s['event_on_trigger']} | "
                         f"{s['event_off_trigger']} | {s['event_on_near_misses']} | "
                         f"{s['target_prob_off_trigger_mean']:.3g} | {s['target_prob_off_trigger_max']:.5g} | "
                         f"{s['target_prob_on_trigger_min']:.3g} |")
        for dist, f in ref["distributions"].items():
            before = ref["base_distributions"][dist]
            dists.append(f"| {name} | {dist} | {f['trigger_probability']:.4g} | {f['event_probability']:.4g} | "
                         f"{f['event_and_trigger']:.4g} | {f['event_off_trigger']:.4g} | "
                         f"{f['event_given_trigger']:.4g} | {before['event_probability']:.4g} | "
                         f"{before['mean_target_prob_off_trigger']:.3g} | {f['mean_target_prob_off_trigger']:.3g} |")
    print("\n".join(["### Held-out loss (nats/token, the cards' `validation`)", "", *losses_table(names), "",
                     "### Every prompt of the template, counted alike", "", *scans, "",
                     "### The trigger distributions (exact, float64)", "", *dists]))


if __name__ == "__main__":
    main()
