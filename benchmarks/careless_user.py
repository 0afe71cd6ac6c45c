"""A careless user's hour (issue 25): how lowprob answers a hurried user's mistakes, counted.

Run: python benchmarks/careless_user.py [--src DIR] [--out FILE.jsonl] [--jobs 2] [--timeout 45]
                                        [--only REGEX] [--work DIR] [--list]

Every case below is declared once: an id, a kind (``cli``: ``lowprob ARGS`` in a fresh directory;
``python``: a snippet of the public API; ``scenario``: a fault such as a kill or two runs at once), what
it runs, and what a correct lowprob answers — ``error`` (a clean refusal: exit code 2 with one line
``error: ...`` or click's ``Error: ...``, no traceback; in Python a ``LowprobError``), ``ok``, or ``any``
(either, a check deciding). Checks catch what an exit code hides: a file replaced or rows deleted (data
lost), non-strict JSON or a seed that draws seed 0's samples (silent wrong). Each case is then observed
as one class:

  ok            the run succeeded (and its checks passed)
  clean_error   a clean refusal
  traceback     any other exception, a crash or an exit without a clean error line
  hang          no answer within --timeout seconds
  progress      no answer in time, but a progress bar or ETA on stderr: a long job, not a hang
  silent_wrong  a wrong answer with exit code 0: bad input accepted, or a check failed
  data_lost     a user's file or rows were overwritten or deleted
  refused       a valid input refused (a clean error where the answer should be ok)

``--src DIR`` puts DIR first on PYTHONPATH for every case, so the same script measures another tree
(``--src /tmp/orig/src``: before the fixes). Fixtures (model copies, tiny Hugging Face models built
offline, templates, bench and ground-truth results) are built first with the lowprob under test, in
``--work`` (a temporary directory by default). Cases run as subprocesses, at most ``--jobs`` at a time
(the Python cases share one worker interpreter, restarted after a hang or a crash), with
OMP_NUM_THREADS=1, an 8 GiB address-space limit, ``apt-get`` replaced by a stub that fails (nothing is
downloaded) and LOWPROB_CACHE inside the work directory. The result is deterministic up to timing in the
fault scenarios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ("ok", "clean_error", "traceback", "hang", "progress", "silent_wrong", "data_lost", "refused")
EXPECT = {"error": {"clean_error"}, "ok": {"ok"}, "any": {"ok", "clean_error"}}
MEMORY_LIMIT = 8 << 30  # bytes of address space per case: a runaway allocation fails instead of swapping
PROGRESS = re.compile(r"\d+%\||\d[\d.]* ?[kMG]?(?:it|seq|est|row)/s|\bETA\b")  # tqdm bars, rates, an ETA
BIG = 1180591620717411303424  # 2**70


# --- cases --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # cli | python | scenario
    run: tuple[str, ...] | str  # cli: argv after `lowprob`; python: code; scenario: a SCENARIOS key
    expect: str  # error | ok | any (see EXPECT)
    copy: tuple[str, ...] = ()  # cli: fixtures copied into the case's directory ("SRC" or "SRC:DEST")
    checks: tuple[Callable, ...] = ()  # (result, case dir, fixtures) -> (class, why) or None
    slow_ok: bool = False  # a long job that shows progress is an acceptable answer
    fresh: bool = False  # python: run in a fresh interpreter (module attributes before anything is imported)
    env: tuple[tuple[str, str], ...] = ()
    note: str = ""  # why the expectation, where it is debatable

    def command(self) -> str:
        if self.kind == "cli":
            return "lowprob " + shlex.join(self.run)
        return self.run


@dataclass
class Result:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    observed: str = ""
    note: str = ""
    stderr_last: str = ""


def cli(cid: str, args: str, expect: str, *, copy: str = "", checks: tuple = (), slow_ok: bool = False,
        env: dict | None = None, note: str = "") -> Case:
    """A CLI case: ``args`` as a shell would split it; ``{fx}`` is the fixture directory."""
    argv = tuple(shlex.split(args))
    if "--json" in argv and not checks:
        checks = (strict_json,)
    return Case(cid, "cli", argv, expect, tuple(copy.split()), tuple(checks), slow_ok,
                env=tuple((env or {}).items()), note=note)


def py(cid: str, code: str, expect: str, *, fresh: bool = False, slow_ok: bool = False, note: str = "") -> Case:
    return Case(cid, "python", textwrap.dedent(code).strip(), expect, slow_ok=slow_ok, fresh=fresh, note=note)


# checks: each returns (class, why) when it sees a problem; those marked ``always`` run whatever the exit code,
# the others only after a success
def unchanged(name: str, original: str | None = None) -> Callable:
    """The user's file ``name`` must still hold what it held (a copy of fixture ``original``)."""

    def check(res: Result, d: Path, fx: Path):
        path = d / name
        if not path.is_file() or path.read_bytes() != (fx / (original or name)).read_bytes():
            return "data_lost", f"{name} was {'deleted' if not path.exists() else 'overwritten'}"
        return None

    check.always = True
    return check


def keeps_rows(name: str, original: str) -> Callable:
    """Every complete row of the fixture's JSON-lines file ``original`` is still in ``name``."""

    def check(res: Result, d: Path, fx: Path):
        before, after = _rows(fx / original), _rows(d / name)
        lost = [r for r in before if r not in after]
        return ("data_lost", f"{len(lost)} of {len(before)} rows of {name} are gone") if lost else None

    check.always = True
    return check


def no_duplicates(name: str) -> Callable:
    """The bench rows file ``name`` holds each (method, hyper, target, seed) once."""

    def check(res: Result, d: Path, fx: Path):
        keys = [_row_key(r) for r in _rows(d / name, parsed=True)]
        dup = len(keys) - len(set(keys))
        return ("silent_wrong", f"{dup} duplicated rows in {name}") if dup else None

    return check


def strict_json(res: Result, d: Path, fx: Path):
    """stdout is strict JSON (no NaN, no Infinity): what every JSON lowprob writes must be."""
    try:
        json.loads(res.stdout, parse_constant=_refuse_constant)
    except ValueError as exc:
        return "silent_wrong", f"stdout is not strict JSON ({str(exc)[:80]})"
    return None


