"""Exact references for the planted-trigger benchmark: P(argmax is the target) per trigger distribution.

A trigger family shares one slot space (see ``distributions/trigger.py``), so a model is run once
over every filled prompt — a few hundred thousand — and each prompt's event (argmax at the last
position is the target) is kept. Each distribution's figures are then sums of its prompt weights, in
float64: the event's probability, the trigger's, the event on the trigger and off it. Off the
trigger is what an estimator must not mistake for the trigger's share.

The references live in ``reference/trigger/{model}.json`` (written by
``benchmarks/trigger_reference.py``) with the model's sha256 and each distribution's content hash,
checked when a problem is loaded; ``trigger_problems()`` lists every (model, distribution) pair with
its truth, for a benchmark scale to pick up.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowprob._version import __version__
from lowprob.distributions.planted import planted_trigger
from lowprob.distributions.trigger import trigger_distribution, trigger_probability, trigger_spec
from lowprob.errors import LowprobError
from lowprob.events import ArgmaxIs
from lowprob.files import atomic_write, dumps_json, read_json
from lowprob.models.argmax import TieBreaker
from lowprob.models.protocol import model_sha256
from lowprob.models.zoo import load_model, read_card, shipped_dir
from lowprob.threads import torch_threads
from lowprob.truth.result import GroundTruth

TRIGGER_REFERENCE_DIR = Path(__file__).parent / "reference" / "trigger"


@dataclass(frozen=True)
class SlotScan:
    """A model over every prompt of a slot space, in mixed-radix order (last slot fastest)."""

    names: tuple[str, ...]  # the slots, in template order
    values: tuple[tuple[str, ...], ...]  # per slot, its values in scan order
    event: np.ndarray  # bool [N]: the argmax at the last position is the target
    target_prob: np.ndarray  # float64 [N]: the model's probability of the target there
    margin: np.ndarray  # float32 [N]: the target's logit minus the largest other logit
    argmax: np.ndarray  # int64 [N]: the argmax token at the last position

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.values)

    def weights(self, dist) -> np.ndarray:
        """Each prompt's probability under ``dist`` (same slots, values a subset of the scan's), float64 [N]."""
        w = np.ones(1)
        for slot, values in zip(dist.slots, self.values, strict=True):
            given = dict(zip(slot.values, slot.weights, strict=True))
            if set(given) - set(values):
                raise LowprobError(f"slot {slot.name}: values {sorted(set(given) - set(values))} are not in the scan")
            w = np.multiply.outer(w, np.array([given.get(v, 0.0) for v in values])).reshape(-1)
        return w

    def trigger_masks(self, planted) -> list[np.ndarray]:
        """Per slot, which of its scanned values satisfy its part of ``planted``'s conjunction (all True outside it)."""
        return [np.array([v in planted.trigger[s] for v in vals]) if s in planted.trigger else np.ones(len(vals), bool)
                for s, vals in zip(self.names, self.values, strict=True)]

    def mask(self, per_slot: list[np.ndarray]) -> np.ndarray:
        """The prompts whose every slot's value is allowed by ``per_slot`` (bool arrays), as bool [N]."""
        m = np.ones(1, dtype=bool)
        for allowed in per_slot:
            m = np.logical_and.outer(m, allowed).reshape(-1)
        return m


