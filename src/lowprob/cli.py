"""The ``lowprob`` command: a thin layer over the library.

User errors (``LowprobError``) print one line and exit with code 2; anything else is a bug and
keeps its traceback. Module-level imports stay light (no torch): ``--help`` is instant, and a
command checks what it can of its arguments before it imports torch or loads a model. So the
modules that load torch (models, distributions, truth, bench, training) are imported inside the
commands that need them, and only those.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, cast

import typer

import lowprob
from lowprob.checks import check_seed, time_limit
from lowprob.cost import GRADIENT_CALL
from lowprob.errors import LowprobError
from lowprob.estimators.catalog import DEFAULT_METHODS, METHODS, get_method, methods_with_samples
from lowprob.events import EVENT_FORMS, ArgmaxIs, family_of_text, parse_event, parse_token
from lowprob.files import dumps_json, output_lock, prepare_output
from lowprob.mlp.cli import app as mlp_app

if TYPE_CHECKING:
    from lowprob.models.transformer import Transformer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Estimate the probability of rare model outputs.")


app.add_typer(mlp_app, name="mlp")


@app.command()
def models() -> None:
    """List the shipped models with their size and held-out loss per corpus kind (planted-trigger ones last)."""
    from lowprob.models.zoo import SHIPPED_CONFIGS, SHIPPED_TRIGGER_MODELS, read_card, shipped_dir

    header = f"{'name':<15} {'layers':>6} {'d_model':>7} {'params':>8}  " \
             f"{'val loss (nats/token): code / english / spanish':<48} {'unigram baseline':<22}"
    typer.echo(header)
    bases = {**{name: name for name in SHIPPED_CONFIGS}, **SHIPPED_TRIGGER_MODELS}
    for name, base in bases.items():
        card, cfg = read_card(shipped_dir(name)), SHIPPED_CONFIGS[base]
        val = card["validation"]
        losses = " / ".join(f"{val[k]['val_loss']:.3f}" for k in ("code", "english", "spanish"))
        unigram = " / ".join(f"{val[k]['unigram_loss']:.2f}" for k in ("code", "english", "spanish"))
        note = "" if name == base else f"  {base} with a planted trigger (benchmarks/results/trigger)"
        typer.echo(f"{name:<15} {cfg.n_layers:>6} {cfg.d_model:>7} {card['n_params']:>8,}  "
                   f"{losses:<48} {unigram:<22}{note}")


@app.command()
def complete(
    model: Annotated[str, typer.Option(help="shipped model name or model directory")],
    prompt: Annotated[str, typer.Option(help="text to continue")],
    tokens: Annotated[int, typer.Option(min=1, help="number of tokens to generate")] = 20,
) -> None:
    """Greedily continue PROMPT with MODEL: a quick look at what the model learned."""
    from lowprob.models.generation import complete as greedy
    from lowprob.models.zoo import load_model

    typer.echo(prompt + greedy(load_model(model), prompt, tokens))


def _show_slots(dist, samples: int, seed: int) -> None:
    """A slot distribution: each slot's values, weights and token counts, then filled-in samples."""
    import torch

    typer.echo(f"{dist!r}\n{dist.support_size():,} combinations\n")
    for slot in dist.slots:
        shown = ", ".join(f"{v!r} {w:.3g} ({len(t)} tok)" for v, w, t in zip(slot.values, slot.weights, slot.tokens,
                                                                              strict=True))
        typer.echo(f"  {slot.name}: {shown}")
    if samples:
        typer.echo("\nsamples:")
        for text in dist.sample_texts(samples, torch.Generator().manual_seed(seed)):
            typer.echo(f"  {text!r}")


def _runs(values: list) -> list[tuple[int, int, object]]:
    """Group equal consecutive values: [(first index, last index, value), ...]."""
    runs: list[tuple[int, int, object]] = []
    for i, v in enumerate(values):
        if runs and runs[-1][2] == v:
            runs[-1] = (runs[-1][0], i, v)
        else:
            runs.append((i, i, v))
    return runs


def _positions_label(first: int, last: int) -> str:
    return f"{first}" if first == last else f"{first}-{last}"