def differs_from(args: str) -> Callable:
    """The JSON estimate differs from that of the reference command ``args`` (seed 0): another seed
    must give other draws."""

    def check(res: Result, d: Path, fx: Path):
        ref = _reference(args, fx)
        try:
            mine = json.loads(res.stdout)
        except ValueError:
            return "silent_wrong", "stdout is not JSON"
        same = all(mine.get(k) == ref.get(k) for k in ("probability", "interval", "diagnostics"))
        return ("silent_wrong", "the same draws as seed 0") if same else None

    return check


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def _rows(path: Path, parsed: bool = False) -> list:
    """The complete JSON rows of a file (canonical strings, or dicts with ``parsed``); [] if it is missing."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows.append(row if parsed else json.dumps(_stable(row), sort_keys=True))
    return rows


def _stable(row: dict) -> dict:
    """A row without what differs between identical runs (wall time)."""
    return {k: v for k, v in row.items() if k not in ("cost", "seconds", "time", "flops")}


def _row_key(row: dict) -> tuple:
    return row.get("method"), json.dumps(row.get("hyper"), sort_keys=True), row.get("target"), row.get("seed"), \
        row.get("key")


GOOD_TOML = '''template = "Q: Is{city} in{country}? A:"
[slots.city]
values = [" Paris", " Lima", " Oslo", " Kyiv"]
weights = [0.4, 0.3, 0.2, 0.1]
[slots.country]
values = [" France", " Peru", " Norway", " Ukraine", " New Zealand"]
'''
TEMPLATES = {  # fixture name -> content; all but the good ones should be refused
    "template.toml": GOOD_TOML,
    "template.json": json.dumps({"template": "Q: Is{city} in{country}? A:",
                                 "slots": {"city": {"values": [" Paris", " Lima"], "weights": [0.5, 0.5]},
                                           "country": {"values": [" France", " Peru"]}}}),
    "typo-weigths.toml": GOOD_TOML.replace("weights", "weigths"),
    "typo-weight.toml": GOOD_TOML.replace("weights", "weight"),
    "syntax.toml": 'template = "Q: Is{city}\n[slots.city]\nvalues = [" Paris"]\n',
    "dup-key.toml": GOOD_TOML.replace('weights = [0.4', 'values = [" Rome"]\nweights = [0.4'),
    "dup-table.toml": GOOD_TOML + '[slots.city]\nvalues = [" Rome"]\n',
    "unknown-key.toml": 'title = "my template"\n' + GOOD_TOML,
    "no-slot.toml": 'template = "Q: Is Paris in France? A:"\n[slots]\n',
    "undefined-slot.toml": GOOD_TOML.replace("{country}", "{land}"),
    "unused-slot.toml": GOOD_TOML + '[slots.year]\nvalues = [" 1999"]\n',
    "repeated-slot.toml": GOOD_TOML.replace("? A:", "? Is{city}? A:"),
    "empty-values.toml": GOOD_TOML.replace('values = [" France", " Peru", " Norway", " Ukraine", " New Zealand"]',
                                           "values = []"),
    "empty-string.toml": GOOD_TOML.replace('" Kyiv"', '""'),
    "dup-values.toml": GOOD_TOML.replace('" Kyiv"', '" Paris"'),
    "int-values.toml": GOOD_TOML.replace('[" Paris", " Lima", " Oslo", " Kyiv"]', "[1, 2, 3, 4]"),
    "neg-weight.toml": GOOD_TOML.replace("[0.4, 0.3, 0.2, 0.1]", "[0.6, 0.3, 0.2, -0.1]"),
    "nan-weight.toml": GOOD_TOML.replace("[0.4, 0.3, 0.2, 0.1]", "[nan, 0.3, 0.2, 0.1]"),
    "sum-weight.toml": GOOD_TOML.replace("[0.4, 0.3, 0.2, 0.1]", "[0.4, 0.3, 0.2, 0.3]"),
    "count-weight.toml": GOOD_TOML.replace("[0.4, 0.3, 0.2, 0.1]", "[0.5, 0.5]"),
    "str-weight.toml": GOOD_TOML.replace("[0.4, 0.3, 0.2, 0.1]", '["0.4", "0.3", "0.2", "0.1"]'),
    "too-long.toml": GOOD_TOML.replace("Q: Is", "Q: " + "the sea is blue and " * 30 + "Is"),
    "int-template.toml": GOOD_TOML.replace('"Q: Is{city} in{country}? A:"', "5"),
    "slot-not-table.toml": 'template = "Q: Is{city}? A:"\n[slots]\ncity = " Paris"\n',
    "bad.json": '{"template": "Q: Is{city}? A:", "slots": {"city": {"values": [" Paris"]}},}',
    "dup-key.json": '{"template": "Q: Is{city}? A:", "slots": {"city": {"values": [" Paris", " Lima"]}}, '
                    '"template": "Q: Was{city} big? A:"}',
    "empty.toml": "",
}


def _estimate(dist: str, rest: str = "--target id:8") -> str:
    return f"estimate --model gelu-1l --dist {dist} --method naive --budget 64 {rest}"


READ_ONLY = "any" if os.geteuid() == 0 else "error"  # root writes in read-only directories
FAST = "--model gelu-1l --dist tiny-uniform --method naive --budget 64"  # an estimate in a fraction of a second
GEN = "--model gelu-1l --dist tiny-uniform --method tilted --budget 32 --event"
SEED_REF = "estimate --model gelu-1l --dist tiny-uniform --method ceis --budget 64 --target id:8 --json"
GT = "ground-truth --model gelu-1l --dist tiny-uniform"
BENCH = "bench --scale tiny --methods naive,itgis --only toy-1l,tiny-uniform"  # the fixture bench run (108 rows)
BENCH_ROWS = "bench/rows/toy-1l/tiny-uniform.jsonl"
BENCH_ALL = "bench --scale tiny --methods naive"  # every pair of the tiny scale: seconds of planning, 72 rows
MLP_BENCH = "mlp bench --quick --task means --task orthant"
GT_RUN = "ground-truth --model gelu-1l --dist tiny-zipf --samples 300000 --shard-size 10000"  # ~5 s, 30 shards

CLI_CASES = [
    # --- the command itself, models, methods ---
    cli("cli-help", "--help", "ok"),
    cli("cli-unknown-command", "estimat --model gelu-1l", "error"),
    cli("cli-version", "--version", "any", note="no --version option: a click error is a fine answer"),
    cli("cli-bound-missing", "bound --model gelu-1l --dist hex --target id:8", "error",
        note="`bound` is in the design contract but not built yet: a clean 'no such command'"),
    cli("models-ok", "models", "ok"),
    cli("models-extra-arg", "models gelu-1l", "error"),
    cli("methods-ok", "methods", "ok"),
    cli("env-threads-zero", f"estimate {FAST} --target id:8", "error", env={"LOWPROB_THREADS": "0"}),
    cli("env-threads-word", f"estimate {FAST} --target id:8", "error", env={"LOWPROB_THREADS": "two"}),
    # --- dists ---
    cli("dists-list", "dists", "ok"),
    cli("dists-hex", "dists hex", "ok"),
    cli("dists-hex-paper", "dists hex --length paper", "ok"),
    cli("dists-unknown", "dists hexx", "error"),
    cli("dists-length-bad", "dists hex --length huge", "error"),
    cli("dists-tiny-length-paper", "dists tiny-uniform --length paper", "error",
        note="--length names paper variants; a tiny family has none"),
    cli("dists-top-zero", "dists hex --top 0", "error"),
    cli("dists-samples-negative", "dists hex --samples -1", "error"),
    cli("dists-samples-2e70", f"dists hex --samples {BIG}", "error"),
    cli("dists-seed-negative", "dists hex --seed -1", "error"),
    cli("dists-seed-2e70", f"dists hex --seed {BIG}", "error"),
    cli("dists-template", "dists {fx}/template.toml", "ok"),
    cli("dists-template-dir", "dists {fx}/dir.toml", "error"),
    cli("dists-template-typo", "dists {fx}/typo-weigths.toml", "error",
        note="`weigths` is silently ignored: the slot becomes uniform"),
    cli("dists-trigger", "dists trigger-p4", "ok"),
    cli("dists-hf-model", "dists hex --model {fx}/hf", "ok"),
    cli("dists-hf-no-tokenizer", "dists hex --model {fx}/hf-notok", "error"),
    # --- estimate: target and event ---
    cli("est-ok", f"estimate {FAST} --target id:8", "ok"),
    cli("est-ok-json", f"estimate {FAST} --target id:8 --json", "ok"),
    cli("est-no-target", f"estimate {FAST}", "error"),
    cli("est-target-and-event", f"estimate {FAST} --target id:8 --event 'argmax-is: id:8'", "error"),
    cli("est-target-ambiguous", f"estimate {FAST} --target 8", "error"),
    cli("est-target-json-text", f"estimate {FAST} --target '\"(\"'", "ok"),
    cli("est-target-two-tokens", f"estimate {FAST} --target 'hello world'", "error"),
    cli("est-target-empty", f"estimate {FAST} --target ''", "error"),
    cli("est-target-too-big", f"estimate {FAST} --target id:99999", "error"),
    cli("est-target-negative", f"estimate {FAST} --target -1", "error"),
    cli("est-target-2e70", f"estimate {FAST} --target id:{BIG}", "error"),
    cli("est-target-bad-json", f"estimate {FAST} --target '\"abc'", "error"),
    cli("ev-argmax-ambiguous", f"estimate {FAST} --event 'argmax-is: 8'", "error",
        note="'8' is also a token's text; --target 8 is refused as ambiguous, the event form should be too"),
    cli("ev-argmax-in-ambiguous", f"estimate {FAST} --event 'argmax-in: 8, 9'", "error"),
    cli("ev-argmax-id-prefix", f"estimate {FAST} --event 'argmax-is: id:8'", "ok",
        note="the design's event grammar: TOKEN is an id, id:N, or a JSON string"),
    cli("ev-argmax-text", f"estimate {FAST} --event 'argmax-is: \"(\"'", "ok"),
    cli("ev-empty", f"estimate {FAST} --event ''", "error"),
    cli("ev-topk-ok", f"estimate {FAST} --event 'top-k: \"(\", 5'", "ok"),
    cli("ev-topk-over-vocab", f"estimate {FAST} --event 'top-k: \"(\", 5000'", "error"),
    cli("ev-margin-nan", f"estimate {FAST} --event 'margin: \"(\", NaN'", "error"),
    cli("ev-prob-above-two", f"estimate {FAST} --event 'prob-above: \"(\", 2'", "error"),
    cli("ev-prob-above-ok", f"estimate {FAST} --event 'prob-above: \"(\", 0.5'", "ok"),
    # --- estimate: generation events ---
    cli("gen-ok", f"estimate {GEN} 'generates: \" the\", steps=4'", "ok"),
    cli("gen-steps-1e9", f"estimate {GEN} 'generates: \" the\", steps=1000000000'", "error", slow_ok=True,
        note="a billion decoding steps cannot finish (and the model's n_ctx is 64)"),
    cli("gen-steps-repeated", f"estimate {GEN} 'generates: \" the\", steps=3, steps=50'", "error",
        note="a repeated option: the later one silently wins"),
    cli("gen-temperature-nan", f"estimate {GEN} 'generates: \" the\", steps=4, temperature=NaN'", "error"),
    cli("gen-temperature-zero", f"estimate {GEN} 'generates: \" the\", steps=4, temperature=0'", "ok",
        note="temperature 0 is documented as greedy decoding"),
    cli("gen-top-k-over-vocab", f"estimate {GEN} 'generates: \" the\", steps=4, top_k=99999'", "error",
        note="debatable: clamping top_k to the vocabulary would also be fair"),
    cli("gen-method-gld", "estimate --model gelu-1l --dist tiny-uniform --method gld --budget 32 "
        "--event 'generates: \" the\", steps=4'", "error"),
    # --- estimate: budget, seed, method and its hyper-parameters ---
    cli("budget-zero", f"estimate {FAST} --target id:8 --budget 0", "error"),
    cli("budget-negative", f"estimate {FAST} --target id:8 --budget -5", "error"),
    cli("budget-float", f"estimate {FAST} --target id:8 --budget 1e3", "error"),
    cli("budget-word", f"estimate {FAST} --target id:8 --budget lots", "error"),
    cli("budget-2e70", f"estimate {FAST} --target id:8 --budget {BIG}", "error"),
    cli("budget-1e15", "estimate --model gelu-1l --dist tiny-uniform --target id:8 --budget 1000000000000000",
        "error", slow_ok=True, note="10^15 model calls cannot finish: refuse, or show an ETA"),
    cli("budget-1e15-naive", f"estimate {FAST} --target id:8 --budget 1000000000000000", "error", slow_ok=True),
    cli("budget-below-minimum", "estimate --model gelu-1l --dist tiny-uniform --method ceis --budget 10 "
        "--target id:8", "error"),
    cli("budget-at-minimum", "estimate --model gelu-1l --dist tiny-uniform --method ceis --budget 32 --target id:8",
        "ok"),
    cli("seed-negative", f"estimate {FAST} --target id:8 --seed -1", "error"),
    cli("seed-float", f"estimate {FAST} --target id:8 --seed 1.5", "error"),
    cli("seed-2e32", f"{SEED_REF} --seed 4294967296", "any", checks=(strict_json, differs_from(SEED_REF)),
        note="torch seeds with the low 32 bits: refusing, or drawing other samples than seed 0, is fine"),
    cli("seed-2e63", f"{SEED_REF} --seed 9223372036854775808", "any",
        checks=(strict_json, differs_from(SEED_REF)), note="refusing, or drawing other samples than seed 0, is fine"),
    cli("seed-2e64", f"{SEED_REF} --seed 18446744073709551616", "any",
        checks=(strict_json, differs_from(SEED_REF))),
    cli("seed-2e70", f"{SEED_REF} --seed {BIG}", "any", checks=(strict_json, differs_from(SEED_REF))),
    cli("method-unknown", "estimate --model gelu-1l --dist tiny-uniform --target id:8 --method magic", "error"),
    cli("method-uppercase", "estimate --model gelu-1l --dist tiny-uniform --target id:8 --method NAIVE", "error"),
    cli("method-smc-logits", "estimate --model gelu-1l --dist tiny-uniform --target id:8 --method smc "
        "--budget 64", "error"),
    cli("temperature-zero", f"estimate {FAST.replace('naive', 'itgis')} --target id:8 --temperature 0", "error"),
    cli("temperature-negative", f"estimate {FAST.replace('naive', 'itgis')} --target id:8 --temperature -1",
        "error"),
    cli("temperature-nan", f"estimate {FAST.replace('naive', 'itgis')} --target id:8 --temperature nan", "error"),
    cli("temperature-inf", f"estimate {FAST.replace('naive', 'itgis')} --target id:8 --temperature inf", "error"),
    cli("temperature-naive", f"estimate {FAST} --target id:8 --temperature 0.5", "error",
        note="naive has no temperature"),
    cli("temperature-ok", f"estimate {FAST.replace('naive', 'itgis')} --target id:8 --temperature 0.5", "ok"),
    cli("param-no-equals", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains", "error"),
    cli("param-unknown", f"estimate {FAST} --target id:8 --param chains=4", "error"),
    cli("param-not-json", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains=four", "error"),
    cli("param-zero", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains=0", "error"),
    cli("param-float-for-int", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains=2.5",
        "error"),
    cli("param-infinite", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains=1e999", "error"),
    cli("param-rho-two", f"estimate {FAST.replace('naive', 'ceis')} --target id:8 --param rho=2", "error"),
    cli("param-rho-nan", f"estimate {FAST.replace('naive', 'ceis')} --target id:8 --param rho=NaN", "error"),
    cli("param-empty-list", f"estimate {FAST.replace('naive', 'ceis')} --target id:8 --param 'temperatures=[]'",
        "error"),
    cli("param-bool-as-string", f"estimate {FAST.replace('naive', 'ceis')} --target id:8 --param 'reuse=\"yes\"'",
        "error"),
    cli("param-repeated", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains=4 "
        "--param chains=8", "error", note="a duplicate key: the later one silently wins"),
    cli("param-ok", f"estimate {FAST.replace('naive', 'mhis')} --target id:8 --param chains=4", "ok"),
    cli("length-bad", f"estimate {FAST} --target id:8 --length huge", "error"),
    cli("length-paper-tiny", f"estimate {FAST} --target id:8 --length paper", "error",
        note="--length names paper variants; a tiny family has none"),
    cli("length-exact-hex", _estimate("hex --length exact"), "ok"),
    # --- estimate: distributions ---
    cli("dist-unknown", _estimate("hexx"), "error"),
    cli("dist-empty", _estimate("''"), "error"),
    cli("dist-directory", _estimate("{fx}/model"), "error"),
    cli("dist-missing-file", _estimate("missing.safetensors"), "error"),
    cli("dist-truncated", _estimate("{fx}/dist-trunc.safetensors"), "error"),
    cli("dist-text-file", _estimate("{fx}/notes.txt"), "error"),
    cli("dist-is-ground-truth", _estimate("{fx}/gt.safetensors"), "error"),
    cli("dist-file-ok", _estimate("{fx}/dist.safetensors"), "ok"),
    cli("dist-file-too-long", _estimate("{fx}/dist-long.safetensors"), "error"),
    cli("dist-trigger", _estimate("trigger-p4"), "ok"),
    # --- estimate: prompt templates ---
    *[cli(f"tpl-{name.replace('.', '-')}", _estimate("{fx}/" + name), "ok" if name.startswith("template") else "error",
          note="a misspelt key is silently ignored" if name.startswith("typo") else "")
      for name in ("template.toml", "template.json", "typo-weigths.toml", "syntax.toml")],
    cli("tpl-directory", _estimate("{fx}/dir.toml"), "error"),
    cli("tpl-missing", _estimate("missing.toml"), "error"),
    # --- estimate: models and devices ---
    cli("model-unknown", _estimate("tiny-uniform").replace("gelu-1l", "gelu-3l"), "error"),
    cli("model-empty", _estimate("tiny-uniform").replace("gelu-1l", "''"), "error"),
    cli("model-text-file", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/notes.txt"), "error"),
    cli("model-copy-ok", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/model"), "ok"),
    cli("model-truncated-weights", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/model-trunc"), "error"),
    cli("model-no-card", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/model-nocard"), "error"),
    cli("model-bad-config", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/model-badconfig"), "error"),
    cli("model-no-tokenizer", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/model-notok"), "error"),
    cli("model-empty-dir", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/empty-dir"), "error"),
    cli("model-hf-ok", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/hf"), "ok"),
    cli("model-hf-truncated", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/hf-trunc"), "error"),
    cli("model-hf-pickle-only", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/hf-pickle"), "any",
        note="debatable: loading pytorch_model.bin (weights_only) or refusing pickles clearly are both fair"),
    cli("model-hf-no-weights", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/hf-noweights"), "error"),
    cli("model-hf-unknown-type", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/hf-badtype"), "error"),
    cli("model-hf-no-tokenizer-text", _estimate("tiny-uniform", "--target '\"(\"'").replace("gelu-1l",
                                                                                         "{fx}/hf-notok"), "error"),
    cli("model-hf-no-tokenizer-id", _estimate("tiny-uniform").replace("gelu-1l", "{fx}/hf-notok"), "ok"),
    cli("device-cuda", f"estimate {FAST} --target id:8 --device cuda", "any", note="ok where there is a GPU"),
    cli("device-gpu", f"estimate {FAST} --target id:8 --device gpu", "error"),
    cli("device-cuda-9", f"estimate {FAST} --target id:8 --device cuda:9", "error"),
    # --- estimate: output ---
    cli("explain-ok", f"estimate {FAST} --target id:8 --explain", "ok"),
    cli("explain-json", f"estimate {FAST} --target id:8 --explain --json", "ok"),
    cli("explain-gld", "estimate --model gelu-1l --dist tiny-uniform --method gld --budget 64 --target id:8 "
        "--explain", "error"),
    cli("explain-top-zero", f"estimate {FAST} --target id:8 --explain --top 0", "error"),
    cli("json-ceis-rare", "estimate --model gelu-1l --dist hex --target id:4000 --budget 32 --json", "ok",
        note="no hit: diagnostics hold log-weights of -inf, written as -Infinity"),
    cli("json-gld-rare", "estimate --model gelu-1l --dist hex --method gld --target id:4000 --budget 64 --json",
        "ok"),
    # --- ground-truth ---
    cli("gt-ok", f"{GT} --exact --out gt.safetensors", "ok"),
    cli("gt-out-notes", f"{GT} --exact --out notes.txt", "error", copy="notes.txt", checks=(unchanged("notes.txt"),),
        note="an existing unrelated file would be replaced"),
    cli("gt-out-replaces-bigger", f"{GT} --samples 100 --out gt.safetensors", "error",
        copy="gt-big.safetensors:gt.safetensors", checks=(unchanged("gt.safetensors", "gt-big.safetensors"),),
        note="a 100,000-sample table replaced by a 100-sample one"),
    cli("gt-neither", f"{GT} --out gt.safetensors", "error"),
    cli("gt-both", f"{GT} --exact --samples 10 --out gt.safetensors", "error"),
    cli("gt-samples-zero", f"{GT} --samples 0 --out gt.safetensors", "error"),
    cli("gt-samples-2e70", f"{GT} --samples {BIG} --out gt.safetensors", "error"),
    cli("gt-exact-too-big", "ground-truth --model gelu-1l --dist hex --exact --out gt.safetensors", "error"),
    cli("gt-max-hours-tiny", "ground-truth --model gelu-1l --dist hex --length exact --exact --max-hours 0.0001 "
        "--out gt.safetensors", "error"),
    cli("gt-max-hours-nan", "ground-truth --model gelu-1l --dist hex --length exact --exact --max-hours nan "
        "--out gt.safetensors", "error", note="a NaN limit turns the time check off"),
    cli("gt-out-proc", f"{GT} --exact --out /proc/careless/gt.safetensors", "error"),
    cli("gt-out-directory", f"{GT} --exact --out .", "error"),
    cli("gt-out-read-only", f"{GT} --exact --out readonly/gt.safetensors", READ_ONLY, copy="readonly",
        note="as root (os.geteuid() == 0) a read-only directory is writable, so either answer is fine"),
    cli("gt-out-under-file", f"{GT} --exact --out notes.txt/gt.safetensors", "error", copy="notes.txt",
        checks=(unchanged("notes.txt"),)),
    cli("gt-shard-zero", f"{GT} --exact --shard-size 0 --out gt.safetensors", "error"),
    cli("gt-seed-negative", f"{GT} --samples 100 --seed -1 --out gt.safetensors", "error"),
    cli("gt-seed-2e70", f"{GT} --samples 100 --seed {BIG} --out gt.safetensors", "error"),
    cli("gt-backend-bad", f"{GT} --exact --backend slurm --out gt.safetensors", "error"),
    cli("gt-resume-nothing", f"{GT} --exact --resume --out gt.safetensors", "any"),
    cli("gt-tiny-length-paper", f"{GT} --length paper --exact --out gt.safetensors", "error"),
    cli("gt-model-truncated", "ground-truth --model {fx}/model-trunc --dist tiny-uniform --exact "
        "--out gt.safetensors", "error"),
    cli("gt-ray-on-cuda", f"{GT} --exact --backend ray --device cuda --out gt.safetensors", "error"),
    # --- bench ---
    cli("bench-ok", "bench --scale tiny --methods naive --only toy-1l,tiny-uniform --out b", "ok"),
    cli("bench-scale-unknown", "bench --scale huge --out b", "error"),
    cli("bench-method-unknown", "bench --scale tiny --methods magic --out b", "error"),
    cli("bench-method-generation", "bench --scale tiny --methods smc --out b", "error"),
    cli("bench-only-unknown", "bench --scale tiny --only gelu-9l --out b", "error"),
    cli("bench-workers-zero", "bench --scale tiny --workers 0 --out b", "error"),
    cli("bench-workers-2e70", f"bench --scale tiny --methods naive --only toy-1l,tiny-uniform --workers {BIG} "
        "--out b", "error"),
    cli("bench-out-proc", "bench --scale tiny --methods naive --only toy-1l,tiny-uniform --out /proc/careless",
        "error"),
    cli("bench-out-read-only", "bench --scale tiny --methods naive --only toy-1l,tiny-uniform --out readonly/b",
        READ_ONLY, copy="readonly"),
    cli("bench-out-file", "bench --scale tiny --methods naive --only toy-1l,tiny-uniform --out notes.txt", "error",
        copy="notes.txt", checks=(unchanged("notes.txt"),)),
    cli("bench-out-existing", f"{BENCH} --out bench", "error", copy="bench",
        checks=(keeps_rows(BENCH_ROWS, BENCH_ROWS),)),
    cli("bench-resume-ok", f"{BENCH} --out bench --resume", "ok", copy="bench",
        checks=(keeps_rows(BENCH_ROWS, BENCH_ROWS), no_duplicates(BENCH_ROWS))),
    cli("bench-resume-corrupt-middle", f"{BENCH} --out bench --resume", "any", copy="bench-corrupt:bench",
        checks=(keeps_rows(BENCH_ROWS, BENCH_ROWS.replace("bench/", "bench-corrupt/")), no_duplicates(BENCH_ROWS)),
        note="a corrupt row in the middle: refuse clearly, or redo it keeping the others"),
    cli("bench-resume-other-scale", "bench --scale cpu --out bench --resume", "error", copy="bench"),
    cli("bench-resume-bad-config", f"{BENCH} --out bench --resume", "error", copy="bench-badjson:bench"),
    cli("bench-paper-no-truth", "bench --scale paper --out b", "error"),
    cli("bench-paper-truth-missing", "bench --scale paper --ground-truth missing --out b", "error"),
    cli("bench-trigger-with-truth", "bench --scale trigger --ground-truth . --out b", "error"),
    cli("bench-generation-workers", "bench --scale generation --workers 2 --out b", "error"),
    cli("bench-ray-workers", "bench --scale tiny --backend ray --workers 2 --out b", "error"),
    # --- report ---
    cli("report-ok", "report bench", "ok", copy="bench"),
    cli("report-missing", "report nowhere", "error"),
    cli("report-file", "report notes.txt", "error", copy="notes.txt"),
    cli("report-empty-dir", "report .", "error"),
    cli("report-corrupt-middle", "report bench", "error", copy="bench-corrupt:bench",
        note="a corrupt row in the middle: scoring the rest silently would hide it"),
    cli("report-torn-last-line", "report bench", "ok", copy="bench-torn:bench",
        note="a torn last line is what a crash leaves: dropping it is documented"),
    cli("report-bad-config", "report bench", "error", copy="bench-badjson:bench"),
    cli("report-no-rows", "report bench", "error", copy="bench-norows:bench"),
    cli("report-out-proc", "report bench --out /proc/careless", "error", copy="bench"),
    cli("report-out-file", "report bench --out notes.txt", "error", copy="bench notes.txt",
        checks=(unchanged("notes.txt"),)),
    cli("report-zero-floor-zero", "report bench --zero-floor 0", "error", copy="bench"),
    cli("report-zero-floor-nan", "report bench --zero-floor nan", "error", copy="bench"),
    # --- train (only what is refused before the corpus is built; apt-get is a failing stub) ---
    cli("train-unknown", "train gelu-3l --out m", "error"),
    cli("train-steps-zero", "train gelu-1l --out m --steps 0", "error"),
    cli("train-steps-negative", "train gelu-1l --out m --steps -3", "error"),
    cli("train-backdoor-unknown", "train gelu-1l --out m --backdoor month-city", "error"),
    cli("train-out-proc", "train gelu-1l --out /proc/careless --steps 1 --corpus corpus --debs debs", "error",
        note="on today's tree the corpus download fails first (apt-get is a stub here)"),
    cli("train-out-file", "train gelu-1l --out notes.txt --steps 1 --corpus corpus --debs debs", "error",
        copy="notes.txt", checks=(unchanged("notes.txt"),)),
    # --- complete ---
    cli("complete-ok", "complete --model gelu-1l --prompt 'def f(' --tokens 5", "ok"),
    cli("complete-empty-prompt", "complete --model gelu-1l --prompt '' --tokens 5", "any"),
    cli("complete-tokens-zero", "complete --model gelu-1l --prompt hi --tokens 0", "error"),
    cli("complete-tokens-2e70", f"complete --model gelu-1l --prompt hi --tokens {BIG}", "error"),
    cli("complete-tokens-over-context", "complete --model gelu-1l --prompt hi --tokens 200", "any",
        note="more tokens than n_ctx (64): refuse, or slide the window"),
    cli("complete-long-prompt", "complete --model gelu-1l --tokens 3 --prompt '" + "the sea is blue " * 40 + "'",
        "any"),
    cli("complete-model-unknown", "complete --model gelu-3l --prompt hi", "error"),
    cli("complete-hf-no-tokenizer", "complete --model {fx}/hf-notok --prompt hi", "error"),
    # --- mlp expect / orthant / bench ---
    cli("mlp-expect-ok", "mlp expect --width 8 --hidden 1", "ok"),
    cli("mlp-expect-width-2e70", f"mlp expect --width {BIG}", "error"),
    cli("mlp-expect-width-1e5", "mlp expect --width 100000 --hidden 1", "error",
        note="80 GB of weights: refuse clearly rather than die in the allocator"),
    cli("mlp-expect-activation", "mlp expect --width 8 --activation relux", "error"),
    cli("mlp-expect-k-four", "mlp expect --width 8 --k 4", "error"),
    cli("mlp-expect-seed-negative", "mlp expect --width 8 --seed -1", "error"),
    cli("mlp-expect-mc-2e70", f"mlp expect --width 8 --hidden 1 --mc-samples {BIG}", "error"),
    cli("mlp-expect-threads-2e70", f"mlp expect --width 8 --threads {BIG}", "error"),
    cli("mlp-weights-ok", "mlp expect --weights {fx}/mlp.npz", "ok"),
    cli("mlp-weights-missing", "mlp expect --weights missing.npz", "error"),
    cli("mlp-weights-text", "mlp expect --weights {fx}/notes.txt", "error"),
    cli("mlp-weights-empty", "mlp expect --weights {fx}/empty.npz", "error"),
    cli("mlp-weights-bad-shapes", "mlp expect --weights {fx}/mlp-shapes.npz", "error"),
    cli("mlp-weights-nan", "mlp expect --weights {fx}/mlp-nan.npz", "error"),
    cli("mlp-weights-bad-activation", "mlp expect --weights {fx}/mlp-badact.npz", "error"),
    cli("mlp-orthant-ok", "mlp orthant --m 5 --n 5 --method adf", "ok"),
    cli("mlp-orthant-method", "mlp orthant --m 5 --n 5 --method magic", "error"),
    cli("mlp-orthant-m-zero", "mlp orthant --m 0", "error"),
    cli("mlp-orthant-samples-one", "mlp orthant --samples 1", "error"),
    cli("mlp-orthant-beta-nan", "mlp orthant --m 5 --n 5 --method adf --beta nan", "error"),
    cli("mlp-orthant-m-2e70", f"mlp orthant --m {BIG} --method adf", "error"),
    cli("mlp-orthant-seed-negative", "mlp orthant --m 5 --n 5 --method mc --seed -1", "error"),
    cli("mlp-bench-ok", "mlp bench --quick --task orthant --out m", "ok"),
    cli("mlp-bench-out-existing", f"{MLP_BENCH} --out mlp", "error", copy="mlp",
        checks=(keeps_rows("mlp/rows.jsonl", "mlp/rows.jsonl"),),
        note="without --resume the earlier rows.jsonl is deleted"),
    cli("mlp-bench-out-file", f"{MLP_BENCH} --out notes.txt", "error", copy="notes.txt",
        checks=(unchanged("notes.txt"),)),
    cli("mlp-bench-out-proc", f"{MLP_BENCH} --out /proc/careless", "error"),
    cli("mlp-bench-task-unknown", "mlp bench --quick --task tails --task magic --out m", "error"),
    cli("mlp-bench-threads-zero", "mlp bench --quick --threads 0 --out m", "error"),
    cli("mlp-bench-resume-ok", f"{MLP_BENCH} --resume --out mlp", "ok", copy="mlp",
        checks=(keeps_rows("mlp/rows.jsonl", "mlp/rows.jsonl"),)),
    cli("mlp-bench-resume-corrupt-middle", f"{MLP_BENCH} --resume --out mlp", "any", copy="mlp-corrupt:mlp",
        checks=(keeps_rows("mlp/rows.jsonl", "mlp-corrupt/rows.jsonl"),),
        note="a corrupt row in the middle: refuse clearly, or redo it keeping the others"),
]

PY_CASES = [
    # --- load_model ---
    py("py-load-model-none", "lowprob.load_model(None)", "error"),
    py("py-load-model-int", "lowprob.load_model(123)", "error"),
    py("py-load-model-list", "lowprob.load_model(['gelu-1l'])", "error"),
    py("py-load-model-empty", "lowprob.load_model('')", "error"),
    py("py-load-model-unknown", "lowprob.load_model('gelu-3l')", "error"),
    py("py-load-model-uppercase", "lowprob.load_model('GELU-1L')", "error"),
    py("py-load-model-path", "lowprob.load_model(FX / 'model')", "ok"),
    py("py-load-model-file", "lowprob.load_model(FX / 'notes.txt')", "error"),
    py("py-load-model-truncated", "lowprob.load_model(FX / 'model-trunc')", "error"),
    py("py-load-model-bad-card", "lowprob.load_model(FX / 'model-badcard')", "error"),
    py("py-load-model-empty-config", "lowprob.load_model(FX / 'model-emptyconfig')", "error"),
    py("py-load-model-hf", "lowprob.load_model(FX / 'hf')", "ok"),
    py("py-load-model-hf-truncated", "lowprob.load_model(FX / 'hf-trunc')", "error"),
    py("py-load-model-hf-pickle", "lowprob.load_model(FX / 'hf-pickle')", "any",
       note="debatable: load it (weights_only) or refuse pickles clearly"),
    py("py-load-model-cuda", "lowprob.load_model('gelu-1l', device='cuda')", "any", note="ok where there is a GPU"),
    py("py-load-model-device-word", "lowprob.load_model('gelu-1l', device='gpu')", "error"),
    py("py-load-model-device-int", "lowprob.load_model('gelu-1l', device=-1)", "error"),
    # --- load_distribution ---
    py("py-load-dist-model-none", "lowprob.load_distribution('hex', None)", "error"),
    py("py-load-dist-model-name", "lowprob.load_distribution('hex', 'gelu-1l')", "error"),
    py("py-load-dist-name-none", "lowprob.load_distribution(None, M)", "error"),
    py("py-load-dist-name-int", "lowprob.load_distribution(123, M)", "error"),
    py("py-load-dist-unknown", "lowprob.load_distribution('hexx', M)", "error"),
    py("py-load-dist-path-toml", "lowprob.load_distribution(FX / 'template.toml', M)", "ok",
       note="a pathlib.Path is what a Python user passes"),
    py("py-load-dist-path-safetensors", "lowprob.load_distribution(FX / 'dist.safetensors', M)", "ok"),
    py("py-load-dist-str-toml", "lowprob.load_distribution(str(FX / 'template.toml'), M)", "ok"),
    py("py-load-dist-length-bad", "lowprob.load_distribution('hex', M, 'huge')", "error"),
    py("py-load-dist-length-none", "lowprob.load_distribution('hex', M, None)", "error"),
    py("py-load-dist-tiny-paper", "lowprob.load_distribution('tiny-uniform', M, 'paper')", "error"),
    py("py-load-dist-typo", "lowprob.load_distribution(str(FX / 'typo-weigths.toml'), M)", "error"),
    py("py-load-dist-dir-toml", "lowprob.load_distribution(str(FX / 'dir.toml'), M)", "error"),
    py("py-load-dist-truncated", "lowprob.load_distribution(str(FX / 'dist-trunc.safetensors'), M)", "error"),
    py("py-load-dist-ground-truth", "lowprob.load_distribution(str(FX / 'gt.safetensors'), M)", "error"),
    py("py-load-dist-too-long", "lowprob.load_distribution(str(FX / 'dist-long.safetensors'), M)", "error"),
    *[py(f"py-load-dist-{name}", f"lowprob.load_distribution(str(FX / '{file}'), M)", "error") for name, file in (
        ("big-ids", "dist-bigvocab.safetensors"), ("empty-file", "empty.safetensors"),
        ("garbage", "garbage.safetensors"), ("model-weights", "model/model.safetensors"))],
    # --- prompt templates (each estimated: some mistakes only show when the template meets the model) ---
    *[py(f"py-tpl-{name.replace('.', '-')}", f"lowprob.estimate(M, lowprob.load_distribution(str(FX / '{name}'), M), "
         "E, method='naive', budget=64)", "ok" if name.startswith("template") else "error",
         note="a misspelt key is silently ignored" if name.startswith("typo") else "")
      for name in TEMPLATES],
    py("py-tpl-not-utf8", "lowprob.load_distribution(str(FX / 'latin1.toml'), M)", "error"),
    py("py-tpl-bom", "lowprob.load_distribution(str(FX / 'bom.toml'), M)", "any",
       note="a UTF-8 BOM: reading it or refusing clearly are both fine"),
    py("py-tpl-uppercase-suffix", "lowprob.load_distribution(str(FX / 'TEMPLATE.TOML'), M)", "any"),
    # --- estimate: what is estimated ---
    py("py-est-ok", "lowprob.estimate(M, T, E, method='naive', budget=64)", "ok"),
    py("py-est-model-name", "lowprob.estimate('gelu-1l', T, E)", "error"),
    py("py-est-dist-name", "lowprob.estimate(M, 'hex', E)", "error"),
    py("py-est-event-int", "lowprob.estimate(M, T, 358)", "error"),
    py("py-est-event-none", "lowprob.estimate(M, T, None)", "error"),
    py("py-est-event-text", "lowprob.estimate(M, T, 'argmax-is: id:8')", "error"),
    py("py-est-model-none", "lowprob.estimate(None, T, E)", "error"),
    py("py-est-dist-none", "lowprob.estimate(M, None, E)", "error"),
    py("py-est-target-too-big", "lowprob.estimate(M, T, lowprob.ArgmaxIs(99999), method='naive', budget=64)", "error"),
    py("py-est-target-negative", "lowprob.estimate(M, T, lowprob.ArgmaxIs(-1), method='naive', budget=64)", "error"),
    py("py-est-topk-over-vocab", "lowprob.estimate(M, T, lowprob.InTopK(8, 5000), method='naive', budget=64)",
       "error"),
    py("py-est-dist-ids-over-vocab", """
       d = lowprob.TokenDistribution.from_positions([0, ([5000, 5001], [0.5, 0.5])])
       lowprob.estimate(M, d, E, method='naive', budget=64)""", "error"),
    py("py-est-template", "lowprob.estimate(M, lowprob.load_distribution(str(FX / 'template.toml'), M), E, "
       "method='naive', budget=64)", "ok"),
    py("py-est-json-strict", """
       est = lowprob.estimate(M, D, lowprob.ArgmaxIs(4000), budget=32)
       strict(est.to_json())""", "ok", note="to_json of an estimate without hits holds -inf"),
    # --- estimate: budget ---
    *[py(f"py-est-budget-{name}", f"lowprob.estimate(M, T, E, method='naive', budget={value})", expect)
      for name, value, expect in (("zero", "0", "error"), ("negative", "-1", "error"), ("float", "1.5", "error"),
                                  ("string", "'64'", "error"), ("none", "None", "error"), ("bool", "True", "error"),
                                  ("float-whole", "64.0", "error"), ("2e70", "2**70", "error"),
                                  ("numpy", "np.int64(64)", "ok"), ("numpy-uint", "np.uint16(64)", "ok"))],
    py("py-est-budget-1e15-naive", "lowprob.estimate(M, T, E, method='naive', budget=10**15)", "error",
       slow_ok=True),
    py("py-est-budget-1e15-ceis", "lowprob.estimate(M, T, E, budget=10**15)", "error", slow_ok=True),
    py("py-est-budget-below-minimum", "lowprob.estimate(M, T, E, method='ceis', budget=10)", "error"),
    # --- estimate: seed ---
    *[py(f"py-est-seed-{name}", f"lowprob.estimate(M, T, E, method='naive', budget=64, seed={value})", expect)
      for name, value, expect in (("negative", "-1", "error"), ("float", "1.5", "error"), ("string", "'0'", "error"),
                                  ("none", "None", "error"), ("numpy", "np.int64(3)", "ok"),
                                  ("numpy-uint", "np.uint32(3)", "ok"))],
    *[py(f"py-est-seed-{name}", f"""
       a = lowprob.estimate(M, T, E, method='ceis', budget=64, seed={value})
       differs(a, lowprob.estimate(M, T, E, method='ceis', budget=64, seed=0), 'seed {value}')""", "any")
      for name, value in (("2e63", "2**63"), ("2e64", "2**64"), ("2e70", "2**70"))],
    # --- estimate: method and hyper-parameters ---
    *[py(f"py-est-{name}", f"lowprob.estimate(M, T, E, budget=64, {kwargs})", expect)
      for name, kwargs, expect in (
          ("method-unknown", "method='magic'", "error"), ("method-uppercase", "method='NAIVE'", "error"),
          ("method-int", "method=3", "error"), ("method-empty", "method=''", "any"),
          ("temperature-zero", "method='itgis', temperature=0", "error"),
          ("temperature-negative", "method='itgis', temperature=-1", "error"),
          ("temperature-nan", "method='itgis', temperature=float('nan')", "error"),
          ("temperature-inf", "method='itgis', temperature=float('inf')", "error"),
          ("temperature-string", "method='itgis', temperature='0.5'", "error"),
          ("temperature-naive", "method='naive', temperature=0.5", "error"),
          ("chains-zero", "method='mhis', chains=0", "error"),
          ("chains-float", "method='mhis', chains=2.5", "error"),
          ("unknown-hyper", "method='naive', chians=4", "error"),
          ("rho-two", "method='ceis', rho=2", "error"),
          ("rho-nan", "method='ceis', rho=float('nan')", "error"),
          ("temperatures-empty", "method='ceis', temperatures=[]", "error"),
          ("temperatures-negative", "method='ceis', temperatures=[0.5, -1]", "error"),
          ("reuse-string", "method='ceis', reuse='yes'", "error"),
          ("chains-numpy", "method='mhis', chains=np.int64(4)", "ok"))],
    # --- estimate: generation events ---
    py("py-gen-ok", "lowprob.estimate(M, T, lowprob.parse_event('generates: \" the\", steps=4', TOK, 4096), "
       "budget=32)", "ok"),
    py("py-gen-steps-1e9", "lowprob.estimate(M, T, lowprob.parse_event('generates: \" the\", steps=1000000000', "
       "TOK, 4096), budget=32)", "error", slow_ok=True),
    py("py-gen-method-gld", "lowprob.estimate(M, T, lowprob.parse_event('generates: \" the\", steps=4', TOK, 4096), "
       "method='gld', budget=32)", "error"),
    # --- events ---
    *[py(f"py-event-{name}", f"lowprob.{code}", expect) for name, code, expect in (
        ("argmax-float", "ArgmaxIs(8.0)", "error"), ("argmax-string", "ArgmaxIs('8')", "error"),
        ("argmax-bool", "ArgmaxIs(True)", "error"), ("argmax-none", "ArgmaxIs(None)", "error"),
        ("argmax-numpy", "ArgmaxIs(np.int64(8))", "ok"), ("argmax-tensor", "ArgmaxIs(torch.tensor(8))", "ok"),
        ("argmax-in-int", "ArgmaxIn(358)", "error"), ("argmax-in-empty", "ArgmaxIn([])", "error"),
        ("argmax-in-string", "ArgmaxIn('abc')", "error"), ("argmax-in-numpy", "ArgmaxIn(np.array([8, 9]))", "ok"),
        ("argmax-in-none", "ArgmaxIn(None)", "error"),
        ("topk-zero", "InTopK(8, 0)", "error"), ("topk-float", "InTopK(8, 2.5)", "error"),
        ("topk-bool", "InTopK(8, True)", "error"), ("topk-numpy", "InTopK(8, np.int64(3))", "ok"),
        ("margin-nan", "MarginAtLeast(8, float('nan'))", "error"),
        ("margin-inf", "MarginAtLeast(8, float('inf'))", "error"),
        ("margin-string", "MarginAtLeast(8, '1')", "error"),
        ("prob-above-zero", "ProbabilityAbove(8, 0)", "error"), ("prob-above-two", "ProbabilityAbove(8, 2)", "error"),
        ("prob-above-nan", "ProbabilityAbove(8, float('nan'))", "error"))],
    *[py(f"py-parse-{name}", f"lowprob.parse_event({args})", expect) for name, args, expect in (
        ("ambiguous", "'argmax-is: 8', TOK, 4096", "error"), ("id-prefix", "'argmax-is: id:8', TOK, 4096", "ok"),
        ("none", "None, TOK, 4096", "error"), ("empty", "'', TOK, 4096", "error"),
        ("int", "8, TOK, 4096", "error"),
        ("steps-repeated", "'generates: \" the\", steps=3, steps=50', TOK, 4096", "error"),
        ("no-tokenizer", "'argmax-is: \"(\"', None, 4096", "error"),
        ("vocab-none", "'argmax-is: 8', TOK, None", "error"),
        ("margin-nan", "'margin: 8, NaN', TOK, 4096", "error"))],
    *[py(f"py-parse-{name}", f"lowprob.parse_event({text!r}, TOK, 4096)", "error") for name, text in (
        ("unknown-kind", 'argmax-was: "("'), ("no-colon", 'argmax-is "("'), ("argmax-in-empty", "argmax-in:"),
        ("big-id", "argmax-is: 99999"), ("topk-zero", 'top-k: "(", 0'), ("topk-float", 'top-k: "(", 2.5'),
        ("margin-infinity", 'margin: "(", Infinity'), ("margin-string", 'margin: "(", "big"'),
        ("prob-above-zero", 'prob-above: "(", 0'), ("gen-steps-zero", 'generates: " the", steps=0'),
        ("gen-steps-negative", 'generates: " the", steps=-1'), ("gen-steps-float", 'generates: " the", steps=2.5'),
        ("gen-no-steps", 'generates: " the"'), ("gen-no-text", "generates: steps=4"),
        ("gen-empty-text", 'generates: "", steps=4'),
        ("gen-temperature-negative", 'generates: " the", steps=4, temperature=-1'),
        ("gen-temperature-nan", 'generates: " the", steps=4, temperature=NaN'),
        ("gen-top-k-zero", 'generates: " the", steps=4, top_k=0'),
        ("gen-unknown-option", 'generates: " the", steps=4, stpes=5'))],
    # --- ground_truth ---
    *[py(f"py-gt-{name}", f"lowprob.ground_truth(M, T, {kwargs})", expect) for name, kwargs, expect in (
        ("samples-float", "samples=1.5", "error"), ("samples-zero", "samples=0", "error"),
        ("samples-negative", "samples=-1", "error"), ("samples-string", "samples='10'", "error"),
        ("samples-bool", "samples=True", "error"), ("samples-2e70", "samples=2**70", "error"),
        ("samples-numpy", "samples=np.int64(1000)", "ok"), ("neither", "", "error"),
        ("both", "exact=True, samples=10", "error"), ("exact-ok", "exact=True", "ok"),
        ("shard-zero", "exact=True, shard_size=0", "error"), ("seed-negative", "samples=100, seed=-1", "error"),
        ("seed-float", "samples=100, seed=1.5", "error"), ("backend-unknown", "exact=True, backend='slurm'", "error"),
        ("checkpoint-dir", "exact=True, checkpoint=SCRATCH", "error"),
        ("checkpoint-proc", "exact=True, checkpoint='/proc/careless/gt.partial'", "error"))],
    py("py-gt-samples-1e15", "lowprob.ground_truth(M, T, samples=10**15)", "error", slow_ok=True,
       note="500 years of sampling: refuse (or show progress)"),
    py("py-gt-exact-too-big", "lowprob.ground_truth(M, D, exact=True)", "error"),
    py("py-gt-model-name", "lowprob.ground_truth('gelu-1l', T, exact=True)", "error"),
    py("py-gt-dist-name", "lowprob.ground_truth(M, 'tiny-uniform', exact=True)", "error"),
    # --- GroundTruth.load ---
    *[py(f"py-gt-load-{name}", f"lowprob.GroundTruth.load({args})", expect) for name, args, expect in (
        ("ok", "FX / 'gt.safetensors', M, T", "ok"), ("ok-str", "str(FX / 'gt.safetensors')", "ok"),
        ("missing", "FX / 'missing.safetensors'", "error"), ("directory", "FX / 'model'", "error"),
        ("empty", "FX / 'empty.safetensors'", "error"), ("truncated", "FX / 'gt-trunc.safetensors'", "error"),
        ("text", "FX / 'notes.txt'", "error"), ("distribution-file", "FX / 'dist.safetensors'", "error"),
        ("other-model", "FX / 'gt.safetensors', lowprob.load_model('gelu-2l'), T", "error"),
        ("other-dist", "FX / 'gt.safetensors', M, D", "error"), ("none", "None", "error"))],
    # --- TokenDistribution ---
    *[py(f"py-td-{name}", f"lowprob.TokenDistribution.from_positions({args})", expect) for name, args, expect in (
        ("ok", "[0, ([5, 9, 12], [0.5, 0.25, 0.25]), 7]", "ok"), ("empty", "[]", "error"),
        ("none", "None", "error"), ("sum", "[([5, 9], [0.5, 0.6])]", "error"),
        ("negative-prob", "[([5, 9], [1.5, -0.5])]", "error"),
        ("nan-prob", "[([5, 9], [float('nan'), 1.0])]", "error"), ("duplicate-id", "[([5, 5], [0.5, 0.5])]", "error"),
        ("bool", "[True]", "error"), ("negative-id", "[-1]", "error"),
        ("id-2e70", "[2**70]", "error"), ("float-id", "[1.5]", "error"), ("triple", "[([5], [1.0], 3)]", "error"),
        ("empty-pair", "[([], [])]", "error"), ("string", "['a']", "error"),
        ("normalize-zero", "[([5], [0.0])], normalize=True", "error"),
        ("numpy", "[0, (np.array([5, 9]), np.array([0.5, 0.5]))]", "ok"),
        ("torch", "[0, (torch.tensor([5, 9]), torch.tensor([0.5, 0.5]))]", "ok"),
        ("numpy-constant", "[np.int64(3), 4]", "ok"))],
    py("py-td-save-ok", """
       d = lowprob.TokenDistribution.from_positions([0, ([5, 9], [0.5, 0.5])])
       d.save(SCRATCH / 'd.safetensors')
       if lowprob.TokenDistribution.load(SCRATCH / 'd.safetensors').content_hash() != d.content_hash():
           raise Wrong('a saved distribution loads back different')""", "ok"),
    py("py-td-save-proc", "T.save('/proc/careless/d.safetensors')", "error"),
    py("py-td-save-directory", "T.save(SCRATCH)", "error"),
    py("py-td-save-none", "T.save(None)", "error"),
    *[py(f"py-td-load-{name}", f"lowprob.TokenDistribution.load(FX / '{file}')", "error") for name, file in (
        ("missing", "missing.safetensors"), ("directory", "model"), ("empty", "empty.safetensors"),
        ("truncated", "dist-trunc.safetensors"), ("garbage", "garbage.safetensors"),
        ("ground-truth", "gt.safetensors"))],
    *[py(f"py-td-sample-{name}", f"T.sample({n})", "error")
      for name, n in (("negative", "-1"), ("float", "1.5"), ("2e70", "2**70"))],
    # --- Estimate.attribution ---
    *[py(f"py-attribution-{name}", f"lowprob.estimate(M, T, E, method='{method}', budget=64).attribution({top})",
         expect) for name, method, top, expect in (
        ("ok", "ceis", "3", "ok"), ("top-none", "ceis", "None", "ok"), ("top-zero", "ceis", "0", "error"),
        ("top-negative", "ceis", "-1", "error"), ("top-string", "ceis", "'3'", "error"),
        ("top-float", "ceis", "2.5", "error"), ("gld", "gld", "3", "error"))],
    # --- exact_probability ---
    py("py-exact-ok", "lowprob.exact_probability(M, T, E)", "ok"),
    py("py-exact-too-big", "lowprob.exact_probability(M, D, E)", "error"),
    py("py-exact-event-none", "lowprob.exact_probability(M, T, None)", "error"),
    py("py-exact-model-name", "lowprob.exact_probability('gelu-1l', T, E)", "error"),
    # --- TransformerConfig, Tokenizer ---
    *[py(f"py-config-{name}", f"lowprob.Transformer(lowprob.TransformerConfig({kwargs}), seed=0)", expect)
      for name, kwargs, expect in (
          ("ok", "n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32", "ok"),
          ("zero-layers", "n_layers=0, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32", "error"),
          ("heads-indivisible", "n_layers=1, d_model=15, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32", "error"),
          ("vocab-negative", "n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=-1", "error"),
          ("ctx-zero", "n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=0, d_vocab=32", "error"))],
    py("py-tokenizer-missing", "lowprob.Tokenizer.from_file(FX / 'missing.json')", "error"),
    py("py-tokenizer-text", "lowprob.Tokenizer.from_file(FX / 'notes.txt')", "error"),
    # --- the package in a fresh interpreter ---
    *[py(f"py-fresh-{name}", f"import lowprob\n{code}", "ok", fresh=True) for name, code in (
        ("models-attribute", "lowprob.models.from_transformer_lens"), ("truth", "lowprob.truth"),
        ("events", "lowprob.events"), ("continuations", "lowprob.continuations"),
        ("estimators", "lowprob.estimators"), ("mlp", "lowprob.mlp"), ("version", "lowprob.__version__"),
        ("all-names", "[getattr(lowprob, n) for n in lowprob.__all__]"),
        ("dir", "assert 'estimate' in dir(lowprob)"))],
    py("py-fresh-star-import", "from lowprob import *\nestimate, load_model", "ok", fresh=True),
]

SCENARIO_CASES = [
    Case("sc-bench-two-at-once", "scenario", "bench_two_at_once", "any",
         note="two runs into one --out: one should refuse (or they share the work); duplicated rows are wrong"),
    Case("sc-bench-kill-resume", "scenario", "bench_kill_resume", "ok"),
    Case("sc-gt-kill-resume", "scenario", "gt_kill_resume", "ok",
         note="a killed run resumed must give the uninterrupted run's table"),
    Case("sc-gt-two-at-once", "scenario", "gt_two_at_once", "any"),
    Case("sc-gt-resume-other-job", "scenario", "gt_resume_other_job", "error",
         note="--resume with another --seed must refuse the partial, not mix the two"),
    Case("sc-mlp-bench-kill-resume", "scenario", "mlp_kill_resume", "ok"),
]

CASES = CLI_CASES + PY_CASES + SCENARIO_CASES
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"


# --- fixtures (built by the lowprob under test, in a subprocess) --------------------------------------------
def build_fixtures(fx: Path) -> None:
    """Everything the cases read: copies of a shipped model, broken ones, tiny Hugging Face models built
    offline, distribution, ground-truth and template files, a bench and an mlp-bench run, MLP weights."""
    import numpy as np
    import torch

    import lowprob

    fx.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    (fx / "notes.txt").write_text("my notes: do not lose these\n")
    for name in ("empty.safetensors", "empty.npz"):
        (fx / name).write_bytes(b"")
    (fx / "garbage.safetensors").write_bytes(rng.bytes(1024))
    (fx / "empty-dir").mkdir()
    (fx / "dir.toml").mkdir()
    (fx / "readonly").mkdir(mode=0o555)
    for name, text in TEMPLATES.items():
        (fx / name).write_text(text)
    (fx / "latin1.toml").write_bytes(GOOD_TOML.replace("Lima", "Bogot\xe1").encode("latin-1"))
    (fx / "bom.toml").write_bytes(b"\xef\xbb\xbf" + GOOD_TOML.encode())
    (fx / "TEMPLATE.TOML").write_text(GOOD_TOML)

    tdist = lowprob.TokenDistribution
    tdist.from_positions([0, ([5, 9, 12], [0.5, 0.25, 0.25]), ([40, 41], [0.5, 0.5]), 7]).save(fx / "dist.safetensors")
    tdist.from_positions([0] + [([5, 9], [0.5, 0.5])] * 79).save(fx / "dist-long.safetensors")
    tdist.from_positions([0, ([5, 5000], [0.5, 0.5])]).save(fx / "dist-bigvocab.safetensors")
    model = lowprob.load_model("gelu-1l")
    tiny = lowprob.load_distribution("tiny-uniform", model)
    lowprob.ground_truth(model, tiny, exact=True).save(fx / "gt.safetensors")
    lowprob.ground_truth(model, tiny, samples=100_000, seed=0).save(fx / "gt-big.safetensors")
    for name in ("dist", "gt"):
        data = (fx / f"{name}.safetensors").read_bytes()
        (fx / f"{name}-trunc.safetensors").write_bytes(data[: len(data) // 2])

    shipped = Path(lowprob.__file__).parent / "models" / "shipped" / "gelu-1l"
    for variant in ("model", "model-trunc", "model-nocard", "model-badcard", "model-badconfig", "model-emptyconfig",
                    "model-notok"):
        shutil.copytree(shipped, fx / variant)
    _truncate(fx / "model-trunc" / "model.safetensors")
    (fx / "model-nocard" / "card.json").unlink()
    (fx / "model-badcard" / "card.json").write_text("{\"weights_sha256\": ")
    (fx / "model-badconfig" / "config.json").write_text("{\"n_layers\": 1, \"d_model\": ")
    (fx / "model-emptyconfig" / "config.json").write_text("")
    (fx / "model-notok" / "tokenizer.json").unlink()

    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=4096, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config)
    for name in ("hf", "hf-trunc", "hf-notok", "hf-pickle", "hf-noweights", "hf-badtype"):
        hf.save_pretrained(fx / name)
        if name != "hf-notok":
            shutil.copy(shipped / "tokenizer.json", fx / name / "tokenizer.json")
    _truncate(fx / "hf-trunc" / "model.safetensors")
    (fx / "hf-pickle" / "model.safetensors").unlink()  # as older transformers saved: a pickle only
    torch.save(hf.state_dict(), fx / "hf-pickle" / "pytorch_model.bin")
    (fx / "hf-noweights" / "model.safetensors").unlink()
    cfg = json.loads((fx / "hf-badtype" / "config.json").read_text())
    (fx / "hf-badtype" / "config.json").write_text(json.dumps({**cfg, "model_type": "careless-gpt"}))

    layers = {"W0": rng.normal(size=(8, 8)), "b0": np.zeros(8), "W1": rng.normal(size=(8, 8)), "b1": np.zeros(8)}
    np.savez(fx / "mlp.npz", **layers, activations=np.array(["relu"]))
    np.savez(fx / "mlp-shapes.npz", **{**layers, "W1": rng.normal(size=(5, 3))}, activations=np.array(["relu"]))
    np.savez(fx / "mlp-nan.npz", **{**layers, "W0": np.full((8, 8), np.nan)}, activations=np.array(["relu"]))
    np.savez(fx / "mlp-noact.npz", **layers)
    np.savez(fx / "mlp-badact.npz", **layers, activations=np.array(["relux"]))


def build_run_fixtures(ctx: Context) -> None:
    """Fixtures made by running the CLI itself: a bench run and its broken copies, an mlp bench run, and
    an uninterrupted ground-truth table for the kill-and-resume scenarios."""
    fx = ctx.fx
    for args in (f"{BENCH} --out {fx / 'bench'}", f"{BENCH_ALL} --out {fx / 'bench-all'}",
                 f"{MLP_BENCH} --out {fx / 'mlp'}",
                 f"{GT_RUN} --out {fx / 'gt-ref.safetensors'}"):
        res = ctx.process([ctx.python, "-m", "lowprob", *shlex.split(args)], fx, timeout=600)
        if res.rc != 0:
            sys.exit(f"careless_user: building fixtures failed: lowprob {args}\n{res.stderr[-2000:]}")
    rows = fx / BENCH_ROWS
    for variant in ("bench-corrupt", "bench-torn", "bench-badjson", "bench-norows"):
        shutil.copytree(fx / "bench", fx / variant)
    lines = rows.read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    (fx / "bench-corrupt" / "rows/toy-1l/tiny-uniform.jsonl").write_text(
        "".join([*lines[:middle], lines[middle][: len(lines[middle]) // 2] + "\n", *lines[middle + 1:]]))
    (fx / "bench-torn" / "rows/toy-1l/tiny-uniform.jsonl").write_text(
        "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    (fx / "bench-badjson" / "bench.json").write_text("{\"name\": \"tiny\", ")
    shutil.rmtree(fx / "bench-norows" / "rows")
    shutil.copytree(fx / "mlp", fx / "mlp-corrupt")
    lines = (fx / "mlp/rows.jsonl").read_text().splitlines(keepends=True)
    middle = len(lines) // 2
    (fx / "mlp-corrupt/rows.jsonl").write_text(
        "".join([*lines[:middle], lines[middle][:40] + "\n", *lines[middle + 1:]]))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- running ------------------------------------------------------------------------------------------------
@dataclass
class Context:
    python: str
    work: Path
    fx: Path
    env: dict[str, str]
    timeout: float
    references: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def process(self, argv: list[str], cwd: Path, timeout: float | None = None, env: dict | None = None
                ) -> Result:
        """Run ``argv`` in its own session (killed with its children on timeout), memory-limited."""
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True, preexec_fn=_limit_memory)
        try:
            out, err = proc.communicate(timeout=timeout or self.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            timed_out = True
        return Result(None if timed_out else proc.returncode, out, err, time.perf_counter() - start, timed_out)

    def lowprob(self, args: str, cwd: Path) -> subprocess.Popen:
        """Start ``lowprob ARGS`` in the background, its output going to files (a pipe nobody reads could
        fill up and stall it); ``_finish`` collects it."""
        n = len(list(cwd.glob("run-*.err")))
        with (cwd / f"run-{n}.out").open("w") as out, (cwd / f"run-{n}.err").open("w") as err:
            proc = subprocess.Popen([self.python, "-m", "lowprob", *shlex.split(args)], cwd=cwd, env=self.env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                                    preexec_fn=_limit_memory)
        proc.outputs = (cwd / f"run-{n}.out", cwd / f"run-{n}.err")
        return proc

    def case_dir(self, case: Case) -> Path:
        d = self.work / "cases" / case.id
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for item in case.copy:
            src, _, dest = item.partition(":")
            target = d / (dest or Path(src).name)
            (shutil.copytree if (self.fx / src).is_dir() else shutil.copy)(self.fx / src, target)
        return d


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


_CTX: Context | None = None  # for checks that run a reference command


def _reference(args: str, fx: Path) -> dict:
    """The JSON output of ``lowprob ARGS`` (run once, cached)."""
    with _CTX.lock:
        if args not in _CTX.references:
            res = _CTX.process([_CTX.python, "-m", "lowprob", *shlex.split(args)], _CTX.work)
            _CTX.references[args] = json.loads(res.stdout) if res.rc == 0 else {}
        return _CTX.references[args]


def classify_process(res: Result) -> tuple[str, str]:
    """The class of a finished (or timed-out) command, and its last stderr line."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]", res.stderr) if ln.strip()]
    last = lines[-1] if lines else ""
    if res.timed_out:
        return ("progress" if PROGRESS.search(res.stderr) else "hang"), last
    if "Traceback (most recent call last)" in res.stderr:
        raised = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Exit|Interrupt)\b", ln)]
        return "traceback", raised[-1] if raised else last
    if res.rc == 0:
        return "ok", last
    if res.rc == 2 and re.match(r"(error|Error): ", last):
        return "clean_error", last
    return "traceback", last or f"exit code {res.rc}"


