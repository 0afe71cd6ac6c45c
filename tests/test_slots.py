"""Slot distributions: prompt templates with random slots whose values tokenize to different lengths."""

import itertools
import json
import math
import re

import pytest
import torch

import lowprob
from lowprob import ArgmaxIs, LowprobError, estimate
from lowprob.distributions.slots import Slot, SlotDistribution
from lowprob.models import Tokenizer, Transformer, TransformerConfig, save_model

from .test_cli import run

TEXT = "In 2024, the president Alice Wong said that Bob went to Paris. In 1999 Carol Smith visited Lima and Oslo. "
TEMPLATE = "In{year},{name} went to{place} and said"
SLOTS = {
    "year": {"values": [" 2024", " 1999", " 2032", " 1850", " 3000", " 12"],
             "weights": [0.5, 0.2, 0.15, 0.1, 0.04, 0.01]},
    "name": {"values": [" Alice Wong", " Bob", " Carol Smith", " Zed", " Q", " Alice", " Bo Li", " Xi"]},
    "place": {"values": [" Paris", " Lima", " Oslo", " Rome", " Kyiv", " Nuuk"],
              "weights": [0.3, 0.3, 0.2, 0.1, 0.07, 0.03]},
}
TOML = '''template = "In{year},{name} went to{place} and said"
[slots.year]
values = [" 2024", " 1999", " 2032", " 1850", " 3000", " 12"]
weights = [0.5, 0.2, 0.15, 0.1, 0.04, 0.01]
[slots.name]
values = [" Alice Wong", " Bob", " Carol Smith", " Zed", " Q", " Alice", " Bo Li", " Xi"]
[slots.place]
values = [" Paris", " Lima", " Oslo", " Rome", " Kyiv", " Nuuk"]
weights = [0.3, 0.3, 0.2, 0.1, 0.07, 0.03]
'''


@pytest.fixture(scope="module")
def problem():
    tok = Tokenizer.train(iter([TEXT * 40] * 5), vocab_size=160)
    cfg = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=48, d_vocab=tok.vocab_size,
                            init_std=0.5)
    model = Transformer(cfg, seed=0, tokenizer=tok)
    dist = SlotDistribution.from_spec(TEMPLATE, SLOTS, tok, name="president")
    return model, dist, lowprob.ground_truth(model, dist, exact=True).probabilities


def brute_force(model, dist) -> torch.Tensor:
    """Argmax-token probabilities by filling the template every way, written without the library's binding."""
    table = torch.zeros(model.d_vocab, dtype=torch.float64)
    for combo in itertools.product(*[range(len(s.values)) for s in dist.slots]):
        picks, tokens, weight = iter(combo), [], 1.0
        for unit in dist.units:
            if isinstance(unit, Slot):
                choice = next(picks)
                tokens += model.tokenizer.encode(unit.values[choice])
                weight *= unit.weights[choice]
            else:
                tokens += model.tokenizer.encode(unit.text)
        with torch.no_grad():
            table[int(model.logits(torch.tensor([tokens])).argmax())] += weight
    return table


def test_values_tokenize_to_different_lengths_and_exact_enumeration_equals_a_brute_force(problem):
    model, dist, exact = problem
    assert len({len(t) for s in dist.slots for t in s.tokens}) >= 4 and dist.support_size() == 288
    assert torch.allclose(exact, brute_force(model, dist), atol=1e-12, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "budget"), [(254, 256), (92, 512)])  # p = 3.0e-3, 3.5e-4
def test_itgis_is_unbiased_on_a_template(problem, target, budget):
    model, dist, exact = problem
    p = exact[target].item()
    assert 1e-4 < p < 1e-2
    values = torch.tensor([estimate(model, dist, ArgmaxIs(target), method="itgis", budget=budget, seed=s).probability
                           for s in range(40)], dtype=torch.float64)
    assert (values > 0).any() and abs(values.mean().item() - p) < 3.5 * values.std().item() / math.sqrt(40), \
        (values.mean().item(), p)


@pytest.mark.slow
def test_mhis_and_the_extrapolations_run_on_a_template(problem):
    model, dist, exact = problem
    target = 254
    errors = [abs(math.log(max(estimate(model, dist, ArgmaxIs(target), method="mhis", budget=b, seed=s).probability,
                                   1e-12) / exact[target].item())) for b in (256, 4096) for s in range(4)]
    assert sum(errors[4:]) < sum(errors[:4])  # consistent: the error shrinks with the budget
    for method in ("qld", "gld", "naive"):
        e = estimate(model, dist, ArgmaxIs(target), method=method, budget=256)
        assert e.distribution == "president" and 0 <= e.interval[0] <= e.interval[1] <= 1


