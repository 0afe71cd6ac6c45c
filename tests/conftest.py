import dataclasses

import pytest
import torch

from lowprob.models import Transformer, TransformerConfig

TINY = TransformerConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, d_vocab=32)


@pytest.fixture
def tiny_model() -> Transformer:
    return Transformer(TINY, seed=0)


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, TINY.d_vocab, (5, TINY.n_ctx), generator=torch.Generator().manual_seed(1))


SAMPLE_TEXT = {
    "code": "def add(a, b):\n    return a + b\n\nclass FooBar:\n    MAX_SIZE = 0xff\n",
    "english": "The quick brown fox jumps over the lazy dog. She screamed: \"RUN!\"\n",
    "spanish": "El niño comió una manzana en la mañana. ¿Qué hora es? Señor, ¡qué día!\n",
}


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from lowprob.models import Tokenizer

    return Tokenizer.train(iter(list(SAMPLE_TEXT.values()) * 20), vocab_size=300)


@pytest.fixture
def tiny_lm(tiny_tokenizer):
    """A small random model with a real tokenizer, as a saved model would have."""
    cfg = dataclasses.replace(TINY, d_vocab=tiny_tokenizer.vocab_size, n_ctx=16)
    return Transformer(cfg, seed=0, tokenizer=tiny_tokenizer)


def fails_once(dist, method: str, marker):
    """``dist`` whose ``method`` raises the first time any process calls it (``marker`` file records it), then
    behaves: a task of a Ray backend that must be retried. Its class travels with it (pickled by value)."""
    from lowprob.distributions.base import TokenDistribution

    def flaky(self, *args, **kwargs):
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("injected worker failure")
        return getattr(TokenDistribution, method)(self, *args, **kwargs)

    cls = type("FailsOnce", (TokenDistribution,), {method: flaky})
    out = cls.__new__(cls)
    out.__dict__.update(dist.__dict__)
    return out
