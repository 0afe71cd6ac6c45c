"""Certified bounds (``lowprob.bound``): sound on toys of every layout and event kind, and on shipped exact tables."""

import copy
import json
import sys

import pytest
import torch

import lowprob
from lowprob.bounds import bounded_estimate
from lowprob.cli import main
from lowprob.distributions import TokenDistribution
from lowprob.errors import LowprobError
from lowprob.events import ArgmaxIn, ArgmaxIs, Generates, InTopK, MarginAtLeast, ProbabilityAbove
from lowprob.models import Transformer, TransformerConfig, gap_bounds
from lowprob.models.gap_bounds import TransformerBounds, variance_interval
from lowprob.truth.reference import load_reference

V = 24
DEAD, FORCED = 3, 5  # tokens whose unembedding bias makes them never / (on the forced model) always the argmax

# five layouts: support sizes per position (1 = a constant)
LAYOUTS = {
    "all-variable": [4, 5, 3, 4],
    "constants-first": [1, 1, 6, 5, 4],
    "constant-last": [5, 6, 4, 1],
    "one-variable": [1, 1, 9],
    "no-variable": [1, 1, 1],
}


def toy(layers: int, forced: bool = False) -> Transformer:
    cfg = TransformerConfig(n_layers=layers, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=V, init_std=0.3,
                            unembed_bias=True)
    model = Transformer(cfg, seed=layers)
    with torch.no_grad():
        assert model.b_U is not None
        model.b_U[DEAD] = -40.0
        if forced:
            model.b_U[FORCED] = 40.0
    return model


def layout(sizes: list[int], seed: int = 0) -> TokenDistribution:
    g = torch.Generator().manual_seed(seed)
    positions = []
    for n in sizes:
        ids = torch.randperm(V, generator=g)[:n].sort().values
        w = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
        positions.append(int(ids[0]) if n == 1 else (ids.tolist(), (w / w.sum()).tolist()))
    return TokenDistribution.from_positions(positions)


def events_for(model: Transformer, dist: TokenDistribution) -> list:
    """Every kind, about the tokens the model actually picks (and the dead one)."""
    counts = torch.bincount(model.logits(dist.sample(256, torch.Generator().manual_seed(1))).argmax(-1), minlength=V)
    top = counts.argsort(descending=True).tolist()
    return [ArgmaxIs(top[0]), ArgmaxIs(top[1]), ArgmaxIs(DEAD), ArgmaxIn((top[0], top[2])), InTopK(top[1], 3),
            MarginAtLeast(top[0], 0.5), ProbabilityAbove(top[0], 0.3)]


def exact64(model: Transformer, dist: TokenDistribution, event) -> float:
    """P(event) by running every input in float64: the arithmetic the bounds are about."""
    return lowprob.exact_probability(copy.deepcopy(model).double(), dist, event)


def contains(b: lowprob.Bounds, p: float) -> bool:
    return b.lower <= p <= b.upper


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_complete_bounds_are_exact_for_every_layout_and_event(layers, name):
    model, dist = toy(layers), layout(LAYOUTS[name], seed=layers)
    for event in events_for(model, dist):
        p = exact64(model, dist, event)
        b = lowprob.bound(model, dist, event)
        assert b.complete and contains(b, p), (event, p, b)
        assert b.upper - b.lower <= 1e-11 * max(p, 1e-300) + 1e-300
        assert b.free + b.certain == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["all-variable", "constants-first", "constant-last"])
def test_partial_bounds_contain_the_truth_and_the_network_bound_closes_nodes(name):
    """Stopped early, the bounds still hold; on a one-block model the network bound proves whole nodes."""
    model, dist = toy(1, forced=True), layout(LAYOUTS[name])
    for event in [ArgmaxIs(DEAD), ArgmaxIs(FORCED), *events_for(model, dist)]:
        p = exact64(model, dist, event)
        for flops in (1e5, 1e7):
            b = lowprob.bound(model, dist, event, flops=flops)
            assert contains(b, p), (event, flops, p, b)
    dead = lowprob.bound(model, dist, ArgmaxIs(DEAD))
    forced = lowprob.bound(model, dist, ArgmaxIs(FORCED))
    assert dead.upper == 0 and sum(d.proved_free for d in dead.depths) > 0
    assert forced.lower == pytest.approx(1.0) and sum(d.proved_certain for d in forced.depths) > 0
    assert all(d.evaluated == 0 for d in forced.depths)  # nothing ran: the bound decided everything


