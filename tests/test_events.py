"""The event library: each event against its definition, exact enumeration, and an unbiased estimator."""

import math

import pytest
import torch

import lowprob
from lowprob import (
    ArgmaxIn,
    ArgmaxIs,
    InTopK,
    LowprobError,
    MarginAtLeast,
    ProbabilityAbove,
    Transformer,
    TransformerConfig,
    estimate,
    exact_probability,
)
from lowprob.distributions.tiny import tiny_distribution
from lowprob.events import parse_event

from .test_cli import run

SHARP = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32, init_std=0.3)


@pytest.fixture(scope="module")
def problem():
    model = Transformer(SHARP, seed=0)
    dist = tiny_distribution("tiny-constants", SHARP.d_vocab)  # 8,000 sequences: a plain brute force is quick
    return model, dist, lowprob.ground_truth(model, dist, exact=True)


def definition(event, row: list[float]) -> bool:
    """The event on one row of logits, written out plainly (ties: the lower id ranks first)."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    if isinstance(event, ArgmaxIs):
        return order[0] == event.token
    if isinstance(event, ArgmaxIn):
        return order[0] in event.tokens
    if isinstance(event, InTopK):
        return event.token in order[: event.k]
    if isinstance(event, MarginAtLeast):
        return row[event.token] - max(v for j, v in enumerate(row) if j != event.token) >= event.margin
    if isinstance(event, ProbabilityAbove):
        return math.exp(row[event.token]) / sum(math.exp(v) for v in row) >= event.q
    raise AssertionError(event)


EVENTS = [ArgmaxIs(3), ArgmaxIn((3, 5, 7)), InTopK(3, 1), InTopK(3, 4), MarginAtLeast(3, 0.0),
          MarginAtLeast(3, 1.0), ProbabilityAbove(3, 0.2)]


@pytest.mark.parametrize("event", EVENTS, ids=repr)
def test_indicators_follow_the_definitions_including_ties(event):
    logits = torch.randint(-3, 4, (400, 10), generator=torch.Generator().manual_seed(0)).float()  # many ties
    got = event.indicator(logits).tolist()
    assert got == [definition(event, row) for row in logits.tolist()]
    assert sum(got) > 0 and not all(got)


def test_top_1_is_argmax_on_ties():
    logits = torch.randint(-2, 3, (500, 8), generator=torch.Generator().manual_seed(1)).float()
    for t in range(8):
        assert torch.equal(InTopK(t, 1).indicator(logits), ArgmaxIs(t).indicator(logits))


@pytest.mark.slow
@pytest.mark.parametrize("event", [InTopK(22, 2), MarginAtLeast(13, 1.0), ProbabilityAbove(13, 0.3),
                                   ArgmaxIn((9, 10, 11))], ids=repr)
def test_exact_probability_equals_a_brute_force_and_itgis_is_unbiased(problem, event):
    model, dist, _ = problem
    p = exact_probability(model, dist, event)
    brute = 0.0
    for tokens, logp in dist.enumerate(1 << 14):
        with torch.no_grad():
            rows = model.logits(tokens).tolist()
        brute += sum(math.exp(lp) for lp, row in zip(logp.tolist(), rows, strict=True) if definition(event, row))
    assert p == pytest.approx(brute, rel=1e-9) and 1e-5 < p < 1e-2  # 3.4e-5, 1.1e-3, 2.6e-3, 2.6e-4
    values = torch.tensor([estimate(model, dist, event, method="itgis", budget=512, seed=s).probability
                           for s in range(100)], dtype=torch.float64)
    assert abs(values.mean().item() - p) < 3 * values.std().item() / 10, (values.mean().item(), p)


def test_a_table_answers_argmax_events_and_refuses_the_rest(problem):
    model, dist, gt = problem
    assert gt.probability(ArgmaxIs(9)) == pytest.approx(exact_probability(model, dist, ArgmaxIs(9)), rel=1e-9)
    assert gt.probability(ArgmaxIn((9, 13))) == pytest.approx(float(gt.probabilities[[9, 13]].sum()))
    with pytest.raises(LowprobError, match="exact_probability"):
        gt.probability(InTopK(9, 3))


def test_extrapolation_methods_refuse_other_events(problem):
    model, dist, _ = problem
    with pytest.raises(LowprobError, match="need an ArgmaxIs event"):
        estimate(model, dist, InTopK(9, 3), method="gld", budget=64)


@pytest.mark.parametrize(("text", "event"), [
    ("argmax-is: 5", ArgmaxIs(5)),
    ("argmax-in: 5, 3,5", ArgmaxIn((3, 5))),
    ("top-k: 7, 3", InTopK(7, 3)),
    ("margin: 7, 1.5", MarginAtLeast(7, 1.5)),
    ("prob-above:7, 0.25", ProbabilityAbove(7, 0.25)),
])
def test_event_text_forms(text, event):
    assert parse_event(text, None, 32) == event


def test_event_text_names_tokens_by_json_string(tiny_lm):
    tok = tiny_lm.tokenizer
    word = next(t for t in (" the", " a", "e") if len(tok.encode(t)) == 1)
    assert parse_event(f'argmax-in: "{word}", id:0', tok, tiny_lm.d_vocab) == ArgmaxIn((tok.encode(word)[0], 0))


@pytest.mark.parametrize(("text", "message"), [
    ("top: 5", "write one of argmax-is: TOKEN"),
    ("top-k: 5", "write one of argmax-is: TOKEN"),
    ("argmax-in:", "write one of argmax-is: TOKEN"),
    ("margin: 5, x", "write one of argmax-is: TOKEN"),
    ("top-k: 5, 0", "positive integer k"),
    ("prob-above: 5, 1.5", r"probability q in \(0, 1\]"),
    ("argmax-is: 99", r"0\.\.31"),
    ("argmax-is: 1.5", "an id or a JSON string"),
])
def test_bad_event_text_gets_a_one_line_error(text, message):
    with pytest.raises(LowprobError, match=message) as info:
        parse_event(text, None, 32)
    assert "\n" not in str(info.value)


def test_cli_estimates_an_event_and_refuses_target_with_event(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--event",
                       'top-k: " en", 5', "--budget", "64")
    assert code == 0 and "' en' (id 358) is in the top 5" in out
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", "gelu-1l", "--dist", "hex", "--event",
                       'top-k: " en", 5', "--target", "5")
    assert code == 2 and "exactly one of --target TOKEN or --event TEXT" in err


# --- a bare number that is also a token's text: refused in every event kind, as --target refuses it --------
@pytest.fixture(scope="module")
def shipped_tokenizer():
    from lowprob.models import Tokenizer
    from lowprob.models.zoo import shipped_tokenizer_path

    return Tokenizer.from_file(shipped_tokenizer_path())  # "8" is token 24, while id 8 is "("


@pytest.mark.parametrize("text", ["argmax-is: 8", "argmax-in: id:5, 8", "top-k: 8, 3", "margin: 8, 1.5",
                                  "prob-above: 8, 0.5"])
def test_a_bare_number_that_is_a_token_text_is_ambiguous_in_every_event_kind(shipped_tokenizer, text):
    with pytest.raises(LowprobError, match=r"token 8 is ambiguous: token id 8 is '\(', while the text '8' is token "
                                           r"id 24; write id:8 for the id or '\"8\"'"):
        parse_event(text, shipped_tokenizer, 4096)
    by_id = parse_event(text.replace("8", "id:8", 1), shipped_tokenizer, 4096)
    by_text = parse_event(text.replace("8", '"8"', 1), shipped_tokenizer, 4096)
    assert by_id.tokens_named()[-1 if "argmax-in" in text else 0] == 8 and 24 in by_text.tokens_named()
    assert parse_event("argmax-is: 4000", shipped_tokenizer, 4096) == ArgmaxIs(4000)  # no token's text: an id


def test_a_repeated_generates_option_is_refused(shipped_tokenizer):
    for text in ('generates: " the", steps=3, steps=50', 'generates: " the", steps=3, temperature=1, temperature=0'):
        with pytest.raises(LowprobError, match="is given twice; give it once"):
            parse_event(text, shipped_tokenizer, 4096)


def test_argmax_and_margin_by_two_reductions_match_argmax_and_top_k():
    """``ArgmaxIs.indicator`` and the largest other logit are computed from the maxima before and after the
    token: identical to ``argmax == token`` (first of tied maxima wins) and to a masked top-1, ties included."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 4, (512, 7), generator=g).float()  # many ties
    for token in range(7):
        assert torch.equal(ArgmaxIs(token).indicator(logits), logits.argmax(-1) == token)
        masked = logits.clone()
        masked[:, token] = -float("inf")
        assert torch.equal(MarginAtLeast(token, 0.0).score(logits), logits[:, token] - masked.max(-1).values)