def judge(case: Case, observed: str, note: str) -> tuple[str, str]:
    """Fold the expectation in: bad input accepted is silent_wrong, a good one refused is refused."""
    if case.expect == "error" and observed == "ok":
        return "silent_wrong", note or "accepted"
    if case.expect == "ok" and observed == "clean_error":
        return "refused", note
    return observed, note


def apply_checks(case: Case, res: Result, d: Path, fx: Path, observed: str) -> tuple[str, str]:
    for check in case.checks:
        if getattr(check, "always", False) or observed == "ok":
            found = check(res, d, fx)
            if found:
                return found
    return observed, ""


def run_cli_case(case: Case, ctx: Context) -> Result:
    d = ctx.case_dir(case)
    argv = [ctx.python, "-m", "lowprob", *(a.replace("{fx}", str(ctx.fx)) for a in case.run)]
    res = ctx.process(argv, d, env=dict(case.env))
    observed, res.stderr_last = classify_process(res)
    observed, note = apply_checks(case, res, d, ctx.fx, observed)
    res.observed, res.note = judge(case, observed, note)
    return res


# --- Python cases: a worker interpreter runs them one by one, under an alarm ---------------------------------
class Wrong(Exception):
    """Raised by a case's own check: the call returned, but its answer is wrong."""


