"""Adapters: tiny random Hugging Face and TransformerLens models, built here (nothing is downloaded),
give the same logits as their own forward, and every estimator and exact ground truth run on them."""

import json
import math
import re

import pytest
import torch

import lowprob
from lowprob import ArgmaxIs, estimate
from lowprob.continuations import exact_generation_probability
from lowprob.distributions.base import TokenDistribution
from lowprob.distributions.tiny import tiny_distribution
from lowprob.estimators.catalog import methods_for
from lowprob.events import Generates
from lowprob.models import LanguageModel, from_transformer_lens, model_sha256

transformers = pytest.importorskip("transformers")

VOCAB = 48


def tiny_hf(kind: str):
    torch.manual_seed(0)
    small = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_positions=16, n_embd=16, n_layer=2, n_head=2, **small)
        return transformers.GPT2LMHeadModel(config)
    if kind == "gpt-neox":
        config = transformers.GPTNeoXConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, max_position_embeddings=16, **small)
        return transformers.GPTNeoXForCausalLM(config)
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, max_position_embeddings=16, **small)
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module", params=["gpt2", "gpt-neox", "llama"])
def hf_dir(request, tmp_path_factory):
    """A local model directory as save_pretrained writes it."""
    path = tmp_path_factory.mktemp(request.param)
    model = tiny_hf(request.param)
    with torch.no_grad():  # sharper logits than the default init, so that some outputs are rare
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(8.0)
    model.save_pretrained(path)
    return request.param, path, model.eval()


