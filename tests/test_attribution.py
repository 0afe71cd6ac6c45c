"""Attribution recovers a trigger planted in a model built by hand, and its intervals hold the exact
conditionals P(x_i = v | event) found by enumeration."""

import pytest
import torch
from torch import nn

import lowprob
from lowprob import ArgmaxIs, LowprobError, TokenDistribution, estimate
from lowprob.continuations import exact_generation_probability
from lowprob.distributions.slots import SlotDistribution
from lowprob.events import Generates
from lowprob.models import Tokenizer
from lowprob.truth import exact_conditionals

from .test_cli import run
from .test_estimators import ProtocolModel
from .test_generation_events import problem as generation_problem  # noqa: F401 (a fixture)


class PlantedTrigger(ProtocolModel):
    """Counts three planted tokens anywhere in the input: the target's logit is
    6·#a + 6·#b + 2·#c − 11 and every other logit is 0, so the argmax is the target exactly when a and
    b both occur. c only raises the score, so gradient methods over-sample it among the hits and only
    their weights bring it back to its base rate: nothing about c is caused by the event."""

    def __init__(self, d_vocab: int, a: int, b: int, c: int, target: int, tokenizer=None) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.eye(d_vocab))
        self.read = nn.Parameter(torch.zeros(d_vocab))
        with torch.no_grad():
            self.read[[a, b, c]] = torch.tensor([6.0, 6.0, 2.0])
        self.W_U = nn.Parameter(torch.zeros(d_vocab, d_vocab))
        self.b_U = nn.Parameter(torch.zeros(d_vocab))
        with torch.no_grad():
            self.W_U[0, target], self.b_U[target] = 1.0, -11.0
        self.n_ctx, self.d_vocab, self.tokenizer, self.name = 48, d_vocab, tokenizer, "planted"

    def final_residual(self, token_embeddings):
        z = token_embeddings.sum(1) @ self.read  # [B]
        return torch.nn.functional.pad(z[:, None], (0, self.d_vocab - 1))  # [B, d_vocab], z first

    def flops_per_sequence(self, seq_len):
        return 2.0 * self.d_vocab * seq_len


A, B, C, TARGET = 3, 20, 28, 39


def _position(ids, planted, planted_p):
    """Eight ids, ``planted`` at ``planted_p``, the rest Zipf-like."""
    rest = torch.tensor([1 / (k + 1) for k in range(7)], dtype=torch.float64)
    probs = torch.cat([torch.tensor([planted_p], dtype=torch.float64), rest / rest.sum() * (1 - planted_p)])
    others = [i for i in ids if i != planted]
    return [planted, *others], probs.tolist()


@pytest.fixture(scope="module")
def planted():
    """P(event) = D(a at 1) D(b at 3) = 2e-4; position 0 is constant, 2 is unrelated, 4 holds c."""
    model = PlantedTrigger(40, A, B, C, TARGET)
    dist = TokenDistribution.from_positions([
        0, _position(range(1, 9), A, 0.01), _position(range(9, 17), 9, 1 / 8),
        _position(range(17, 25), B, 0.02), _position(range(25, 33), C, 0.1)], name="planted")
    return model, dist, exact_conditionals(model, dist, ArgmaxIs(TARGET))


def test_exact_conditionals_of_the_planted_trigger(planted):
    model, dist, exact = planted
    assert lowprob.exact_probability(model, dist, ArgmaxIs(TARGET)) == pytest.approx(0.01 * 0.02, rel=1e-9)
    for i, p in enumerate(exact):
        ids, prior = dist.support(i)
        if i in (1, 3):  # the event forces a, b there
            assert p.tolist() == (ids == (A if i == 1 else B)).double().tolist()
        else:  # independent of the event: the conditional is the base rate
            assert torch.allclose(p, prior, atol=1e-12)


METHODS = [("naive", 60_000, {}), ("itgis", 2048, {}), ("mhis", 4096, {}), ("ceis", 2048, {}),
           ("ceis", 2048, {"rao_blackwell": True, "rb_share": 0.5})]


