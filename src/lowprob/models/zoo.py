"""Model directories: saving, loading with checksum verification, and the shipped models.

A model directory holds ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
``card.json``; the card records the sha256 of the weights and of the tokenizer, and loading refuses
files that do not match it, so a corrupt or swapped file fails loudly instead of giving wrong
probabilities.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from lowprob.errors import LowprobError
from lowprob.files import atomic_write, dumps_json, prepare_output, read_bytes, read_json
from lowprob.models.adapters.hf import is_hugging_face_dir, load_hugging_face
from lowprob.models.protocol import LanguageModel, resolve_device
from lowprob.models.tokenizer import Tokenizer
from lowprob.models.transformer import Transformer, TransformerConfig

_BASE: dict[str, Any] = dict(d_model=64, n_heads=4, d_mlp=256, n_ctx=64, d_vocab=4096, act_fn="gelu")
SHIPPED_CONFIGS: dict[str, TransformerConfig] = {
    f"gelu-{n}l": TransformerConfig(n_layers=n, **_BASE) for n in (1, 2, 4)
}
# models with a planted trigger (``training/backdoor.py``), by name -> the shipped model they were tuned from.
# Kept apart from SHIPPED_CONFIGS, which defines the benchmark scales' model lists.
SHIPPED_TRIGGER_MODELS: dict[str, str] = {"gelu-2l-trigger": "gelu-2l", "gelu-4l-trigger": "gelu-4l",
                                           "gelu-2l-conj3": "gelu-2l", "gelu-4l-conj3": "gelu-4l",
                                           "gelu-2l-conj4": "gelu-2l"}
FILES = ("config.json", "model.safetensors", "tokenizer.json", "card.json")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shipped_dir(name: str) -> Path:
    return Path(str(resources.files("lowprob.models") / "shipped" / name))


def shipped_tokenizer_path() -> Path:
    """The tokenizer all shipped models share (each model directory carries a copy)."""
    return shipped_dir("gelu-1l") / "tokenizer.json"


def save_model(model: Transformer, directory: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write a model directory; return the card as written, with the weights' and tokenizer's sha256."""
    directory = prepare_output(directory, kind="directory")
    if model.tokenizer is None:
        raise LowprobError("a saved model needs a tokenizer (model.tokenizer is None)")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    weights = save_safetensors(tensors)  # bytes first: a failing disk is a LowprobError naming the file
    atomic_write(directory / "model.safetensors", weights)
    tokenizer = model.tokenizer.to_str().encode()
    atomic_write(directory / "tokenizer.json", tokenizer)
    atomic_write(directory / "config.json", dumps_json(model.cfg.to_dict(), indent=1).encode())
    card = {**card, "weights_sha256": sha256_bytes(weights),
            "tokenizer_sha256": sha256_bytes(tokenizer)}
    atomic_write(directory / "card.json", dumps_json(card, indent=1).encode())
    return card


def _json_object(path: Path) -> dict[str, Any]:
    obj = read_json(path, missing=f"a model directory needs {', '.join(FILES)}")
    if not isinstance(obj, dict):
        raise LowprobError(f"{path} must hold a JSON object, not a {type(obj).__name__}")
    return obj


def read_card(directory: str | Path) -> dict[str, Any]:
    return _json_object(Path(directory) / "card.json")


def resolve(name_or_path: str | Path) -> Path:
    """A shipped model's name, or a model directory."""
    if isinstance(name_or_path, str) and (name_or_path in SHIPPED_CONFIGS or name_or_path in SHIPPED_TRIGGER_MODELS):
        return shipped_dir(name_or_path)
    shipped = ", ".join([*SHIPPED_CONFIGS, *SHIPPED_TRIGGER_MODELS])
    if not isinstance(name_or_path, (str, Path)):
        raise LowprobError(f"a model is named by a shipped name ({shipped}) or a model directory's path, got "
                           f"{name_or_path!r}")
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise LowprobError(f"{path} is a file: give a shipped name ({shipped}) or a model directory "
                           f"(the directory that holds config.json and the weights)")
    raise LowprobError(f"unknown model {str(name_or_path)!r}: use one of {shipped} or a model directory")


def load_model(name_or_path: str | Path, device: str | torch.device | None = None) -> LanguageModel:
    """A shipped model by name, a lowprob model directory (every file verified against its card), or a
    local Hugging Face causal-LM directory (``config.json`` and weights as ``save_pretrained`` writes them),
    on ``device`` (the CPU by default; ``"cuda"`` is refused clearly where there is no GPU)."""
    target = resolve_device(device)
    directory = resolve(name_or_path)
    if is_hugging_face_dir(directory):
        return load_hugging_face(directory, target)
    card = read_card(directory)
    config = _json_object(directory / "config.json")
    try:
        cfg = TransformerConfig.from_dict(config)
    except (ValueError, TypeError) as exc:  # LowprobError included: name the file it came from
        raise LowprobError(f"{directory / 'config.json'} is not a valid config ({exc})") from None
    verified = {}
    for fname, key in (("model.safetensors", "weights_sha256"), ("tokenizer.json", "tokenizer_sha256")):
        path = directory / fname
        data = read_bytes(path, missing=f"a model directory needs {', '.join(FILES)}")
        if key not in card:
            raise LowprobError(f"{directory / 'card.json'} has no {key}; re-save the model")
        if sha256_bytes(data) != card[key]:
            raise LowprobError(f"{path} does not match the sha256 in card.json: the file is truncated or "
                               f"corrupt, or belongs to another model")
        verified[fname] = data
    try:
        state = load_safetensors(verified["model.safetensors"])  # the bytes just verified, not a second read
    except SafetensorError as exc:
        raise LowprobError(f"{directory / 'model.safetensors'} is unreadable ({exc})") from None
    model = Transformer(cfg, tokenizer=Tokenizer.from_file(directory / "tokenizer.json"), name=str(name_or_path))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))[:4]
        raise LowprobError(f"{directory / 'model.safetensors'} does not fit config.json "
                           f"(first differences: {diff})")
    if model.tokenizer.vocab_size != cfg.d_vocab:
        raise LowprobError(f"tokenizer has {model.tokenizer.vocab_size} tokens but d_vocab is {cfg.d_vocab}")
    with torch.no_grad():
        model.load_state_dict(state)
    model.eval()
    model.requires_grad_(False)
    return model.to(target)