def test_the_soundness_check_catches_a_broken_bound_and_passes_a_loosened_one(monkeypatch):
    """The check above can fail: a bound shifted by 30 logits proves false things; a widened one stays sound."""
    model, dist = toy(1, forced=True), layout(LAYOUTS["all-variable"])
    events = events_for(model, dist)
    truths = [exact64(model, dist, e) for e in events]
    original = TransformerBounds.logit_gaps

    def shifted(by: float, widen: float):
        def gaps(self, masks, anchors):
            lo, hi = original(self, masks, anchors)
            return lo + by - widen, hi + by + widen
        return gaps

    monkeypatch.setattr(TransformerBounds, "logit_gaps", shifted(0.0, 10.0))
    assert all(contains(lowprob.bound(model, dist, e), p) for e, p in zip(events, truths, strict=True))
    monkeypatch.setattr(TransformerBounds, "logit_gaps", shifted(30.0, 0.0))
    assert not all(contains(lowprob.bound(model, dist, e), p) for e, p in zip(events, truths, strict=True))


def test_network_bounds_hold_on_sampled_inputs():
    """lo ≤ l_v − l_a ≤ hi at inputs of each node (the float64 model), node by node."""
    model, dist = toy(1), layout([5, 6, 4, 7])
    tb = TransformerBounds(model, dist.support_ids())
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(12, *tb.valid.shape, generator=g) < 0.5) & tb.valid
    masks[:, :, 0] |= tb.valid[:, 0]  # every position keeps a choice
    masks[:, -1] = False
    masks[torch.arange(12), -1, torch.randint(0, 7, (12,), generator=g)] = True
    lo, hi = tb.logit_gaps(masks, [0, 7])
    m64 = copy.deepcopy(model).double()
    for n in range(12):
        picks = [torch.nonzero(masks[n, t]).flatten() for t in range(tb.T)]
        choice = torch.stack([p[torch.randint(0, len(p), (64,), generator=g)] for p in picks], 1)
        tokens = torch.stack([dist.support_ids()[t][choice[:, t]] for t in range(tb.T)], 1)
        logits = m64.logits(tokens)
        for i, a in enumerate([0, 7]):
            gaps = logits - logits[:, a : a + 1]
            assert (lo[n, i] <= gaps + 1e-9).all() and (gaps <= hi[n, i] + 1e-9).all()


def test_variance_interval_is_sound_and_tight_at_points():
    g = torch.Generator().manual_seed(0)
    lo = torch.randn(50, 8, generator=g, dtype=torch.float64)
    hi = lo + torch.rand(50, 8, generator=g, dtype=torch.float64)
    v_lo, v_hi = variance_interval(lo, hi, 1e-5)
    for _ in range(20):
        x = lo + (hi - lo) * torch.rand(50, 8, generator=g, dtype=torch.float64)
        v = x.var(-1, unbiased=False) + 1e-5
        assert (v_lo <= v + 1e-12).all() and (v <= v_hi + 1e-12).all()
    point_lo, _ = variance_interval(lo, lo, 1e-5)
    assert torch.allclose(point_lo, lo.var(-1, unbiased=False) + 1e-5, atol=1e-9)


def test_ratio_bounds_match_brute_force():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.05
    valid = torch.rand(3, 4, generator=g) < 0.7
    valid[:, 0] = True
    lo, hi = gap_bounds._ratio_bounds(a, w, valid)
    ratios = [sum(float(w[p, k] * a[p, k]) for p, k in enumerate(c)) / sum(float(w[p, k]) for p, k in enumerate(c))
              for c in torch.cartesian_prod(*[torch.nonzero(valid[p]).flatten() for p in range(3)]).tolist()]
    assert float(lo) <= min(ratios) + 1e-12 and float(hi) >= max(ratios) - 1e-12
    assert float(hi) == pytest.approx(max(ratios), abs=1e-9) and float(lo) == pytest.approx(min(ratios), abs=1e-9)


def test_checkpoint_and_resume_reach_the_same_bounds(tmp_path):
    model, dist = toy(2), layout([12, 12, 12, 12])  # 1,728 leaves of 12: three steps
    event = events_for(model, dist)[0]
    whole = lowprob.bound(model, dist, event)
    path = tmp_path / "proof.json"
    part = lowprob.bound(model, dist, event, flops=1, checkpoint=path)  # stops after its first step
    assert not part.complete and path.exists() and json.loads(path.read_text())["queue"]
    done = lowprob.bound(model, dist, event, checkpoint=path, resume=True)
    assert done.complete and done.lower == pytest.approx(whole.lower, rel=1e-12)
    assert done.flops > part.flops
    with pytest.raises(LowprobError, match="another proof"):
        lowprob.bound(model, dist, ArgmaxIs(DEAD), checkpoint=path, resume=True)


