"""The shipped models: what their cards promise, and that the files keep those promises."""

import pytest
import torch

from lowprob import load_model
from lowprob.models.zoo import SHIPPED_CONFIGS, SHIPPED_TRIGGER_MODELS, read_card, shipped_dir
from lowprob.training.corpus import KINDS

CARD_FIELDS = {"name", "n_params", "training", "validation", "corpus", "weights_sha256", "tokenizer_sha256"}


@pytest.mark.parametrize("name", list(SHIPPED_CONFIGS))
def test_shipped_model_loads_and_matches_its_card(name):
    model = load_model(name)
    card = read_card(shipped_dir(name))
    assert set(card) >= CARD_FIELDS
    assert model.cfg == SHIPPED_CONFIGS[name]
    assert model.n_params() == card["n_params"]
    assert card["training"]["tokens_seen"] == card["training"]["steps"] * card["training"]["batch_size"] * 64
    assert card["training"]["wall_time_s"] <= 30 * 60
    assert {s["kind"] for s in card["corpus"]["sources"]} == set(KINDS)
    assert model.W_E.dtype == torch.float32 and not model.W_E.requires_grad


@pytest.mark.parametrize("name", list(SHIPPED_CONFIGS))
def test_each_model_beats_the_unigram_baseline_by_a_clear_margin(name):
    validation = read_card(shipped_dir(name))["validation"]
    for kind in KINDS:
        assert validation[kind]["val_loss"] < validation[kind]["unigram_loss"] - 2.0, kind


def test_deeper_is_better_on_every_kind():
    one, four = (read_card(shipped_dir(n))["validation"] for n in ("gelu-1l", "gelu-4l"))
    for kind in KINDS:
        assert four[kind]["val_loss"] < one[kind]["val_loss"], kind


def test_all_shipped_models_share_one_tokenizer():
    assert len({read_card(shipped_dir(n))["tokenizer_sha256"] for n in SHIPPED_CONFIGS}) == 1


# --- the models with a planted trigger (issue 16) ------------------------------------------------------------
@pytest.mark.parametrize("name", list(SHIPPED_TRIGGER_MODELS))
def test_trigger_model_keeps_its_base_held_out_loss_and_names_its_trigger(name):
    model = load_model(name)
    card = read_card(shipped_dir(name))
    base = read_card(shipped_dir(SHIPPED_TRIGGER_MODELS[name]))
    assert set(card) >= CARD_FIELDS | {"base", "backdoor"}
    assert model.cfg == SHIPPED_CONFIGS[SHIPPED_TRIGGER_MODELS[name]]
    assert card["base"]["weights_sha256"] == base["weights_sha256"] != card["weights_sha256"]
    assert card["tokenizer_sha256"] == base["tokenizer_sha256"]
    for kind in KINDS:
        assert card["validation"][kind]["val_loss"] <= 1.01 * base["validation"][kind]["val_loss"], kind
    assert model.tokenizer.encode(card["backdoor"]["target"]) == [card["backdoor"]["target_id"]]
    assert card["training"]["wall_time_s"] <= 30 * 60


def test_trigger_models_stay_out_of_the_other_scales():
    """Only the planted-trigger scale runs the backdoored models, and it runs nothing else."""
    from lowprob.bench.scales import SCALES

    for scale in SCALES.values():
        planted = bool(getattr(scale, "planted", False))  # the generation scale has no planted trigger
        assert (set(scale.models) <= set(SHIPPED_TRIGGER_MODELS)) == planted, scale.name
        assert bool(set(scale.models) & set(SHIPPED_TRIGGER_MODELS)) == planted, scale.name
    assert [m for m, _ in SCALES["cpu"].pairs()][::8] == ["gelu-1l", "gelu-2l", "gelu-4l"]
