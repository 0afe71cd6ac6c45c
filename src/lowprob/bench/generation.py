"""The ``generation`` scale: rare texts in sampled continuations of the shipped models, with sampled truth.

Its targets are texts, not argmax tokens, and its truth is not an argmax table, so it has this small
runner of its own; its rows keep the other scales' fields (``target`` is the text), so
``bench/score.py``'s loaders read them. ``run_bench`` hands a ``GenerationScale`` here.

Truth, per model, in ``truth/{model}.json`` (rewritten atomically after every chunk, so ``--resume``
loses at most one chunk; a copy shipped in ``lowprob/truth/reference/generation`` is the starting
point, so a fresh run recomputes nothing):

* **sampled**: ``sampled`` continuations from the model's own law, drawn in chunks of ``chunk`` with
  seeds fixed per chunk; each continuation is checked for every target at once. A target with at
  least ``MIN_HITS`` hits takes hits / n with its exact Clopper–Pearson interval (kind "sampled").
* **tilted reference**: for the targets plain sampling does not reach, the mean of
  ``reference_runs`` independent tilted estimates at ``reference_budget`` (seeds from
  ``REFERENCE_SEED`` on, disjoint from the bench seeds), unbiased, with a Student-t interval from
  their spread (kind "tilted reference"). It is computed for every target, so where both reach the
  two are compared (``cross_check``).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch
from tqdm import tqdm

from lowprob._version import __version__
from lowprob.bench.rows import claim_output
from lowprob.bench.scales import GenerationScale
from lowprob.bench.score import load_rows
from lowprob.continuations import Patterns, sample_continuations
from lowprob.distributions import load_distribution
from lowprob.errors import LowprobError
from lowprob.estimators import estimate
from lowprob.estimators.catalog import methods_for
from lowprob.estimators.intervals import clopper_pearson, student_half_width
from lowprob.events import Generates
from lowprob.files import atomic_write, dumps_json, prepare_output, read_json, read_jsonl
from lowprob.models.protocol import model_sha256
from lowprob.models.zoo import load_model

MIN_HITS = 30  # sampled hits from which plain sampling is the reference (relative SE ≤ ~18%)
REFERENCE_SEED = 1_000_000  # first seed of the tilted reference runs
SHIPPED = Path(__file__).resolve().parents[1] / "truth" / "reference" / "generation"


def _problem(scale: GenerationScale, model_name: str):
    model = load_model(model_name)
    dist = load_distribution(scale.distribution, model, scale.length)
    return model, dist


def event_of(scale: GenerationScale, model, text: str) -> Generates:
    return Generates((tuple(model.tokenizer.encode(text)),), scale.steps, scale.temperature)


def truth_definition(scale: GenerationScale, model_name: str) -> dict:
    """What a truth file is a truth of; a resumed or shipped file must match it."""
    return {"model": model_name, "distribution": scale.distribution, "length": scale.length, "steps": scale.steps,
            "temperature": scale.temperature, "targets": list(scale.targets_of(model_name)),
            "sampled": scale.sampled, "chunk": scale.chunk, "reference_runs": scale.reference_runs,
            "reference_budget": scale.reference_budget}


def _load_truth(scale: GenerationScale, model_name: str, path: Path) -> dict:
    definition = truth_definition(scale, model_name)
    empty = {"definition": definition, "sampled": {"n": 0, "hits": {t: 0 for t in definition["targets"]}},
             "tilted": {t: [] for t in definition["targets"]}}
    for source in (path, SHIPPED / f"{model_name}.json"):
        if source.exists():
            truth = read_json(source)
            if truth["definition"] == definition:
                return truth
            if source == path:
                raise LowprobError(f"{path} is the truth of another definition; run into an empty directory")
    return empty


def compute_truth(scale: GenerationScale, model_name: str, path: Path, tick=lambda: None) -> dict:
    """Fill (or finish) the model's truth file: chunks of plain sampling, then the tilted reference runs."""
    truth = _load_truth(scale, model_name, path)
    model, dist = _problem(scale, model_name)
    texts = scale.targets_of(model_name)
    patterns = {t: Patterns(event_of(scale, model, t).patterns) for t in texts}
    plain = event_of(scale, model, texts[0])  # steps, temperature: all the sampling needs
    base = zlib.crc32(f"{model_name}/{scale.distribution}/sampled".encode())
    sampled = truth["sampled"]
    while sampled["n"] < scale.sampled:
        chunk = sampled["n"] // scale.chunk
        generator = torch.Generator().manual_seed(base + chunk)
        prompts = dist.sample(scale.chunk, generator)
        continuations = sample_continuations(model, prompts, plain, generator)
        for t in texts:
            sampled["hits"][t] += int(patterns[t].occurs(continuations).sum())
        sampled["n"] += scale.chunk
        atomic_write(path, (dumps_json(truth, indent=1) + "\n").encode())
        tick()
    for t in texts:
        runs = truth["tilted"][t]
        while len(runs) < scale.reference_runs:
            e = estimate(model, dist, event_of(scale, model, t), method="tilted", budget=scale.reference_budget,
                         seed=REFERENCE_SEED + len(runs))
            runs.append(e.probability)
            atomic_write(path, (dumps_json(truth, indent=1) + "\n").encode())
            tick()
    return truth


