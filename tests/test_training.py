import dataclasses
import json
import random

import pytest
import torch

from lowprob import load_model
from lowprob.models import Transformer
from lowprob.training import train as training
from lowprob.training.corpus import EOT, KINDS
from lowprob.training.train import TrainConfig, evaluate, train

from .conftest import SAMPLE_TEXT


@pytest.fixture
def tiny_corpus(tmp_path):
    """A built corpus directory in the layout build_corpus writes, from shuffled sample sentences."""
    rng = random.Random(0)
    for kind in KINDS:
        words = SAMPLE_TEXT[kind].split(" ")
        for split, n in (("train", 300), ("val", 40)):
            docs = [" ".join(rng.sample(words, len(words))) for _ in range(n)]
            (tmp_path / f"{kind}.{split}.txt").write_text(EOT.join(docs))
    (tmp_path / "manifest.json").write_text(json.dumps({"recipe": [], "sources": [], "outputs": {}}))
    return tmp_path


@pytest.fixture
def setup(tiny_corpus, tiny_lm):
    cfg = TrainConfig(steps=12, batch_size=8, warmup=2, lr=1e-2, checkpoint_every=4, eval_windows=16,
                      threads=1)
    return tiny_corpus, tiny_lm.cfg, tiny_lm.tokenizer, cfg


def test_training_learns_and_writes_a_loadable_model_with_its_card(setup, tmp_path):
    corpus, cfg, tokenizer, train_cfg = setup
    untrained = evaluate(Transformer(cfg, seed=0, tokenizer=tokenizer), corpus, tokenizer, 16)
    card = train("tiny", cfg, tmp_path / "out", corpus, tokenizer,
                 dataclasses.replace(train_cfg, steps=60), progress=False)
    model = load_model(tmp_path / "out")
    assert card == json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["training"]["tokens_seen"] == 60 * 8 * cfg.n_ctx
    for kind in KINDS:
        assert card["validation"][kind]["val_loss"] < untrained[kind]["val_loss"] - 1.0
        assert card["validation"][kind]["val_loss"] < card["validation"][kind]["unigram_loss"]
    assert evaluate(model, corpus, tokenizer, 16) == card["validation"]
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_resume_after_a_crash_equals_an_uninterrupted_run(setup, tmp_path, monkeypatch):
    corpus, cfg, tokenizer, train_cfg = setup
    train("tiny", cfg, tmp_path / "whole", corpus, tokenizer, train_cfg, progress=False)

    real_save = training.save_checkpoint

    def save_then_crash(path, model, opt, step, elapsed):
        real_save(path, model, opt, step, elapsed)
        if step == 8:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train("tiny", cfg, tmp_path / "split", corpus, tokenizer, train_cfg, progress=False)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    train("tiny", cfg, tmp_path / "split", corpus, tokenizer, train_cfg, resume=True, progress=False)

    whole, split = load_model(tmp_path / "whole"), load_model(tmp_path / "split")
    for (name, p), q in zip(whole.state_dict().items(), split.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=1000, warmup=100, lr=1.0, min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.01)
    assert cfg.lr_at(99) == pytest.approx(1.0)
    assert cfg.lr_at(100) == pytest.approx(1.0)
    assert cfg.lr_at(550) == pytest.approx(0.55)
    assert cfg.lr_at(1000) == pytest.approx(0.1)
