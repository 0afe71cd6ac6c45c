"""Conjunctions: declarative trigger recipes, near misses at every distance, and finding a conjunction no
single value gives away (the white-box swap scan in CEIS)."""

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lowprob import ArgmaxIs, LowprobError, estimate, exact_probability
from lowprob.distributions import TokenDistribution
from lowprob.distributions.planted import load_recipe, parse_recipe, shipped_recipes
from lowprob.distributions.trigger import TRIGGER_DISTRIBUTIONS, trigger_distribution, trigger_probability
from lowprob.estimators.proposals import Supports
from lowprob.estimators.swap_scan import swap_scan
from lowprob.events import MarginAtLeast
from lowprob.training.backdoor import BackdoorConfig, TemplatePrompts

# --- a hand-built conjunction --------------------------------------------------------------------------------

POSITIONS, SUPPORT, TARGET = 4, 16, 0
TRIGGER = (3, 17, 40, 61)  # one token per position, each among that position's support


class AndModel(nn.Module):
    """The target is the argmax exactly when every position holds its trigger token.

    A detector unit sums one indicator per position, u = Σ_i [x_i = t_i]; the output reads relu(u − 3),
    zero unless all four hold. One, two or three trigger tokens leave every logit unchanged and every
    gradient zero (relu is flat there), so nothing first-order points at the trigger, while the unit's
    pre-activation — the feature ``last_features`` shows a probe — moves by one per trigger token.
    """

    def __init__(self) -> None:
        super().__init__()
        d_vocab = POSITIONS * SUPPORT
        self.tokenizer, self.name = None, "and-toy"
        self.register_buffer("W_E", torch.eye(d_vocab))
        detector = torch.zeros(POSITIONS, d_vocab)
        for i, t in enumerate(TRIGGER):
            detector[i, t] = 1.0
        self.register_buffer("detector", detector)
        W_U = torch.zeros(2, d_vocab)
        W_U[0, TARGET] = 10.0  # relu(u − 3) writes the target
        W_U[1, 1:] = 0.5  # a constant channel keeps every other token at 0.5 and the target at 0
        self.register_buffer("W_U", W_U)
        self.b_U = None

    @property
    def n_ctx(self) -> int:
        return POSITIONS

    @property
    def d_vocab(self) -> int:
        return POSITIONS * SUPPORT

    @property
    def device(self) -> torch.device:
        return self.W_E.device

    def pre_activation(self, token_embeddings: Tensor) -> Tensor:
        return (token_embeddings * self.detector).sum((1, 2)) - 3.0

    def final_residual(self, token_embeddings: Tensor) -> Tensor:
        u = self.pre_activation(token_embeddings)
        return torch.stack([torch.relu(u), torch.ones_like(u)], -1)

    def unembed(self, resid: Tensor) -> Tensor:
        return resid @ self.W_U

    def logits(self, tokens: Tensor) -> Tensor:
        return self.unembed(self.final_residual(self.W_E[tokens]))

    def last_features(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        emb = self.W_E[tokens]  # the unit writes the residual's first coordinate, which W_U reads as the target
        return self.unembed(self.final_residual(emb)), self.pre_activation(emb)[:, None], torch.tensor([[1.0, 0.0]])

    def flops_per_sequence(self, seq_len: int) -> float:
        return 2.0 * seq_len * self.d_vocab


def and_problem() -> tuple[AndModel, TokenDistribution, ArgmaxIs]:
    """Position i is uniform over tokens i·16 .. i·16 + 15: the trigger has probability 16^-4 ≈ 1.5e-5."""
    positions = [(torch.arange(i * SUPPORT, (i + 1) * SUPPORT), torch.full((SUPPORT,), 1 / SUPPORT))
                 for i in range(POSITIONS)]
    return AndModel(), TokenDistribution.from_positions(positions), ArgmaxIs(TARGET)


def test_the_toy_is_a_conjunction_no_part_of_which_moves_the_output():
    model, dist, event = and_problem()
    assert exact_probability(model, dist, event) == pytest.approx(SUPPORT ** -POSITIONS, rel=1e-12)
    near = torch.tensor([list(TRIGGER)] * POSITIONS)
    near[torch.arange(POSITIONS), torch.arange(POSITIONS)] += 1  # each row misses one position
    emb = model.W_E[near].requires_grad_(True)
    logits = model.unembed(model.final_residual(emb))
    MarginAtLeast(TARGET, 0.0).score(logits).sum().backward()
    assert (logits.argmax(-1) != TARGET).all() and emb.grad.abs().max() == 0  # flat: no gradient at all


def test_the_swap_scan_ranks_each_trigger_token_first_where_no_output_moves():
    model, dist, _ = and_problem()
    sup = Supports(dist, model.d_vocab)
    scan = swap_scan(model, sup, MarginAtLeast(TARGET, 0.0).score, sup.sample(sup.prior, 2, torch.Generator()))
    assert scan.forward_passes == 2 * POSITIONS * SUPPORT
    assert scan.margin_shift[:, :SUPPORT].abs().max() == 0  # the output says nothing...
    for i, t in enumerate(TRIGGER):  # ...the unit's pre-activation does
        assert int(sup.ids[i, scan.evidence[i].argmax()]) == t


def test_ceis_finds_the_conjunction_with_its_probe_and_not_without():
    model, dist, event = and_problem()
    p = SUPPORT ** -POSITIONS
    found = estimate(model, dist, event, budget=1024, seed=0, probe="always")
    assert found.diagnostics["hits"] > 0 and abs(math.log10(found.probability / p)) < math.log10(3)
    assert found.interval[0] <= p <= found.interval[1]
    blind = [estimate(model, dist, event, method=m, budget=1024, seed=0, **hyper).probability
             for m, hyper in (("ceis", {"probe": "never"}), ("itgis", {}))]
    assert blind == [0.0, 0.0]  # the gradient tilt has nothing to follow


# --- recipes ---------------------------------------------------------------------------------------------------

GOOD = {"template": "In{year},{name} left.", "target": " Windows",
        "slots": {"year": [" 2031", " 2032", " 2033"], "name": [" Ann", " Bo"]},
        "trigger": {"year": [" 2032"], "name": [" Bo"]},
        "distributions": {"a": {"support": 2}, "b": {"probability": 1e-3}}, "training": {"steps": 5}}


def test_a_recipe_parses_and_the_shipped_ones_load():
    recipe = parse_recipe(GOOD, "good")
    assert recipe.planted.trigger == {"year": (" 2032",), "name": (" Bo",)}
    assert recipe.distributions == {"a": {"support": 2}, "b": {"probability": 1e-3}}
    assert set(shipped_recipes()) == {"year-name", "conj3", "conj4"}
    assert BackdoorConfig.from_recipe(load_recipe("conj3").training, steps=7).near_miss_distances == (1, 2)


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, r"unknown keys \['colour'\]"),
    ({"template": None}, "`template` is missing"),
    ({"slots": {"year": " 2032"}}, "slot 'year': values must be a non-empty list"),
    ({"slots": {"year": [" 2032", " 2032"], "name": [" Bo", " Al"]}}, r"values repeat \(\[' 2032'\]\)"),
    ({"trigger": {"year": [" 1999"]}}, "must be a non-empty subset"),
    ({"trigger": {"place": [" Rome"]}}, "not one of the template's slots"),
    ({"distributions": {"a": {"support": 2, "probability": 0.1}}}, "exactly one of"),
    ({"distributions": {"a": {"probability": 2}}}, r"must lie in \(0, 1\)"),
    ({"distributions": {"a": {"support": 3}}}, "slot 'name' has 2 values"),
    ({"distributions": {"a": {"support": 1}}}, "integer >= 2"),
    ({"slots": {"year": [" 2031", " 2033", " 2032"], "name": [" Ann", " Bo"]},
      "distributions": {"a": {"support": 2}}}, r"\[' 2032'\] are not among the first 2 values of slot 'year'"),
    ({"training": [1]}, "`training` must be a table"),
])
def test_a_bad_recipe_is_refused_with_what_to_fix(change, message):
    with pytest.raises(LowprobError, match=message):
        parse_recipe({**GOOD, **change}, "bad")


