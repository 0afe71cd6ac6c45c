"""Wall time of one estimate on a GPT-2-small-sized random Hugging Face model (the adapter's cost).

Run: python benchmarks/hf_timing.py [--budget 1024] [--method itgis] [--device cpu] [--threads 1]

Builds a randomly initialised 12-layer GPT-2 (d_model 768, 50,257 tokens, 124M parameters) in
memory — nothing is downloaded — wraps it with ``lowprob.models.from_hugging_face`` and times one
``lowprob.estimate`` on 8 positions of 1,000 tokens each, against a target the model sometimes
produces. Prints seconds, model calls and FLOPs.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--method", default="itgis")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import os

    os.environ["LOWPROB_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    import transformers

    import lowprob
    from lowprob.models import from_hugging_face

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).to(args.device)
    model = from_hugging_face(hf, name="gpt2-small-random")
    ids = torch.arange(1000, 2000)
    dist = lowprob.TokenDistribution.from_positions([(ids, torch.full((1000,), 1e-3))] * 8, name="8x1000")
    with torch.no_grad():
        target = int(model.logits(dist.sample(64, torch.Generator().manual_seed(0)).to(args.device)).argmax(-1)[0])
    start = time.perf_counter()
    est = lowprob.estimate(model, dist, lowprob.ArgmaxIs(target), method=args.method, budget=args.budget)
    wall = time.perf_counter() - start
    params = sum(p.numel() for p in hf.parameters())
    print(f"GPT-2-small-sized random model ({params / 1e6:.0f}M parameters), {args.method}, budget {args.budget}, "
          f"{args.threads} thread(s), {args.device}: {wall:.1f} s wall; P = {est.probability:.3g} "
          f"{est.interval}; {est.cost.forward_passes} forward + {est.cost.backward_passes} backward passes, "
          f"{est.cost.flops:.3g} FLOPs ({est.cost.flops / wall / 1e9:.1f} GFLOP/s)")


if __name__ == "__main__":
    main()
