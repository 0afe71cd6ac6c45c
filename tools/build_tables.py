"""Build the frequency tables behind the paper distributions (run once; the result is shipped).

``python tools/build_tables.py [--corpus DIR]`` rewrites ``src/lowprob/distributions/data/tables.safetensors``
(a build step, so it lives outside the runtime package; it writes atomically):
- ``counts_{code,english,spanish}``: unigram counts of every token over each kind's training split;
- ``hex_weights``: how often each token appears when uniformly random hex text is tokenised. This is
  the empirical version of the paper's Markov-chain approximation: it is exactly the frequency with
  which our tokenizer emits each hex token on random hex, boundary effects included.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from lowprob.files import atomic_path, prepare_output
from lowprob.models.tokenizer import Tokenizer
from lowprob.models.zoo import shipped_tokenizer_path
from lowprob.training.corpus import KINDS, build_corpus, manifest_summary

HEX_CHARS = 1 << 22
HEX_CHUNK = 1 << 12
HEX_SEED = 0


def hex_token_frequencies(tokenizer: Tokenizer, n_chars: int = HEX_CHARS, seed: int = HEX_SEED) -> np.ndarray:
    """Token frequencies over ``n_chars`` of uniformly random hex text, tokenised in 4 KiB chunks."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = alphabet[rng.integers(0, 16, size=n_chars)].tobytes().decode()
    chunks = [text[i:i + HEX_CHUNK] for i in range(0, n_chars, HEX_CHUNK)]
    ids = np.concatenate([np.asarray(e) for e in tokenizer.encode_batch(chunks)])
    counts = np.bincount(ids, minlength=tokenizer.vocab_size).astype(np.float64)
    return counts / counts.sum()


def build_tables(corpus: Path, tokenizer: Tokenizer, out: Path) -> dict:
    from lowprob.training.train import corpus_tokens

    arrays = {f"counts_{k}": np.bincount(corpus_tokens(corpus, tokenizer, k, "train"),
                                          minlength=tokenizer.vocab_size).astype(np.int64) for k in KINDS}
    arrays["hex_weights"] = hex_token_frequencies(tokenizer)
    meta = {"tokenizer_vocab_sha256": tokenizer.vocab_sha256(),
            "corpus_outputs": json.dumps(manifest_summary(corpus)["outputs"]),
            "hex": json.dumps({"chars": HEX_CHARS, "chunk": HEX_CHUNK, "seed": HEX_SEED})}
    with atomic_path(prepare_output(out)) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
    return meta


def main() -> None:
    from lowprob.distributions.paper import tables_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="corpus cache directory")
    parser.add_argument("--debs", type=Path, default=None, help="directory of the pinned .deb files")
    args = parser.parse_args()
    corpus = build_corpus(args.corpus, args.debs)
    print(build_tables(corpus, Tokenizer.from_file(shipped_tokenizer_path()), tables_path()))


if __name__ == "__main__":
    main()
