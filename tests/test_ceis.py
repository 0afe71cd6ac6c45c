"""CEIS against exact answers on tiny enumerable problems.

Tolerances come from the estimator's own spread over seeds. What CEIS cannot do yet is a strict
xfail: it fails the day the problem is fixed, so the marker cannot outlive the problem.
"""

import math

import pytest
import torch

import lowprob
from lowprob import ArgmaxIs, LowprobError, Transformer, TransformerConfig, estimate
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.tiny import tiny_distribution
from lowprob.estimators.ceis import margin_of
from lowprob.estimators.rao_blackwell import LastPositionSums

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


@pytest.mark.parametrize(("method", "target"), [("ceis", 2), ("ceis", 11)])
def test_unbiased_against_exact_enumeration(sharp, method, target):
    model, dist, exact = sharp
    p = exact[target].item()
    assert 2e-5 < p < 3e-3
    _, values = run_seeds(model, dist, target, method, 100, 256)
    assert torch.isfinite(values).all() and (values >= 0).all()
    assert_within_3_se(values, p)
    if p > 1e-3:
        assert (values == 0).float().mean() <= 0.02


def test_unbiased_on_a_smoother_model(smooth):
    """tiny-long on a smoother model (262,144 sequences enumerated): a p = 3.6e-5 target."""
    model, dist, exact = smooth
    p = exact[3].item()
    assert 1e-5 < p < 1e-4
    _, values = run_seeds(model, dist, 3, "ceis", 100, 512)
    assert_within_3_se(values, p)


@pytest.mark.xfail(strict=True, reason="issue 13: at p = 2.9e-8 CEIS almost never finds the event on this model")
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
    assert a.probability != c.probability
    itgis = estimate(model, dist, ArgmaxIs(6), method="itgis", budget=256, seed=3)
    assert a.cost.flops <= itgis.cost.flops  # a backward pass counts as 2 forwards
    assert a.cost.forward_passes + 2 * a.cost.backward_passes == 3 * 256
    assert a.cost.flops == model.flops_per_sequence(len(dist)) * 3 * 256


def test_bad_hyper_parameters_are_refused(sharp):
    model, dist, _ = sharp
    with pytest.raises(LowprobError, match="rho"):
        estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, rho=1.5)
    with pytest.raises(LowprobError, match="prior_strength"):
        estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, prior_strength=0)


@pytest.mark.parametrize("target", [2, 11])
def test_interval_covers_at_the_nominal_rate(sharp, target):
    """Measured over 100 seeds: 0.99 at p = 2.7e-3, 1.00 at 2.6e-5 (where 23% of runs see no hit and
    report the no-hit bound): above nominal, i.e. conservative; the compound-Poisson interval alone
    covered ~0.7-0.8. A drop below 0.90 is ~4 standard errors (0.02 at 100 seeds) from today."""
    model, dist, exact = sharp
    ests, _ = run_seeds(model, dist, target, "ceis", 100, 256)
    p = exact[target].item()
    coverage = sum(e.interval[0] <= p <= e.interval[1] for e in ests) / len(ests)
    plain = sum(lo <= p <= hi for lo, hi in (e.diagnostics["compound_poisson_interval"] for e in ests)) / len(ests)
    assert coverage >= 0.90 and coverage >= plain, (coverage, plain)
    if target == 2:
        assert coverage <= 0.995, coverage


# --- Rao–Blackwellised estimation phase (rao_blackwell=True) ---------------------------------------


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


@pytest.mark.parametrize("target", [11, 29])
def test_rao_blackwell_unbiased_against_exact_enumeration(sharp, target):
    """p = 2.6e-5 and 8.8e-7 (the rarest nonzero output of this model). Measured over 100 seeds at
    budget 256: z = -0.38 and -1.59, relative SE 0.06 and 0.12, 10% and 47% zeros; plain CEIS on 29
    is 15 of its SEs low (95% zeros). Dropping the D_j weights of the summed position makes these
    fail by 14 and 5.7 SEs."""
    model, dist, exact = sharp
    p = exact[target].item()
    assert (p < 1e-6) == (target == 29)
    ests, values = run_seeds(model, dist, target, "ceis", 100, 256, rao_blackwell=True)
    assert all(e.diagnostics["rao_blackwell"]["shared_prefix"] for e in ests)
    assert_within_3_se(values, p)
    if target == 29:
        _, plain = run_seeds(model, dist, target, "ceis", 100, 256)
        assert (values == 0).float().mean() <= 0.75 < 0.85 <= (plain == 0).float().mean()


@pytest.mark.parametrize("target", [11, 29])
def test_rao_blackwell_interval_covers_at_the_nominal_rate(sharp, target):
    """Measured: 1.00 and 1.00 (compound-Poisson alone: 0.92 and 0.85)."""
    model, dist, exact = sharp
    ests, _ = run_seeds(model, dist, target, "ceis", 100, 256, rao_blackwell=True)
    p = exact[target].item()
    assert sum(e.interval[0] <= p <= e.interval[1] for e in ests) / len(ests) >= 0.90


def test_rao_blackwell_spends_what_ceis_spends(sharp):
    model, dist, _ = sharp
    a = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=3, rao_blackwell=True)
    b = estimate(model, dist, ArgmaxIs(6), method="ceis", budget=256, seed=3, rao_blackwell=True)
    assert (a.probability, a.interval) == (b.probability, b.interval)
    rb = a.diagnostics["rao_blackwell"]
    assert rb["prefixes"] >= 2 and rb["shared_prefix"]
    # the summed-out samples are charged at least what they cost (rounded up to whole forwards, with
    # the first block's table); the plain samples fill the rest: exactly CEIS's 3 x budget in all
    n, c = rb["prefixes"], rb["prefix_forward_equivalents"]
    assert n * c <= rb["forward_equivalents"] <= (n + 1) * c + 1
    assert a.cost.forward_passes + 2 * a.cost.backward_passes == 3 * 256
    assert a.cost.flops == model.flops_per_sequence(len(dist)) * 3 * 256


class _Delegating:
    """The shipped model behind another class: CEIS runs on it, but without the shared-prefix path."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_rao_blackwell_on_another_model_prices_full_forwards(sharp):
    model, dist, _ = sharp
    e = estimate(_Delegating(model), dist, ArgmaxIs(6), method="ceis", budget=256, seed=3, rao_blackwell=True)
    rb = e.diagnostics["rao_blackwell"]
    assert not rb["shared_prefix"] and rb["prefix_forward_equivalents"] == dist.support_sizes()[rb["position"]]
    assert e.cost.forward_passes + 2 * e.cost.backward_passes == 3 * 256 and 0 < e.probability < 1