class Lost(Exception):
    """Raised by a case's own check: the user's data is gone."""


class _Timeout(BaseException):
    pass


def _py_fixtures(fx: Path, scratch: Path) -> dict[str, Callable]:
    """What Python snippets may name; each is made on first use (a fresh interpreter makes only its own)."""

    def strict(obj) -> None:
        try:
            json.dumps(obj, allow_nan=False)
        except ValueError as exc:
            raise Wrong(f"not strict JSON: {exc}") from None

    def differs(a, b, what: str) -> None:
        if (a.probability, a.interval, a.diagnostics) == (b.probability, b.interval, b.diagnostics):
            raise Wrong(f"{what} gives the same draws as seed 0")

    def module(name: str):
        return lambda ns: __import__(name)

    return {
        "lowprob": module("lowprob"), "torch": module("torch"), "np": lambda ns: __import__("numpy"),
        "FX": lambda ns: fx, "SCRATCH": lambda ns: scratch, "Wrong": lambda ns: Wrong, "Lost": lambda ns: Lost,
        "strict": lambda ns: strict, "differs": lambda ns: differs,
        "M": lambda ns: ns["lowprob"].load_model("gelu-1l"),
        "D": lambda ns: ns["lowprob"].load_distribution("hex", ns["M"]),
        "T": lambda ns: ns["lowprob"].load_distribution("tiny-uniform", ns["M"]),
        "E": lambda ns: ns["lowprob"].ArgmaxIs(8),
        "TOK": lambda ns: ns["M"].tokenizer,
    }