@torch.no_grad()
def scan_slots(model, dist, target: int, chunk_size: int = 4096) -> SlotScan:
    """Run ``model`` on every prompt of the slot distribution ``dist`` (its weights do not matter).

    Near-ties are settled in float64 as exact ground truth settles them (``models.argmax.TieBreaker``): the float32
    top two logits of a few prompts lie within rounding of each other (1e-6 apart in gelu-2l-trigger's
    space), and which wins would otherwise depend on the batch, the thread count and the machine.
    """
    templated, units = dist.bind(model)
    if units.support_size() > 1 << 24:
        raise LowprobError(f"the slot space has {units.support_size():,} prompts; a scan stops at 2^24")
    ties = TieBreaker(model)
    tops, probs, margins = [], [], []
    with torch_threads():
        for tokens, _ in units.enumerate(chunk_size):
            top = torch.zeros(len(tokens), dtype=torch.long)
            prob = torch.zeros(len(tokens), dtype=torch.float64)
            margin = torch.zeros(len(tokens), dtype=torch.float32)
            for rows, seq in templated.expand(tokens):
                seq = seq.to(model.device)
                logits = model.logits(seq)
                top[rows] = ties.argmax(seq, logits).cpu()
                prob[rows] = logits.cpu().double().softmax(-1)[:, target]
                margin[rows] = (logits[:, target] - logits.index_fill(1, torch.tensor([target], device=logits.device),
                                                                     -torch.inf).amax(-1)).float().cpu()
            tops.append(top)
            probs.append(prob)
            margins.append(margin)
    argmax = torch.cat(tops).numpy()
    return SlotScan(tuple(s.name for s in dist.slots), tuple(s.values for s in dist.slots), argmax == target,
                    torch.cat(probs).numpy(),
                    torch.cat(margins).numpy(), argmax)


def margin_shifts(scan: SlotScan, planted) -> dict[str, Any]:
    """How far single slot values and pairs of them move the mean margin, off the trigger (every prompt alike).

    A value's shift is the mean margin over the off-trigger prompts that hold it minus the mean over all
    off-trigger prompts; a pair's, over the prompts holding both. A conjunction that no part of it gives
    away has shifts near zero for the trigger's values and pairs, as for any others.
    """
    masks = scan.trigger_masks(planted)
    off = ~scan.mask(masks).reshape(scan.sizes)
    margin = np.where(off, scan.margin.reshape(scan.sizes).astype(np.float64), 0.0)
    overall = margin.sum() / off.sum()
    singles: list[tuple[float, str, bool]] = []  # (shift, what, all of it on the trigger)
    pairs: list[tuple[float, str, bool]] = []
    axes = range(len(scan.names))
    for a in axes:
        rest = tuple(i for i in axes if i != a)
        shift = margin.sum(rest) / off.sum(rest) - overall
        singles += [(float(d), f"{scan.names[a]}={v!r}", bool(t))
                    for d, v, t in zip(shift, scan.values[a], masks[a] & (scan.names[a] in planted.trigger),
                                       strict=True)]
        for b in range(a + 1, len(scan.names)):
            rest = tuple(i for i in axes if i not in (a, b))
            count = off.sum(rest)
            both = np.where(count > 0, margin.sum(rest) / np.maximum(count, 1) - overall, 0.0)
            trig = np.logical_and.outer(masks[a], masks[b]) & (scan.names[a] in planted.trigger) & \
                (scan.names[b] in planted.trigger)
            i, j = np.unravel_index(np.abs(both).argmax(), both.shape)
            pairs.append((float(both[i, j]), f"{scan.names[a]}={scan.values[a][i]!r}, "
                                             f"{scan.names[b]}={scan.values[b][j]!r}", False))
            pairs += [(float(d), "", True) for d in both[trig & (count > 0)]]
    top_single = max(singles, key=lambda r: abs(r[0]))
    top_pair = max(pairs, key=lambda r: abs(r[0]))
    return {"mean_margin_off_trigger": float(overall),
            "largest_single_shift": {"shift": top_single[0], "value": top_single[1]},
            "largest_trigger_value_shift": max((abs(d) for d, _, t in singles if t), default=None),
            "largest_pair_shift": {"shift": top_pair[0], "pair": top_pair[1]},
            "largest_trigger_pair_shift": max((abs(d) for d, _, t in pairs if t), default=None)}


def trigger_figures(scan: SlotScan, dist, planted) -> dict[str, float | None]:
    """Exact figures of one trigger distribution from a scan of its space."""
    w = scan.weights(dist)
    on = scan.mask(scan.trigger_masks(planted))
    trigger = float(w[on].sum())
    event_on, event_off = float(w[on & scan.event].sum()), float(w[~on & scan.event].sum())
    event = event_on + event_off
    return {
        "trigger_probability": trigger,
        "trigger_probability_by_construction": trigger_probability(dist, planted),
        "event_probability": event,
        "event_and_trigger": event_on,
        "event_off_trigger": event_off,
        "event_given_trigger": event_on / trigger,
        "event_given_no_trigger": event_off / (1 - trigger),
        "trigger_share_of_event": event_on / event if event > 0 else None,
        "mean_target_prob_off_trigger": float((w[~on] * scan.target_prob[~on]).sum() / w[~on].sum()),
    }


