"""``lowprob report DIR``: the benchmark's Markdown tables, tidy scores and plots.

Losses are averaged over targets within a (model, distribution) and then over distributions, so each
distribution weighs the same whatever its number of targets. The bracketed ranges are 95% bootstrap
intervals over targets (resampled within each distribution): they show how much the mean rests on a
few targets, not the estimators' own seed-to-seed noise.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from lowprob.bench.generation import write_generation_report
from lowprob.bench.plots import markdown_table, plt, save_plot
from lowprob.bench.score import CONSTANT, load_rows, score_rows, wnrv_gain
from lowprob.bench.trigger_report import trigger_sections
from lowprob.estimators.catalog import INTERVAL_KINDS, METHODS
from lowprob.evaluation import ZERO_FLOOR
from lowprob.files import prepare_output, read_json

BOOTSTRAP_REPS = 1000
SENSITIVITY_FLOORS = (1e-12, 1e-10, 1e-8)


def _order(methods) -> list[str]:
    return [CONSTANT] * (CONSTANT in methods) + sorted(m for m in methods if m != CONSTANT)


def _fmt(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.1e}"


def _per_pair(records: list[dict], key: str) -> dict[tuple, np.ndarray]:
    """Values of ``key`` per (model, distribution, method), over targets and seeds."""
    groups = defaultdict(list)
    for r in records:
        groups[(r["model"], r["distribution"], r["method"])].append(r[key])
    return {k: np.array(v) for k, v in groups.items()}


def _pair_means(records: list[dict], key: str) -> dict[tuple, float]:
    return {k: float(v.mean()) for k, v in _per_pair(records, key).items()}


def _bootstrap(groups: list[np.ndarray], seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = np.mean([g[rng.integers(0, len(g), (BOOTSTRAP_REPS, len(g)))].mean(1) for g in groups], axis=0)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _groups(per_pair: dict[tuple, np.ndarray], model: str, method: str) -> list[np.ndarray]:
    """A method's per-distribution value arrays for one model, or every model's for "all"."""
    return [v for (m, _, me), v in per_pair.items() if me == method and model in (m, "all")]


def _model_means(records: list[dict], key: str, models: list[str], methods: list[str], with_ci: bool
                 ) -> dict[tuple, str]:
    """Cells "mean [lo, hi]" per (model or "all", method), means of per-distribution means."""
    per_pair = _per_pair(records, key)
    cells = {}
    for model in [*models, "all"]:
        for method in methods:
            groups = _groups(per_pair, model, method)
            if not groups:
                cells[(model, method)] = "–"
                continue
            cell = _fmt(float(np.mean([g.mean() for g in groups])))
            if with_ci:
                lo, hi = _bootstrap(groups)
                cell += f" [{_fmt(lo)}, {_fmt(hi)}]"
            cells[(model, method)] = cell
    return cells


def _ranking_lines(records: list[dict], models: list[str], methods: list[str]) -> list[str]:
    """Methods from best to worst mean loss per model, under both protocols: the orderings to compare."""
    tables = {key: _per_pair(records, key) for key in ("loss", "oracle_loss")}
    rows = []
    for model in [*models, "all"]:
        cells = []
        for per_pair in tables.values():
            means = {me: np.mean([g.mean() for g in groups])
                     for me in methods if (groups := _groups(per_pair, model, me))}
            cells.append(" < ".join(sorted(means, key=means.__getitem__)))
        rows.append([model, *cells])
    return ["", "## Ranking by mean IS loss (best first)", "", *markdown_table(["model", "leak-free", "oracle"], rows)]


PLANTED = ("> **One target per pair.** Each (planted-trigger model, trigger distribution) pair has a single "
           "target, the planted one, so every fit and leak-free temperature below is chosen across a model's four "
           "distributions (leave one distribution out), and each per-distribution cell is one target's loss "
           "averaged over seeds. See *The planted trigger: found it?* for the raw estimates.")
SMOKE_TEST = ("> **A smoke test.** The `tiny` scale runs random toy models on tiny input spaces at budget 256 to "
              "check the pipeline end to end in minutes; its losses say nothing about how the methods do on "
              "trained models (see the `cpu` scale's report for that).")


def write_report(directory: str | Path, out: str | Path | None = None, zero_floor: float = ZERO_FLOOR
                 ) -> list[Path]:
    """Score the rows under ``directory``; write report.md, scores.csv and PNG plots to ``out``; return their paths."""
    directory = Path(directory)
    out = prepare_output(out if out is not None else directory, kind="directory")
    config_path = directory / "bench.json"
    if config_path.exists() and read_json(config_path).get("name") == "generation":
        return write_generation_report(directory, out)  # text targets: a report of its own
    rows = load_rows(directory)
    config_path = directory / "bench.json"
    config = read_json(config_path) if config_path.exists() else {}
    pool = config.get("planted") is not None  # one target per pair: fit across a model's pairs
    records, notes = score_rows(rows, zero_floor, pool_distributions=pool)
    models = sorted({r["model"] for r in records})
    methods = _order({r["method"] for r in records})
    estimators = [m for m in methods if m != CONSTANT]
    scored = [r for r in records if r["method"] != CONSTANT]

    lines = [f"# lowprob benchmark: `{config.get('name', '?')}` scale", ""]
    if config.get("name") == "tiny":
        lines += [SMOKE_TEST, ""]
    if pool:
        lines += [PLANTED, ""]
    lines += _setup_lines(config, rows, records, zero_floor)
    lines += ["", "## Mean IS loss, leak-free temperatures (nested leave-one-out)", "",
              "Lower is better; 0 is perfect. Each target is scored with a log-affine fit (and, for methods with "
              "a temperature, a temperature) chosen on the *other* targets of its (model, distribution). "
              "Brackets: 95% bootstrap interval over targets.", ""]
    cells = _model_means(records, "loss", models, methods, with_ci=True)
    lines += markdown_table(["model", *methods], [[m, *(cells[(m, me)] for me in methods)] for m in [*models, "all"]])
    lines += ["", "## Mean IS loss, oracle temperatures (the paper's protocol: tuned on the scored targets)", ""]
    cells = _model_means(records, "oracle_loss", models, methods, with_ci=False)
    lines += markdown_table(["model", *methods], [[m, *(cells[(m, me)] for me in methods)] for m in [*models, "all"]])
    lines += _ranking_lines(records, models, methods)
    lines += ["", "## Per distribution (leak-free; oracle in parentheses where it differs)", ""]
    free, top = _pair_means(records, "loss"), _pair_means(records, "oracle_loss")
    n_targets = {(r["model"], r["distribution"]): 0 for r in records}
    for r in records:
        if r["method"] == CONSTANT:
            n_targets[(r["model"], r["distribution"])] += 1
    table = []
    for (model, dist), n in sorted(n_targets.items()):
        cell = []
        for me in methods:
            f, o = free.get((model, dist, me)), top.get((model, dist, me))
            cell.append(_fmt(f) + (f" ({_fmt(o)})" if o is not None and f is not None and _fmt(o) != _fmt(f) else ""))
        table.append([model, dist, str(n), *cell])
    lines += markdown_table(["model", "distribution", "targets", *methods], table)
    lines += ["", "## Unfit accuracy, calibration and cost (at the leak-free temperature)", "",
              "Median |log10 q/p| with zero estimates at the floor; coverage of the estimators' own nominal-95% "
              "intervals, and how often they meet the ground truth's own 95% interval (Clopper–Pearson on its count; "
              "the same figure for exact truth); work = executed FLOPs per estimate in forward passes of one input "
              "(mean; a backward costs one); "
              "seconds per estimate "
              "(median); WNRV gain = plain sampling's work-normalised relative variance over the method's "
              "(median; needs ≥ 2 seeds).", ""]
    lines += markdown_table(["method", "median loss", "median abs log10 error", "zero estimates", "95% coverage",
                     "meets truth's interval", "interval", "work", "seconds", "WNRV gain"],
                     [_unfit_row(me, scored) for me in estimators])
    lines += ["", "Interval kinds: " + "; ".join(f"*{k}*: {v}" for k, v in INTERVAL_KINDS.items()) + "."]
    lines += _tuned_lines(scored)
    lines += _floor_lines(rows, records, zero_floor, methods, pool)
    plots: list[Path] = []
    if pool:
        extra, plots = trigger_sections(directory, rows, records, out)
        lines += extra
    if notes:
        lines += ["", "## Not scored", "", *(f"- {n}" for n in notes)]
    plots += _plots(records, models, estimators, out, zero_floor)
    lines += ["", "## Plots", "", *(f"![{p.stem}]({p.name})" for p in plots)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _write_csv(records, out / "scores.csv")
    return [out / "report.md", out / "scores.csv", *plots]


def _setup_lines(config: dict, rows: list[dict], records: list[dict], zero_floor: float) -> list[str]:
    gts = {(r["model"], r["distribution"]): (r["ground_truth_exact"], r["ground_truth_n"]) for r in rows}
    exact = sum(e for e, _ in gts.values())
    sampled = sorted({n for e, n in gts.values() if not e})
    counts = [r["ground_truth_count"] for r in records if r["method"] == CONSTANT and r["ground_truth_count"]]
    floor = f"; a perfect estimator still pays ≈ {np.mean([1 / (2 * c) for c in counts]):.3f} mean loss for " \
            f"the sampled ground truth's noise (1/(2·count))" if counts else ""
    return [f"Budget {config.get('budget', '?')} model calls per estimate; up to {config.get('n_targets', '?')} "
            f"targets per (model, distribution), seeds {config.get('seeds', '?')}; temperature grid "
            f"{config.get('temperatures', '?')}. Ground truth: {exact} pair(s) exact, {len(gts) - exact} sampled "
            f"({', '.join(f'{n:,}' for n in sampled) or '–'} samples){floor}. "
            f"{len(rows):,} estimates, {sum(r['cost']['seconds'] for r in rows) / 3600:.2f} hours of estimator "
            f"time. Zero estimates (and any below it) are scored at {zero_floor:g}."]


def _unfit_row(method: str, scored: list[dict]) -> list[str]:
    rs = [r for r in scored if r["method"] == method]
    gains = [g for r in rs if (g := wnrv_gain(r)) is not None]
    return [method, _fmt(float(np.median([r["loss"] for r in rs]))),
            _fmt(float(np.median([r["abs_log10_error"] for r in rs]))),
            f"{np.mean([r['zero'] for r in rs]):.0%}", f"{np.mean([r['covered'] for r in rs]):.0%}",
            f"{np.mean([r['meets_truth'] for r in rs]):.0%}", METHODS[method].interval if method in METHODS else "–",
            _fmt(float(np.mean([r["work"] for r in rs]))), _fmt(float(np.median([r["seconds"] for r in rs]))),
            _fmt(float(np.median(gains))) if gains else "–"]


def _tuned_lines(scored: list[dict]) -> list[str]:
    """Which setting of its tuned hyper-parameters the oracle chose, per pair and method."""
    tuned = sorted({r["method"] for r in scored if r.get("tuned") is not None})
    if not tuned:
        return []
    chosen = defaultdict(set)
    for r in scored:
        if r["method"] in tuned:
            chosen[(r["model"], r["distribution"], r["method"])].add(r["oracle_tuned"])
    pairs = sorted({(m, d) for m, d, _ in chosen})
    rows = [[m, d, *("; ".join(sorted(chosen[(m, d, me)])) for me in tuned)] for m, d in pairs]
    return ["", "## Oracle choices of the tuned hyper-parameters", "",
            *markdown_table(["model", "distribution", *tuned], rows)]


def _floor_lines(rows: list[dict], records: list[dict], zero_floor: float, methods: list[str], pool: bool
                 ) -> list[str]:
    """Mean leak-free loss at other zero floors: how much the ranking rests on scoring zeros."""
    table = []
    for floor in sorted({zero_floor, *SENSITIVITY_FLOORS}):
        scored = records if floor == zero_floor else score_rows(rows, floor, pool)[0]
        cells = _model_means(scored, "loss", [], methods, with_ci=False)
        table.append([f"{floor:g}" + (" (used above)" if floor == zero_floor else ""),
                      *(cells[("all", me)] for me in methods)])
    return ["", "## Sensitivity to the zero floor", "",
            "Mean leak-free loss over all pairs when zero estimates are scored at other values. A low floor "
            "is near the paper's q = 0 ⇒ infinite loss, and zeros also flatten the fit for the method's other "
            "estimates; a floor near the targets treats a zero as a mild underestimate.", "",
            *markdown_table(["zero floor", *methods], table)]


def _write_csv(records: list[dict], path: Path) -> None:
    fields = list(dict.fromkeys(k for r in records for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(records)


def _bar_values(means: dict[tuple, float], model: str, dists: list[str], method: str) -> list[float]:
    """Per-distribution means of one model and method, then their mean (the "mean" group of bars)."""
    vals = [means.get((model, d, method), np.nan) for d in dists]
    return [*vals, float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else np.nan]


def _loss_axis_cap(values: list[float]) -> float:
    """Top of a loss axis: two decades above the upper quartile, so a few huge losses cannot flatten the rest."""
    finite = np.array([v for v in values if np.isfinite(v) and v > 0])
    if not len(finite):
        return 1.0
    return float(min(finite.max(), 10 ** (np.ceil(np.log10(np.quantile(finite, 0.75))) + 2)))


def _error_vs_p(records: list[dict], estimators: list[str], out: Path, zero_floor: float) -> Path:
    """Unfit |log10 q/p| against log10 p, one line per method (median per half decade): how error grows as p falls."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for me in estimators:
        rs = [r for r in records if r["method"] == me]
        log_p = np.log10([r["ground_truth"] for r in rs])
        err = np.array([r["abs_log10_error"] for r in rs])
        edges = np.arange(np.floor(log_p.min() * 2) / 2, log_p.max() + 0.5, 0.5)
        mids, medians = [], []
        for lo in edges:
            inside = (log_p >= lo) & (log_p < lo + 0.5)
            if inside.any():
                mids.append(lo + 0.25)
                medians.append(np.median(err[inside]))
        ax.plot(mids, medians, marker="o", ms=3, label=me)
    ax.set(xlabel="log10 ground truth p", ylabel="median |log10 q/p| (unfit)",
           title=f"Error against rarity\n(a zero scores log10(p/{zero_floor:g}): the rising diagonal)")
    ax.legend(fontsize=7)
    return save_plot(fig, out / "error_vs_p.png")