class _Names(dict):
    """A snippet's namespace: fixtures are made when first named, and shared by later cases."""

    def __init__(self, makers: dict[str, Callable], cache: dict, globals_: dict) -> None:
        super().__init__()
        self.makers, self.cache, self.globals = makers, cache, globals_

    def __missing__(self, key: str):
        if key not in self.makers:
            raise KeyError(key)
        if key not in self.cache:
            self.cache[key] = self.makers[key](self)
        self.globals[key] = self.cache[key]  # visible inside the snippet's functions and comprehensions too
        return self.cache[key]

    def __setitem__(self, key: str, value) -> None:
        super().__setitem__(key, value)
        self.globals[key] = value


def run_py_snippet(case: Case, fx: Path, scratch: Path, cache: dict, timeout: float) -> dict:
    """Run one snippet; its class from what it raised."""
    scratch.mkdir(parents=True, exist_ok=True)
    cache.pop("SCRATCH", None)  # each case writes in its own directory
    globals_: dict = {"__builtins__": __builtins__}
    namespace = _Names(_py_fixtures(fx, scratch), cache, globals_)

    def alarm(signum, frame):
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(int(timeout))
    start = time.perf_counter()
    try:
        exec(compile(case.run, case.id, "exec"), globals_, namespace)
        observed, message = "ok", ""
    except _Timeout:
        observed, message = "hang", f"no answer in {timeout:.0f} s"
    except Wrong as exc:
        observed, message = "silent_wrong", str(exc)
    except Lost as exc:
        observed, message = "data_lost", str(exc)
    except BaseException as exc:  # a case may raise anything, SystemExit included
        from lowprob.errors import LowprobError

        observed = "clean_error" if isinstance(exc, LowprobError) else "traceback"
        message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__
    finally:
        signal.alarm(0)
    return {"id": case.id, "observed": observed, "message": message, "seconds": time.perf_counter() - start}


