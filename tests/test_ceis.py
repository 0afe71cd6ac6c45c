"""CEIS against exact answers on tiny enumerable problems.

Tolerances come from the estimator's own spread over seeds. What CEIS cannot do yet is a strict
xfail: it fails the day the problem is fixed, so the marker cannot outlive the problem.
"""

import math

import pytest
import torch

import lowprob
from lowprob import ArgmaxIs, LowprobError, Transformer, TransformerConfig, estimate
from lowprob.cost import GRADIENT_CALL
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.tiny import tiny_distribution
from lowprob.estimators.ceis import margin_of
from lowprob.estimators.rao_blackwell import LastPositionSums
from lowprob.events import MarginAtLeast
from lowprob.models.protocol import CAPABILITIES

SHARP = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32, init_std=0.3)
SMOOTH = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32, init_std=0.15)


@pytest.fixture(scope="module")
def sharp():
    model = Transformer(SHARP, seed=0)
    dist = tiny_distribution("tiny-constants", SHARP.d_vocab)
    return model, dist, lowprob.ground_truth(model, dist, exact=True).probabilities


@pytest.fixture(scope="module")
def smooth():
    model = Transformer(SMOOTH, seed=0)
    dist = tiny_distribution("tiny-long", SMOOTH.d_vocab)
    return model, dist, lowprob.ground_truth(model, dist, exact=True).probabilities


_RUNS: dict = {}  # the unbiasedness and coverage tests share their 100-seed runs


def run_seeds(model, dist, target, method, seeds, budget, **hyper):
    key = (id(model), dist.content_hash(), target, method, seeds, budget, tuple(sorted(hyper.items())))
    if key not in _RUNS:
        _RUNS[key] = [estimate(model, dist, ArgmaxIs(target), method=method, budget=budget, seed=s, **hyper)
                      for s in range(seeds)]
    ests = _RUNS[key]
    return ests, torch.tensor([e.probability for e in ests], dtype=torch.float64)


def assert_within_3_se(values: torch.Tensor, p: float) -> None:
    """The mean over seeds is within 3 of its own standard errors of the exact value."""
    se = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - p) < 3 * se, (values.mean().item(), p, se)


def test_margin_is_positive_exactly_on_the_event_with_torch_argmax_ties():
    logits = torch.tensor([[1.0, 3.0, 2.0], [3.0, 3.0, 0.0], [0.0, 3.0, 3.0]])
    assert margin_of(ArgmaxIs(1))(logits).tolist() == [1.0, 0.0, 0.0]
    # ties: argmax takes the lowest id, so token 1 wins row 2 (tied with 2) but loses row 1 (tied with 0)
    assert ArgmaxIs(1).indicator(logits).tolist() == [True, False, True]


def test_the_margin_equals_the_margin_event_score_bit_for_bit():
    """CEIS's margin takes two maxima instead of a copy and a top-k; the values are the same floats."""
    logits = torch.randn(64, 50, generator=torch.Generator().manual_seed(0)).round(decimals=1)  # with ties
    for token in (0, 1, 25, 49):
        assert torch.equal(margin_of(ArgmaxIs(token))(logits), MarginAtLeast(token, 0.0).score(logits))


@pytest.mark.slow
@pytest.mark.parametrize(("target", "budget"), [(2, 256), (11, 256), (29, 1024)])
def test_unbiased_against_exact_enumeration(sharp, target, budget):
    """The default (half the estimation phase Rao–Blackwellised, the climb where the stages stall) at p = 2.7e-3,
    2.6e-5 and 8.8e-7, the rarest nonzero output of this model. Measured over 100 seeds: z = -0.36, -1.54 and
    -0.63; relative SE 0.02, 0.04 and 0.15; 0%, 4% and 0% zeros (before issue 29's climb: z = -1.84, 0.98,
    0.77 and 0%, 1%, 13% zeros). At budget 256 the 8.8e-7 target was not yet unbiased in practice before
    the climb (mean 0.33 p, z = -7.7: 70% zeros and a heavy tail), hence 1024 there."""
    model, dist, exact = sharp
    p = exact[target].item()
    assert 5e-7 < p < 3e-3
    _, values = run_seeds(model, dist, target, "ceis", 100, budget)
    assert torch.isfinite(values).all() and (values >= 0).all()
    assert_within_3_se(values, p)
    if p > 1e-3:
        assert (values == 0).float().mean() <= 0.02


@pytest.mark.slow
def test_unbiased_on_a_smoother_model(smooth):
    """tiny-long on a smoother model (262,144 sequences enumerated): a p = 3.6e-5 target (measured:
    z = 1.24, 3% zeros; before the climb z = -0.23 and 43% zeros: the flat logits give the gradient tilts
    little to follow)."""
    model, dist, exact = smooth
    p = exact[3].item()
    assert 1e-5 < p < 1e-4
    _, values = run_seeds(model, dist, 3, "ceis", 100, 512)
    assert_within_3_se(values, p)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 29: at p = 2.9e-8 the climb finds the event in 88% of runs (98% "
                                       "zeros without it) but the mean is 0.70 p, z = -8.9 (0.74 p, z = -17 at "
                                       "budget 1024): mass away from where the climbs lead is seldom drawn")
