"""Incremental decoding gives the logits of a full forward pass, step after step, and resampled rows
carry their own history."""

import pytest
import torch

from lowprob.errors import LowprobError
from lowprob.models import Transformer
from lowprob.models.decoding import RecomputedDecoding, start_decoding

from .conftest import TINY


def _check_against_full_forward(model, prompts, steps=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = start_decoding(model, prompts)
    for step in range(steps):
        with torch.no_grad():
            full = model.logits(state.tokens)
        assert (state.logits - full).abs().max().item() < 1e-4, step
        if step == 2:  # resample: duplicate some rows, drop others
            state.select(torch.tensor([2, 2, 0, 1]))
        state.extend(torch.randint(0, model.d_vocab, (len(state.tokens),), generator=g))


def test_the_transformer_cache_gives_the_full_forward_logits():
    model = Transformer(TINY, seed=0).eval()
    prompts = torch.randint(0, TINY.d_vocab, (4, 2), generator=torch.Generator().manual_seed(1))
    _check_against_full_forward(model, prompts)


def test_any_protocol_model_decodes_by_recomputation():
    model = Transformer(TINY, seed=0).eval()
    state = RecomputedDecoding(model, torch.zeros(4, 1, dtype=torch.long))
    state.extend(torch.ones(4, dtype=torch.long))
    assert state.positions_per_step() == 3
    assert torch.allclose(state.logits, model.logits(torch.tensor([[0, 1]] * 4)))


def test_a_continuation_longer_than_the_context_is_refused():
    model = Transformer(TINY, seed=0).eval()
    state = start_decoding(model, torch.zeros(2, TINY.n_ctx, dtype=torch.long))
    with pytest.raises(LowprobError, match="context of 8"):
        state.extend(torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("kind", ["gpt2", "gpt-neox", "llama"])
def test_hugging_face_models_decode_with_their_own_cache(kind):
    pytest.importorskip("transformers")
    from lowprob.models import from_hugging_face

    from .test_adapters import VOCAB, tiny_hf

    model = from_hugging_face(tiny_hf(kind).eval())
    prompts = torch.randint(0, VOCAB, (4, 3), generator=torch.Generator().manual_seed(2))
    _check_against_full_forward(model, prompts)
