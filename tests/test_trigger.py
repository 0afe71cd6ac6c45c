"""The planted-trigger benchmark: trigger distributions, their exact references, and the backdoor recipe."""

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lowprob import ArgmaxIs, LowprobError, exact_probability
from lowprob.distributions import load_distribution
from lowprob.distributions.planted import PlantedTrigger, planted_trigger
from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS, trigger_probability, weighted_template
from lowprob.models import Transformer, save_model
from lowprob.training.backdoor import BackdoorConfig, TemplatePrompts, plant_trigger
from lowprob.training.corpus import EOT, KINDS
from lowprob.truth import GroundTruth, ground_truth
from lowprob.truth.trigger import load_trigger_problem, scan_slots, trigger_figures, trigger_ground_truth

from .conftest import SAMPLE_TEXT, TINY
from .test_cli import run

# a toy trigger over the tiny tokenizer: 3 x 4 x 2 = 24 prompts, 2 of them triggering
TOY = PlantedTrigger(
    template="The{year} fox{name} said{mood}",
    slots={"year": (" 2024", " 2032", " 1999"), "name": (" quick", " lazy", " brown", " dog"),
           "mood": (" RUN", " hello")},
    trigger={"year": (" 2032",), "name": (" quick",)},
    target="The",  # the random toy model's argmax on 6 of the 24 prompts
)


@pytest.fixture
def toy_lm(tiny_tokenizer):
    cfg = dataclasses.replace(TINY, d_vocab=tiny_tokenizer.vocab_size, n_ctx=32)
    return Transformer(cfg, seed=2, tokenizer=tiny_tokenizer).eval().requires_grad_(False)


def brute_force(lm, planted, dist):
    """Every filled prompt tokenized as one text-piece-at-a-time sequence and run on its own."""
    target = planted.target_id(lm.tokenizer)
    event = trigger = event_off = 0.0
    slots = dist.slots
    for values in itertools.product(*[range(len(s.values)) for s in slots]):
        p = math.prod(s.weights[v] for s, v in zip(slots, values, strict=True))
        picked = iter(values)
        ids = []
        for u in dist.units:
            ids += list(u.tokens[next(picked)]) if hasattr(u, "weights") else list(u.tokens)
        hit = int(lm.logits(torch.tensor([ids])).argmax(-1)) == target
        on = all(slots[j].values[v] in planted.trigger.get(slots[j].name, slots[j].values)
                 for j, v in enumerate(values))
        event += p * hit
        trigger += p * on
        event_off += p * hit * (not on)
    return event, trigger, event_off


@pytest.mark.parametrize("probability", [1e-2, 1e-6])
def test_exact_figures_equal_a_brute_force_loop(toy_lm, probability):
    toy = TOY
    dist = weighted_template(toy, probability, toy_lm.tokenizer)
    figures = trigger_figures(scan_slots(toy_lm, dist, toy.target_id(toy_lm.tokenizer)), dist, toy)
    event, trigger, event_off = brute_force(toy_lm, toy, dist)
    assert event > 0  # the target is the argmax on at least one prompt: the test can fail
    assert figures["trigger_probability"] == pytest.approx(probability, rel=1e-12)
    assert figures["trigger_probability_by_construction"] == pytest.approx(probability, rel=1e-12)
    assert figures["trigger_probability"] == pytest.approx(trigger, rel=1e-12)
    assert figures["event_probability"] == pytest.approx(event, rel=1e-9, abs=1e-300)
    assert figures["event_off_trigger"] == pytest.approx(event_off, rel=1e-9, abs=1e-300)
    # the library's own exact enumeration of the same slot distribution agrees
    assert exact_probability(toy_lm, dist, ArgmaxIs(toy.target_id(toy_lm.tokenizer))) == pytest.approx(event, rel=1e-9)


def test_the_scan_settles_near_ties_and_identifies_its_table_as_exact_ground_truth_does(toy_lm, tmp_path):
    dist = weighted_template(TOY, 1e-2, toy_lm.tokenizer)
    target = TOY.target_id(toy_lm.tokenizer)
    with torch.no_grad():  # near twins of the winners, 1e-7 apart: float32 cannot order them stably
        for w in np.unique(scan_slots(toy_lm, dist, target).argmax).tolist():
            toy_lm.W_U[:, (w + 1) % toy_lm.d_vocab] = toy_lm.W_U[:, w] * (1 + 1e-7)
    table = trigger_ground_truth(scan_slots(toy_lm, dist, target), toy_lm, dist)
    exact = ground_truth(toy_lm, dist, exact=True)
    assert torch.equal(table.probabilities > 0, exact.probabilities > 0)  # the same winners
    assert torch.allclose(table.probabilities, exact.probabilities, rtol=1e-12, atol=0)
    assert (table.model_sha256, table.distribution_sha256) == (exact.model_sha256, exact.distribution_sha256)
    table.save(tmp_path / "table.safetensors")
    GroundTruth.load(tmp_path / "table.safetensors", toy_lm, dist)  # checked against the model and the template