def test_a_toml_file_and_its_json_twin_load_alike(problem, tmp_path):
    model, dist, _ = problem
    (tmp_path / "president.toml").write_text(TOML)
    (tmp_path / "president.json").write_text(json.dumps({"template": TEMPLATE, "slots": SLOTS}))
    for name in ("president.toml", "president.json"):
        loaded = lowprob.load_distribution(str(tmp_path / name), model)
        assert loaded.units == dist.units and loaded.name == "president"


@pytest.mark.parametrize(("template", "slots", "message"), [
    ("In{year}", {}, "does not define"),
    ("In{year} and{year}", {"year": {"values": [" 1"]}}, "more than once"),
    ("In{year}", {"year": {"values": [" 1"]}, "name": {"values": [" a"]}}, "not in the template"),
    ("In 2024", {}, "no {slot}"),
    ("In{year}", {"year": {"values": []}}, "non-empty list"),
    ("In{year}", {"year": {"values": [" 1", " 1"]}}, "repeat"),
    ("In{year}", {"year": {"values": [" 1", " 2"], "weights": [0.5, 0.6]}}, "sum to 1.1"),
    ("In{year}", {"year": {"values": [" 1", " 2"], "weights": [1.0]}}, "2 positive numbers"),
    ("In{year}", {"year": {"values": [" 1", " 2"], "weigths": [0.99, 0.01]}},
     r"slot year: unknown key\(s\) weigths; allowed: values, weights"),
])
def test_bad_templates_get_clear_errors(problem, template, slots, message):
    model, _, _ = problem
    with pytest.raises(LowprobError, match=message):
        SlotDistribution.from_spec(template, slots, model.tokenizer)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("dir.toml/", None, "dir.toml/ is a directory: give a template file"),
    ("plain-dir", None, "plain-dir is a directory: give a template file"),
    ("bad.toml", 'template = "In{year}"\n[slots.year\n', "bad.toml is not valid TOML"),
    ("bad.json", '{"template": "In{year}",', "bad.json is not valid JSON"),
    ("binary.toml", b"\xff\xfe", "binary.toml is not valid TOML"),
    ("types.toml", 'template = 5\n[slots.year]\nvalues = [" 1"]\n', "types.toml: template must be a string"),
    ("types.json", '{"template": "In{year}", "slots": {"year": [" 1"]}}', "types.json: slot year: give a non-empty"),
    ("twice.json", '{"template": "In{year}", "slots": {"year": {"values": [" 1"]}}, "template": "On{year}"}',
     r"twice.json is not valid JSON \(the key 'template' appears twice in one object; keep one\)"),
    ("typo.toml", TOML.replace("weights = [0.5", "weigths = [0.5"), r"typo.toml: slot year: unknown key\(s\) weigths"),
])
def test_a_bad_template_file_is_one_error_naming_it(problem, tmp_path, monkeypatch, capsys, name, content, message):
    model, _, _ = problem
    save_model(model, tmp_path / "m", {"name": "toy"})
    monkeypatch.chdir(tmp_path)
    if content is None:
        (tmp_path / name).mkdir()
    else:
        getattr(tmp_path / name, "write_bytes" if isinstance(content, bytes) else "write_text")(content)
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", "m", "--dist", name, "--target", "id:3")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_the_template_reader_refuses_a_file_it_cannot_read(problem, tmp_path):
    with pytest.raises(LowprobError, match=f"cannot read {tmp_path}"):  # a directory, through the Python API
        SlotDistribution.load(tmp_path, problem[0].tokenizer)


def test_a_template_longer_than_the_context_is_refused(problem):
    model, _, _ = problem
    long = SlotDistribution.from_spec("x" * 60 + "{a}", {"a": {"values": [" 1"]}}, model.tokenizer)
    with pytest.raises(LowprobError, match="n_ctx is 48"):
        estimate(model, long, ArgmaxIs(3), method="naive", budget=8)


def test_cli_shows_a_template_and_estimates_on_it(problem, tmp_path, monkeypatch, capsys):
    model, _, _ = problem
    save_model(model, tmp_path / "m", {"name": "toy"})
    (tmp_path / "president.toml").write_text(TOML)
    code, out, _ = run(monkeypatch, capsys, "dists", str(tmp_path / "president.toml"), "--model", str(tmp_path / "m"))
    assert code == 0 and "288 combinations" in out and "' Carol Smith'" in out and "'In" in out
    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", str(tmp_path / "m"), "--dist",
                       str(tmp_path / "president.toml"), "--target", "id:254", "--budget", "256", "--json")
    assert code == 0 and json.loads(out)["distribution"] == "president"


def test_a_bound_over_a_template_equals_the_exact_table(problem):
    """Templates are bounded by running their prompts (no network bound reads a templated model)."""
    model, dist, p = problem
    for t in p.argsort(descending=True)[:3].tolist():
        b = lowprob.bound(model, dist, lowprob.ArgmaxIs(t))
        assert b.complete and b.network_bound == ""
        assert b.lower <= float(p[t]) <= b.upper and b.upper - b.lower <= 1e-12