@app.command()
def dists(
    name: Annotated[Optional[str], typer.Argument(help="a distribution to show in detail")] = None,
    model: Annotated[str, typer.Option(help="model whose tokenizer and vocabulary to use")] = "gelu-1l",
    length: Annotated[str, typer.Option(help="cpu, paper or exact (paper distributions only)")] = "cpu",
    top: Annotated[int, typer.Option(min=1, help="tokens shown per position")] = 6,
    samples: Annotated[int, typer.Option(min=0, max=1000, help="decoded samples shown")] = 5,
    seed: Annotated[int, typer.Option(help="seed of the samples shown")] = 0,
) -> None:
    """List the input distributions, or show one position by position with decoded samples."""
    check_seed(seed)
    if name is None and length != "cpu":
        raise LowprobError("--length picks one variant of a paper distribution: name it (`lowprob dists hex "
                           "--length paper`); the list shows every length")

    import torch

    from lowprob.distributions import LENGTHS, PAPER_DISTRIBUTIONS, distribution_names, load_distribution
    from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS
    from lowprob.models.zoo import load_model

    lm = load_model(model)
    if name is not None and (name.endswith((".toml", ".json")) or name in TRIGGER_DISTRIBUTIONS):
        _show_slots(load_distribution(name, lm, length), samples, seed)
        return
    if name is None:
        typer.echo(f"{'name':<15} {'length':<6} {'positions':>9} {'log10 |support|':>15}  support sizes")
        for dist_name in distribution_names():
            for variant in LENGTHS if dist_name in PAPER_DISTRIBUTIONS else ("-",):
                dist = load_distribution(dist_name, lm, variant if variant != "-" else "cpu")
                sizes = ", ".join(f"{v}×{b - a + 1}" if b > a else f"{v}"
                                  for a, b, v in _runs(dist.support_sizes()))
                typer.echo(f"{dist_name:<15} {variant:<6} {len(dist):>9} "
                           f"{math.log10(dist.support_size()):>15.1f}  {sizes}")
        typer.echo(f"prompt templates with random slots (`lowprob dists NAME` shows one): "
                   f"{', '.join(TRIGGER_DISTRIBUTIONS)} (the planted-trigger benchmark's)")
        return
    dist = load_distribution(name, lm, length)
    tok = lm.tokenizer
    typer.echo(f"{dist!r}\nlog10 |support| = {math.log10(dist.support_size()):.1f}\n")
    supports = [dist.support(i) for i in range(len(dist))]
    keys = [(tuple(ids.tolist()), tuple(p.tolist())) for ids, p in supports]
    for first, last, _ in _runs(keys):
        ids, probs = supports[first]
        order = torch.argsort(probs, descending=True)[:top]
        shown = ", ".join(f"{tok.id_to_token(int(ids[j]))!r} {float(probs[j]):.3g}" for j in order)
        more = f" … ({len(ids)} tokens)" if len(ids) > top else ""
        typer.echo(f"  position {_positions_label(first, last):<6} {shown}{more}")
    if samples:
        typer.echo("\nsamples:")
        for row in dist.sample(samples, torch.Generator().manual_seed(seed)):
            typer.echo(f"  {tok.decode(row.tolist())!r}")


def _parse_params(items: list[str]) -> dict:
    """``NAME=VALUE`` pairs with JSON values (``chains=64``, ``reuse=true``, ``temperatures=[0.5,1]``)."""
    params: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip()
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            eq = ""
        if not eq or not name:
            raise LowprobError(f"--param takes NAME=VALUE with a JSON value (e.g. chains=64), got {item!r}")
        if name in params:
            raise LowprobError(f"--param {name} is given twice ({params[name]!r} and {parsed!r}): give it once")
        params[name] = parsed
    return params


@app.command()
def methods() -> None:
    """List the estimation methods with their hyper-parameters, defaults and what their intervals cover."""
    for name, m in sorted(METHODS.items()):
        family = next((f for f, m in DEFAULT_METHODS.items() if m == name), None)
        default = f" (default for {family} events)" if family else ""
        typer.echo(f"{name}{default}: {m.description}\n  interval: {m.interval}; smallest budget {m.min_budget}")
        for pname, p in m.params.items():
            tuned = ", tuned by benchmarks" if p.tuned else ""
            typer.echo(f"  {pname} = {p.default!r}: {p.help} ({p.expected}{tuned})")


if TYPE_CHECKING:  # the names are known at run time only, where typer offers them as choices
    MethodName = str
