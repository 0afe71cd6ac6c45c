import json
import re
import resource
import shutil
import signal
from contextlib import contextmanager

import pytest
import torch

from lowprob import LowprobError, load_model
from lowprob.models import save_model


def test_round_trip_is_bit_identical(tiny_lm, tmp_path):
    save_model(tiny_lm, tmp_path / "a", {"name": "tiny"})
    loaded = load_model(tmp_path / "a")
    assert loaded.cfg == tiny_lm.cfg
    for (name, p), q in zip(tiny_lm.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert loaded.tokenizer.to_str() == tiny_lm.tokenizer.to_str()
    # saving the loaded model again gives byte-identical files
    save_model(loaded, tmp_path / "b", {"name": "tiny"})
    for fname in ("config.json", "model.safetensors", "tokenizer.json", "card.json"):
        assert (tmp_path / "a" / fname).read_bytes() == (tmp_path / "b" / fname).read_bytes(), fname
    tokens = torch.randint(0, tiny_lm.d_vocab, (3, 5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.logits(tokens), tiny_lm.logits(tokens))


@pytest.fixture
def saved(tiny_lm, tmp_path):
    save_model(tiny_lm, tmp_path / "m", {"name": "tiny"})
    return tmp_path / "m"


def test_corrupt_weights_fail_the_checksum(saved):
    data = bytearray((saved / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (saved / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(LowprobError, match="does not match the sha256"):
        load_model(saved)


def test_weights_from_another_model_are_refused(saved, tiny_lm, tmp_path):
    other = type(tiny_lm)(tiny_lm.cfg, seed=1, tokenizer=tiny_lm.tokenizer)
    save_model(other, tmp_path / "other", {"name": "other"})
    shutil.copy(tmp_path / "other" / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(LowprobError, match="does not match the sha256"):
        load_model(saved)


def test_weights_that_do_not_fit_the_config_are_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["d_mlp"] = 64
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(LowprobError, match=r"does not fit config\.json"):
        load_model(saved)


@pytest.mark.parametrize("fname, message", [("card.json", "card.json is missing"),
                                            ("model.safetensors", "model.safetensors is missing"),
                                            ("config.json", "config.json is missing")])
def test_missing_files_are_named(saved, fname, message):
    (saved / fname).unlink()
    with pytest.raises(LowprobError, match=message):
        load_model(saved)


def test_bad_config_is_a_clear_error(saved):
    (saved / "config.json").write_text(json.dumps({"n_layers": 1}))
    with pytest.raises(LowprobError, match="missing field"):
        load_model(saved)


def test_unknown_name_lists_the_shipped_models():
    with pytest.raises(LowprobError, match="gelu-1l, gelu-2l, gelu-4l"):
        load_model("gelu-3l")


def test_a_truncated_weights_file_is_named(saved):
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LowprobError, match=r"model\.safetensors does not match .* truncated or corrupt"):
        load_model(saved)


@pytest.mark.parametrize("fname", ["config.json", "model.safetensors", "card.json"])
def test_a_directory_in_place_of_a_file_is_named(saved, fname):
    (saved / fname).unlink()
    (saved / fname).mkdir()
    with pytest.raises(LowprobError, match=re.escape(f"cannot read {saved / fname}")):
        load_model(saved)


@pytest.mark.parametrize("config", ['{"n_layers": 1}', "[1, 2]", "{"])
def test_a_bad_config_names_its_file(saved, config):
    (saved / "config.json").write_text(config)
    with pytest.raises(LowprobError, match=re.escape(f"{saved / 'config.json'} ")):
        load_model(saved)


def test_a_file_given_as_a_model_says_what_was_expected(saved, monkeypatch, capsys):
    from .test_cli import run

    path = saved / "model.safetensors"
    code, _, err = run(monkeypatch, capsys, "estimate", "--model", str(path), "--dist", "hex", "--target", "id:5")
    assert code == 2 and err == (f"error: {path} is a file: give a shipped name (gelu-1l, gelu-2l, gelu-4l, "
                                 f"gelu-2l-trigger, gelu-4l-trigger, gelu-2l-conj3, gelu-4l-conj3, gelu-2l-conj4) or a "
                                 f"model directory (the directory that holds config.json and the weights)\n")



@contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` fail (EFBIG) as writes on a full disk do; SIGXFSZ is ignored meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_failing_disk_while_saving_a_model_or_a_checkpoint_is_an_error_naming_the_file(tiny_lm, tmp_path):
    """safetensors and torch wrap I/O errors in their own types: both are serialised to bytes, then written."""
    from lowprob.training.train import adamw, save_checkpoint

    out = tmp_path / "m"
    with file_size_limit(1024), pytest.raises(LowprobError, match=re.escape(f"cannot write {out}/model.safetensors: ")):
        save_model(tiny_lm, out, {"name": "tiny"})
    with file_size_limit(1024), pytest.raises(LowprobError, match=re.escape(f"cannot write {out}/checkpoint.pt: ")):
        save_checkpoint(out / "checkpoint.pt", tiny_lm, adamw(tiny_lm, 1e-3, 0.1), step=1, elapsed=0.0)
    assert list(out.iterdir()) == []  # no half-written file, no temporary left
