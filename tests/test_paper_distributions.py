import numpy as np
import pytest
import torch

from lowprob import LowprobError, load_distribution, load_model
from lowprob.distributions import paper
from lowprob.distributions.paper import PAPER_DISTRIBUTIONS, load_tables


@pytest.fixture(scope="module")
def model():
    return load_model("gelu-1l")


@pytest.mark.parametrize("length", ["cpu", "paper"])
@pytest.mark.parametrize("name", list(PAPER_DISTRIBUTIONS))
def test_every_paper_distribution_builds(model, name, length):
    dist = load_distribution(name, model, length)
    assert dist.name == f"{name}-{length}"
    assert dist.support(0)[0].tolist() == [model.tokenizer.bos_id]  # BOS first, always
    assert len(dist) <= model.n_ctx
    for pos in range(len(dist)):
        assert dist.support(pos)[1].sum().item() == pytest.approx(1.0, abs=1e-12)
    if length == "cpu":
        assert 12 <= len(dist) <= 16


EXPECTED_LENGTHS = {"hex": 33, "camel": 33, "colon": 34, "if": 34, "caps": 23, "english": 26,
                    "spanish": 25, "icl": 30}


def test_paper_lengths_follow_the_paper(model):
    """The paper's repetition counts; caps is 23 because ' screamed: "' is 5 tokens here."""
    assert {n: len(load_distribution(n, model, "paper")) for n in PAPER_DISTRIBUTIONS} == EXPECTED_LENGTHS


FILTERS = {"hex": paper.is_hex, "camel": paper.is_camel, "spanish": paper.is_spanish}


@pytest.mark.parametrize("name, position", [("hex", 1), ("camel", 1), ("spanish", 1), ("caps", 7),
                                            ("english", 1), ("english", 2)])
def test_filtered_positions_only_hold_passing_tokens(model, name, position):
    predicate = {**FILTERS, "caps": paper.is_caps}.get(name) or (
        paper.is_start_word if position == 1 else paper.is_middle_word)
    ids, _ = load_distribution(name, model).support(position)
    strings = [model.tokenizer.id_to_token(int(i)) for i in ids]
    assert strings and all(predicate(s) for s in strings)


def test_constants_are_the_recipes_tokens(model):
    tok = model.tokenizer
    decode = lambda d, i: tok.id_to_token(int(d.support(i)[0][0]))  # noqa: E731
    colon, if_, caps = (load_distribution(n, model) for n in ("colon", "if", "caps"))
    assert decode(colon, len(colon) - 1) == ":"
    assert decode(if_, 1) == " if"
    assert tok.decode(caps.support(i)[0][0].item() for i in range(2, 7)) == ' screamed: "'
    assert sorted(tok.id_to_token(int(i)) for i in caps.support(1)[0]) == ["He", "We"]
    icl = load_distribution("icl", model, "paper")
    letters = [decode(icl, 1 + 3 * k) for k in range(9)]
    assert "".join(s.strip() for s in letters) == "ARCTHEORY"
    assert all(decode(icl, 2 + 3 * k) == " for" for k in range(9))
    words = icl.support(3 + 3 * 8)[0]  # the 'Y' slot
    assert all(tok.id_to_token(int(w))[1].lower() == "y" for w in words)
    assert icl.support_sizes()[-2] == 26 and decode(icl, len(icl) - 1) == " for"


def test_code1024_is_the_top_1024_code_tokens_without_bos(model):
    ids, probs = load_distribution("if", model).support(2)
    counts = load_tables().counts["code"]
    assert len(ids) == 1024 and model.tokenizer.bos_id not in ids.tolist()
    threshold = np.sort(counts[ids.numpy()]).min()
    outside = np.setdiff1d(np.arange(len(counts)), np.append(ids.numpy(), model.tokenizer.bos_id))
    assert counts[outside].max() <= threshold
    torch.testing.assert_close(probs, torch.from_numpy(counts[ids.numpy()] / counts[ids.numpy()].sum()))


def test_hex_weights_are_a_distribution_over_hex_tokens(model):
    weights = load_tables().hex_weights
    assert weights.sum() == pytest.approx(1.0)
    assert all(paper.is_hex(model.tokenizer.id_to_token(int(i))) for i in np.flatnonzero(weights))


@pytest.mark.parametrize("predicate, yes, no", [
    (paper.is_hex, ["ff", "0", "dead"], ["fg", "", "FF", " ff"]),
    (paper.is_camel, ["Error", "Test2", "Py"], ["None", "True", "E", "ERROR", "FooBar", " Foo"]),
    (paper.is_caps, ["RE", "NULL::", "A."], ["A", "Re", " RE", "!!", "::"]),
    (paper.is_start_word, ["ing", "The"], [" the", "a1", ""]),
    (paper.is_middle_word, [" the", " NO!", ",", "."], [" ", "the", " a1", ":"]),
    (paper.is_spanish, [" niño", "\n", " de", "\t "], ["", "1", "a_b", "¿"]),
])
def test_filters(predicate, yes, no):
    assert all(predicate(s) for s in yes) and not any(predicate(s) for s in no)


def test_a_model_with_another_tokenizer_is_refused(tiny_lm):
    with pytest.raises(LowprobError, match="shipped tokenizer"):
        load_distribution("hex", tiny_lm)


def test_load_distribution_names_and_files(model, tmp_path):
    assert load_distribution("tiny-zipf", model).name == "tiny-zipf"
    path = tmp_path / "d.safetensors"
    load_distribution("camel", model).save(path)
    assert load_distribution(str(path), model).content_hash() == load_distribution("camel", model).content_hash()
    with pytest.raises(LowprobError, match="unknown distribution 'hexx'"):
        load_distribution("hexx", model)
    with pytest.raises(LowprobError, match="length must be one of"):
        load_distribution("hex", model, "long")


def test_the_exact_variant_is_enumerable_and_reaches_rare_sequences(model):
    for name in PAPER_DISTRIBUTIONS:
        dist = load_distribution(name, model, "exact")
        cpu = load_distribution(name, model, "cpu")
        assert dist.support_size() <= 1 << 25, name
        assert dist.support(0)[0].tolist() == cpu.support(0)[0].tolist()  # the kind's constants stay
        if name == "icl":
            assert dist.content_hash() == cpu.content_hash()
            continue
        i = dist.variable_positions()[-1]
        ids, probs = dist.support(i)
        cpu_ids, cpu_probs = cpu.support(i if i < len(cpu) else cpu.variable_positions()[-1])
        kept = cpu_probs[torch.isin(cpu_ids, ids)]
        assert torch.allclose(probs, kept**2 / (kept**2).sum(), rtol=1e-6)  # the kind's weights, squared
        rarest = sum(float(dist.support(j)[1].min().log10()) for j in range(len(dist)))
        assert rarest < -9.5, (name, rarest)
