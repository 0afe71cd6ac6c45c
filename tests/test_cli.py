import json
import sys

import pytest

from lowprob.cli import main
from lowprob.models import save_model


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["lowprob", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_lists_the_shipped_models(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "models")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["gelu-1l", "gelu-2l", "gelu-4l", "gelu-2l-trigger",
                                                         "gelu-4l-trigger", "gelu-2l-conj3", "gelu-4l-conj3",
                                                         "gelu-2l-conj4"]
    assert [line.split()[1] for line in lines[1:]] == ["1", "2", "4", "2", "4", "2", "4", "2"]


def test_complete_continues_the_prompt(tiny_lm, tmp_path, monkeypatch, capsys):
    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    code, out, _ = run(monkeypatch, capsys, "complete", "--model", str(tmp_path / "m"),
                       "--prompt", "def add(", "--tokens", "30")
    assert code == 0
    assert out.startswith("def add(") and len(out) > len("def add(\n")


@pytest.mark.parametrize("args, message", [
    (("complete", "--model", "gelu-9l", "--prompt", "x"), "unknown model 'gelu-9l'"),
    (("train", "gelu-3l", "--out", "x"), "unknown model 'gelu-3l'"),
])
def test_user_errors_exit_2_with_one_line(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (("complete", "--model", "gelu-1l", "--prompt", "hi", "--tokens", str(2**70)),
     "error: --tokens must be at most 16,384 (one forward pass each: a quick look at the model, not a text "
     "generator), got 1,180,591,620,717,411,303,424"),
    (("bench", "--scale", "tiny", "--methods", "naive", "--workers", str(2**70), "--out", "b"),
     "error: --workers must be at most "),
], ids=["complete-tokens", "bench-workers"])
def test_counts_past_what_a_run_can_use_are_refused_before_any_work(monkeypatch, capsys, tmp_path, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("args, message", [
    (("complete", "--prompt", "x"), "--model"),
    (("complete", "--model", "gelu-1l", "--prompt", "x", "--tokens", "0"), "--tokens"),
])
def test_usage_errors_exit_2(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err


def test_dists_lists_every_distribution(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "dists")
    assert code == 0
    *table, templates = out.strip().splitlines()[1:]
    assert {line.split()[0] for line in table} == {"hex", "camel", "colon", "if", "caps", "english", "spanish",
                                                   "icl", "tiny-uniform", "tiny-zipf", "tiny-constants",
                                                   "tiny-long", "tiny-wide"}
    assert all(f"trigger-p{k}" in templates for k in (4, 6, 8, 10))


def test_dists_shows_positions_and_samples(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "dists", "colon", "--samples", "3")
    assert code == 0
    assert "position 1-13" in out and "position 14     ':' 1" in out
    assert out.count("<|endoftext|>") == 4  # the position-0 line and three samples


def test_estimate_prints_json_per_the_contract(monkeypatch, capsys):
    import json

    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", " the",
                       "--method", "naive", "--budget", "256", "--json")
    assert code == 0
    row = json.loads(out)
    assert {"method", "probability", "interval", "budget", "seed", "cost", "warnings", "diagnostics"} <= set(row)
    assert isinstance(row["warnings"], list)
    assert (row["probability"] == 0) == any("no sample reached the event" in w for w in row["warnings"])
    assert set(row["cost"]) == {"forward_passes", "backward_passes", "flops", "seconds", "forward_equivalents"}


@pytest.mark.parametrize("target, message", [("hello world", "encodes to"), ("99999", "0..4095")])
def test_estimate_rejects_bad_targets(monkeypatch, capsys, target, message):
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", target,
                       "--method", "naive", "--budget", "8")
    assert code == 2 and message in err


# --- train: a model directory is never trained over unless told ---------------------------------------
@pytest.mark.parametrize("backdoor", [(), ("--backdoor", "year-name")])
def test_train_refuses_a_directory_holding_a_model_before_building_the_corpus(tiny_lm, tmp_path, monkeypatch,
                                                                             capsys, backdoor):
    from lowprob.errors import LowprobError
    from lowprob.training import corpus

    def reached(*_):
        raise LowprobError("the corpus was reached")

    monkeypatch.setattr(corpus, "build_corpus", reached)
    model, run_dir = tmp_path / "m", tmp_path / "run"
    save_model(tiny_lm, model, {"name": "tiny"})
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    train = ("train", "gelu-1l", *backdoor, "--out")
    code, _, err = run(monkeypatch, capsys, *train, str(model))
    assert code == 2 and err == (f"error: {model} already holds a model (config.json, model.safetensors, "
                                 f"tokenizer.json, card.json): pass --resume to continue that run, --force to "
                                 f"start over, or choose another --out\n")
    code, _, err = run(monkeypatch, capsys, *train, str(model), "--resume")
    assert code == 2 and "holds a finished model (no checkpoint.pt to resume): pass --force" in err
    code, _, err = run(monkeypatch, capsys, *train, str(model), "--resume", "--force")
    assert code == 2 and "give one of them" in err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # nothing written, no lock left
    code, _, err = run(monkeypatch, capsys, *train, str(model), "--force")
    assert code == 2 and "the corpus was reached" in err
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"an interrupted run")
    code, _, err = run(monkeypatch, capsys, *train, str(run_dir))
    assert code == 2 and f"{run_dir} already holds a model (checkpoint.pt): pass --resume" in err
    code, _, err = run(monkeypatch, capsys, *train, str(run_dir), "--resume")
    assert code == 2 and "the corpus was reached" in err
    assert [p.name for p in run_dir.iterdir()] == ["checkpoint.pt"]