def reference(truth: dict, text: str) -> dict:
    """The ground-truth fields every row of ``text`` carries, and the cross-check of the two truths."""
    hits, n = truth["sampled"]["hits"][text], truth["sampled"]["n"]
    runs = torch.tensor(truth["tilted"][text], dtype=torch.float64)
    budget = truth["definition"]["reference_budget"]
    mean = float(runs.mean())
    half = student_half_width(float(runs.std()), len(runs))
    tilted = {"probability": mean, "interval": [max(0.0, mean - half), mean + half], "runs": len(runs),
              "budget": budget}
    sampled = {"hits": hits, "n": n, "interval": list(clopper_pearson(hits, n))}
    if hits >= MIN_HITS:
        fields = {"ground_truth": hits / n, "ground_truth_kind": "sampled", "ground_truth_n": n,
                  "ground_truth_count": hits, "ground_truth_interval": sampled["interval"]}
    else:
        fields = {"ground_truth": mean, "ground_truth_kind": "tilted reference", "ground_truth_n": len(runs) * budget,
                  "ground_truth_count": None, "ground_truth_interval": tilted["interval"]}
    lo, hi = sampled["interval"]
    agree = hits > 0 and not (tilted["interval"][1] < lo or tilted["interval"][0] > hi)
    return {**fields, "ground_truth_exact": False,
            "cross_check": {"sampled": sampled, "tilted": tilted, "both_reach": hits > 0, "agree": agree}}


def plan_rows(scale: GenerationScale, model_name: str, rows_path: Path, methods: list[str]) -> list[tuple]:
    """(method, seed, text) estimates not yet in the rows file."""
    done = {(r["method"], r["seed"], r["target"]) for r in read_jsonl(rows_path)}
    return [(m, s, t) for t in scale.targets_of(model_name) for m in methods for s in scale.seeds
            if (m, s, t) not in done]


def run_generation_bench(scale: GenerationScale, out: Path, methods: list[str] | None, resume: bool,
                         progress: bool = True) -> Path:
    """Truth first (resumable, per chunk), then one row per (model, target, method, seed), appended."""
    able = methods_for("generation")
    methods = list(methods or able)
    unknown = [m for m in methods if m not in able]
    if unknown:
        raise LowprobError(f"method(s) {', '.join(unknown)} cannot estimate generation events: "
                           f"choose from {', '.join(able)}")
    out = Path(out)
    with claim_output(scale, out, resume):
        atomic_write(out / "bench.json", (dumps_json(scale.to_json(), indent=1) + "\n").encode())
        for name in scale.models:
            _run_model(scale, name, out, methods, progress)
    return out