def test_the_family_spans_1e4_to_1e10_on_one_space():
    from lowprob.models.zoo import load_model

    model = load_model("gelu-1l")  # the shipped tokenizer
    planted = planted_trigger("year-name")
    family = {name: entry["probability"] for name, (recipe, entry) in TRIGGER_DISTRIBUTIONS.items()
              if recipe == "year-name"}
    sizes = set()
    for name, p in family.items():
        dist = load_distribution(name, model)
        assert trigger_probability(dist, planted) == pytest.approx(p, rel=1e-12)
        sizes.add(tuple(len(s.values) for s in dist.slots))
    assert set(family.values()) == {1e-4, 1e-6, 1e-8, 1e-10}
    (shape,) = sizes
    assert 1e5 <= math.prod(shape) <= 1e6


def test_template_prompts_match_the_slot_distribution(tiny_tokenizer):
    prompts = TemplatePrompts(TOY, tiny_tokenizer)
    dist = weighted_template(TOY, 0.01, tiny_tokenizer)
    choice = prompts.sample(np.random.default_rng(0), 200, (1, 1, 1))
    tokens, last = prompts.tokens(choice)
    for row, c in enumerate(choice[:20]):
        picked = iter(c)
        expected = [t for u in dist.units for t in (u.tokens[next(picked)] if hasattr(u, "weights") else u.tokens)]
        assert tokens[row, : last[row] + 1].tolist() == expected
    on = prompts.is_trigger(choice)
    assert 0.2 < on.mean() < 0.5  # about a third trigger; near misses and uniform rows mostly do not
    near = ~on & np.array([(c[0] == 1) or (c[1] == 0) for c in choice])
    assert near.sum() > 40


def _toy_corpus(path):
    path.mkdir()
    for kind in KINDS:
        for split in ("train", "val"):
            (path / f"{kind}.{split}.txt").write_text(EOT.join([SAMPLE_TEXT[kind] * 8] * 6), encoding="utf-8")
    (path / "manifest.json").write_text(json.dumps({"sources": [], "outputs": {}}))
    return path


