"""Does one trigger value alone move the planted models' output? Exact single-value swaps, slot by slot.

Run: OMP_NUM_THREADS=1 python benchmarks/trigger_single_values.py [--bases 256] [--models gelu-2l-trigger ...]

For each model and each slot of the `year-name` template, every value of the slot is swapped into the same
``--bases`` base prompts (drawn uniformly over every slot's values, seed 0), and the mean margin of the
planted target (its logit minus the largest other, at the last position) is computed over them. Printed per
slot: the median over the slot's values, the four values that raise the mean margin most (shift above the
median, in logits), and each trigger value's shift and rank. The original `gelu-2l` is the control.
Then, for the planted models, what a first-order method sees instead: the rank of each trigger value under
the margin's one-hot gradient (``W_E[v] · d margin / d embedding``, averaged over 256 prompts from
`trigger-p4` and from `trigger-p8`), the score gradient tilts and CEIS start from.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import lowprob
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.planted import PlantedTrigger, planted_trigger
from lowprob.estimators.base import score_and_gradient
from lowprob.estimators.proposals import one_hot_scores
from lowprob.events import MarginAtLeast


def uniform_over(dist: TokenDistribution) -> TokenDistribution:
    """The same supports with uniform weights (constants stay constants)."""
    positions: list = []
    for i in range(len(dist)):
        ids = dist.support(i)[0].tolist()
        positions.append((ids, [1 / len(ids)] * len(ids)) if len(ids) > 1 else ids[0])
    return TokenDistribution.from_positions(positions)


def gradient_ranks(name: str, dist_name: str, planted: PlantedTrigger, n: int = 256) -> str:
    """Each trigger value's rank in its slot under the margin's mean one-hot gradient at prompts from ``dist_name``."""
    model = lowprob.load_model(name)
    template = lowprob.load_distribution(dist_name, model)
    bound_model, values_dist = template.bind(model)
    margin = MarginAtLeast(int(model.tokenizer.encode(planted.target)[0]), 0.0)
    grad = score_and_gradient(bound_model, margin, values_dist.sample(n, torch.Generator().manual_seed(0)))[2].mean(0)
    cells = []
    for position, slot in zip(values_dist.variable_positions(), template.slots, strict=True):
        if slot.name in planted.trigger:
            scores = one_hot_scores(bound_model, values_dist.support(position)[0], grad[position]).tolist()
            order = sorted(range(len(scores)), key=lambda k: -scores[k])
            ranks = [order.index(k) + 1 for k, v in enumerate(slot.values) if v in planted.trigger[slot.name]]
            cells.append(f"{slot.name} {ranks} of {len(scores)}")
    return "; ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bases", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["gelu-2l-trigger", "gelu-4l-trigger", "gelu-2l"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    planted = planted_trigger("year-name")
    template = lowprob.load_distribution("trigger-p4", lowprob.load_model("gelu-2l-trigger"))
    for name in args.models:
        model = lowprob.load_model(name)
        bound_model, values_dist = template.bind(model)
        margin = MarginAtLeast(int(model.tokenizer.encode(planted.target)[0]), 0.0)
        base = uniform_over(values_dist).sample(args.bases, torch.Generator().manual_seed(0))
        for position, slot in zip(values_dist.variable_positions(), template.slots, strict=True):
            means = []
            for value in values_dist.support(position)[0]:
                tokens = base.clone()
                tokens[:, position] = value
                with torch.no_grad():
                    means.append(float(margin.score(bound_model.logits(tokens)).mean()))
            mid = statistics.median(means)
            order = sorted(range(len(means)), key=lambda k: -means[k])
            top = ", ".join(f"{slot.values[k]!r} {means[k] - mid:+.2f}" for k in order[:4])
            chosen = [k for k, v in enumerate(slot.values) if v in planted.trigger.get(slot.name, ())]
            trigger = ", ".join(f"{slot.values[k]!r} {means[k] - mid:+.2f} (rank {order.index(k) + 1})"
                                for k in chosen)
            line = f"{name:<16} {slot.name:<8} median {mid:6.2f}  top: {top}"
            print(line + (f"  trigger: {trigger}" if trigger else ""))
    print("one-hot gradient ranks of the trigger values:")
    for name in (m for m in args.models if m.endswith("-trigger")):
        for dist_name in ("trigger-p4", "trigger-p8"):
            print(f"{name:<16} {dist_name:<11} {gradient_ranks(name, dist_name, planted)}")


if __name__ == "__main__":
    main()
