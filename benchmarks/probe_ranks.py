"""Where CEIS's white-box probe ranks each planted trigger value, per model, distribution and seed.

For each shipped trigger model and each distribution of its recipe, the swap scan CEIS runs by default at
budget 4096 (``lowprob.estimators.swap_scan``; base inputs as CEIS chooses them: as many as half the probe's
share buys, 2 .. 16) ranks every slot value by its evidence; this prints the rank of the trigger's values in
each slot of the conjunction (for a slot with several trigger values, the best-ranked one), and the largest
``k`` the candidate product of that run tries (a run whose worst rank is <= k holds the whole trigger).

    OMP_NUM_THREADS=1 python benchmarks/probe_ranks.py [--seeds 4] [--models gelu-2l-conj3,...]
"""

from __future__ import annotations

import argparse

import torch

from lowprob.cost import GRADIENT_CALL
from lowprob.distributions.planted import load_recipe
from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS, trigger_distribution
from lowprob.estimators.ceis import MAX_BASES, MIN_BASES, NEAR_HIT_BASES, margin_of
from lowprob.estimators.proposals import Supports
from lowprob.estimators.swap_scan import scan_cost, swap_scan
from lowprob.events import ArgmaxIs
from lowprob.models.zoo import SHIPPED_TRIGGER_MODELS, load_model
from lowprob.truth.trigger import model_recipe

BUDGET, PROBE_FRACTION = 4096, 0.25  # CEIS's defaults


def product_k(sup: Supports, positions: int, scan_passes: int, per_base: int) -> int:
    """The ``k`` CEIS's candidate product takes after a scan of ``scan_passes`` (``white_box_components``)."""
    room = int(PROBE_FRACTION * GRADIENT_CALL * BUDGET) - scan_passes
    near = NEAR_HIT_BASES * per_base
    size = room - near if room >= 2 * near else room
    return max(1, int(size ** (1 / positions) + 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHIPPED_TRIGGER_MODELS))
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | distribution | slot sizes | bases | k | trigger-value ranks per seed (slots in template order) |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, planted = load_model(name), load_recipe(model_recipe(name)).planted
        event = ArgmaxIs(planted.target_id(model.tokenizer))
        for dist_name, (recipe, _) in TRIGGER_DISTRIBUTIONS.items():
            if recipe != model_recipe(name):
                continue
            dist = trigger_distribution(dist_name, model.tokenizer)
            templated, units = dist.bind(model)
            sup, labels = Supports(units, templated.d_vocab), dist.unit_labels()
            per_base = scan_cost(sup, 1)
            bases = min(MAX_BASES, max(MIN_BASES, int(PROBE_FRACTION * GRADIENT_CALL * BUDGET / 2 / per_base)))
            runs, k = [], 0
            for seed in range(args.seeds):
                base = sup.sample(sup.prior, bases, torch.Generator().manual_seed(seed))
                scan = swap_scan(templated, sup, margin_of(event), base, event.token)
                k = product_k(sup, len(scan.positions), scan.forward_passes, per_base)
                ranks = []
                for i in scan.positions:
                    slot, texts = labels[i]
                    if slot not in planted.trigger:
                        continue
                    size = int(sup.sizes[i])
                    order = torch.argsort(scan.evidence[i, :size], descending=True).tolist()
                    ranks.append(min(order.index(c) + 1 for c in range(size)
                                     if texts[int(sup.ids[i, c])] in planted.trigger[slot]))
                runs.append(ranks)
            sizes = "×".join(str(len(s.values)) for s in dist.slots)
            cells = "; ".join(",".join(map(str, r)) + (" ✓" if max(r) <= k else "") for r in runs)
            print(f"| {name} | {dist_name} | {sizes} | {bases} | {k} | {cells} |", flush=True)
    print("\n✓: every trigger value within the top k of its slot, so the candidate product holds the trigger.")


if __name__ == "__main__":
    main()