def worker_main(fx: Path, scratch_root: Path, timeout: float) -> None:
    """Read case ids on stdin, answer one JSON line each on the original stdout (snippets print to stderr)."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    cache: dict = {}
    for line in sys.stdin:
        case = BY_ID[line.strip()]
        answer = run_py_snippet(case, fx, scratch_root / case.id, cache, timeout)
        answers.write(json.dumps(answer) + "\n")
        if answer["observed"] == "hang":
            return  # the interpreter may be left in a bad state: the parent starts a fresh one


class Worker:
    """The parent's side of a worker interpreter; restarted after a hang or a crash."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.proc = ctx, None
        self.log = (ctx.work / "python-worker.log").open("a")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.ctx.python, __file__, "--worker", str(self.ctx.fx), str(self.ctx.work / "py"),
             str(self.ctx.timeout)], cwd=self.ctx.work, env=self.ctx.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True, preexec_fn=_limit_memory)

    def send(self, case: Case) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.log.write(f"\n=== {case.id}\n")
        self.log.flush()
        self.proc.stdin.write(case.id + "\n")
        self.proc.stdin.flush()

    def run(self, case: Case) -> Result:
        start = time.perf_counter()
        try:
            self.send(case)
        except BrokenPipeError:  # it died after the previous answer: once more, in a fresh one
            self.proc = None
            self.send(case)
        ready, _, _ = select.select([self.proc.stdout], [], [], self.ctx.timeout + 30)
        line = self.proc.stdout.readline() if ready else ""
        seconds = time.perf_counter() - start
        if not line:  # killed by the watchdog, or the interpreter itself died (the OS, a segfault)
            _kill_group(self.proc)
            how = "no answer (killed)" if not ready else f"the interpreter died (exit code {self.proc.wait()})"
            self.proc = None
            return Result(None, "", how, seconds, not ready, "hang" if not ready else "traceback")
        answer = json.loads(line)
        if answer["observed"] == "hang":  # the worker exits after a hang
            self.proc.wait()
            self.proc = None
        return Result(None, "", answer["message"], answer["seconds"], answer["observed"] == "hang",
                      answer["observed"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()
        self.log.close()


def run_fresh_case(case: Case, ctx: Context) -> Result:
    res = ctx.process([ctx.python, __file__, "--one", case.id, str(ctx.fx), str(ctx.work / "py"),
                       str(ctx.timeout)], ctx.work)
    try:
        answer = json.loads(res.stdout.strip().splitlines()[-1])
        res.observed, res.stderr = answer["observed"], answer["message"]
    except (IndexError, ValueError):
        res.observed = "hang" if res.timed_out else "traceback"
    return res


def finish_py(case: Case, res: Result) -> Result:
    res.stderr_last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    res.observed, res.note = judge(case, res.observed, res.note)
    return res


# --- fault scenarios ----------------------------------------------------------------------------------------
def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, limit: float) -> bool:
    """Poll until ``predicate`` holds (True) or the process ends or ``limit`` seconds pass (False)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _finish(procs: list[subprocess.Popen], ctx: Context) -> list[Result]:
    """Wait for background runs (each up to the timeout, then killed) and read what they wrote."""
    results = []
    for proc in procs:
        try:
            proc.wait(timeout=ctx.timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            timed_out = True
        out, err = (path.read_text(errors="replace") for path in proc.outputs)
        results.append(Result(None if timed_out else proc.returncode, out, err, 0.0, timed_out))
    return results


def _worst(results: list[Result]) -> tuple[str, str]:
    """The scenario's class from its runs: a traceback or hang dominates, then a clean refusal."""
    classes = [classify_process(r) for r in results]
    for bad in ("hang", "traceback", "progress"):
        for cls, last in classes:
            if cls == bad:
                return cls, last
    for cls, last in classes:
        if cls == "clean_error":
            return cls, last
    return "ok", ""


def _kill_midway(ctx: Context, d: Path, args: str, ready: Callable[[], bool]) -> tuple[Result, str]:
    proc = ctx.lowprob(args, d)
    killed = _wait_for(ready, proc, ctx.timeout)
    _kill_group(proc)
    return _finish([proc], ctx)[0], "" if killed else "the run ended before the kill"


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _compare_rows(d: Path, ctx: Context, rows: str, reference: str) -> tuple[str, str] | None:
    keys = [_row_key(r) for r in _rows(d / rows, parsed=True)]
    ref = {_row_key(r) for r in _rows(ctx.fx / reference, parsed=True)}
    if len(keys) != len(set(keys)):
        return "silent_wrong", f"{len(keys) - len(set(keys))} duplicated rows"
    if set(keys) != ref:
        return "data_lost", f"{len(ref - set(keys))} rows missing, {len(set(keys) - ref)} unexpected"
    return None


def _same_table(a: Path, b: Path) -> bool:
    from safetensors.numpy import load_file

    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all((x[k] == y[k]).all() for k in x)


def bench_two_at_once(ctx: Context, d: Path) -> tuple[str, str]:
    procs = [ctx.lowprob(f"{BENCH_ALL} --out out", d) for _ in range(2)]
    cls, last = _worst(_finish(procs, ctx))
    if cls in ("hang", "traceback", "progress"):
        return cls, last
    for rows in sorted((ctx.fx / "bench-all").glob("rows/*/*.jsonl")):
        rel = rows.relative_to(ctx.fx / "bench-all")
        found = _compare_rows(d, ctx, f"out/{rel}", f"bench-all/{rel}")
        if found:
            return found[0], f"{rel}: {found[1]}"
    return cls, last


def bench_kill_resume(ctx: Context, d: Path) -> tuple[str, str]:
    rows = d / "out/rows/toy-1l/tiny-uniform.jsonl"
    _, note = _kill_midway(ctx, d, f"{BENCH} --out out", lambda: _count_lines(rows) >= 20)
    res = _finish([ctx.lowprob(f"{BENCH} --out out --resume", d)], ctx)[0]
    cls, last = classify_process(res)
    if cls != "ok":
        return cls, last
    return _compare_rows(d, ctx, "out/rows/toy-1l/tiny-uniform.jsonl", BENCH_ROWS) or ("ok", note)


def _gt_killed(ctx: Context, d: Path) -> str:
    partial = d / "gt.safetensors.partial"
    _, note = _kill_midway(ctx, d, f"{GT_RUN} --out gt.safetensors", partial.exists)
    return note


def gt_kill_resume(ctx: Context, d: Path) -> tuple[str, str]:
    note = _gt_killed(ctx, d)
    res = _finish([ctx.lowprob(f"{GT_RUN} --out gt.safetensors --resume", d)], ctx)[0]
    cls, last = classify_process(res)
    if cls != "ok":
        return cls, last
    if not _same_table(d / "gt.safetensors", ctx.fx / "gt-ref.safetensors"):
        return "silent_wrong", "the resumed table differs from the uninterrupted run's"
    return "ok", note


def gt_two_at_once(ctx: Context, d: Path) -> tuple[str, str]:
    procs = [ctx.lowprob(f"{GT_RUN} --out gt.safetensors", d) for _ in range(2)]
    cls, last = _worst(_finish(procs, ctx))
    if cls in ("hang", "traceback", "progress"):
        return cls, last
    if not (d / "gt.safetensors").exists():
        return "data_lost", "no table written"
    if not _same_table(d / "gt.safetensors", ctx.fx / "gt-ref.safetensors"):
        return "silent_wrong", "the table differs from a single run's"
    return cls, last


def gt_resume_other_job(ctx: Context, d: Path) -> tuple[str, str]:
    note = _gt_killed(ctx, d)
    res = _finish([ctx.lowprob(f"{GT_RUN} --seed 1 --out gt.safetensors --resume", d)], ctx)[0]
    cls, last = classify_process(res)
    return cls, last or note


def mlp_kill_resume(ctx: Context, d: Path) -> tuple[str, str]:
    rows = d / "out/rows.jsonl"
    _, note = _kill_midway(ctx, d, f"{MLP_BENCH} --out out", lambda: _count_lines(rows) >= 4)
    res = _finish([ctx.lowprob(f"{MLP_BENCH} --resume --out out", d)], ctx)[0]
    cls, last = classify_process(res)
    if cls != "ok":
        return cls, last
    return _compare_rows(d, ctx, "out/rows.jsonl", "mlp/rows.jsonl") or ("ok", note)


SCENARIOS = {f.__name__: f for f in (bench_two_at_once, bench_kill_resume, gt_kill_resume, gt_two_at_once,
                                     gt_resume_other_job, mlp_kill_resume)}


def run_scenario(case: Case, ctx: Context) -> Result:
    d = ctx.case_dir(case)
    start = time.perf_counter()
    observed, message = SCENARIOS[case.run](ctx, d)
    res = Result(None, "", message, time.perf_counter() - start)
    res.stderr_last = message
    res.observed, res.note = judge(case, observed, message)
    return res


# --- driver -------------------------------------------------------------------------------------------------
def make_context(args) -> Context:
    work = Path(args.work or tempfile.mkdtemp(prefix="careless_user."))
    work.mkdir(parents=True, exist_ok=True)
    stub = work / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "apt-get").write_text("#!/bin/sh\necho 'apt-get: offline (careless_user harness stub)' >&2\nexit 100\n")
    (stub / "apt-get").chmod(0o755)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "LOWPROB_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TYPER_STANDARD_TRACEBACK": "1", "COLUMNS": "120", "PYTHONHASHSEED": "0", "PYTHONWARNINGS": "ignore",
           "PATH": f"{stub}:{os.environ.get('PATH', '')}"}
    env.pop("LOWPROB_THREADS", None)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(args.src).resolve()), os.environ.get("PYTHONPATH"))
                                            if p)
    return Context(sys.executable, work, work / "fixtures", env, args.timeout)