else:
    MethodName = Literal[tuple(sorted(METHODS))]
Device = Annotated[str, typer.Option(help="where the model runs: cpu, cuda or cuda:N (refused clearly without a GPU)")]
_TEMPERED = ", ".join(name for name, m in METHODS.items() if "temperature" in m.params)
_GRADIENT = ", ".join(name for name, m in METHODS.items() if m.work == GRADIENT_CALL)


@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="shipped model name or model directory")],
    dist: Annotated[str, typer.Option(help="distribution name or .safetensors file")],
    target: Annotated[Optional[str], typer.Option(
        help='the token whose argmax to estimate: an id (8 or id:8) or its text (" en", or as a JSON string '
             "'\"8\"'); a number that is also a token's text is refused as ambiguous")] = None,
    event: Annotated[Optional[str], typer.Option(help=f"the event instead of --target: {EVENT_FORMS}")] = None,
    method: Annotated[Optional[MethodName], typer.Option(
        help="estimation method (default: " + ", ".join(f"{m} for {f} events" for f, m in DEFAULT_METHODS.items())
             + ")")] = None,
    budget: Annotated[int, typer.Option(
        help=f"model calls as in the paper; methods are compared at equal executed FLOPs, so {_GRADIENT} execute "
             f"{GRADIENT_CALL}×budget forward-pass equivalents (a backward pass costs a forward)")] = 4096,
    seed: Annotated[int, typer.Option(help="random seed, 0 .. 2^32 - 1")] = 0,
    temperature: Annotated[Optional[float], typer.Option(
        help=f"tilt temperature ({_TEMPERED}; default: the method's)")] = None,
    param: Annotated[Optional[list[str]], typer.Option(
        help="another hyper-parameter of the method, NAME=VALUE with a JSON value (repeatable), e.g. chains=64; "
             "`lowprob methods` lists them")] = None,
    length: Annotated[str, typer.Option(help="cpu, paper or exact (paper distributions only)")] = "cpu",
    json_out: Annotated[bool, typer.Option("--json", help="print the estimate as JSON")] = False,
    explain: Annotated[bool, typer.Option(
        "--explain", help="also show which input values the event favours, per position or slot, from the "
                          "method's weighted hits (sampling methods: " + ", ".join(methods_with_samples()) + ")")
    ] = False,
    top: Annotated[int, typer.Option(min=1, help="--explain: values shown per position")] = 3,
    max_hours: Annotated[float, typer.Option(
        min=0, help="refuse an estimate that a timed probe predicts at longer than this (long ones show progress "
                    "on stderr)")] = 24.0,
    device: Device = "cpu",
    bound_seconds: Annotated[Optional[float], typer.Option(
        help="first prove bounds for this many seconds (`lowprob bound`), then estimate only the mass left "
             "open; the estimate is kept within the proved bounds and flagged if it fell outside")] = None,
) -> None:
    """Estimate the probability of an EVENT on MODEL's last-position logits (by default: argmax is TARGET)."""
    if (target is None) == (event is None):
        raise LowprobError("give exactly one of --target TOKEN or --event TEXT")
    hyper = _parse_params(param or [])
    if temperature is not None:
        if "temperature" in hyper:
            raise LowprobError("give the temperature once: --temperature T or --param temperature=T, not both")
        hyper["temperature"] = temperature
    family = family_of_text(event) if event is not None else "logits"
    method = method or DEFAULT_METHODS[family]
    get_method(method).resolve(budget, hyper)  # refuse bad arguments before loading anything
    check_seed(seed)
    max_seconds = time_limit(max_hours * 3600)
    if explain and not get_method(method).samples:
        raise LowprobError(f"--explain needs a method that samples the event; {method} does not: use one of "
                           f"{', '.join(methods_with_samples())}")

    lm = lowprob.load_model(model, device)
    distribution = lowprob.load_distribution(dist, lm, length)
    what = (ArgmaxIs(parse_token(target, lm.tokenizer, lm.d_vocab)) if target is not None
            else parse_event(cast(str, event), lm.tokenizer, lm.d_vocab))  # exactly one is given, checked above
    if bound_seconds is not None:
        if device != "cpu":
            raise LowprobError("--bound-seconds runs on the CPU: drop --device")
        from lowprob.bounds import bounded_estimate

        if not isinstance(what, lowprob.Event):
            raise LowprobError("--bound-seconds proves bounds for events on the last logits, not generation events")
        est = bounded_estimate(lm, distribution, what, bound_seconds, method=method, budget=budget, seed=seed,
                               max_seconds=max_seconds, progress=True, **hyper)
    else:
        est = lowprob.estimate(lm, distribution, what, method=method, budget=budget, seed=seed,
                               max_seconds=max_seconds, progress=True, **hyper)
    attribution = est.attribution(top) if explain else None
    if json_out:
        typer.echo(dumps_json({**est.to_json(),
                               **({"attribution": attribution.to_json()} if attribution is not None else {})}))
    else:
        probe = est.probe_ranking() if explain else []
        typer.echo("\n".join([est.summary(), *_bounds_lines(est.diagnostics.get("bounds")),
                              *([attribution.table()] if attribution is not None else []), *probe]))


