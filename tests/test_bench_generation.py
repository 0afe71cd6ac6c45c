"""The generation scale: its definition and truth plan, a tiny end-to-end run on a toy model, and a
run interrupted (in the truth and in the estimates) and resumed giving the rows of an unbroken one."""

import dataclasses
import json

import pytest
import torch

import lowprob.bench.generation as gen
from lowprob.bench import get_scale, run_bench
from lowprob.bench.scales import GenerationScale
from lowprob.continuations import Patterns
from lowprob.distributions.base import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.models import Transformer, TransformerConfig

from .test_bench import comparable

TOY = GenerationScale("generation", models=("toy",), distribution="toy-prompts", length="cpu", steps=3,
                      temperature=1.0, targets=(("toy", ("A", "zq")),), budget=64, seeds=(0, 1), sampled=1024,
                      chunk=256, reference_runs=3, reference_budget=128)


@pytest.fixture
def toy(monkeypatch, tiny_tokenizer):
    cfg = TransformerConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=tiny_tokenizer.vocab_size,
                            init_std=0.3)
    model = Transformer(cfg, seed=0, tokenizer=tiny_tokenizer).eval()
    dist = TokenDistribution.from_positions([5, (torch.tensor([3, 7, 9]), torch.tensor([0.5, 0.3, 0.2]))],
                                            normalize=True, name="toy-prompts")
    monkeypatch.setattr(gen, "_problem", lambda scale, name: (model, dist))
    monkeypatch.setattr(gen, "SHIPPED", gen.SHIPPED.with_name("absent"))  # no shipped truth for the toy
    return model, dist


def test_the_generation_scale_names_its_targets_and_truth():
    scale = get_scale("generation")
    assert scale.models == ("gelu-1l", "gelu-2l", "gelu-4l") and scale.steps == 20 and scale.temperature == 1
    for m in scale.models:
        assert len(scale.targets_of(m)) >= 4
    definition = gen.truth_definition(scale, "gelu-1l")
    assert definition["targets"] == list(scale.targets_of("gelu-1l")) and definition["sampled"] % scale.chunk == 0


def test_the_reference_is_sampled_where_sampling_reaches_and_tilted_below():
    truth = {"definition": {"reference_budget": 100},
             "sampled": {"n": 10_000, "hits": {"often": 50, "rare": 2}},
             "tilted": {"often": [0.004, 0.006, 0.005], "rare": [1e-6, 3e-6, 2e-6]}}
    often, rare = gen.reference(truth, "often"), gen.reference(truth, "rare")
    assert often["ground_truth_kind"] == "sampled" and often["ground_truth"] == 0.005
    assert often["ground_truth_interval"][0] < 0.005 < often["ground_truth_interval"][1]
    assert often["cross_check"]["agree"]
    assert rare["ground_truth_kind"] == "tilted reference" and rare["ground_truth"] == pytest.approx(2e-6)
    assert rare["ground_truth_n"] == 300 and not rare["cross_check"]["agree"]  # 2 hits in 1e4: far above 2e-6


def test_occurs_finds_a_pattern_anywhere():
    cont = torch.tensor([[1, 2, 3, 4], [2, 1, 2, 1], [4, 3, 2, 1]])
    assert Patterns(((2, 3),)).occurs(cont).tolist() == [True, False, False]
    assert Patterns(((1,), (3, 2))).occurs(cont).tolist() == [True, True, True]


def test_a_toy_run_interrupted_and_resumed_gives_the_rows_of_an_unbroken_one(toy, tmp_path, monkeypatch):
    whole = run_bench(TOY, tmp_path / "whole", progress=False)
    rows = [json.loads(line) for line in (whole / "rows/toy/toy-prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 2  # targets x methods x seeds
    truth = json.loads((whole / "truth/toy.json").read_text())
    assert truth["sampled"]["n"] == TOY.sampled and all(len(v) == 3 for v in truth["tilted"].values())
    for r in rows:
        fields = gen.reference(truth, r["target"])
        assert r["ground_truth"] == fields["ground_truth"] and r["ground_truth_kind"] == fields["ground_truth_kind"]
        assert r["event"]["kind"] == "generates" and r["budget"] == TOY.budget
    # sampled hits count continuations: a target that is a single token has p ≈ 1 - (1 - p1)^3, within its interval
    assert 0 < truth["sampled"]["hits"]["A"] < TOY.sampled

    broken = tmp_path / "broken"
    real_sample, real_estimate = gen.sample_continuations, gen.estimate
    calls = {"sample": 0, "estimate": 0}

    def sample_then_fail(*args):
        calls["sample"] += 1
        if calls["sample"] == 3:
            raise KeyboardInterrupt
        return real_sample(*args)

    def estimate_then_fail(*args, **kwargs):
        calls["estimate"] += 1
        if calls["estimate"] == 2 * 3 + 5 + 1:  # after the reference runs (2 targets x 3) and 5 rows
            raise KeyboardInterrupt
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr(gen, "sample_continuations", sample_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run_bench(TOY, broken, progress=False)
    assert json.loads((broken / "truth/toy.json").read_text())["sampled"]["n"] == 2 * TOY.chunk
    with pytest.raises(LowprobError, match="--resume"):
        run_bench(TOY, broken, progress=False)
    monkeypatch.setattr(gen, "estimate", estimate_then_fail)
    with pytest.raises(KeyboardInterrupt):
        run_bench(TOY, broken, resume=True, progress=False)
    assert len((broken / "rows/toy/toy-prompts.jsonl").read_text().splitlines()) == 5
    run_bench(TOY, broken, resume=True, progress=False)
    assert json.loads((broken / "truth/toy.json").read_text()) == truth
    resumed = [json.loads(line) for line in (broken / "rows/toy/toy-prompts.jsonl").read_text().splitlines()]
    assert comparable(resumed) == comparable(rows)
    from lowprob.bench.report import write_report

    report, plot = write_report(broken, tmp_path / "report")
    text = report.read_text()
    assert plot.stat().st_size > 0 and "Truth cross-check" in text
    assert sum(line.startswith("| toy |") for line in text.splitlines()) >= 2 * 3 + 2  # cells and cross-checks
    with pytest.raises(LowprobError, match="another scale definition"):
        run_bench(dataclasses.replace(TOY, budget=32), broken, resume=True, progress=False)


def test_the_shipped_truth_is_the_scale_s_so_a_fresh_run_recomputes_none(tmp_path):
    scale = get_scale("generation")
    for model in scale.models:
        truth = gen._load_truth(scale, model, tmp_path / f"{model}.json")  # no file there: the shipped one
        assert truth["sampled"]["n"] == scale.sampled
        assert all(len(runs) == scale.reference_runs for runs in truth["tilted"].values())
        for text in scale.targets_of(model):
            fields = gen.reference(truth, text)
            assert 0 < fields["ground_truth"] < 0.01 and fields["ground_truth_kind"] in ("sampled", "tilted reference")
