"""Hugging Face ``transformers`` causal LMs behind the model protocol.

The wrapped model's base (``model.base_model``) takes ``inputs_embeds`` and returns the final-normed
hidden states — true of GPT-2, GPT-NeoX/Pythia and Llama-family models alike — and its output
embedding (``get_output_embeddings()``) is the unembedding. Nothing is downloaded: a directory as
``save_pretrained`` writes it is read with ``local_files_only``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from lowprob.errors import LowprobError
from lowprob.files import read_json
from lowprob.models.adapters.base import AdaptedLM
from lowprob.models.decoding import HuggingFaceDecoding
from lowprob.models.protocol import resolve_device
from lowprob.models.tokenizer import Tokenizer


class HuggingFaceLM(AdaptedLM):
    def __init__(self, model: Any, tokenizer: Any = None, name: str = "") -> None:
        config = model.config
        n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if n_ctx is None:
            raise LowprobError(f"{type(model).__name__}'s config gives no context length (max_position_embeddings)")
        head = model.get_output_embeddings()
        if head is None:
            raise LowprobError(f"{type(model).__name__} has no output embedding: load a causal LM (…ForCausalLM)")
        super().__init__(n_ctx, head.weight.shape[0], head.weight.shape[1], tokenizer, name)
        self.hf = model.eval()
        self.hf.requires_grad_(False)

    @property
    def W_E(self) -> Tensor:
        return self.hf.get_input_embeddings().weight

    @property
    def W_U(self) -> Tensor:
        return self.hf.get_output_embeddings().weight.T

    @property
    def b_U(self) -> Tensor | None:
        return self.hf.get_output_embeddings().bias

    def hidden(self, token_embeddings: Tensor) -> Tensor:
        return self.hf.base_model(inputs_embeds=token_embeddings, use_cache=False).last_hidden_state

    def start_decoding(self, prompts: Tensor) -> HuggingFaceDecoding:
        """Cached decoding with the model's own key/value cache (an optional capability, ``models.protocol``)."""
        return HuggingFaceDecoding(self, prompts)


def from_hugging_face(model: Any, tokenizer: Any = None, name: str = "") -> HuggingFaceLM:
    """Wrap a loaded ``transformers`` causal LM (and optionally a lowprob ``Tokenizer``)."""
    return HuggingFaceLM(model, tokenizer, name)


def is_hugging_face_dir(path: Path) -> bool:
    """A ``transformers`` config names its ``model_type``; lowprob's own configs do not."""
    if not (path / "config.json").is_file():
        return False
    config = read_json(path / "config.json")  # a corrupt one is refused by name, whoever wrote it
    return isinstance(config, dict) and "model_type" in config


def load_hugging_face(path: str | Path, device: str | torch.device | None = None) -> HuggingFaceLM:
    """A causal LM from a local directory as ``save_pretrained`` writes it; ``tokenizer.json`` if present."""
    path = Path(path)
    _check_safetensors(path)
    model = _build(path).to(resolve_device(device))
    tokenizer = Tokenizer.from_file(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
    return HuggingFaceLM(model, tokenizer, name=path.name)


def _build(path: Path) -> Any:
    """The causal LM ``path``'s config.json describes, with every weight from its files, or one line saying why not.

    transformers' own errors run to paragraphs, and a config that does not fit the weights (a type edited,
    a layer count changed) would load silently, missing weights drawn at random: both are refused here.
    """
    try:
        import transformers  # an optional extra, heavy to import: only when a Hugging Face model is read
    except ImportError:
        raise LowprobError("reading a Hugging Face model needs transformers: pip install 'lowprob[hf]'") from None
    config = read_json(path / "config.json", missing="a Hugging Face directory is what save_pretrained writes")
    kind = config.get("model_type") if isinstance(config, dict) else None
    cannot = f"{path}: transformers {transformers.__version__} cannot build model_type {kind!r}"
    if not isinstance(kind, str) or kind not in transformers.CONFIG_MAPPING:
        raise LowprobError(f"{cannot} (it knows no such model type): fix config.json's model_type, or install a "
                           f"transformers that has it")
    try:  # output_loading_info makes it a pair (model, info); transformers' annotation gives the model alone
        model, loaded = cast(tuple[Any, dict[str, list[str]]], transformers.AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, use_safetensors=True, dtype=torch.float32, output_loading_info=True))
    except OSError as exc:  # files missing or unreadable
        raise LowprobError(f"cannot load a Hugging Face causal LM from {path}: {_one_line(exc)}") from None
    except Exception as exc:  # a config it cannot build raises ValueError, TypeError, huggingface_hub's
        # validation errors, torch's RuntimeError...: whichever it is, it is about this directory
        raise LowprobError(f"{cannot} as a causal LM ({type(exc).__name__}: {_one_line(exc)}): fix "
                           f"config.json") from None
    missing, unexpected = loaded["missing_keys"], loaded["unexpected_keys"]
    if missing or unexpected:
        raise LowprobError(f"{path}: the weights do not fit config.json (model_type {kind!r}): "
                           f"{len(missing)} missing, {len(unexpected)} unexpected (such as "
                           f"{sorted([*missing, *unexpected])[0]!r}); fix config.json or re-save the model")
    return model


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """transformers' message on one line, cut short: some run to paragraphs of advice."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_safetensors(path: Path) -> None:
    """Refuse, by file name, weights that are only pickles (which can run code when read) or whose
    safetensors header does not cover the file (a truncated copy or download)."""
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in path.glob("pytorch_model*.bin"))
        if pickles:
            raise LowprobError(f"{path} has only pickle weights ({', '.join(pickles)}); lowprob loads safetensors "
                               f"only: re-save with save_pretrained(safe_serialization=True)")
    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise LowprobError(f"{file} is truncated or corrupt: {exc}") from None