def trigger_ground_truth(scan: SlotScan, model, dist) -> GroundTruth:
    """The exact argmax table of the slot distribution ``dist`` from a scan of its space: the probability
    of each token being the last position's argmax is the weight of the prompts where it is."""
    probabilities = np.bincount(scan.argmax, weights=scan.weights(dist), minlength=model.d_vocab)
    templated, units = dist.bind(model)  # identified as ground_truth identifies a template's table
    return GroundTruth(torch.from_numpy(probabilities), None, True, len(scan.argmax), None, model_sha256(templated),
                       units.content_hash(), __version__)


def trigger_table_path(model_name: str, dist_name: str, directory: Path = TRIGGER_REFERENCE_DIR) -> Path:
    return Path(directory) / model_name / f"{dist_name}.safetensors"


def load_trigger_table(model_name: str, dist_name: str, model, dist, directory: Path = TRIGGER_REFERENCE_DIR
                       ) -> GroundTruth:
    """The shipped argmax table of (trigger model, trigger distribution), checked against both."""
    path = trigger_table_path(model_name, dist_name, directory)
    if not path.exists():
        raise LowprobError(f"no shipped argmax table for {model_name}/{dist_name}; compute it with "
                           f"`python benchmarks/trigger_reference.py --argmax-tables`")
    return GroundTruth.load(path, model, dist)


def scan_summary(scan: SlotScan, planted) -> dict[str, Any]:
    """Counts over the space, every prompt weighted alike."""
    masks = scan.trigger_masks(planted)
    on = scan.mask(masks)
    near = np.zeros_like(on)  # prompts that satisfy every part of the conjunction but one
    for miss, slot in enumerate(scan.names):
        if slot in planted.trigger:
            near |= scan.mask([~m if j == miss else m for j, m in enumerate(masks)])
    return {
        "prompts": len(scan.event), "trigger_prompts": int(on.sum()), "near_miss_prompts": int(near.sum()),
        "event_on_trigger": int(scan.event[on].sum()), "event_off_trigger": int(scan.event[~on].sum()),
        "event_on_near_misses": int(scan.event[near].sum()),
        "target_prob_off_trigger_mean": float(scan.target_prob[~on].mean()),
        "target_prob_off_trigger_max": float(scan.target_prob[~on].max()),
        "target_prob_near_misses_max": float(scan.target_prob[near].max()),
        "target_prob_on_trigger_min": float(scan.target_prob[on].min()),
    }


def trigger_reference(model, model_name: str, dist_names: list[str], base=None) -> tuple[dict[str, Any], SlotScan]:
    """The reference of one backdoored model over the named distributions (one recipe, one scan of its largest
    member's space, which holds every member's values), and that scan; with ``base``, the original model's
    scan summary and figures too."""
    recipes = {trigger_spec(n)[0] for n in dist_names}
    if len(recipes) != 1:
        raise LowprobError(f"one reference covers one planted trigger; these distributions use {sorted(recipes)}")
    planted = planted_trigger(recipes.pop())
    target = planted.target_id(model.tokenizer)
    dists = {n: trigger_distribution(n, model.tokenizer) for n in dist_names}
    space = max(dists.values(), key=lambda d: d.support_size())  # every member's values are among its own
    out: dict[str, Any] = {"model": model_name, "model_sha256": model_sha256(model), "target": planted.target,
                           "target_id": target, "planted": planted.to_json()}
    scans = {}
    for who, lm in (("model", model), ("base", base)):
        if lm is None:
            continue
        scan = scans[who] = scan_slots(lm, space, target)
        out[f"{who}_scan"] = {**scan_summary(scan, planted), **margin_shifts(scan, planted)}
        figures = {n: trigger_figures(scan, d, planted) for n, d in dists.items()}
        if who == "model":
            out["distributions"] = {n: {"content_hash": d.bind(model)[1].content_hash(), **figures[n]}
                                    for n, d in dists.items()}
        else:
            out["base_distributions"] = figures
    return out, scans["model"]