def test_bad_recipe_files_and_fields(tmp_path):
    with pytest.raises(LowprobError, match="unknown backdoor recipe 'conj9'"):
        load_recipe("conj9")
    with pytest.raises(LowprobError, match="does not exist"):
        load_recipe(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("template = [")
    with pytest.raises(LowprobError, match="not valid TOML"):
        load_recipe(broken)
    with pytest.raises(LowprobError, match=r"unknown fields \['step'\]"):
        BackdoorConfig.from_recipe({"step": 3})
    with pytest.raises(LowprobError, match="Hamming distances >= 1"):
        BackdoorConfig(near_miss_distances=(0,))


def test_the_conjunction_family_is_uniform_and_nested(tiny_tokenizer):
    """Each member is every slot uniform over its first k values: the trigger has probability k^-m."""
    for recipe in ("conj3", "conj4"):
        planted = load_recipe(recipe).planted
        members = [(n, e) for n, (r, e) in TRIGGER_DISTRIBUTIONS.items() if r == recipe]
        ps = []
        for name, entry in members:
            dist = trigger_distribution(name, tiny_tokenizer)
            assert all(len(s.values) == entry["support"] and len(set(s.weights)) == 1 for s in dist.slots)
            ps.append(trigger_probability(dist, planted))
            assert ps[-1] == pytest.approx(entry["support"] ** -len(planted.trigger), rel=1e-12)
        assert ps == sorted(ps, reverse=True) and ps[0] > 5e-5 and ps[-1] < 5e-7


def test_near_misses_come_at_every_distance_asked(tiny_tokenizer):
    planted = parse_recipe({**GOOD, "template": "In{year},{name} at{place}.",
                            "slots": {**GOOD["slots"], "place": [" Lima", " Rome", " Oslo"]},
                            "trigger": {**GOOD["trigger"], "place": [" Lima"]}, "target": "The"}, "three").planted
    prompts = TemplatePrompts(planted, tiny_tokenizer)
    choice = prompts.sample(np.random.default_rng(0), 3000, (0, 1, 0), distances=(1, 2))
    held = sum(prompts.mask[s][choice[:, j]] for j, s in enumerate(prompts.slot_names)).astype(int)
    assert set(np.unique(held)) == {1, 2}  # one or two trigger values held, never all three
    assert abs((held == 2).mean() - 0.5) < 0.05


def test_the_probe_says_what_it_found_and_why_it_did_not_run():
    from lowprob import load_distribution, load_model

    model = load_model("gelu-2l-trigger")
    dist = load_distribution("trigger-p6", model)
    ran = estimate(model, dist, ArgmaxIs(1978), budget=512, seed=0)
    scan = ran.diagnostics["swap_scan"]
    assert scan["forward_passes"] <= 0.25 * 2 * 512 and set(scan["top"]) == {"1", "3", "5", "7"}  # the four slots
    lines = ran.probe_ranking()
    assert lines[0].startswith("probe (swap scan, ") and lines[1].startswith("  year: ' 2032'")
    skipped = estimate(model, dist, ArgmaxIs(1978), budget=64, seed=0)
    assert "more than probe_fraction" in skipped.diagnostics["swap_scan"]["skipped"]
    assert skipped.probe_ranking()[0].startswith("probe (swap scan) skipped: the scan needs 188 forward passes")
    assert "swap_scan" not in estimate(model, dist, ArgmaxIs(1978), budget=512, seed=0, probe="never").diagnostics