def test_bad_requests_are_refused_clearly():
    model, dist = toy(1), layout(LAYOUTS["all-variable"])
    with pytest.raises(LowprobError, match="seconds must be a positive"):
        lowprob.bound(model, dist, ArgmaxIs(1), seconds=-1)
    with pytest.raises(LowprobError, match="resume needs the checkpoint"):
        lowprob.bound(model, dist, ArgmaxIs(1), resume=True)
    with pytest.raises(LowprobError, match="logits events"):
        lowprob.bound(model, dist, Generates(((1, 2),), steps=2))
    with pytest.raises(LowprobError, match="target token must be an id"):
        lowprob.bound(model, dist, ArgmaxIs(V + 3))


@pytest.mark.parametrize(("model_name", "kind"), [("gelu-1l", "hex"), ("gelu-1l", "colon"), ("gelu-2l", "caps")])
def test_shipped_exact_tables_lie_within_partial_bounds(model_name, kind):
    """Against the shipped exact tables: a two-second proof's bounds hold for rare and common targets."""
    model = lowprob.load_model(model_name)
    dist = lowprob.load_distribution(kind, model, length="exact")
    p = load_reference(model_name, kind, model, dist, length="exact").probabilities
    order = torch.nonzero(p > 0).flatten()
    picks = [int(order[p[order].argmin()]), int(order[p[order].argmax()])]
    for t in picks:
        b = lowprob.bound(model, dist, ArgmaxIs(t), seconds=2)
        assert contains(b, float(p[t])), (t, float(p[t]), b)


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["lowprob", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_bound_command_proves_prints_json_and_resumes(monkeypatch, capsys, tmp_path):
    space = ["--model", "gelu-1l", "--dist", "tiny-uniform"]
    model = lowprob.load_model("gelu-1l")
    dist = lowprob.load_distribution("tiny-uniform", model)
    p = exact64(model, dist, ArgmaxIs(7))
    code, out, _ = _cli(monkeypatch, capsys, "bound", *space, "--target", "id:7", "--json")
    result = json.loads(out)
    assert code == 0 and result["exact"] and result["lower"] <= p <= result["upper"]
    proof = tmp_path / "proof.json"
    code, out, _ = _cli(monkeypatch, capsys, "bound", *space, "--target", "id:7", "--flops", "1",
                        "--checkpoint", str(proof))
    assert code == 0 and "open mass" in out and proof.exists()
    code, _, err = _cli(monkeypatch, capsys, "bound", *space, "--target", "id:7", "--checkpoint", str(proof))
    assert code == 2 and "--resume" in err
    code, out, _ = _cli(monkeypatch, capsys, "bound", *space, "--target", "id:7", "--checkpoint", str(proof),
                        "--resume", "--json")
    assert code == 0 and json.loads(out)["exact"]
    code, _, err = _cli(monkeypatch, capsys, "bound", *space, "--target", "id:7", "--resume")
    assert code == 2 and "--checkpoint" in err


def test_estimate_with_bound_seconds_keeps_within_the_proof(monkeypatch, capsys):
    model = lowprob.load_model("gelu-1l")
    dist = lowprob.load_distribution("hex", model, length="exact")
    event = ArgmaxIs(11)
    est = bounded_estimate(model, dist, event, 2.0, budget=256, seed=0)
    report = est.diagnostics["bounds"]
    assert report["lower"] <= est.probability <= report["upper"]
    assert report["lower"] <= est.interval[0] <= est.interval[1] <= report["upper"]
    assert est.cost.seconds >= report["seconds"] and est.cost.flops > report["flops"]
    tiny = lowprob.load_distribution("tiny-uniform", model)  # a proof that finishes is the answer: nothing sampled
    done = bounded_estimate(model, tiny, ArgmaxIs(7), 60.0)
    assert done.method == "bound" and done.interval_kind == "exact" and done.warnings == []
    assert done.probability == pytest.approx(exact64(model, tiny, ArgmaxIs(7)), rel=1e-9)
    code, out, _ = _cli(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "tiny-uniform", "--target",
                        "id:7", "--bound-seconds", "30")
    assert code == 0 and "proved:" in out
