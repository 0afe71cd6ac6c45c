import dataclasses

import pytest
import torch

from lowprob import LowprobError
from lowprob.models import Transformer, TransformerConfig

from .conftest import TINY


def test_same_seed_same_weights_and_different_seed_different():
    a, b, c = Transformer(TINY, seed=3), Transformer(TINY, seed=3), Transformer(TINY, seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if name.endswith(("W_E", "W_U", "W_Q")):
            assert not torch.equal(pa, pc), name


def test_transformerlens_weight_names(tiny_model):
    names = dict(tiny_model.named_parameters())
    for name in ("W_E", "W_pos", "W_U", "ln_final.w", "blocks.0.attn.W_Q", "blocks.0.attn.W_O",
                 "blocks.1.mlp.W_in", "blocks.1.mlp.b_out", "blocks.0.ln1.w", "blocks.0.ln2.b"):
        assert name in names
    assert names["blocks.0.attn.W_Q"].shape == (2, 16, 8)
    assert tiny_model.b_U is None
    assert names["W_E"].dtype == torch.float32


def test_logits_is_final_residual_times_unembedding(tokens):
    model = Transformer(dataclasses.replace(TINY, unembed_bias=True), seed=0)
    with torch.no_grad():
        model.b_U.normal_()
        expected = model.final_residual(model.W_E[tokens]) @ model.W_U + model.b_U
    torch.testing.assert_close(model.logits(tokens), expected, rtol=0, atol=0)
    torch.testing.assert_close(model(tokens)[:, -1], expected, rtol=1e-6, atol=1e-6)


def test_causality(tiny_model, tokens):
    """Changing the token at position t never changes the logits at positions < t."""
    base = tiny_model(tokens)
    for t in range(1, TINY.n_ctx):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % TINY.d_vocab
        out = tiny_model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:])  # and later logits do change


def test_batch_invariance(tiny_model, tokens):
    batched = tiny_model.logits(tokens)
    for i in range(len(tokens)):
        torch.testing.assert_close(tiny_model.logits(tokens[i:i + 1])[0], batched[i], rtol=1e-5, atol=1e-6)


def test_shorter_sequences_use_leading_positions(tiny_model, tokens):
    torch.testing.assert_close(tiny_model.logits(tokens[:, :3]), tiny_model(tokens)[:, 2], rtol=1e-6, atol=1e-6)


def test_final_residual_gradient_matches_finite_differences(tokens):
    model = Transformer(TINY, seed=0).double()
    emb = model.W_E[tokens[:2]].detach().clone().requires_grad_(True)
    direction = torch.randn(model.cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def f(e):
        return (model.final_residual(e) @ direction).sum()

    (grad,) = torch.autograd.grad(f(emb), emb)
    gen = torch.Generator().manual_seed(5)
    eps = 1e-6
    for _ in range(6):
        v = torch.randn(emb.shape, dtype=torch.float64, generator=gen)
        numeric = (f(emb + eps * v) - f(emb - eps * v)) / (2 * eps)
        torch.testing.assert_close((grad * v).sum(), numeric.detach(), rtol=1e-6, atol=1e-8)
    assert grad[:, -1].abs().sum() > 0 and grad[:, 0].abs().sum() > 0  # every position matters


@pytest.mark.parametrize("change, message", [
    (dict(d_model=15), "divisible"),
    (dict(n_layers=0), "n_layers"),
    (dict(n_ctx=2.5), "n_ctx"),
    (dict(d_vocab=True), "d_vocab"),
    (dict(act_fn="swish"), "act_fn"),
    (dict(ln_eps=0.0), "ln_eps"),
])
def test_bad_configs_raise_clear_errors(change, message):
    with pytest.raises(LowprobError, match=message):
        dataclasses.replace(TINY, **change)


def test_config_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(LowprobError, match="unknown field"):
        TransformerConfig.from_dict({**TINY.to_dict(), "n_layer": 2})
    data = TINY.to_dict()
    del data["n_heads"]
    with pytest.raises(LowprobError, match="missing field"):
        TransformerConfig.from_dict(data)
    assert TransformerConfig.from_dict(TINY.to_dict()) == TINY


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 9, dtype=torch.long), "n_ctx"),
    (torch.zeros(2, 0, dtype=torch.long), "n_ctx"),
    (torch.full((2, 3), 32), "0..31"),
    (torch.full((2, 3), -1), "0..31"),
    (torch.zeros(2, 3), "LongTensor"),
    (torch.zeros(3, dtype=torch.long), "LongTensor"),
])
def test_bad_tokens_raise_clear_errors(tiny_model, bad, message):
    with pytest.raises(LowprobError, match=message):
        tiny_model.logits(bad)


def test_final_residual_rejects_wrong_shapes(tiny_model):
    with pytest.raises(LowprobError, match="token_embeddings"):
        tiny_model.final_residual(torch.zeros(2, 3, 15))
    with pytest.raises(LowprobError, match="n_ctx"):
        tiny_model.final_residual(torch.zeros(2, 9, 16))