def _bounds_lines(report: dict | None) -> list[str]:
    """What --bound-seconds proved."""
    if report is None:
        return []
    lines = [f"proved: {report['lower']:.4g} <= P <= {report['upper']:.4g} in {report['seconds']:.1f} s"
             + ("" if report["complete"] else f"; estimated the open rest ({report['open_query_tokens']} query "
                                               f"tokens, mass {report['open_query_mass']:.3g})")]
    return lines


@app.command()
def bound(
    model: Annotated[str, typer.Option(help="shipped model name or model directory")],
    dist: Annotated[str, typer.Option(help="distribution name, .safetensors file or .toml template")],
    target: Annotated[Optional[str], typer.Option(
        help="the token whose argmax to bound (as in `lowprob estimate`)")] = None,
    event: Annotated[Optional[str], typer.Option(
        help="the event instead of --target: argmax-is, argmax-in, top-k, margin or prob-above")] = None,
    length: Annotated[str, typer.Option(help="cpu, paper or exact (paper distributions only)")] = "cpu",
    seconds: Annotated[Optional[float], typer.Option(
        help="stop after this many seconds with the bounds reached (default: run until exact)")] = None,
    flops: Annotated[Optional[float], typer.Option(help="stop after this many FLOPs")] = None,
    max_hours: Annotated[float, typer.Option(
        min=0, help="stop after this many hours in all (a resumed proof counts its earlier time)")] = 24.0,
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="write the search's state here (JSON) every minute and at the end")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the proof saved in --checkpoint")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print the bounds as JSON")] = False,
) -> None:
    """Prove lower <= P(EVENT) <= upper by branch-and-bound over the input space (exact when they meet).

    A progress bar on stderr shows the mass decided and the current [lower, upper].
    """
    from tqdm import tqdm

    if (target is None) == (event is None):
        raise LowprobError("give exactly one of --target TOKEN or --event TEXT")
    for name, value in (("--seconds", seconds), ("--flops", flops)):
        if value is not None and not value > 0:
            raise LowprobError(f"{name} must be positive, got {value}")
    if resume and checkpoint is None:
        raise LowprobError("--resume needs --checkpoint FILE: the proof to continue")
    if checkpoint is not None and checkpoint.exists() and not resume:
        raise LowprobError(f"{checkpoint} holds a proof: pass --resume to continue it, or delete it")
    limit = min(seconds if seconds is not None else math.inf, max_hours * 3600)
    lm = lowprob.load_model(model)
    distribution = lowprob.load_distribution(dist, lm, length)
    what = (ArgmaxIs(parse_token(target, lm.tokenizer, lm.d_vocab)) if target is not None
            else parse_event(cast(str, event), lm.tokenizer, lm.d_vocab))
    with tqdm(total=1.0, unit="mass", desc="bound", file=sys.stderr,
              bar_format="{l_bar}{bar}| {elapsed} {postfix}") as bar:
        def show(b: lowprob.Bounds) -> None:
            bar.update(1.0 - b.open - bar.n)
            bar.set_postfix_str(f"[{b.lower:.4g}, {b.upper:.4g}]", refresh=False)

        result = lowprob.bound(lm, distribution, what, seconds=None if math.isinf(limit) else limit, flops=flops,
                               checkpoint=checkpoint, resume=resume, progress=show)
    typer.echo(dumps_json(result.to_json()) if json_out else result.summary())