def _run_model(scale: GenerationScale, name: str, out: Path, methods: list[str], progress: bool) -> None:
    """One model's truth, then its rows."""
    (out / "truth").mkdir(exist_ok=True)
    truth_path = out / "truth" / f"{name}.json"
    bar = tqdm(desc=f"truth {name}", unit="step", disable=not progress, dynamic_ncols=True)
    truth = compute_truth(scale, name, truth_path, lambda b=bar: b.update(1))
    bar.close()
    model, dist = _problem(scale, name)
    rows_path = out / "rows" / name / f"{scale.distribution}.jsonl"
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    read_jsonl(rows_path, repair=True)
    jobs = plan_rows(scale, name, rows_path, methods)
    common = {"scale": scale.name, "model": name, "distribution": scale.distribution, "length": scale.length,
              "model_sha256": model_sha256(model), "distribution_sha256": dist.content_hash(),
              "version": __version__}
    with rows_path.open("a") as f:
        for method, seed, text in tqdm(jobs, desc=f"bench {name}", unit="est", disable=not progress):
            fields = reference(truth, text)
            fields.pop("cross_check")
            e = estimate(model, dist, event_of(scale, model, text), method=method, budget=scale.budget,
                         seed=seed)
            row = {**common, "target": text, "target_text": text, "event": e.event, "method": method,
                   "hyper": e.hyper, "seed": seed, "budget": scale.budget, "probability": e.probability,
                   "interval": list(e.interval), "cost": e.to_json()["cost"], "diagnostics": e.diagnostics,
                   **fields}
            f.write(dumps_json(row) + "\n")
            f.flush()


def summarise(directory: Path) -> tuple[list[dict], list[dict]]:
    """Per (model, target, method) over seeds: the truth, mean estimate, relative error (root mean square
    about the truth), interval coverage and the plain-sampling calls that relative error is worth;
    and per (model, target) the cross-check of the two truths."""
    directory = Path(directory)
    rows = load_rows(directory)
    cells, checks = [], []
    for model in sorted({r["model"] for r in rows}):
        truth_path = directory / "truth" / f"{model}.json"
        if not truth_path.exists():
            raise LowprobError(f"{truth_path} is missing: a generation report needs the truth files that "
                               f"`lowprob bench --scale generation` wrote next to the rows")
        truth = read_json(truth_path)
        for text in truth["definition"]["targets"]:
            checks.append({"model": model, "target": text, **reference(truth, text)["cross_check"]})
            for method in sorted({r["method"] for r in rows if r["model"] == model}):
                mine = [r for r in rows if (r["model"], r["target"], r["method"]) == (model, text, method)]
                if not mine:
                    continue
                p = mine[0]["ground_truth"]
                values = torch.tensor([r["probability"] for r in mine], dtype=torch.float64)
                re = float(((values - p) ** 2).mean().sqrt()) / p
                # plain sampling is the yardstick, not a contender; and with every estimate 0, RE = 1 says nothing
                measured = method != "naive" and bool((values > 0).any())
                plain = (1 - p) / (p * re * re) if measured and re > 0 else math.nan
                cells.append({"model": model, "target": text, "method": method, "truth": p,
                              "truth_kind": mine[0]["ground_truth_kind"],
                              "truth_interval": mine[0]["ground_truth_interval"],
                              "seeds": len(mine), "budget": mine[0]["budget"], "mean": float(values.mean()),
                              "relative_error": re, "zeros": int((values == 0).sum()),
                              "covered": sum(r["interval"][0] <= p <= r["interval"][1] for r in mine),
                              "plain_calls": plain, "saving": plain / mine[0]["budget"],
                              "seconds": sum(r["cost"]["seconds"] for r in mine) / len(mine),
                              "flops": sum(r["cost"]["flops"] for r in mine) / len(mine)})
    return cells, checks


def _calls(x: float, unit: str = "") -> str:
    return "–" if math.isnan(x) else f"{x:.3g}{unit}"


