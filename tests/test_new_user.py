"""What a new user hits in the first hour: one test per row of the issue-12 audit.

Bad arguments are refused with one line before any work, intervals stay in [0, 1], the target that
was estimated is named, ids from ``argmax()`` are accepted, threads do not oversubscribe, ``--help``
does not import torch, the bench's progress bar knows its total, failed starts leave nothing behind,
files honour the umask, and a model with a 0-dim buffer can be hashed.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import lowprob
from lowprob import ArgmaxIs, LowprobError, Transformer, TransformerConfig, estimate
from lowprob.bench import get_scale, run_bench
from lowprob.bench.report import _loss_axis_cap
from lowprob.distributions.tiny import tiny_distribution
from lowprob.estimators import METHODS
from lowprob.estimators.base import Cost, Estimate
from lowprob.estimators.catalog import Method
from lowprob.events import Generates, parse_token
from lowprob.files import atomic_path
from lowprob.models import save_model
from lowprob.models.protocol import model_sha256

from .test_bench import SMALL
from .test_cli import run

TOY = TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32)


@pytest.fixture(scope="module")
def toy():
    return Transformer(TOY, seed=0), tiny_distribution("tiny-uniform", TOY.d_vocab)


@pytest.fixture(scope="module")
def gelu_1l():
    return lowprob.load_model("gelu-1l")


# --- tiny budgets: a clear error, or an estimate whose interval lies in [0, 1] ----------------------
@pytest.mark.parametrize("method", ["gld", "qld"])
def test_extrapolation_at_budget_1_is_refused_with_the_minimum(monkeypatch, capsys, method):
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", " en",
                       "--method", method, "--budget", "1")
    assert code == 2 and f"{method} needs a budget of at least 2" in err and len(err.strip().splitlines()) == 1


def test_mhis_without_a_hit_bounds_p_by_its_independent_initial_states(gelu_1l):
    dist = lowprob.load_distribution("hex", gelu_1l)  # before: 3.69 w_max / Σw, 1.08 here (the audit saw 1.038)
    e = estimate(gelu_1l, dist, ArgmaxIs(8), method="mhis", budget=16, seed=0)
    assert e.probability == 0 and e.diagnostics["hits"] == 0
    assert e.interval == (0.0, pytest.approx(1 - 0.025 ** (1 / 16)))  # Clopper–Pearson, 0 of 16 chains' starts
    assert e.interval_kind == "sampling-only" and "sampling error only" in e.summary()


def test_an_estimate_outside_0_1_cannot_be_constructed():
    cost = Cost(1, 0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="0 <= lo <= hi <= 1"):
        Estimate("x", 0.0, (0.0, 3.69), 1, 0, cost)
    with pytest.raises(ValueError, match="0 <= lo <= hi <= 1"):
        Estimate("x", 1.2, (0.0, 1.0), 1, 0, cost)


# --- the target: ambiguity refused, and the estimate names what it estimated ----------------------
def test_a_bare_number_that_is_also_a_token_text_is_refused_with_both_readings(gelu_1l):
    tok = gelu_1l.tokenizer
    with pytest.raises(LowprobError) as info:
        parse_token("8", tok, gelu_1l.d_vocab)
    message = str(info.value)
    text_id = tok.encode("8")[0]
    assert f"token id 8 is {tok.decode([8])!r}" in message and f"token id {text_id}" in message
    assert "id:8" in message and '"8"' in message
    assert parse_token("id:8", tok, gelu_1l.d_vocab) == 8
    assert parse_token('"8"', tok, gelu_1l.d_vocab) == text_id
    en = tok.encode(" en")[0]
    assert parse_token(" en", tok, gelu_1l.d_vocab) == parse_token('" en"', tok, gelu_1l.d_vocab) == en
    assert parse_token("4000", None, gelu_1l.d_vocab) == 4000  # no tokenizer: a number is an id
    with pytest.raises(LowprobError, match=r"0\.\.4095"):
        parse_token("id:4096", tok, gelu_1l.d_vocab)


def test_estimate_output_names_model_distribution_and_token(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", '"8"',
                       "--budget", "64", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["model"] == "gelu-1l" and result["distribution"] == "hex-cpu"
    assert result["event"]["kind"] == "argmax-is" and result["event"]["text"] == "8"
    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "id:8",
                       "--budget", "64")
    assert code == 0 and "argmax is '(' (id 8)" in out and "gelu-1l" in out and "hex-cpu" in out


@pytest.mark.parametrize("token", [np.int64(5), torch.tensor(5), torch.tensor([7]).argmax() + 5, 5])
def test_argmax_is_accepts_integer_ids_of_any_kind(token):
    event = ArgmaxIs(token)
    assert event.token == 5 and type(event.token) is int and event == ArgmaxIs(5)


@pytest.mark.parametrize("token", [True, 5.0, "5", torch.tensor(5.0)])
def test_argmax_is_refuses_what_is_not_an_integer_id(token):
    with pytest.raises(LowprobError, match="integer id"):
        ArgmaxIs(token)


# --- hyper-parameters are checked against their declaration ----------------------------------------
@pytest.mark.parametrize(("hyper", "message"), [
    ({"chains": 0}, "chains must be a positive integer"),
    ({"chains": -3}, "chains must be a positive integer"),
    ({"chains": 2.5}, "chains must be a positive integer"),
    ({"burn_in_fraction": 1.5}, r"burn_in_fraction must be a number in \[0, 1\)"),
    ({"burn_in_fraction": math.nan}, r"burn_in_fraction must be a number in \[0, 1\)"),
    ({"temperature": 0}, "temperature must be a positive finite number"),
    ({"chains": 64}, "64 chains need a budget of at least 64"),
])
def test_mhis_refuses_bad_hyper_parameters_instead_of_coercing_them(toy, hyper, message):
    model, dist = toy
    with pytest.raises(LowprobError, match=message):
        estimate(model, dist, ArgmaxIs(3), method="mhis", budget=32, seed=0, **hyper)


def test_mhis_default_chains_follow_a_small_budget(toy):
    model, dist = toy
    assert estimate(model, dist, ArgmaxIs(3), method="mhis", budget=8, seed=0).diagnostics["chains"] == 8


# --- threads ----------------------------------------------------------------------------------------
def threads_seen(model, dist, event, budget, generator):
    from lowprob.estimators.base import RawEstimate

    return RawEstimate(0.0, (0.0, 1.0), {"threads": torch.get_num_threads()})


@pytest.mark.parametrize(("env", "expected"), [({}, 1), ({"OMP_NUM_THREADS": "2"}, 2), ({"LOWPROB_THREADS": "3"}, 3)])
def test_estimates_run_with_lowprobs_thread_budget_and_restore_the_callers(toy, monkeypatch, env, expected):
    model, dist = toy
    for var in ("OMP_NUM_THREADS", "LOWPROB_THREADS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setitem(METHODS, "probe", Method("probe", "records its threads", f"{__name__}:threads_seen"))
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        e = estimate(model, dist, ArgmaxIs(3), method="probe", budget=1)
        assert e.diagnostics["threads"] == expected
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_the_bench_runs_its_estimates_with_lowprobs_thread_budget(tmp_path, monkeypatch):
    for var in ("OMP_NUM_THREADS", "LOWPROB_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(METHODS, "probe", Method("probe", "records its threads", f"{__name__}:threads_seen"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = run_bench(SMALL, tmp_path / "run", ["probe"], progress=False)
    finally:
        torch.set_num_threads(before)
    rows = [json.loads(line) for p in (out / "rows").rglob("*.jsonl") for line in p.open()]
    assert rows and {r["diagnostics"]["threads"] for r in rows} == {1}


def test_a_bad_thread_setting_is_a_clear_error(toy, monkeypatch):
    model, dist = toy
    monkeypatch.setenv("LOWPROB_THREADS", "many")
    with pytest.raises(LowprobError, match="LOWPROB_THREADS must be a positive integer"):
        estimate(model, dist, ArgmaxIs(3), method="naive", budget=1)


# --- --help and argument errors come before torch ---------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--help"], ["estimate", "--help"], ["bench", "--help"], ["ground-truth", "--help"],
    ["estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "8", "--method", "magic"],
    ["estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "8", "--budget", "0"],
    ["estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "8", "--method", "naive", "--temperature", "2"],
    ["estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "8", "--temperature", "-1"],
])
def test_help_and_argument_errors_do_not_import_torch(args):
    code = ("import sys\nfrom lowprob.cli import main\nsys.argv = ['lowprob', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    torch_loaded, exit_code = result.stdout.strip().splitlines()[-1].split()
    assert torch_loaded == "NO-TORCH", result.stdout
    assert exit_code in ("0", "2"), result


# --- help text ---------------------------------------------------------------------------------------
def test_help_lists_method_choices_and_shows_no_placeholder_noise(monkeypatch, capsys):
    _, out, _ = run(monkeypatch, capsys, "estimate", "--help")
    assert "<ceis|flat|gld|itgis|mhis|naive|qld|smc|tilted>" in out and "itgis, mhis" in out and "<bool>" not in out
    _, out, _ = run(monkeypatch, capsys, "ground-truth", "--help")
    assert "lowprob[ray]" in out and "<bool>" not in out and "--no-resume" not in out


# --- the benchmark: a progress total known up front, and a failed start leaves nothing -----------
def test_bench_progress_total_is_known_before_the_first_estimate(tmp_path, monkeypatch):
    from lowprob.bench import runner

    bars = []

    class Recorder:
        def __init__(self, total, **_):
            self.total, self.done, self.totals_seen = total, 0, set()
            bars.append(self)

        def update(self, n):
            self.done += n
            self.totals_seen.add(self.total)

        def close(self):
            pass

    monkeypatch.setattr(runner, "tqdm", Recorder)
    out = run_bench(SMALL, tmp_path / "run", ["naive", "itgis"], progress=True)
    rows = sum(1 for p in (out / "rows").rglob("*.jsonl") for _ in p.open())
    assert bars[0].totals_seen == {rows} and bars[0].done == rows == bars[0].total


def test_a_bench_that_fails_before_any_estimate_leaves_nothing_to_resume(tmp_path):
    out = tmp_path / "run"
    empty = tmp_path / "no-tables"
    empty.mkdir()
    scale = get_scale("paper")
    for _ in range(2):  # the second attempt gets the same error, not "pass --resume"
        with pytest.raises(LowprobError, match="is missing: compute it"):
            run_bench(scale, out, ["naive"], ground_truth_dir=empty, progress=False)
    assert not out.exists() or not any(out.iterdir())


# --- files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "x.safetensors") as tmp:
            save_file({"x": torch.zeros(2)}, str(tmp))  # safetensors itself creates 0600 files
    finally:
        os.umask(old)
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_ground_truth_creates_the_output_directory_before_any_work(tiny_lm, tmp_path, monkeypatch, capsys):
    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    out = tmp_path / "missing" / "dir" / "gt.safetensors"
    code, stdout, err = run(monkeypatch, capsys, "ground-truth", "--model", str(tmp_path / "m"), "--dist",
                            "tiny-uniform", "--exact", "--out", str(out))
    assert code == 0, err
    assert out.exists() and "wrote" in stdout
    code, _, err = run(monkeypatch, capsys, "ground-truth", "--model", str(tmp_path / "m"), "--dist",
                       "tiny-uniform", "--exact", "--out", str(tmp_path))
    assert code == 2 and "is a directory" in err and not list(tmp_path.glob("*.partial"))


# --- a model with a 0-dim floating buffer (TransformerLens keeps IGNORE as one) --------------------
class WithScalarBuffer(Transformer):
    def __init__(self, cfg, ignore: float):
        super().__init__(cfg, seed=0)
        self.register_buffer("IGNORE", torch.tensor(ignore))


def test_a_model_with_a_0_dim_buffer_hashes_and_runs_every_method(toy):
    _, dist = toy
    model = WithScalarBuffer(TOY, -1e5)
    assert model_sha256(model) == model_sha256(WithScalarBuffer(TOY, -1e5))
    assert model_sha256(model) != model_sha256(WithScalarBuffer(TOY, -1e4))
    for method in ("qld", "gld"):
        assert 0 <= estimate(model, dist, ArgmaxIs(3), method=method, budget=64).probability <= 1
    assert lowprob.ground_truth(model, dist, exact=True).probabilities.sum() == pytest.approx(1.0)


# --- report --------------------------------------------------------------------------------------------
def test_one_huge_loss_does_not_set_the_plots_axis():
    cap = _loss_axis_cap([0.5, 0.8, 1.1, 0.9, 2.0, 0.7, 0.6, 1.3, 0.4, 1e17])
    assert 2.0 <= cap <= 1e3
    assert _loss_axis_cap([0.5, 2.0]) == 2.0  # nothing to cut: the largest value


def test_any_hyper_parameter_can_be_set_from_the_cli_and_is_checked_before_torch(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", " en",
                       "--method", "mhis", "--budget", "64", "--param", "chains=4", "--param", "burn_in_fraction=0.5",
                       "--json")
    assert code == 0 and json.loads(out)["diagnostics"]["chains"] == 4 and json.loads(out)["hyper"]["chains"] == 4
    for bad, message in (("chains", "NAME=VALUE"), ("chains=x", "NAME=VALUE"), ("chains=0", "chains must be"),
                         ("speed=3", "mhis has no hyper-parameter speed")):
        code, _, err = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "5",
                           "--method", "mhis", "--param", bad)
        assert code == 2 and message in err, (bad, err)
    code, out, _ = run(monkeypatch, capsys, "methods")
    assert code == 0 and "chains = None" in out and "temperature = 1.0" in out and "tuned by benchmarks" in out


# --- a careless user's hour (issue 25): every misuse of the public API is one LowprobError -------------
def _gen(model, dist):
    return Generates(((3,),), steps=2)


MISUSES = [  # (what, call(model, dist)): each must raise one clear LowprobError, never a raw exception
    ("estimate-model-name", lambda m, d: estimate("gelu-1l", d, ArgmaxIs(3))),
    ("estimate-model-none", lambda m, d: estimate(None, d, ArgmaxIs(3))),
    ("estimate-dist-name", lambda m, d: estimate(m, "hex", ArgmaxIs(3))),
    ("estimate-dist-none", lambda m, d: estimate(m, None, ArgmaxIs(3))),
    ("estimate-event-int", lambda m, d: estimate(m, d, 358)),
    ("estimate-event-text", lambda m, d: estimate(m, d, "argmax-is: 3")),
    ("estimate-event-none", lambda m, d: estimate(m, d, None)),
    ("estimate-budget-none", lambda m, d: estimate(m, d, ArgmaxIs(3), budget=None)),
    ("estimate-budget-negative", lambda m, d: estimate(m, d, ArgmaxIs(3), budget=-1)),
    ("estimate-budget-float", lambda m, d: estimate(m, d, ArgmaxIs(3), budget=64.0)),
    ("estimate-budget-bool", lambda m, d: estimate(m, d, ArgmaxIs(3), budget=True)),
    ("estimate-budget-2e70", lambda m, d: estimate(m, d, ArgmaxIs(3), budget=2**70)),
    ("estimate-budget-1e15", lambda m, d: estimate(m, d, ArgmaxIs(3), budget=10**15)),
    ("estimate-seed-2e32", lambda m, d: estimate(m, d, ArgmaxIs(3), method="naive", budget=8, seed=2**32)),
    ("estimate-seed-2e63", lambda m, d: estimate(m, d, ArgmaxIs(3), method="naive", budget=8, seed=2**63)),
    ("estimate-seed-2e70", lambda m, d: estimate(m, d, ArgmaxIs(3), method="naive", budget=8, seed=2**70)),
    ("estimate-seed-negative", lambda m, d: estimate(m, d, ArgmaxIs(3), seed=-1)),
    ("estimate-seed-text", lambda m, d: estimate(m, d, ArgmaxIs(3), seed="0")),
    ("estimate-method-list", lambda m, d: estimate(m, d, ArgmaxIs(3), method=["naive"])),
    ("estimate-method-int", lambda m, d: estimate(m, d, ArgmaxIs(3), method=3)),
    ("estimate-max-seconds-negative", lambda m, d: estimate(m, d, ArgmaxIs(3), max_seconds=-1)),
    ("estimate-max-seconds-nan", lambda m, d: estimate(m, d, ArgmaxIs(3), max_seconds=math.nan)),
    ("estimate-max-seconds-text", lambda m, d: estimate(m, d, ArgmaxIs(3), max_seconds="60")),
    ("estimate-temperature-text", lambda m, d: estimate(m, d, ArgmaxIs(3), method="itgis", temperature="1")),
    ("argmax-is-none", lambda m, d: ArgmaxIs(None)),
    ("argmax-is-nan", lambda m, d: ArgmaxIs(math.nan)),
    ("argmax-in-int", lambda m, d: lowprob.ArgmaxIn(358)),
    ("argmax-in-text", lambda m, d: lowprob.ArgmaxIn("abc")),
    ("argmax-in-none", lambda m, d: lowprob.ArgmaxIn(None)),
    ("argmax-in-empty", lambda m, d: lowprob.ArgmaxIn([])),
    ("top-k-text", lambda m, d: lowprob.InTopK(3, "2")),
    ("top-k-float", lambda m, d: lowprob.InTopK(3, 2.5)),
    ("margin-nan", lambda m, d: lowprob.MarginAtLeast(3, math.nan)),
    ("prob-above-nan", lambda m, d: lowprob.ProbabilityAbove(3, math.nan)),
    ("generates-int", lambda m, d: Generates(5, steps=2)),
    ("generates-top-k-over-vocab", lambda m, d: estimate(m, d, Generates(((3,),), 2, top_k=99), budget=32)),
    ("parse-event-none", lambda m, d: lowprob.parse_event(None, None, 32)),
    ("parse-event-int", lambda m, d: lowprob.parse_event(8, None, 32)),
    ("parse-event-empty", lambda m, d: lowprob.parse_event("", None, 32)),
    ("parse-event-vocab-none", lambda m, d: lowprob.parse_event("argmax-is: 3", None, None)),
    ("parse-event-generates-no-tokenizer", lambda m, d: lowprob.parse_event('generates: "x", steps=2', None, 32)),
    ("load-model-none", lambda m, d: lowprob.load_model(None)),
    ("load-model-int", lambda m, d: lowprob.load_model(3)),
    ("load-model-list", lambda m, d: lowprob.load_model(["gelu-1l"])),
    ("load-distribution-none", lambda m, d: lowprob.load_distribution(None, m)),
    ("load-distribution-tiny-paper", lambda m, d: lowprob.load_distribution("tiny-uniform", m, "paper")),
    ("load-distribution-model-none", lambda m, d: lowprob.load_distribution("tiny-uniform", None)),
    ("load-distribution-model-name", lambda m, d: lowprob.load_distribution("hex", "gelu-1l")),
    ("ground-truth-samples-float", lambda m, d: lowprob.ground_truth(m, d, samples=1.5)),
    ("ground-truth-samples-text", lambda m, d: lowprob.ground_truth(m, d, samples="10")),
    ("ground-truth-samples-2e70", lambda m, d: lowprob.ground_truth(m, d, samples=2**70)),
    ("ground-truth-seed-negative", lambda m, d: lowprob.ground_truth(m, d, samples=10, seed=-1)),
    ("ground-truth-seed-float", lambda m, d: lowprob.ground_truth(m, d, samples=10, seed=1.5)),
    ("ground-truth-seed-2e70", lambda m, d: lowprob.ground_truth(m, d, samples=10, seed=2**70)),
    ("ground-truth-shard-float", lambda m, d: lowprob.ground_truth(m, d, samples=10, shard_size=1.5)),
    ("ground-truth-exact-text", lambda m, d: lowprob.ground_truth(m, d, exact="yes")),
    ("ground-truth-max-seconds-nan", lambda m, d: lowprob.ground_truth(m, d, exact=True, max_seconds=math.nan)),
    ("ground-truth-model-name", lambda m, d: lowprob.ground_truth("gelu-1l", d, exact=True)),
    ("ground-truth-dist-name", lambda m, d: lowprob.ground_truth(m, "tiny-uniform", exact=True)),
    ("exact-probability-event-int", lambda m, d: lowprob.exact_probability(m, d, 3)),
    ("exact-probability-dist-name", lambda m, d: lowprob.exact_probability(m, "hex", ArgmaxIs(3))),
    ("exact-probability-generates", lambda m, d: lowprob.exact_probability(m, d, _gen(m, d))),
    ("token-distribution-none", lambda m, d: lowprob.TokenDistribution.from_positions(None)),
    ("transformer-config-none", lambda m, d: Transformer(None)),
]


@pytest.mark.parametrize("call", [c for _, c in MISUSES], ids=[i for i, _ in MISUSES])
def test_a_misuse_of_the_public_api_is_one_clear_error(toy, call):
    with pytest.raises(LowprobError) as info:
        call(*toy)
    assert "\n" not in str(info.value)


def test_integers_of_any_kind_and_paths_are_accepted_as_their_plain_selves(toy, tmp_path):
    model, dist = toy
    plain = estimate(model, dist, ArgmaxIs(3), method="mhis", budget=64, seed=3, chains=4)
    for kind in (np.int64, np.uint16):
        e = estimate(model, dist, ArgmaxIs(3), method="mhis", budget=kind(64), seed=kind(3), chains=kind(4))
        assert (e.probability, e.interval, e.budget, e.seed, e.hyper) == (plain.probability, plain.interval, 64, 3,
                                                                         plain.hyper)
        assert json.dumps(e.to_json())  # plain ints, not numpy's
    assert lowprob.InTopK(3, np.int64(2)).k == 2 and type(lowprob.InTopK(3, np.int64(2)).k) is int
    assert lowprob.ArgmaxIn(np.array([5, 2])).tokens == (2, 5)
    gt = lowprob.ground_truth(model, dist, samples=np.int64(50))
    assert gt.n_samples == 50 and type(gt.n_samples) is int
    dist.save(tmp_path / "d.safetensors")
    assert lowprob.load_distribution(tmp_path / "d.safetensors", model).content_hash() == dist.content_hash()


def test_public_subpackages_are_attributes_of_a_fresh_import_without_torch():
    code = ("import sys, lowprob\nassert 'torch' not in sys.modules\n"
            "lowprob.models.from_transformer_lens, lowprob.truth.ground_truth, lowprob.events.Generates, "
            "lowprob.continuations.check_room, lowprob.estimators.METHODS, lowprob.mlp\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