def test_finds_a_target_between_1e8_and_1e5(smooth):
    model, dist, exact = smooth
    p = exact[1].item()
    assert 1e-8 < p < 1e-5
    _, values = run_seeds(model, dist, 1, "ceis", 100, 512)
    assert (values == 0).float().mean() <= 0.02
    assert_within_3_se(values, p)


def test_same_seed_same_result_and_equal_work(sharp):
    model, dist, _ = sharp
    a = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=3)
    b = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=3)
    c = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=4)
    assert (a.probability, a.interval) == (b.probability, b.interval)
    assert (a.probability, a.interval) != (c.probability, c.interval)
    itgis = estimate(model, dist, ArgmaxIs(6), method="itgis", budget=256, seed=3)
    assert itgis.cost.flops == model.flops_per_sequence(len(dist)) * GRADIENT_CALL * 256
    # CEIS executes what ITGIS does at the same budget, less only what a summed-out sample's rounding leaves
    assert 0.97 * itgis.cost.flops <= a.cost.flops <= itgis.cost.flops


def test_bad_hyper_parameters_are_refused(sharp):
    model, dist, _ = sharp
    with pytest.raises(LowprobError, match="rho"):
        estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, rho=1.5)
    with pytest.raises(LowprobError, match="prior_strength"):
        estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, prior_strength=0)


@pytest.mark.slow
@pytest.mark.parametrize(("target", "budget"), [(2, 256), (11, 256), (29, 1024)])
def test_interval_covers_at_the_nominal_rate(sharp, target, budget):
    """Measured over 100 seeds: 0.99, 1.00 and 1.00: conservative, not nominal. The near-miss bound sets
    the upper end; the compound-Poisson interval alone covers 0.95, 0.96 and 0.52 (at 8.8e-7 the hits the
    climb leads to are many and alike, and that interval is too narrow). A wider upper end at the
    common target fails the bound below."""
    model, dist, exact = sharp
    ests, _ = run_seeds(model, dist, target, "ceis", 100, budget)
    p = exact[target].item()
    coverage = sum(e.interval[0] <= p <= e.interval[1] for e in ests) / len(ests)
    plain = sum(lo <= p <= hi for lo, hi in (e.diagnostics["compound_poisson_interval"] for e in ests)) / len(ests)
    assert coverage >= 0.90 and coverage >= plain, (coverage, plain)
    if target == 2:
        assert torch.tensor([e.interval[1] for e in ests]).median() < 3 * p


# --- the Rao–Blackwellised estimation phase (rao_blackwell, on by default) -----------------------------------


class _PlainModel:
    """A model that is not the shipped Transformer: the completions go through ``logits``."""

    def __init__(self, model):
        self.model = model

    def logits(self, tokens):
        return self.model.logits(tokens)

    @property
    def device(self):
        return self.model.device

    def flops_per_sequence(self, seq_len):
        return self.model.flops_per_sequence(seq_len)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_last_position_sums_score_every_completion_like_full_forwards(n_layers):
    """Shared-prefix scores equal full forwards, with constants after the last variable position."""
    cfg = TransformerConfig(n_layers=n_layers, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32, init_std=0.3)
    model = Transformer(cfg, seed=0)
    dist = TokenDistribution.from_positions(
        [0, (torch.tensor([3, 4, 5]), torch.ones(3)), (torch.arange(1, 11), torch.ones(10)), 7, 9],
        normalize=True, vocab_size=32)
    tokens = dist.sample(300, torch.Generator().manual_seed(0))  # more completions than one leaf batch
    event = ArgmaxIs(int(model.logits(tokens).argmax(-1)[0]))
    tree = LastPositionSums(model, dist, event, margin_of(event))
    plain = LastPositionSums(_PlainModel(model), dist, event, margin_of(event))
    assert tree.position == 2 and tree.tree is not None and plain.tree is None
    seqs = tree.completions(tokens).view(-1, len(dist))
    logits = model.logits(seqs)
    for rb in (tree, plain):
        s, hit = rb(tokens)
        assert s.shape == hit.shape == (300, 10)
        torch.testing.assert_close(s.flatten(), margin_of(event)(logits).double(), atol=1e-5, rtol=0)
        assert (hit.flatten() == event.indicator(logits)).float().mean() > 0.999
    # priced honestly: one prefix with all its completions costs at least one forward, at most n
    per_call = model.flops_per_sequence(len(dist))
    assert per_call <= tree.prefix_flops < 10 * per_call == plain.prefix_flops


