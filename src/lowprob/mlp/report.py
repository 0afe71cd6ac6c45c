"""Plots and a Markdown summary of benchmark rows (see ``bench.py``)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from lowprob.mlp.scoreboard import bootstrap_mean_ci


def _by(rows: list[dict], task: str, *fields: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["task"] == task:
            groups[tuple(r[f] for f in fields)].append(r)
    return groups


def _gmean(values) -> float:
    values = [v for v in values if v is not None and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else math.nan


def plot_all(rows: list[dict], out: Path) -> list[Path]:
    """Write the PNG plots for whichever tasks have rows; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    means = _by(rows, "means", "width", "method")
    if means:
        written += _plot_means(rows, means, out)
    tails = _by(rows, "tails", "method")
    if tails:
        written.append(_plot_tails(tails, out))
    orth = _by(rows, "orthant", "method")
    if orth:
        written.append(_plot_orthant(rows, orth, out))
    return written


def _plot_means(rows: list[dict], means: dict[tuple, list[dict]], out: Path) -> list[Path]:
    """Error against FLOPs at the largest width, and error and sampling-efficiency ratio against width."""
    import matplotlib.pyplot as plt

    widths = sorted({w for w, _ in means})
    methods = sorted({m for _, m in means if not m.startswith("MC")})
    top = widths[-1]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (w, m), rs in sorted(means.items()):
        if w != top:
            continue
        f = [r["flops"] for r in rs]
        e = [max(r["mse_over_var"], r["gt_floor"]) for r in rs]
        ax.scatter(f, e, label=m, marker="x" if m.startswith("MC") else "o")
    c_fwd = means[(top, methods[0])][0]["c_fwd"]
    grid = np.logspace(np.log10(c_fwd * 10), np.log10(c_fwd * 1e8), 20)
    ax.plot(grid, c_fwd / grid, "k--", label="MC (analytic, C_fwd/F)")
    floor = means[(top, methods[0])][0]["gt_floor"]
    ax.axhline(floor, color="grey", lw=0.8, ls=":", label="ground-truth floor")
    ax.set(xscale="log", yscale="log", xlabel="FLOPs", ylabel="MSE / Var",
           title=f"E[pre{rows[0].get('layer', '')}], width {top}")
    ax.legend(fontsize=7)
    written = [_save(fig, out / "means_vs_flops.png")]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for m in methods:
        e = [_gmean([max(r["mse_over_var"], r["gt_floor"]) for r in means[(w, m)]]) for w in widths]
        mc = [_gmean([r["mc_equal_flops"] for r in means[(w, m)]]) for w in widths]
        ratio = [_gmean([r["R"] for r in means[(w, m)]]) for w in widths]
        (line,) = ax1.plot(widths, e, "o-", label=m)
        ax1.plot(widths, mc, "--", color=line.get_color(), lw=0.8)
        ax2.plot(widths, ratio, "o-", label=m)
    ax1.set(xscale="log", yscale="log", xlabel="width n", ylabel="MSE / Var",
            title="solid: method; dashed: MC at equal FLOPs")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set(xscale="log", yscale="log", xlabel="width n", ylabel="R = MC FLOPs for same MSE / FLOPs",
            title="sampling-efficiency ratio")
    ax1.legend(fontsize=7)
    written.append(_save(fig, out / "means_vs_width.png"))
    return written