def run_all(cases: list[Case], ctx: Context, jobs: int) -> dict[str, Result]:
    """Python cases in one worker (a job slot of its own), CLI cases in the other slots, scenarios last."""
    results: dict[str, Result] = {}
    in_worker = [c for c in cases if c.kind == "python" and not c.fresh]
    others = [c for c in cases if c.kind == "cli" or (c.kind == "python" and c.fresh)]

    def python_batch() -> None:
        worker = Worker(ctx)
        try:
            for case in in_worker:
                results[case.id] = finish_py(case, worker.run(case))
                _progress(case, results[case.id])
        finally:
            worker.close()

    def one(case: Case) -> None:
        res = run_cli_case(case, ctx) if case.kind == "cli" else finish_py(case, run_fresh_case(case, ctx))
        results[case.id] = res
        _progress(case, res)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(python_batch)] if in_worker else []
        futures += [pool.submit(one, c) for c in others]
        for fut in futures:
            fut.result()
    for case in cases:
        if case.kind == "scenario":
            results[case.id] = run_scenario(case, ctx)
            _progress(case, results[case.id])
    return results


_PRINT = threading.Lock()


def _progress(case: Case, res: Result) -> None:
    mark = "" if as_expected(case, res.observed) else "  <--"
    with _PRINT:
        print(f"  {case.id:<40} {res.observed:<13} {res.seconds:6.1f}s{mark}", file=sys.stderr, flush=True)