def test_a_hugging_face_directory_loads_and_matches_its_own_forward(hf_dir):
    kind, path, reference = hf_dir
    model = lowprob.load_model(path)
    assert isinstance(model, LanguageModel) and model.d_vocab == VOCAB and model.name == path.name
    tokens = torch.randint(0, VOCAB, (6, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model.logits(tokens) - reference(tokens).logits[:, -1]).abs().max().item()
    assert diff < 1e-5, (kind, diff)


def test_every_estimator_and_exact_ground_truth_run_on_a_hugging_face_model(hf_dir):
    _, path, _ = hf_dir
    model = lowprob.load_model(path)
    dist = tiny_distribution("tiny-uniform", VOCAB)
    exact = lowprob.ground_truth(model, dist, exact=True).probabilities
    assert exact.sum().item() == pytest.approx(1.0)
    target = int(torch.where((exact > 1e-3) & (exact < 5e-2))[0][0])
    for method in methods_for("logits"):
        e = estimate(model, dist, ArgmaxIs(target), method=method, budget=256, seed=0)
        assert 0 <= e.interval[0] <= e.interval[1] <= 1 and e.cost.flops > 0
    check_generation_events(model, dist, target)
    values = torch.tensor([estimate(model, dist, ArgmaxIs(target), method="itgis", budget=256, seed=s).probability
                           for s in range(40)], dtype=torch.float64)
    p = exact[target].item()
    assert abs(values.mean().item() - p) < 3.5 * values.std().item() / math.sqrt(40), (values.mean().item(), p)


def check_generation_events(model, dist, token: int) -> None:
    """Generation methods run on the model (its own cache, or recomputation) and agree with enumeration
    (on 16 of the distribution's prompts, so that every continuation can be enumerated)."""
    dist = TokenDistribution.from_positions([dist.support(i) if i < 2 else int(dist.support(i)[0][0])
                                             for i in range(len(dist))], normalize=True)
    event = Generates(((token, token),), steps=2)
    p = exact_generation_probability(model, dist, event)
    for method in methods_for("generation"):
        e = estimate(model, dist, event, method=method, budget=64, seed=0)
        assert 0 <= e.interval[0] <= e.interval[1] <= 1 and e.cost.flops > 0
    values = torch.tensor([estimate(model, dist, event, method="tilted", budget=64, seed=s).probability
                           for s in range(40)], dtype=torch.float64)
    assert abs(values.mean().item() - p) < 3.5 * values.std().item() / math.sqrt(40) + 1e-12, (values.mean(), p)


def test_a_directory_that_is_not_a_model_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(lowprob.LowprobError, match=r"cannot load a Hugging Face causal LM from .*no file named"):
        lowprob.load_model(tmp_path)


def saved_gpt2(path, vocab: int = VOCAB):
    """A one-layer GPT-2 saved as save_pretrained writes it (safetensors)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_positions=16, n_embd=16, n_layer=1, n_head=2, vocab_size=vocab,
                                     bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("edit, message", [
    ({"model_type": "careless-gpt"}, "cannot build model_type 'careless-gpt' (it knows no such model type): fix "
                                     "config.json's model_type, or install a transformers that has it"),
    ({"n_head": 3}, "cannot build model_type 'gpt2' as a causal LM (ValueError: `embed_dim` must be divisible by "
                    "num_heads"),
    ({"n_layer": 2}, "the weights do not fit config.json (model_type 'gpt2'): 12 missing, 0 unexpected (such as "
                     "'transformer.h.1.attn.c_attn.bias'); fix config.json or re-save the model"),
])
def test_a_config_transformers_cannot_build_or_that_misfits_the_weights_is_one_line(tmp_path, edit, message):
    path = saved_gpt2(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(lowprob.LowprobError) as caught:
        lowprob.load_model(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_truncated_weights_file_is_named(tmp_path):
    path = saved_gpt2(tmp_path / "m")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(lowprob.LowprobError, match=re.escape(f"{weights} is truncated or corrupt: ")):
        lowprob.load_model(path)


def test_pickle_only_weights_are_refused_with_how_to_convert_them(tmp_path):
    from safetensors.torch import load_file

    path = saved_gpt2(tmp_path / "m")
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    with pytest.raises(lowprob.LowprobError, match=re.escape(
            f"{path} has only pickle weights (pytorch_model.bin); lowprob loads safetensors only: re-save with "
            f"save_pretrained(safe_serialization=True)")):
        lowprob.load_model(path)


def test_a_tokenizer_with_ids_past_the_vocabulary_is_refused_at_load(tmp_path, tiny_tokenizer):
    path = saved_gpt2(tmp_path / "m")
    tiny_tokenizer.save(path / "tokenizer.json")
    with pytest.raises(lowprob.LowprobError, match=f"the tokenizer has {tiny_tokenizer.vocab_size} tokens but m "
                                                   f"has {VOCAB} token ids"):
        lowprob.load_model(path)


def test_paper_distributions_accept_the_shipped_tokenizer_re_saved_by_transformers(tmp_path, tiny_tokenizer):
    from lowprob.models.zoo import shipped_tokenizer_path

    path = saved_gpt2(tmp_path / "m", vocab=4096)
    transformers.PreTrainedTokenizerFast(tokenizer_file=str(shipped_tokenizer_path()),
                                         eos_token="<|endoftext|>").save_pretrained(path)
    assert (path / "tokenizer.json").read_bytes() != shipped_tokenizer_path().read_bytes()
    model = lowprob.load_model(path)
    shipped = lowprob.load_distribution("hex", lowprob.load_model("gelu-1l"))
    assert lowprob.load_distribution("hex", model).content_hash() == shipped.content_hash()
    model.tokenizer = tiny_tokenizer  # another vocabulary is still refused
    with pytest.raises(lowprob.LowprobError, match="belong to the shipped tokenizer"):
        lowprob.load_distribution("hex", model)


def test_a_transformer_lens_model_matches_its_own_forward_and_runs_the_estimators():
    tl = pytest.importorskip("transformer_lens")
    cfg = tl.HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=8, d_head=8, n_heads=2, d_mlp=32, d_vocab=VOCAB,
                                     act_fn="gelu", normalization_type="LN", seed=0, initializer_range=0.3)
    hooked = tl.HookedTransformer(cfg).eval()
    model = from_transformer_lens(hooked, name="tl-tiny")
    assert isinstance(model, LanguageModel)
    tokens = torch.randint(0, VOCAB, (5, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model.logits(tokens) - hooked(tokens)[:, -1]).abs().max().item() < 1e-5
    assert len(model_sha256(model)) == 64  # its attention keeps IGNORE as a 0-dim buffer
    dist = tiny_distribution("tiny-uniform", VOCAB)
    exact = lowprob.ground_truth(model, dist, exact=True).probabilities
    target = int(exact.argsort()[-3])
    for method in methods_for("logits"):
        e = estimate(model, dist, ArgmaxIs(target), method=method, budget=128, seed=0)
        assert 0 <= e.interval[0] <= e.interval[1] <= 1
    check_generation_events(model, dist, target)


def test_from_transformer_lens_refuses_other_objects():
    with pytest.raises(lowprob.LowprobError, match="takes a HookedTransformer"):
        from_transformer_lens(torch.nn.Linear(2, 2))