def write_generation_report(directory: Path, out: Path) -> list[Path]:
    """report.md (the tables) and generation.png (estimate ÷ truth, and calls saved, against p)."""
    from lowprob.bench.plots import plt  # matplotlib only when a report is written: a run needs no plotting

    cells, checks = summarise(directory)
    cells.sort(key=lambda c: (c["model"], -c["truth"], c["method"]))
    lines = ["# lowprob benchmark: `generation` scale", "",
             "RE: root mean square of (estimate − truth) / truth over the seeds. Plain calls: the continuations plain "
             "sampling needs for that RE, (1 − p) / (p RE²); saving: that ÷ the method's budget. Coverage: intervals "
             "holding the truth.", "",
             "| model | target | truth (kind) | method | mean / truth | RE | zeros | coverage | plain calls | saving "
             "| s / estimate |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {c['model']} | {c['target']!r} | {c['truth']:.3g} ({c['truth_kind']}) | {c['method']} | "
                     f"{c['mean'] / c['truth']:.2f} | {c['relative_error']:.2f} | {c['zeros']}/{c['seeds']} | "
                     f"{c['covered']}/{c['seeds']} | {_calls(c['plain_calls'])} | {_calls(c['saving'], 'x')} | "
                     f"{c['seconds']:.1f} |")
    lines += ["", "## Targets with p ≤ 1e-5: the best method against plain sampling", "",
              "| model | target | truth | best method | its RE | coverage | plain calls for that RE | its calls "
              "| saving |",
              "|---|---|---|---|---|---|---|---|---|"]
    for model, text in sorted({(c["model"], c["target"]) for c in cells if c["truth"] <= 1e-5}):
        best = max((c for c in cells if (c["model"], c["target"]) == (model, text) and c["plain_calls"] > 0),
                   key=lambda c: c["saving"], default=None)
        if best is not None:
            lines.append(f"| {model} | {text!r} | {best['truth']:.3g} ({best['truth_kind']}) | {best['method']} | "
                         f"{best['relative_error']:.2f} | {best['covered']}/{best['seeds']} | "
                         f"{best['plain_calls']:.3g} | {best['budget']} | {best['saving']:.3g}x |")
    lines += ["", "## Truth cross-check: plain sampling against the tilted reference", "",
              "| model | target | sampled hits / n | sampled 95% interval | tilted reference (runs × budget) | "
              "its 95% interval | agree |", "|---|---|---|---|---|---|---|"]
    for c in checks:
        s, t = c["sampled"], c["tilted"]
        lines.append(f"| {c['model']} | {c['target']!r} | {s['hits']} / {s['n']} | {s['interval'][0]:.3g} .. "
                     f"{s['interval'][1]:.3g} | {t['probability']:.3g} ({t['runs']} × {t['budget']}) | "
                     f"{t['interval'][0]:.3g} .. {t['interval'][1]:.3g} | "
                     f"{'yes' if c['agree'] else ('no' if c['both_reach'] else 'sampling saw none')} |")
    out = prepare_output(out, kind="directory")
    report = out / "report.md"
    atomic_write(report, ("\n".join(lines) + "\n").encode())
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"naive": "o", "tilted": "s", "smc": "^"}
    for method in sorted({c["method"] for c in cells}):
        mine = [c for c in cells if c["method"] == method]
        left.errorbar([c["truth"] for c in mine], [c["mean"] / c["truth"] for c in mine],
                      yerr=[c["relative_error"] for c in mine], fmt=markers.get(method, "x"), label=method,
                      alpha=0.7, capsize=2)
        right.scatter([c["truth"] for c in mine], [c["saving"] for c in mine], marker=markers.get(method, "x"),
                      label=method, alpha=0.7)
    left.axhline(1, color="grey", lw=0.8)
    left.set(xscale="log", xlabel="truth p", ylabel="mean estimate / truth (bars: RE)",
             title="estimates over seeds, every model and target")
    right.axhline(100, color="grey", lw=0.8, ls="--")
    right.set(xscale="log", yscale="log", xlabel="truth p", ylabel="plain-sampling calls / method's calls",
              title="calls saved at equal relative error")
    left.legend()
    right.legend()
    fig.tight_layout()
    plot = out / "generation.png"
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    return [report, plot]