@pytest.mark.slow
def test_rao_blackwell_finds_the_rarest_target_more_often(sharp):
    """At p = 8.8e-7, budget 1024, 100 seeds, without the climb (which finds it either way): without the
    summed-out samples CEIS returns 0 in 86% of runs, against 13% with them. Dropping the D_j weights of the
    summed position makes the default's unbiasedness test fail."""
    model, dist, _ = sharp
    _, summed = run_seeds(model, dist, 29, "ceis", 100, 1024, climb_fraction=0.0)
    _, plain = run_seeds(model, dist, 29, "ceis", 100, 1024, rao_blackwell=False, climb_fraction=0.0)
    assert (summed == 0).float().mean() <= 0.3 < 0.5 <= (plain == 0).float().mean()


@pytest.mark.slow
def test_the_climb_finds_what_the_stages_stall_short_of(sharp, smooth):
    """Where the stages stall, exact scans from their best samples find the event: 100 seeds, zeros at
    8.8e-7 (sharp, budget 1024) 0% against 13% without the climb, at 2.9e-8 (smooth, budget 512) 12% against
    98%. Still low there on average: see the strict xfail below."""
    model, dist, _ = sharp
    _, climbed = run_seeds(model, dist, 29, "ceis", 100, 1024)
    assert (climbed == 0).float().mean() <= 0.05
    model, dist, _ = smooth
    _, climbed = run_seeds(model, dist, 1, "ceis", 100, 512)
    _, stalled = run_seeds(model, dist, 1, "ceis", 100, 512, climb_fraction=0.0)
    assert (climbed == 0).float().mean() <= 0.25 < 0.75 <= (stalled == 0).float().mean()


def test_rao_blackwell_spends_what_ceis_spends(sharp):
    model, dist, _ = sharp
    a = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=3)
    b = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=3)
    assert (a.probability, a.interval) == (b.probability, b.interval)
    rb = a.diagnostics["rao_blackwell"]
    assert rb["prefixes"] >= 2 and rb["shared_prefix"]
    # the summed-out samples are planned at what they cost, rounded up to whole forwards (with the first
    # block's table); the plain samples fill the rest of CEIS's GRADIENT_CALL x budget; the meter charges
    # what ran, so it falls short of the plan by less than one forward
    n, c = rb["prefixes"], rb["prefix_forward_equivalents"]
    assert n * c <= rb["forward_equivalents"] <= (n + 1) * c + 1
    per_call = model.flops_per_sequence(len(dist))
    assert (GRADIENT_CALL * 256 - 1) * per_call < a.cost.flops <= GRADIENT_CALL * 256 * per_call


class _Delegating:
    """The shipped model behind another class that offers none of its optional capabilities: CEIS runs on it,
    but without the shared-prefix path."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        if name in CAPABILITIES:
            raise AttributeError(name)
        return getattr(self.model, name)


def test_rao_blackwell_on_another_model_prices_full_forwards(sharp):
    model, dist, _ = sharp
    e = estimate(_Delegating(model), dist, ArgmaxIs(6), method="ceis", budget=256, seed=3)
    rb = e.diagnostics["rao_blackwell"]
    assert not rb["shared_prefix"] and rb["prefix_forward_equivalents"] == dist.support_sizes()[rb["position"]]
    assert e.cost.forward_passes + e.cost.backward_passes == GRADIENT_CALL * 256 and 0 <= e.probability < 1
    assert e.cost.flops == model.flops_per_sequence(len(dist)) * GRADIENT_CALL * 256


def test_found_nothing_is_bounded_as_its_draws_from_d_bound_it_and_written_as_strict_json():
    """No hit: every mixture keeps D at the defensive share, so no hit in n samples (or summed-out prefixes)
    bounds p by 3.69 / (defensive · n), what plain sampling's defensive · n draws would give (the heaviest
    weight's bound is 1 here)
    "No near miss" is null, never -Infinity."""
    from lowprob.estimators.intervals import poisson_upper
    from lowprob.files import dumps_json

    model = lowprob.load_model("gelu-2l")
    dist = lowprob.load_distribution("hex", model)
    est = estimate(model, dist, ArgmaxIs(293), budget=256)  # ' the': no hit in the shipped 2^22 samples
    rb = est.diagnostics["rao_blackwell"]
    assert est.probability == 0 and est.diagnostics["hits"] == 0
    assert est.interval[1] == pytest.approx(poisson_upper(0) / (0.05 * (rb["plain_samples"] + rb["prefixes"])))
    assert est.interval[1] < 0.3
    dumps_json(est.to_json())
    unclimbed = estimate(model, dist, ArgmaxIs(293), budget=256, climb_fraction=0.0)  # here nothing comes near
    assert unclimbed.diagnostics["near_miss_log_w"]["m05"] is None
    dumps_json(unclimbed.to_json())