def _plots(records: list[dict], models: list[str], estimators: list[str], out: Path, zero_floor: float
           ) -> list[Path]:
    paths = []
    colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    free, top = _pair_means(records, "loss"), _pair_means(records, "oracle_loss")
    methods = [CONSTANT, *estimators]
    for model in models:
        dists = sorted({d for m, d, _ in free if m == model})
        bars = {me: (_bar_values(free, model, dists, me), _bar_values(top, model, dists, me)) for me in methods}
        cap = _loss_axis_cap([v for pair in bars.values() for vals in pair for v in vals])
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * (len(dists) + 1)), 4.2))
        width = 0.8 / len(methods)
        for j, me in enumerate(methods):
            x = np.arange(len(dists) + 1) + (j - (len(methods) - 1) / 2) * width
            leak_free, oracle = (np.array(v) for v in bars[me])
            ax.bar(x, np.minimum(leak_free, cap), width, label=me, color="0.6" if me == CONSTANT else None)
            ax.scatter(x, np.minimum(oracle, cap), marker="_", s=60, color="k", zorder=3,
                       label="oracle temperature" if j == len(methods) - 1 else None)
            for xi, v in zip(x, leak_free, strict=True):
                if v > cap:  # a cut bar carries its value
                    ax.text(xi, cap, _fmt(float(v)), rotation=90, ha="center", va="top", fontsize=6, color="w")
        ax.set_xticks(np.arange(len(dists) + 1), [*dists, "mean"])
        cut = any(v > cap for vals in bars.values() for v in vals[0])
        ax.set(yscale="log", ylabel="mean IS loss", title=f"{model}: loss by distribution and method\n(bars: "
               "leak-free" + (f"; cut at {_fmt(cap)}, values on the cut bars)" if cut else ")"))
        ax.set_ylim(top=cap * 1.05)
        entries = len(methods) + 1  # as many to a row as the figure's width holds (about 1.1 inch each)
        ax.legend(fontsize=7, ncol=min(entries, int(fig.get_figwidth() / 1.1)), loc="upper center",
                  bbox_to_anchor=(0.5, -0.08))
        paths.append(save_plot(fig, out / f"loss_{model}.png"))
    p_all = np.array([r["ground_truth"] for r in records])
    for key, name, label in (("estimate", "scatter_raw", f"raw estimate (▽ = 0, drawn at {zero_floor:g})"),
                             ("fitted", "scatter_fitted", "leave-one-out fitted estimate")):
        fig, axes = plt.subplots(1, len(estimators), figsize=(3.2 * len(estimators), 3.4), squeeze=False)
        for ax, me in zip(axes[0], estimators, strict=True):
            for model in models:
                rs = [r for r in records if r["method"] == me and r["model"] == model]
                p = np.array([r["ground_truth"] for r in rs])
                q = np.array([r[key] for r in rs])
                zero = q <= 0
                ax.scatter(p[~zero], q[~zero], s=8, alpha=0.6, color=colors[model], label=model)
                ax.scatter(p[zero], np.full(zero.sum(), zero_floor), s=12, marker="v", facecolors="none",
                           edgecolors=colors[model])
            ends = [p_all.min() / 3, 1.0]
            ax.plot(ends, ends, "k--", lw=0.8)
            ax.set(xscale="log", yscale="log", title=me, xlabel="ground truth p")
            if key == "estimate":
                ax.set_ylim(zero_floor / 3, 1.5)
            else:  # fitted estimates are never 0: zoom to the data around y = x
                ax.set(xlim=(p_all.min() / 3, p_all.max() * 3), ylim=(p_all.min() / 30, p_all.max() * 30))
        axes[0][0].set_ylabel(label, fontsize=8)
        axes[0][-1].legend(fontsize=7)
        paths.append(save_plot(fig, out / f"{name}.png"))
    paths.append(_error_vs_p(records, estimators, out, zero_floor))
    fig, ax = plt.subplots(figsize=(1.2 * len(estimators) * max(1, len(models)) / 2 + 2, 3.4))
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        cov = [np.mean([r["covered"] for r in records if r["method"] == me and r["model"] == model] or [np.nan])
               for me in estimators]
        ax.bar(np.arange(len(estimators)) + (j - (len(models) - 1) / 2) * width, cov, width, label=model,
               color=colors[model])
    ax.axhline(0.95, color="k", ls="--", lw=0.8, label="nominal 95%")
    ax.set_xticks(np.arange(len(estimators)), estimators)
    ax.set(ylim=(0, 1.05), ylabel="interval coverage of ground truth", title="95% interval coverage")
    ax.legend(fontsize=7)
    paths.append(save_plot(fig, out / "coverage.png"))
    return paths