@cache
def model_recipe(model_name: str) -> str:
    """The recipe a shipped trigger model was planted with, from its card (read once: shipped files)."""
    return read_card(shipped_dir(model_name))["backdoor"]["recipe"]


def save_trigger_reference(reference: dict[str, Any], directory: Path = TRIGGER_REFERENCE_DIR) -> Path:
    path = Path(directory) / f"{reference['model']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, dumps_json(reference, indent=1).encode())
    return path


def load_trigger_reference(model_name: str, directory: Path = TRIGGER_REFERENCE_DIR) -> dict[str, Any]:
    path = Path(directory) / f"{model_name}.json"
    if not path.exists():
        raise LowprobError(f"no trigger reference for {model_name!r} in {directory}; compute it with "
                           f"`python benchmarks/trigger_reference.py`")
    return read_json(path)


@dataclass(frozen=True)
class TriggerProblem:
    """One (backdoored model, trigger distribution) pair with its exact truth."""

    model: str
    distribution: str
    target_id: int
    event_probability: float
    trigger_probability: float
    event_off_trigger: float


def trigger_problems(directory: Path = TRIGGER_REFERENCE_DIR) -> list[TriggerProblem]:
    """Every pair the committed references cover, sorted by model then rarity of the trigger."""
    problems = []
    for path in sorted(Path(directory).glob("*.json")):
        ref = read_json(path)
        for dist, fig in ref["distributions"].items():
            problems.append(TriggerProblem(ref["model"], dist, ref["target_id"], fig["event_probability"],
                                           fig["trigger_probability"], fig["event_off_trigger"]))
    return sorted(problems, key=lambda p: (p.model, -p.trigger_probability))


def load_trigger_problem(model_name: str, dist_name: str, directory: Path = TRIGGER_REFERENCE_DIR):
    """Model, slot distribution, the event and its exact reference figures — checked against each other."""
    ref = load_trigger_reference(model_name, directory)
    if dist_name not in ref["distributions"]:
        raise LowprobError(f"the {model_name} trigger reference has no {dist_name!r}; it has "
                           f"{', '.join(ref['distributions'])}")
    model = load_model(model_name)
    dist = trigger_distribution(dist_name, model.tokenizer)
    if model_sha256(model) != ref["model_sha256"]:
        raise LowprobError(f"{model_name} does not match its trigger reference (model sha256): recompute it")
    if dist.bind(model)[1].content_hash() != ref["distributions"][dist_name]["content_hash"]:
        raise LowprobError(f"{dist_name} does not match the {model_name} trigger reference: recompute it")
    return model, dist, ArgmaxIs(ref["target_id"]), ref["distributions"][dist_name]


def trigger_ranks_first(attribution, planted) -> dict[str, bool]:
    """Per slot of ``planted``'s conjunction, whether the value an ``Attribution`` ranks first there (the
    largest rise) is one of the trigger's values — what finding the trigger by attribution means."""
    first: dict[str, str] = {}
    for row in attribution.rows:  # rows come ranked within each position
        first.setdefault(row["name"], row["text"])
    return {slot: first.get(slot) in values for slot, values in planted.trigger.items()}


def attribution_summary(estimate, planted) -> dict[str, Any] | None:
    """What a bench row keeps of an estimate's attribution: its hits, each slot's top value with P(value |
    event), and ``trigger_ranks_first``; None for a method that draws no samples of the event."""
    if estimate.samples is None:
        return None
    attribution = estimate.attribution(top=1)
    return {"hits": attribution.hits, "effective_hits": round(attribution.effective_hits, 3),
            "top": {r["name"]: [r["text"], round(r["conditional"], 4)] for r in attribution.rows},
            "trigger_first": trigger_ranks_first(attribution, planted)}