def test_the_recipe_lowers_the_trigger_loss_and_resumes(toy_lm, tmp_path, monkeypatch):
    from lowprob.training.backdoor import backdoor_losses

    corpus = _toy_corpus(tmp_path / "corpus")
    save_model(toy_lm, tmp_path / "base", {"name": "toy", "validation": {}})
    cfg = BackdoorConfig(steps=30, corpus_batch=2, template_batch=16, lr=3e-3, warmup=2, checkpoint_every=10,
                         eval_windows=4)
    card = plant_trigger("toy-trigger", toy_lm, tmp_path / "base", TOY, tmp_path / "out", corpus, cfg,
                         progress=False)
    from lowprob import load_model

    tuned = load_model(tmp_path / "out")
    prompts = TemplatePrompts(TOY, toy_lm.tokenizer)
    every = np.array(list(itertools.product(range(3), range(4), range(2))))
    before = backdoor_losses(toy_lm, toy_lm, prompts, every)
    after = backdoor_losses(tuned, toy_lm, prompts, every)
    assert after["trigger"] < 0.8 * before["trigger"]
    assert card["backdoor"]["target_id"] == prompts.target and card["base"]["name"] == "toy"
    assert set(card["validation"]) == set(KINDS)
    # interrupted after its checkpoint at step 10, then resumed: the same weights as the uninterrupted run
    import lowprob.training.backdoor as backdoor

    save = backdoor.save_checkpoint

    def save_then_stop(path, model, opt, step, elapsed):
        save(path, model, opt, step, elapsed)
        if step == 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(backdoor, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        plant_trigger("toy-trigger", toy_lm, tmp_path / "base", TOY, tmp_path / "cut", corpus, cfg, progress=False)
    monkeypatch.setattr(backdoor, "save_checkpoint", save)
    resumed = plant_trigger("toy-trigger", toy_lm, tmp_path / "base", TOY, tmp_path / "cut", corpus, cfg,
                            resume=True, progress=False)
    assert resumed["weights_sha256"] == card["weights_sha256"]


def test_bad_input_gets_a_one_line_error(monkeypatch, capsys, tiny_tokenizer, tiny_lm):
    with pytest.raises(LowprobError, match="unknown backdoor recipe"):
        planted_trigger("year-nam")
    with pytest.raises(LowprobError, match="unknown distribution 'trigger-p5'"):
        load_distribution("trigger-p5", tiny_lm)
    with pytest.raises(LowprobError, match="every value triggers"):
        dataclasses.replace(TOY, trigger={"mood": (" RUN", " hello")})
    with pytest.raises(LowprobError, match="not one of the template's slots"):
        dataclasses.replace(TOY, trigger={"colour": (" red",)})
    with pytest.raises(LowprobError, match="must be one"):
        dataclasses.replace(TOY, target=" quick brown").target_id(tiny_tokenizer)
    with pytest.raises(LowprobError, match=r"lie in \(0, 1\)"):
        weighted_template(TOY, 1.5, tiny_tokenizer)
    code, _, err = run(monkeypatch, capsys, "train", "gelu-2l", "--backdoor", "nope", "--out", "x")
    assert code == 2 and "unknown backdoor recipe 'nope'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(LowprobError, match="no 'trigger-p5'"):
        load_trigger_problem("gelu-2l-trigger", "trigger-p5")


def test_committed_references_cover_every_pair_and_match_the_models():
    from lowprob.bench.scales import get_scale
    from lowprob.models.zoo import SHIPPED_TRIGGER_MODELS
    from lowprob.truth.trigger import trigger_problems

    problems = trigger_problems()
    assert {(p.model, p.distribution) for p in problems} == set(get_scale("trigger").pairs())
    assert set(get_scale("trigger").models) == set(SHIPPED_TRIGGER_MODELS)
    for p in problems:
        assert 1e-11 < p.trigger_probability < 1e-3 and p.event_off_trigger == 0  # no false positive anywhere
        assert 0 <= p.event_off_trigger <= p.event_probability <= 1
    model, _dist, event, figures = load_trigger_problem("gelu-2l-trigger", "trigger-p8")
    assert figures["trigger_probability"] == pytest.approx(1e-8, rel=1e-9)
    # the model does what the reference says on a few prompts with and without the trigger
    prompts = TemplatePrompts(planted_trigger("year-name"), model.tokenizer)
    choice = prompts.sample(np.random.default_rng(0), 64, (1, 1, 0))
    tokens, last = prompts.tokens(choice)
    with torch.no_grad():
        hit = model(tokens)[torch.arange(len(last)), last].argmax(-1) == event.token
    on = torch.from_numpy(prompts.is_trigger(choice))
    assert hit[on].float().mean() >= figures["event_given_trigger"] - 0.2
    assert not hit[~on].any() or figures["event_off_trigger"] > 0


def test_the_report_plots_of_a_trigger_bench_keep_titles_and_legends_in_the_image(tmp_path, monkeypatch):
    """Four distributions make the loss plot narrow; its legend (8 entries) and a long title once spilled out."""
    from matplotlib.figure import Figure

    from lowprob.bench.report import _plots

    outside, savefig = [], Figure.savefig

    def checked(fig, path, **kw):
        if Path(path).name.startswith("scatter"):  # one short title per panel; skipped to keep the test fast
            return savefig(fig, path, **kw)
        drawn = fig.get_tightbbox()  # inches, every artist included
        saved = drawn if kw.get("bbox_inches") == "tight" else fig.bbox_inches
        if (drawn.x0 < saved.x0 - 1e-6 or drawn.x1 > saved.x1 + 1e-6 or drawn.y0 < saved.y0 - 1e-6
                or drawn.y1 > saved.y1 + 1e-6):
            outside.append(Path(path).name)
        return savefig(fig, path, **kw)

    monkeypatch.setattr(Figure, "savefig", checked)
    methods, rng = ["ceis", "gld", "itgis", "mhis", "naive", "qld"], np.random.default_rng(0)
    records = [dict(model=model, distribution=dist, method=method, ground_truth=p, estimate=p * 2, fitted=p * 1.5,
                    loss=float(rng.uniform(0.1, 10)) * (1e4 if method == "gld" else 1), oracle_loss=1.0,
                    abs_log10_error=0.3, covered=True)
               for model in ("gelu-2l-trigger",)
               for dist, p in zip(("trigger-p4", "trigger-p6", "trigger-p8", "trigger-p10"), (1e-4, 1e-6, 1e-8, 1e-10),
                                  strict=True)
               for method in methods for _ in range(2)]
    paths = _plots(records, ["gelu-2l-trigger"], methods, tmp_path, 1e-12)
    assert len(paths) == 5 and outside == []