def as_expected(case: Case, observed: str) -> bool:
    return observed in EXPECT[case.expect] or (case.slow_ok and observed == "progress")


def report(cases: list[Case], results: dict[str, Result], header: str) -> str:
    lines = [header, "", f"{'class':<13} {'cases':>5}  {'as a correct lowprob would':>26}"]
    by_class = {k: [c for c in cases if results[c.id].observed == k] for k in CLASSES}
    for cls, members in by_class.items():
        good = sum(as_expected(c, cls) for c in members)
        lines.append(f"{cls:<13} {len(members):>5}  {good:>26}")
    good = sum(as_expected(c, results[c.id].observed) for c in cases)
    lines += [f"{'total':<13} {len(cases):>5}  {good:>26}", ""]
    for cls, members in by_class.items():
        if members:
            ids = ", ".join(c.id + ("" if as_expected(c, cls) else "*") for c in members)
            lines.append(textwrap.fill(f"{cls} ({len(members)}): {ids}", 118, subsequent_indent="    "))
    lines += ["", "* not what a correct lowprob would answer; each with its expectation and last stderr line:"]
    for c in cases:
        res = results[c.id]
        if not as_expected(c, res.observed):
            why = f" [{res.note}]" if res.note and res.note != res.stderr_last else ""
            lines.append(f"  {c.id:<38} expected {c.expect:<5} got {res.observed:<12} "
                         f"{res.stderr_last[:150]}{why}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", help="source tree to test (put first on PYTHONPATH), e.g. /tmp/orig/src")
    parser.add_argument("--out", type=Path, help="write one JSON row per case here (.jsonl)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (the Python worker is one)")
    parser.add_argument("--timeout", type=float, default=45.0, help="seconds before a case is a hang")
    parser.add_argument("--only", help="run the cases whose id matches this regular expression")
    parser.add_argument("--work", help="working directory (default: a new temporary one, kept)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args()
    cases = [c for c in CASES if not args.only or re.search(args.only, c.id)]
    if args.list:
        for c in cases:
            print(f"{c.id:<40} {c.kind:<8} {c.expect:<5} {c.command()[:150]!r}")
        return
    global _CTX
    ctx = _CTX = make_context(args)
    probe = subprocess.run([ctx.python, "-c", "import lowprob; print(lowprob.__file__, lowprob.__version__)"],
                           env=ctx.env, capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        sys.exit(f"careless_user: cannot import lowprob:\n{probe.stderr}")
    where, version = probe.stdout.split()
    if args.src and not Path(where).resolve().is_relative_to(Path(args.src).resolve()):
        sys.exit(f"careless_user: lowprob comes from {where}, not from --src {args.src}")
    start = time.perf_counter()
    print(f"careless_user: lowprob {version} from {where}; work in {ctx.work}", file=sys.stderr, flush=True)
    stamp = ctx.fx / "built-by.txt"  # fixtures in --work are reused only if the same lowprob built them
    if not stamp.exists() or stamp.read_text() != where:
        shutil.rmtree(ctx.fx, ignore_errors=True)
        build = ctx.process([ctx.python, __file__, "--fixtures", str(ctx.fx)], ctx.work, timeout=600)
        if build.rc != 0:
            sys.exit(f"careless_user: building fixtures failed:\n{build.stderr[-3000:]}")
        build_run_fixtures(ctx)
        stamp.write_text(where)
    print(f"careless_user: fixtures ready ({time.perf_counter() - start:.0f} s); {len(cases)} cases",
          file=sys.stderr, flush=True)
    results = run_all(cases, ctx, args.jobs)
    kinds = {k: sum(c.kind == k for c in cases) for k in ("cli", "python", "scenario")}
    header = (f"careless_user: {len(cases)} cases ({', '.join(f'{n} {k}' for k, n in kinds.items())}) against "
              f"lowprob {version} from {Path(where).parent}; timeout {args.timeout:.0f} s; "
              f"{time.perf_counter() - start:.0f} s")
    print(report(cases, results, header))
    if args.out:
        with args.out.open("w") as f:
            for c in cases:
                res = results[c.id]
                f.write(json.dumps({"id": c.id, "kind": c.kind, "command": c.command(), "expected": c.expect,
                                    "observed": res.observed, "as_expected": as_expected(c, res.observed),
                                    "rc": res.rc, "stderr_last": res.stderr_last, "note": res.note or c.note,
                                    "seconds": round(res.seconds, 2)}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--one":
        case = BY_ID[sys.argv[2]]
        print(json.dumps(run_py_snippet(case, Path(sys.argv[3]), Path(sys.argv[4]) / case.id, {},
                                        float(sys.argv[5]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--fixtures":
        build_fixtures(Path(sys.argv[2]))
    else:
        main()
