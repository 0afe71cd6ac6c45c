"""The ``trigger`` scale's own report sections: did each method find the planted trigger, and do its hits point at it?

Each (planted-trigger model, trigger distribution) pair has one target, whose exact probability is the
trigger's (the event happens on the trigger and nowhere else). A method **found it** when its estimate lies
within a factor ``FOUND_FACTOR`` of that truth; a zero never does. For a method with a temperature the estimate
read is the one at its leak-free temperature, chosen (like the log-affine fit) on the model's *other*
distributions (``score_rows(pool_distributions=True)``).

**Attribution** is read from the ``attribution`` field that the bench writes into every row of a sampling
method: whether the value its hits rank first in each slot of the conjunction is a trigger value.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from lowprob.bench.plots import markdown_table, plt, save_plot
from lowprob.bench.score import CONSTANT, tuned_text
from lowprob.files import read_json
from lowprob.truth.trigger import model_recipe

FOUND_FACTOR = 3.0


def found_it(p: float, q: float) -> bool:
    """Whether the estimate ``q`` lies within a factor ``FOUND_FACTOR`` of the truth ``p`` (never for q = 0)."""
    return q > 0 and abs(math.log10(q / p)) <= math.log10(FOUND_FACTOR)


def _share(flags: list[bool]) -> str:
    return f"{sum(flags)}/{len(flags)}" + (f" ({sum(flags) / len(flags):.0%})" if flags else "")


def _trigger_probabilities(directory: Path, records: list[dict]) -> dict[tuple[str, str], float]:
    """Each pair's trigger probability, from its targets file (the pair's truth if the file is missing)."""
    out = {}
    for r in records:
        path = directory / "rows" / r["model"] / f"{r['distribution']}.targets.json"
        meta = read_json(path) if path.exists() else {}
        out[(r["model"], r["distribution"])] = meta.get("trigger_probability", r["ground_truth"])
    return out


def trigger_sections(directory: Path, rows: list[dict], records: list[dict], out: Path
                     ) -> tuple[list[str], list[Path]]:
    """Markdown lines (per family of trigger: found it, per-method tables, attribution) and a found-it plot each."""
    lines: list[str] = []
    plots: list[Path] = []
    families = sorted({model_recipe(r["model"]) for r in records})
    for family in families:
        got, plot = _family_sections(directory, family, [r for r in rows if model_recipe(r["model"]) == family],
                                     [r for r in records if model_recipe(r["model"]) == family], out)
        lines += got
        plots.append(plot)
    return lines, plots


def _family_sections(directory: Path, family: str, rows: list[dict], records: list[dict], out: Path
                     ) -> tuple[list[str], Path]:
    scored = [r for r in records if r["method"] != CONSTANT]
    trigger_p = _trigger_probabilities(directory, scored)
    methods = sorted({r["method"] for r in scored})
    levels = sorted(set(trigger_p.values()), reverse=True)
    models = sorted({r["model"] for r in scored})
    lines = ["", f"## The planted trigger, recipe `{family}` ({', '.join(models)}): found it?", "",
             f"One target per pair, the planted one; its exact probability is the trigger's. *Found it*: the raw "
             f"estimate within a factor {FOUND_FACTOR:g} of the truth (a zero never is). `flat` is the model-blind "
             "baseline (D mixed with the uniform law on every slot). With one target per pair, the log-affine "
             "leave-one-out fit and the leak-free temperature of a pair's estimate are chosen on the model's other "
             "trigger distributions (a unit is a model's four pairs, per method and seed); the tables above use the "
             "same units. Cells: found / estimates, over the recipe's models and every seed.", ""]
    found = {id(r): found_it(r["ground_truth"], r["estimate"]) for r in scored}
    rows_out = []
    for me in methods:
        cells = [_share([found[id(r)] for r in scored if r["method"] == me and trigger_p[(r["model"],
                                                                                          r["distribution"])] == p])
                 for p in levels]
        rows_out.append([me, *cells, _share([found[id(r)] for r in scored if r["method"] == me])])
    lines += markdown_table(["method", *(f"trigger p = {p:.0e}" for p in levels), "all"], rows_out)
    if len(models) > 1:
        lines += ["", "By model (every distribution and seed):", ""]
        lines += markdown_table(["method", *models], [[me, *(_share([found[id(r)] for r in scored if r["method"] == me
                                                                      and r["model"] == m]) for m in models)]
                                                     for me in methods])
    for me in methods:
        chosen = Counter(r["tuned"] for r in scored if r["method"] == me and r["tuned"])
        if chosen:
            lines += ["", f"{me}: leak-free temperatures chosen — " + ", ".join(
                f"{t} ({n}×)" for t, n in sorted(chosen.items(), key=lambda kv: -kv[1])) + "."]
    for me in methods:
        rs = sorted((r for r in scored if r["method"] == me),
                    key=lambda r: (r["model"], -trigger_p[(r["model"], r["distribution"])], r["seed"]))
        table = []
        for r in rs:
            q, p = r["estimate"], r["ground_truth"]
            error = f"{abs(math.log10(q / p)):.2f}" if q > 0 else "∞ (zero)"
            table.append([r["model"], f"{trigger_p[(r['model'], r['distribution'])]:.0e}", str(r["seed"]),
                          r["tuned"] or "–", f"{q:.3g}", error, "yes" if found[id(r)] else "no"])
        lines += ["", f"### {me}", ""]
        lines += markdown_table(["model", "trigger probability", "seed", "leak-free temperature", "estimate",
                         "abs log10 q/p", "found it"], table)
    lines += _attribution_lines(rows, scored, trigger_p, levels, found)
    return lines, _found_plot(scored, found, trigger_p, methods, levels, out / f"found_it-{family}.png", family)


def _attribution_lines(rows: list[dict], scored: list[dict], trigger_p: dict, levels: list[float], found: dict
                       ) -> list[str]:
    """Per sampling method: how often its hits rank the trigger's values first, over all its estimates (every
    temperature), at the leak-free temperature, among the estimates that found it, and per pair; and per
    trigger probability."""
    sampled = [r for r in rows if r.get("attribution") is not None]
    if not sampled:
        return []
    by_key = {(r["model"], r["distribution"], r["method"], r["seed"], tuned_text(r)): r for r in sampled}
    methods = sorted({r["method"] for r in sampled})
    slots = list(sampled[0]["attribution"]["trigger_first"])

    def first(r: dict) -> bool:
        return all(r["attribution"]["trigger_first"].values())

    table, per_level = [], []
    for me in methods:
        rs = [r for r in sampled if r["method"] == me]
        chosen = [by_key[k] for r in scored if r["method"] == me
                  and (k := (r["model"], r["distribution"], me, r["seed"], r["tuned"])) in by_key]
        pairs = defaultdict(list)
        for r in chosen:
            pairs[(r["model"], r["distribution"])].append(first(r))
        hit_it = [by_key[k] for r in scored if r["method"] == me and found[id(r)]
                  and (k := (r["model"], r["distribution"], me, r["seed"], r["tuned"])) in by_key]
        table.append([me, str(len(rs)), _share([r["attribution"]["hits"] > 0 for r in rs]),
                      *(_share([r["attribution"]["trigger_first"][s] for r in rs]) for s in slots),
                      _share([first(r) for r in rs]), _share([first(r) for r in chosen]),
                      _share([first(r) for r in hit_it]), _share([all(v) for v in pairs.values()])])
        per_level.append([me, *(_share([first(r) for r in rs if trigger_p[(r["model"], r["distribution"])] == p])
                                for p in levels)])
    return ["", "## Attribution: do the hits point at the trigger?", "",
            "For every estimate of a sampling method, the bench ranked each slot's values by how much the event "
            "raises their probability (`Estimate.attribution`, from the estimate's weighted hits) and recorded whether "
            "the first is a trigger value (" + ", ".join(f"`{s}`" for s in slots) + "). No hits: nothing ranks "
            "first, so it does not hold. *All*: every slot of the conjunction. Pairs: a (model, distribution) pair "
            "counts when all hold at the leak-free temperature for every seed.", "",
            *markdown_table(["method", "estimates (every temperature)", "with hits", *(f"`{s}` first" for s in slots),
                     "all first", "all first, leak-free temperature", "all first, of those that found it",
                     "pairs, leak-free temperature"], table),
            "", "All first, by trigger probability (every temperature, every model and seed):", "",
            *markdown_table(["method", *(f"trigger p = {p:.0e}" for p in levels)], per_level)]


def _found_plot(scored: list[dict], found: dict, trigger_p: dict, methods: list[str], levels: list[float],
                path: Path, family: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    n = 1
    for j, me in enumerate(methods):
        rates = []
        for p in levels:
            flags = [found[id(r)] for r in scored
                     if r["method"] == me and trigger_p[(r["model"], r["distribution"])] == p]
            n = len(flags)
            rates.append(np.mean(flags) if flags else np.nan)
        ax.plot(levels, np.array(rates) + (j - (len(methods) - 1) / 2) * 0.012, marker="o", ms=4, label=me)
    tuned = sorted({r["method"] for r in scored if r["tuned"]})
    ax.set(xscale="log", xlabel="trigger probability (= P(event), exact)", ylim=(-0.06, 1.06),
           ylabel=f"found it (estimate within ×{FOUND_FACTOR:g})",
           title=f"Recipe {family}: found-it rate ({n} estimates a point; {', '.join(tuned) or 'no method'} at "
                 "the leak-free\ntemperature; lines nudged apart vertically)")
    ax.title.set_fontsize(9)
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    return save_plot(fig, path)