@pytest.mark.parametrize("method, budget, hyper", METHODS)
def test_attribution_recovers_the_planted_trigger(planted, method, budget, hyper):
    model, dist, exact = planted
    est = estimate(model, dist, ArgmaxIs(TARGET), method=method, budget=budget, seed=0, **hyper)
    att = est.attribution(top=2)
    assert att.hits > 0 and att.effective_hits > 0
    first = {}
    for row in att.rows:
        first.setdefault(row["position"], row)
    assert {1, 3} <= set(first) and 0 not in first  # constants are not attributed
    assert first[1]["value"] == A and first[3]["value"] == B, att.table()
    assert first[1]["conditional"] == pytest.approx(1.0) and first[3]["conditional"] == pytest.approx(1.0)

    # every (position, value) against the exact conditional. Positions 1 and 3 are certain (each hit
    # holds a and b), so the test is on the 16 values of positions 2 and 4: at 95% per value, 4 or
    # more misses among 16 have probability 0.7% (binomial), so at most 3 may miss.
    cells = est.attribution(top=None).rows
    assert len(cells) == 32
    misses = []
    for r in cells:
        ids, prior = dist.support(r["position"])
        col = int(torch.searchsorted(ids, torch.tensor(r["value"])))
        truth = float(exact[r["position"]][col])
        assert r["prior"] == pytest.approx(float(prior[col]))
        lo, hi = r["interval"]
        assert 0 <= lo <= r["conditional"] <= hi <= 1
        if not lo - 1e-12 <= truth <= hi + 1e-12:
            assert r["position"] in (2, 4), r
            misses.append(r)
    assert len(misses) <= 3, misses
    # c raises the score but not the event: weighted back to D, it is not what position 4 is about
    c_row = next(r for r in cells if r["value"] == C)
    assert c_row["interval"][0] <= 0.1 <= c_row["interval"][1], (c_row, att.table())


def test_an_unweighted_reading_would_over_attribute_the_distractor(planted):
    """The check on c can fail: ITGIS's proposal over-samples c, so ignoring the weights does not hold."""
    model, dist, _ = planted
    est = estimate(model, dist, ArgmaxIs(TARGET), method="itgis", budget=2048, seed=0)
    hits = est.samples.hits
    unweighted = float((hits.tokens[:, 4] == C).double().mean())
    c_row = next(r for r in est.attribution(top=None).rows if r["value"] == C)
    assert unweighted > c_row["interval"][1], (unweighted, c_row)


def test_few_hits_give_wide_intervals_and_none_give_nothing(planted):
    model, dist, _ = planted
    few = estimate(model, dist, ArgmaxIs(TARGET), method="naive", budget=15_000, seed=1).attribution()
    assert 1 <= few.hits <= 6
    row = next(r for r in few.rows if r["value"] == A)
    assert row["interval"][0] < 0.6 and row["interval"][1] == 1.0  # p̂ = 1 from a handful says little
    none = estimate(model, dist, ArgmaxIs(TARGET), method="naive", budget=100, seed=0)
    assert none.probability == 0
    assert none.attribution().rows == [] and "nothing to attribute" in none.attribution().table()


def test_estimates_keep_their_rows_and_equality(planted):
    model, dist, _ = planted
    a = estimate(model, dist, ArgmaxIs(TARGET), method="itgis", budget=256, seed=3)
    b = estimate(model, dist, ArgmaxIs(TARGET), method="itgis", budget=256, seed=3)
    assert "samples" not in a.to_json() and "hits" not in str(a.to_json().keys())
    assert (a.probability, a.interval, a.diagnostics) == (b.probability, b.interval, b.diagnostics)


@pytest.mark.parametrize("top", [0, -1, "3", 2.5, True])
def test_a_top_that_is_no_count_of_values_is_refused(planted, top):
    model, dist, _ = planted  # even with no hits: a bad argument is wrong whatever the samples
    est = estimate(model, dist, ArgmaxIs(TARGET), method="naive", budget=64, seed=0)
    with pytest.raises(LowprobError, match=r"^top \(values shown per position; None shows them all\) must be >= 1"):
        est.attribution(top)


@pytest.mark.parametrize("method", ["qld", "gld"])
def test_methods_without_samples_say_so(planted, method):
    model, dist, _ = planted
    est = estimate(model, dist, ArgmaxIs(TARGET), method=method, budget=64, seed=0)
    assert est.samples is None
    with pytest.raises(LowprobError, match=f"{method} draws no samples of the event.*ceis, flat, itgis, mhis, naive"):
        est.attribution()