# --- a careless user's hour (issue 25): sizes, lengths, repeated options, long runs ------------------------
EST = ("estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "id:8")


@pytest.mark.parametrize("args, message", [
    (("--budget", "1000000000000000"), "budget must be at most 2^40 = 1,099,511,627,776 model calls (12 days"),
    (("--budget", str(2**70)), "budget must be at most 2^40"),
    (("--seed", str(2**32)), "seed must be below 2^32 = 4,294,967,296 (torch's generator keeps 32 bits of a seed: "
                             "4294967296 would draw seed 0's numbers)"),
    (("--seed", str(2**63 + 5)), "would draw seed 5's numbers"),
    (("--seed", str(2**70)), "seed must be below 2^32"),
    (("--method", "mhis", "--param", "chains=4", "--param", "chains=8"), "--param chains is given twice (4 and 8)"),
    (("--method", "itgis", "--temperature", "2", "--param", "temperature=1"), "give the temperature once"),
    (("--max-hours", "nan"), "--max-hours"),
])
def test_sizes_and_repeated_options_are_refused_saying_why(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, *EST, *args)
    assert code == 2 and message in err and not out, err


def test_a_horizon_past_the_context_names_the_positions_it_needs(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--event",
                       'generates: " the", steps=1000000000')
    assert code == 2 and err == ("error: generates: a 15-token prompt and steps=1000000000 need 1,000,000,014 "
                                 "positions, more than the model's context of 64: use steps <= 50\n")


def test_an_estimate_predicted_past_max_hours_is_refused_with_its_prediction(monkeypatch, capsys):
    code, out, err = run(monkeypatch, capsys, *EST, "--method", "naive", "--budget", "100000", "--max-hours",
                         "0.0001")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "error: naive at budget 100,000 would take about" in err and "timed by a probe" in err
    assert "more than the limit of 0.0001 h" in err and "--max-hours" in err


def test_a_long_estimate_shows_progress_on_stderr_and_a_short_one_does_not(monkeypatch, capsys):
    from lowprob.estimators import base

    code, out, err = run(monkeypatch, capsys, *EST, "--method", "ceis", "--budget", "256", "--json")
    assert code == 0 and err == ""
    monkeypatch.setattr(base, "PROGRESS_SECONDS", 0.0)  # every run is "long"
    code, out_bar, err = run(monkeypatch, capsys, *EST, "--method", "ceis", "--budget", "256", "--json")
    assert code == 0 and "ceis: 100%" in err and "512/512" in err and "probe estimate" in err
    strip = lambda row: {k: v for k, v in json.loads(row).items() if k != "cost"}  # noqa: E731
    assert strip(out_bar) == strip(out)  # the probe and the bar change nothing


@pytest.mark.parametrize("args", [
    ("dists", "tiny-uniform", "--length", "paper"),
    ("dists", "trigger-p4", "--length", "paper"),
    ("dists", "--length", "exact"),
    ("estimate", "--model", "gelu-1l", "--dist", "tiny-uniform", "--target", "id:8", "--length", "paper"),
])
def test_a_length_where_it_does_not_apply_is_refused(monkeypatch, capsys, args):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and "variant of a paper distribution" in err and len(err.strip().splitlines()) == 1


def test_estimate_help_names_every_event_kind_and_what_budget_means(monkeypatch, capsys):
    _, out, _ = run(monkeypatch, capsys, "estimate", "--help")
    text = " ".join(out.split())
    assert "generates: TEXT, ..., steps=N" in text and "TOKEN: id:N" in text
    assert "methods are compared at equal executed FLOPs, so itgis, mhis, ceis, flat execute 2×budget" in text
    assert "equivalents (a backward pass costs a forward)" in text and "--max-hours" in text


@pytest.mark.parametrize("args, message", [
    (("--seed", str(2**70)), "seed must be below 2^32"),
    (("--seed", "-1"), "seed must be a non-negative integer"),
    (("--samples", str(2**70)), "--samples"),
])
def test_dists_refuses_seeds_and_sample_counts_it_cannot_honour(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, "dists", "hex", *args)
    assert code == 2 and message in err and not out