def _plot_tails(tails: dict[tuple, list[dict]], out: Path) -> Path:
    """Relative error of the tail probabilities against the truth, with Monte Carlo's at equal FLOPs."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (m,), rs in sorted(tails.items()):
        r = rs[0]
        p, ph = np.array(r["p_true"]), np.array(r["p_hat"])
        ok = p * r["gt_samples"] >= 100
        ax.scatter(p[ok], np.abs(ph[ok] / p[ok] - 1), s=8, label=m)
    r = next(iter(tails.values()))[0]
    grid = np.logspace(np.log10(max(100 / r["gt_samples"], 1e-12)), 0, 50)
    n_eq = r["flops"] / r["c_fwd"]
    ax.plot(grid, np.sqrt((1 - grid) / (grid * n_eq)), "k--", label="MC rel. SE at K3's FLOPs")
    ax.set(xscale="log", yscale="log", xlabel="P(z > t) (ground truth)", ylabel="relative error",
           title=f"tails: width {r['width']}, {r['hidden']} ReLU layers, t = {r['threshold']}")
    ax.legend(fontsize=7)
    return _save(fig, out / "tails_rel_err.png")


def _plot_orthant(rows: list[dict], orth: dict[tuple, list[dict]], out: Path) -> Path:
    """Relative error of the orthant methods against their seconds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (m,), rs in sorted(orth.items()):
        ax.scatter([r["seconds"] for r in rs], [max(r["rel_err"], 1e-6) for r in rs], label=m)
    ax.set(xscale="log", yscale="log", xlabel="seconds", ylabel="relative error vs reference",
           title=f"P(Wx + b > 0), m = n = {rows[-1].get('m', '')}")
    ax.legend(fontsize=7)
    return _save(fig, out / "orthant.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def summary_markdown(rows: list[dict]) -> str:
    """Tables of the headline figures (geometric means over seeds)."""
    lines = []
    means = _by(rows, "means", "width", "method")
    if means:
        lines += ["R is the geometric mean over seeds, with a 90% seed-bootstrap interval.", "",
                  "| width | method | MSE/Var | MC at equal FLOPs | MC at equal time | FLOPs | seconds | R |",
                  "|---|---|---|---|---|---|---|---|"]
        for (w, m), rs in sorted(means.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            e = _gmean([max(r["mse_over_var"], r["gt_floor"]) for r in rs])
            floor = rs[0]["gt_floor"]
            flag = " (at GT floor)" if e <= floor * 1.0001 else ""
            mc_f, mc_t = _gmean([r["mc_equal_flops"] for r in rs]), _gmean([r["mc_equal_time"] for r in rs])
            flops, secs = _gmean([r["flops"] for r in rs]), np.median([r["seconds"] for r in rs])
            lo, hi = np.exp(bootstrap_mean_ci(np.log([r["R"] for r in rs])))
            lines.append(f"| {w} | {m} | {e:.2e}{flag} | {mc_f:.2e} | {mc_t:.2e} | {flops:.2e} | "
                         f"{secs:.4f} | {_gmean([r['R'] for r in rs]):.3g} [{lo:.3g}, {hi:.3g}] |")
        lines.append("")
    tails = _by(rows, "tails", "method")
    if tails:
        lines += ["| tails method | median rel. err (resolved p) | median abs log ratio | clamped | FLOPs | "
                  "seconds | R_tail |", "|---|---|---|---|---|---|---|"]
        for (m,), rs in sorted(tails.items()):
            r = rs[0]
            lines.append(f"| {m} | {r['median_rel_err_resolved']:.3f} | "
                         f"{r['median_abs_log_ratio_resolved']:.3f} | {r['n_clamped']} | {r['flops']:.2e} | "
                         f"{r['seconds']:.4f} | {r['R_tail']:.3g} |")
        lines.append("")
    orth = _by(rows, "orthant", "method")
    if orth:
        lines += ["| orthant method | median rel. err | max rel. err | median seconds | median FLOPs | "
                  "mechanistic |", "|---|---|---|---|---|---|"]
        for (m,), rs in sorted(orth.items()):
            errs = [r["rel_err"] for r in rs]
            secs, flops = np.median([r["seconds"] for r in rs]), np.median([r["flops"] for r in rs])
            lines.append(f"| {m} | {np.median(errs):.3g} | {max(errs):.3g} | {secs:.3f} | {flops:.2e} | "
                         f"{rs[0]['mechanistic']} |")
        ps = sorted({(r["beta"], r["seed"], r["log10_p_ref"]) for rs in orth.values() for r in rs})
        lines += ["", "Instances (beta, seed, log10 P reference): "
                  + ", ".join(f"({b}, {s}, {lp:.2f})" for b, s, lp in ps)]
    return "\n".join(lines)