def test_slot_values_that_co_occur_are_named_by_slot_and_text():
    text = "In Paris and Lima Zed met Bo and Xi; in Oslo Alice met Zed. "
    tok = Tokenizer.train(iter([text * 40] * 5), vocab_size=400)
    slots = {"name": {"values": [" Alice", " Bo", " Xi", " Zed"], "weights": [0.5, 0.3, 0.15, 0.05]},
             "place": {"values": [" Paris", " Lima", " Oslo"], "weights": [0.6, 0.35, 0.05]},
             "when": {"values": [" today", " then"]}}  # 6 and 5 tokens: later positions shift
    sd = SlotDistribution.from_spec("In{place},{name} met us{when}", slots, tok, name="meet")
    pieces = [t for u in sd.units for seq in (u.tokens if hasattr(u, "values") else [u.tokens]) for t in seq]
    zed, oslo = (next(t for t in tok.encode(v) if pieces.count(t) == 1) for v in (" Zed", " Oslo"))
    filler = next(t for t in range(tok.vocab_size) if t not in pieces)
    target = next(t for t in range(tok.vocab_size - 1, 0, -1) if t not in pieces)
    model = PlantedTrigger(tok.vocab_size, zed, oslo, filler, target, tokenizer=tok)
    assert lowprob.exact_probability(model, sd, ArgmaxIs(target)) == pytest.approx(0.05 * 0.05, rel=1e-9)
    est = estimate(model, sd, ArgmaxIs(target), method="itgis", budget=1024, seed=0)
    att = est.attribution(top=1)
    shown = {r["name"]: r["text"] for r in att.rows}
    assert shown["name"] == " Zed" and shown["place"] == " Oslo", att.table()
    assert "name (shift" in att.table() and "' Zed'" in att.table()
    exact = exact_conditionals(model, sd, ArgmaxIs(target))
    rows = est.attribution(top=None).rows
    assert sorted({r["name"] for r in rows}) == ["name", "place", "when"] and len(rows) == 9
    for r in rows:  # each unit's value ids are consecutive, in the order the slot lists its values
        ids = est.samples.dist.support(r["position"])[0]
        truth = float(exact[r["position"]][int(torch.searchsorted(ids, torch.tensor(r["value"])))])
        assert r["interval"][0] <= truth <= r["interval"][1], (r, truth)
        assert r["text"] in slots[r["name"]]["values"]


@pytest.mark.parametrize("method", ["tilted", "smc"])
def test_generation_methods_attribute_to_the_prompt(generation_problem, method):  # noqa: F811
    """P(prompt token | the continuation holds the pattern), exactly: D(v) P(pattern | v) / P(pattern)."""
    model, dist = generation_problem
    event = Generates(((4, 6),), 3)
    ids, prior = dist.support(1)
    given = torch.tensor([exact_generation_probability(model, TokenDistribution.from_positions([0, int(v)]), event)
                          for v in ids], dtype=torch.float64)
    truth = prior * given / (prior * given).sum()
    est = estimate(model, dist, event, method=method, budget=4096, seed=0)
    rows = est.attribution(top=None).rows
    assert [r["value"] for r in sorted(rows, key=lambda r: r["value"])] == ids.tolist()
    covered = sum(r["interval"][0] <= float(truth[ids.tolist().index(r["value"])]) <= r["interval"][1] for r in rows)
    assert covered >= 3, (rows, truth)  # four values at 95% each: two misses have probability 1.4%


def test_cli_explain_prints_the_table_and_refuses_methods_without_samples(monkeypatch, capsys):
    import json

    args = ["estimate", "--model", "gelu-1l", "--dist", "hex", "--target", " en", "--budget", "1024"]
    code, out, _ = run(monkeypatch, capsys, *args, "--method", "itgis", "--explain", "--top", "2")
    assert code == 0 and "attribution:" in out and "position 1 (shift" in out and " -> " in out
    code, out, _ = run(monkeypatch, capsys, *args, "--method", "itgis", "--explain", "--json")
    row = json.loads(out)
    assert row["attribution"]["hits"] >= 1 and {"position", "text", "prior", "conditional", "interval"} <= set(
        row["attribution"]["rows"][0])
    code, out, _ = run(monkeypatch, capsys, *args, "--method", "naive", "--json")
    assert "attribution" not in json.loads(out)  # the default output is unchanged
    code, _, err = run(monkeypatch, capsys, *args, "--method", "qld", "--explain")
    assert code == 2 and "--explain needs a method that samples the event; qld does not" in err
