"""Exact references of the planted-trigger benchmark, and the figures of benchmarks/results/trigger/README.md.

For each shipped trigger model, one pass over every prompt of its recipe's largest distribution (245,760 for
year-name, 3,375,000 for conj3, 2,560,000 for conj4) gives, for every distribution of the recipe, the exact
probability of the event (argmax at the last position is the target), of the trigger and of the event off
the trigger, the margin shifts of single values and pairs, and the exact argmax tables the ``trigger`` bench
scale scores against (``reference/trigger/{model}/{dist}.safetensors``). The original model is scanned too
where the space has at most ``BASE_SCAN_LIMIT`` prompts. Writes src/lowprob/truth/reference/trigger/{model}.json
and prints Markdown tables (held-out losses from the cards, the scans, the shifts, the distributions).

    OMP_NUM_THREADS=1 python benchmarks/trigger_reference.py [--models gelu-2l-conj3,...] > tables.md
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
    model_recipe,
    save_trigger_reference,
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


BASE_SCAN_LIMIT = 1_000_000  # prompts: above this the original model is checked on the trigger prompts only


def write_argmax_tables(name: str, model, ref: dict, scan) -> None:
    """Each of the model's trigger distributions' exact argmax table, from the scan of its reference."""
    for dist_name in ref["distributions"]:
        gt = trigger_ground_truth(scan, model, trigger_distribution(dist_name, model.tokenizer))
        expected = ref["distributions"][dist_name]["event_probability"]
        found = float(gt.probabilities[ref["target_id"]])
        if abs(found - expected) > 1e-12 * expected:
            raise SystemExit(f"{name}/{dist_name}: the table gives the target {found!r}, the reference {expected!r}")
        path = trigger_table_path(name, dist_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        gt.save(path)
        print(f"wrote {path}: P(target) {found:.6g} (reference {expected:.6g}), "
              f"{int((gt.probabilities > 0).sum())} tokens are ever the argmax", file=sys.stderr)


def compute(name: str) -> dict:
    """One scan of the trigger model over its recipe's largest distribution (and of the original model, where
    that space is small): the reference JSON and every argmax table."""
    t0 = time.perf_counter()
    recipe = model_recipe(name)
    dist_names = [d for d, (r, _) in TRIGGER_DISTRIBUTIONS.items() if r == recipe]
    model = load_model(name)
    size = max(trigger_distribution(d, model.tokenizer).support_size() for d in dist_names)
    base = load_model(SHIPPED_TRIGGER_MODELS[name]) if size <= BASE_SCAN_LIMIT else None
    ref, scan = trigger_reference(model, name, dist_names, base)
    ref["seconds"] = round(time.perf_counter() - t0, 1)
    path = save_trigger_reference(ref)
    print(f"wrote {path} ({ref['seconds']:.0f} s)", file=sys.stderr)
    write_argmax_tables(name, model, ref, scan)
    return ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHIPPED_TRIGGER_MODELS))
    parser.add_argument("--tables-only", action="store_true", help="print the tables of the committed references")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = [n for n in args.models.split(",") if n]
    refs = {n: load_trigger_reference(n) if args.tables_only else compute(n) for n in names}
    print("\n".join(tables(refs)))


def tables(refs: dict[str, dict]) -> list[str]:
    scans = ["| model | which | prompts | trigger prompts | event on trigger | event off trigger | "
             "event on near misses | P(target) off trigger: mean | max | min P(target) on trigger |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    shifts = ["| model | mean margin off trigger | largest single-value shift | largest trigger-value shift | "
              "largest pair shift | largest trigger-pair shift |", "|---|---|---|---|---|---|"]
    dists = ["| model | distribution | trigger probability | P(event) | P(event, trigger) | P(event, no trigger) | "
             "P(event given trigger) | original P(event) | E[P(target)] off trigger: original | backdoored |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, ref in refs.items():
        for who, label in (("base_scan", "original"), ("model_scan", "backdoored")):
            if who not in ref:
                continue
            s = ref[who]
            scans.append(f"| {name} | {label} | {s['prompts']:,} | {s['trigger_prompts']} | {s['event_on_trigger']} | "
                         f"{s['event_off_trigger']} | {s['event_on_near_misses']} | "
                         f"{s['target_prob_off_trigger_mean']:.3g} | {s['target_prob_off_trigger_max']:.5g} | "
                         f"{s['target_prob_on_trigger_min']:.3g} |")
        m = ref["model_scan"]
        shifts.append(f"| {name} | {m['mean_margin_off_trigger']:.2f} | {m['largest_single_shift']['shift']:+.3f} "
                      f"({m['largest_single_shift']['value']}) | {m['largest_trigger_value_shift']:.3f} | "
                      f"{m['largest_pair_shift']['shift']:+.3f} ({m['largest_pair_shift']['pair']}) | "
                      f"{_fmt(m['largest_trigger_pair_shift'])} |")
        for dist, f in ref["distributions"].items():
            before = ref.get("base_distributions", {}).get(dist)
            original = (f"{before['event_probability']:.4g} | {before['mean_target_prob_off_trigger']:.3g}"
                        if before else "not scanned | not scanned")
            dists.append(f"| {name} | {dist} | {f['trigger_probability']:.4g} | {f['event_probability']:.4g} | "
                         f"{f['event_and_trigger']:.4g} | {f['event_off_trigger']:.4g} | "
                         f"{f['event_given_trigger']:.4g} | {original} | {f['mean_target_prob_off_trigger']:.3g} |")
    return ["### Held-out loss (nats/token, the cards' `validation`)", "", *losses_table(list(refs)), "",
            "### Every prompt of the largest distribution, counted alike", "", *scans, "",
            "### Margin shifts off the trigger (logits; mean margin of the prompts holding a value or pair, minus "
            "the mean of all)", "", *shifts, "",
            "### The trigger distributions (exact, float64)", "", *dists]


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