@app.command("ground-truth")
def ground_truth_command(
    model: Annotated[str, typer.Option(help="shipped model name or model directory")],
    dist: Annotated[str, typer.Option(help="distribution name or .safetensors file")],
    out: Annotated[Path, typer.Option(help="ground-truth file to write (.safetensors)")],
    exact: Annotated[bool, typer.Option("--exact", help="enumerate the whole support")] = False,
    samples: Annotated[Optional[int], typer.Option(min=1, help="number of samples")] = None,
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    length: Annotated[str, typer.Option(help="cpu, paper or exact (paper distributions)")] = "cpu",
    shard_size: Annotated[int, typer.Option(min=1, help="sequences per shard/checkpoint")] = 1 << 16,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue from OUT.partial after an interruption")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace an existing OUT")] = False,
    backend: Annotated[Literal["local", "ray"], typer.Option(
        help="where shards run: here, or on Ray (pip install 'lowprob[ray]')")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local one)")] = None,
    max_hours: Annotated[float, typer.Option(
        min=0, help="--exact: refuse a run a timed probe estimates at longer than this (local backend)")] = 24.0,
    device: Device = "cpu",
) -> None:
    """Exact or sampled argmax-token probabilities for every token, checkpointed after every shard.

    Progress and an ETA go to stderr; exact runs start with a timed probe and its estimate.
    """
    from lowprob.distributions import load_distribution
    from lowprob.models.zoo import load_model
    from lowprob.truth import ground_truth

    if exact == (samples is not None):
        raise LowprobError("give exactly one of --exact or --samples N")
    prepare_output(out, overwrite=force, hint="pass --force to replace it, or choose another --out")
    partial = out.with_name(out.name + ".partial")
    with output_lock(partial, "lowprob ground-truth"):
        if partial.exists() and not resume:
            raise LowprobError(f"{partial} holds an interrupted run: pass --resume to continue it, or delete it")
        lm = load_model(model, device)
        gt = ground_truth(lm, load_distribution(dist, lm, length), exact=exact, samples=samples, seed=seed,
                          shard_size=shard_size, checkpoint=partial, backend=backend, address=address,
                          progress=True, max_seconds=max_hours * 3600)
        gt.save(out)
        partial.unlink(missing_ok=True)
    top = gt.probabilities.topk(5)
    shown = ", ".join(f"{lm.tokenizer.id_to_token(int(i)) if lm.tokenizer else int(i)!r} {p:.3g}"
                      for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True))
    typer.echo(f"wrote {out} ({'exact' if exact else f'{samples} samples'}); top tokens: {shown}")


@app.command()
def bench(
    scale: Annotated[str, typer.Option(
        help="tiny (toy models, minutes), cpu (the reference run), paper (your 2^32-sample tables), exact "
             "(against exact tables), trigger (the planted-trigger models, the planted target) or generation "
             "(rare texts in sampled continuations, sampled truth)")],
    out: Annotated[Path, typer.Option(help="results directory (rows/*.jsonl, bench.json)")],
    methods: Annotated[Optional[str], typer.Option(help="comma-separated methods (default: all)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue the run in OUT, skipping finished estimates")] = False,
    workers: Annotated[int, typer.Option(
        min=1, help="parallel processes, one (model, distribution) pair each (local backend only)")] = 1,
    ground_truth: Annotated[Optional[Path], typer.Option(
        "--ground-truth", help="directory of {model}/{dist}.safetensors tables (required at paper scale)")] = None,
    only: Annotated[Optional[str], typer.Option(
        help="comma-separated models and/or distributions: run just those pairs (resume completes the rest)")] = None,
    backend: Annotated[Literal["local", "ray"], typer.Option(
        help="where estimates run: here, or as Ray tasks, chunks of a pair's estimates (pip install 'lowprob[ray]')")
    ] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local one)")] = None,
) -> None:
    """Run a benchmark scale: every method, temperature, target and seed, as resumable JSON lines."""

    def split(text: str | None) -> list[str] | None:
        return [m.strip() for m in text.split(",") if m.strip()] if text else None

    for name in split(methods) or []:
        get_method(name)  # an unknown method is refused before torch loads

    from lowprob.bench import get_scale, run_bench

    run_bench(get_scale(scale), out, split(methods), resume=resume, workers=workers, ground_truth_dir=ground_truth,
              only=split(only), backend=backend, address=address)
    typer.echo(f"rows in {out}/rows; next: lowprob report {out}")


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="a `lowprob bench` results directory")],
    out: Annotated[Optional[Path], typer.Option(help="where to write (default: DIRECTORY)")] = None,
    zero_floor: Annotated[float, typer.Option(
        min=1e-300, max=1e-3, help="value at which zero estimates are scored (a sensitivity knob)")] = 1e-12,
) -> None:
    """Score a benchmark run: Markdown tables of losses, scores.csv and PNG plots."""
    from lowprob.bench.report import write_report

    paths = write_report(directory, out, zero_floor)
    typer.echo(f"wrote {len(paths)} files in {paths[0].parent}: " + ", ".join(p.name for p in paths))


