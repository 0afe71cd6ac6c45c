"""Devices: what a user asks for is checked at the boundary, and on a GPU (when this machine has one)
every estimator and ground truth give what they give on the CPU for the same seed."""

import pytest
import torch

import lowprob
from lowprob.distributions.tiny import tiny_distribution
from lowprob.errors import LowprobError
from lowprob.estimators.catalog import methods_for
from lowprob.events import ArgmaxIs, InTopK
from lowprob.models import Transformer, resolve_device

from .conftest import TINY
from .test_cli import run

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_the_cpu_is_the_default_device():
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cpu")
    assert lowprob.load_model("gelu-1l", device="cpu").device == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "tpu", "mps", "cuda:x", ""])
def test_an_unknown_device_is_refused_naming_the_valid_ones(bad):
    with pytest.raises(LowprobError, match="cpu, cuda or cuda:N"):
        resolve_device(bad)


@no_cuda
@pytest.mark.parametrize("command", [["estimate", "--target", "id:5"], ["ground-truth", "--exact", "--out", "gt.st"]])
def test_cuda_without_a_gpu_is_a_clear_error_before_anything_loads(command, monkeypatch, capsys, tmp_path):
    with pytest.raises(LowprobError, match="no CUDA GPU"):
        lowprob.load_model("a/directory/that/does/not/exist", device="cuda")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *command, "--model", "gelu-1l", "--dist", "hex", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written


@needs_cuda
@pytest.mark.parametrize("method", methods_for("logits"))
def test_every_estimator_gives_the_cpu_answer_on_a_gpu(method):
    """Same seed, same draws (they are made on the CPU); only float rounding in the model differs."""
    cpu = Transformer(TINY, seed=0).eval()
    gpu = Transformer(TINY, seed=0).eval().to("cuda")
    dist = tiny_distribution("tiny-zipf", TINY.d_vocab)
    exact = lowprob.ground_truth(cpu, dist, exact=True).probabilities
    target = int(torch.where((exact > 1e-3) & (exact < 5e-2))[0][0])
    events = [ArgmaxIs(target)] + ([InTopK(target, 2)] if method not in ("qld", "gld") else [])
    for event in events:
        a = lowprob.estimate(cpu, dist, event, method=method, budget=256, seed=1)
        b = lowprob.estimate(gpu, dist, event, method=method, budget=256, seed=1)
        assert b.probability == pytest.approx(a.probability, rel=1e-3, abs=1e-12), (method, event)


@needs_cuda
def test_ground_truth_on_a_gpu_equals_the_cpu_tables():
    cpu = Transformer(TINY, seed=0).eval()
    dist = tiny_distribution("tiny-constants", TINY.d_vocab)
    here = lowprob.ground_truth(cpu, dist, exact=True).probabilities
    there = lowprob.ground_truth(cpu.to("cuda"), dist, exact=True).probabilities
    assert torch.allclose(here, there, rtol=0, atol=1e-12)
