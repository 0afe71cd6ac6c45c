"""``lowprob mlp``: mechanistic estimates for random or user-supplied ReLU MLPs, and the benchmark.

Module-level imports stay light (typer only); numpy, scipy and torch load inside each command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowprob.checks import MAX_SEED
from lowprob.errors import LowprobError
from lowprob.mlp.limits import MAX_DEPTH, MAX_SAMPLES, MAX_THREADS

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Estimate MLP behaviour from the weights (cumulant propagation) and compare "
                       "with sampling.")

TASKS = ("means", "tails", "orthant")


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@app.command()
def expect(
    width: Annotated[int, typer.Option(min=1, help="width of a random He-initialised MLP")] = 64,
    hidden: Annotated[int, typer.Option(min=0, max=MAX_DEPTH - 1,
                                        help="estimate E[pre[HIDDEN]] (HIDDEN + 1 layers)")] = 4,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="network seed")] = 0,
    activation: Annotated[str, typer.Option(help="activation of the random MLP")] = "relu",
    weights: Annotated[Optional[Path], typer.Option(
        help=".npz with W0, b0, W1, b1, ... and 'activations' (overrides the random MLP)")] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=3, help="cumulant order K (1, 2 or 3)")] = 3,
    metric: Annotated[str, typer.Option(help="kappa4/K=1 metric: exact (W W^T) or average")] = "exact",
    mc_samples: Annotated[int, typer.Option(min=0, max=MAX_SAMPLES,
                                            help="also run Monte Carlo with this many samples")] = 0,
    threads: Annotated[int, typer.Option(min=1, max=MAX_THREADS, help="torch threads")] = 1,
) -> None:
    """Estimate the last layer's pre-activation means from the weights alone (no sampling)."""
    import numpy as np

    from lowprob.mlp.montecarlo import kept, mc_moments
    from lowprob.mlp.networks import load_spec, random_mlp
    from lowprob.mlp.propagation import check_memory, estimate_means

    _threads(threads)
    if weights is None:
        check_memory([width] * (hidden + 2), k)  # before building a network too big to propagate
    spec = load_spec(weights) if weights else random_mlp(width, hidden + 1, seed, activation)
    est = estimate_means(spec, k, metric=metric)
    layer = spec.depth - 1
    typer.echo(f"K={k}: {est.flops:.3e} FLOPs, {est.seconds * 1e3:.1f} ms, mechanistic={est.mechanistic}")
    typer.echo("E[pre] (first 8): " + np.array2string(est.pre_mean[layer][:8], precision=4))
    if mc_samples:
        mc = mc_moments(spec, mc_samples, seed=1, layers=[layer])
        err = float(np.mean((est.pre_mean[layer] - kept(mc.pre_mean, layer)) ** 2) / np.mean(kept(mc.pre_var, layer)))
        typer.echo(f"MC N={mc_samples}: {mc.flops:.3e} FLOPs, {mc.seconds * 1e3:.1f} ms; "
                   f"mean SE^2/Var = {1 / mc_samples:.2e}; squared difference / Var = {err:.2e}")


@app.command()
def orthant(
    m: Annotated[int, typer.Option(min=1, help="number of neurons (constraints)")] = 50,
    n: Annotated[int, typer.Option(min=1, help="input dimension")] = 50,
    beta: Annotated[float, typer.Option(help="bias b_i = -beta ||w_i||")] = 0.3,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED - 1,
                                      help="instance seed (the samplers draw with SEED + 1)")] = 0,
    method: Annotated[Optional[list[str]], typer.Option(help="adf, ep, pairwise, genz, botev, mc")] = None,
    samples: Annotated[int, typer.Option(min=2, max=MAX_SAMPLES, help="samples for botev and mc")] = 10_000,
) -> None:
    """P(W x + b > 0 for all neurons), x ~ N(0, I), on a random instance, by several methods."""
    import math

    from lowprob.mlp.orthant import METHODS, orthant_prob, random_orthant_instance

    methods = method or list(METHODS)
    unknown = [name for name in methods if name not in METHODS]
    if unknown:  # before any method runs, not after the first ones have printed
        raise LowprobError(f"unknown orthant method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    w, b = random_orthant_instance(m, n, beta, seed)
    for name in methods:
        r = orthant_prob(w, b, name, n_samples=samples, seed=seed + 1)
        se = f" ± {r.rel_se:.1%}" if r.rel_se is not None else ""
        log10 = f"{r.log_p / math.log(10):.4f}" if math.isfinite(r.log_p) else "-inf (no hit)"
        typer.echo(f"{name:>9}: log10 P = {log10}{se}  ({r.seconds:.3f} s, {r.flops:.2e} FLOPs, "
                   f"mechanistic={r.mechanistic})")


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="directory for rows.jsonl, plots and summary.md")],
    task: Annotated[Optional[list[str]], typer.Option(help="means, tails, orthant (repeatable)")] = None,
    resume: Annotated[bool, typer.Option(help="keep rows already in OUT/rows.jsonl and skip them")] = False,
    force: Annotated[bool, typer.Option("--force", help="discard the rows already in OUT and start over")] = False,
    quick: Annotated[bool, typer.Option(help="tiny configuration (seconds), for smoke tests")] = False,
    threads: Annotated[int, typer.Option(min=1, max=MAX_THREADS, help="torch/BLAS threads")] = 1,
) -> None:
    """Run the benchmark: rows (JSON lines), PNG plots and a Markdown summary in OUT."""
    from lowprob.mlp.bench import BenchConfig, run_bench
    from lowprob.mlp.report import plot_all, summary_markdown

    tasks = task or list(TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise LowprobError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")
    if resume and force:
        raise LowprobError("--resume keeps the rows in OUT and --force discards them: give one of them")
    _threads(threads)
    cfg = BenchConfig.quick() if quick else BenchConfig()
    rows = run_bench(out, cfg, tasks, resume, progress=True, force=force)
    plots = plot_all(rows, out)
    summary = summary_markdown(rows)
    (out / "summary.md").write_text(summary + "\n")
    typer.echo(summary)
    typer.echo(f"wrote {out / 'rows.jsonl'}, {out / 'summary.md'} and {', '.join(p.name for p in plots)}")