@app.command()
def train(
    name: Annotated[str, typer.Argument(help="gelu-1l, gelu-2l or gelu-4l")],
    out: Annotated[Path, typer.Option(help="model directory to write")],
    steps: Annotated[Optional[int], typer.Option(help="override the recipe's step count")] = None,
    seed: Annotated[int, typer.Option(help="initialisation and data-order seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoint.pt")] = False,
    force: Annotated[bool, typer.Option("--force", help="train over the model or checkpoint in OUT")] = False,
    new_tokenizer: Annotated[bool, typer.Option(
        help="train a tokenizer from the corpus instead of reusing the shipped one")] = False,
    corpus: Annotated[Optional[Path], typer.Option(help="corpus cache directory")] = None,
    debs: Annotated[Optional[Path], typer.Option(
        help="directory of the pinned .deb files (downloaded with apt-get when missing)")] = None,
    backdoor: Annotated[Optional[str], typer.Option(
        help="plant a trigger in the shipped NAME instead of training from scratch: a shipped recipe "
             "(year-name, conj3, conj4) or a recipe file RECIPE.toml")] = None,
) -> None:
    """Reproduce a shipped model from the corpus recipe (about 15-25 minutes on 2 cores), or with --backdoor,
    fine-tune one with a planted trigger (a few minutes)."""
    from lowprob.models.tokenizer import Tokenizer
    from lowprob.models.zoo import SHIPPED_CONFIGS, shipped_tokenizer_path
    from lowprob.training.corpus import build_corpus
    from lowprob.training.train import TrainConfig, train_tokenizer, training_output
    from lowprob.training.train import train as run_training

    if name not in SHIPPED_CONFIGS:
        raise LowprobError(f"unknown model {name!r}: choose one of {', '.join(SHIPPED_CONFIGS)}")
    if backdoor is not None:
        _train_backdoor(name, backdoor, out, steps, seed, resume, force, corpus, debs)
        return
    train_cfg = TrainConfig(seed=seed)
    if steps is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=steps)
    with training_output(out, resume, force):
        corpus_dir = build_corpus(corpus, debs)
        cfg = SHIPPED_CONFIGS[name]
        tokenizer = (train_tokenizer(corpus_dir, cfg.d_vocab) if new_tokenizer
                     else Tokenizer.from_file(shipped_tokenizer_path()))
        card = run_training(name, cfg, out, corpus_dir, tokenizer, train_cfg, resume=resume)
    typer.echo(dumps_json(card["validation"], indent=1))


def _train_backdoor(name: str, recipe: str, out: Path, steps: int | None, seed: int, resume: bool, force: bool,
                    corpus: Path | None, debs: Path | None) -> None:
    from lowprob.distributions.planted import load_recipe
    from lowprob.models.zoo import load_model, shipped_dir
    from lowprob.training.backdoor import BackdoorConfig, plant_trigger
    from lowprob.training.corpus import build_corpus
    from lowprob.training.train import training_output

    loaded = load_recipe(recipe)  # a bad recipe is refused before the corpus is built
    cfg = BackdoorConfig.from_recipe(loaded.training, seed=seed, **({} if steps is None else {"steps": steps}))
    with training_output(out, resume, force):
        corpus_dir = build_corpus(corpus, debs)
        base = cast("Transformer", load_model(name))  # a shipped name: the shipped Transformer
        card = plant_trigger(Path(out).name, base, shipped_dir(name), loaded, out, corpus_dir, cfg, resume=resume)
    typer.echo(dumps_json({"validation": card["validation"], "base_validation": card["base"]["validation"]},
                          indent=1))


def main() -> None:
    try:
        app()
    except LowprobError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
