"""How many distinct argmax tokens each shipped model produces on each distribution.

Run: python benchmarks/argmax_diversity.py [--samples 10000] [--length cpu]
A distribution whose argmax is nearly always one token leaves no rare targets to estimate; this
prints, per (model, distribution), the number of distinct argmax tokens over N samples, the share of
the most common one, and how many tokens were seen only once or twice (the rare tail).
"""

import argparse

import torch

from lowprob import load_distribution, load_model
from lowprob.distributions import PAPER_DISTRIBUTIONS
from lowprob.models.zoo import SHIPPED_CONFIGS


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--length", default="cpu")
    args = parser.parse_args()
    print(f"{'model':<9} {'distribution':<9} {'distinct':>8} {'top share':>9} {'seen 1-2x':>9}  top token")
    for name in SHIPPED_CONFIGS:
        model = load_model(name)
        for dist_name in PAPER_DISTRIBUTIONS:
            dist = load_distribution(dist_name, model, args.length)
            tokens = dist.sample(args.samples, torch.Generator().manual_seed(0))
            argmax = torch.cat([model.logits(chunk).argmax(-1) for chunk in tokens.split(2048)])
            counts = torch.bincount(argmax, minlength=model.d_vocab)
            top = int(counts.argmax())
            print(f"{name:<9} {dist_name:<9} {int((counts > 0).sum()):>8} {counts[top].item() / args.samples:>9.3f} "
                  f"{int(((counts > 0) & (counts <= 2)).sum()):>9}  {model.tokenizer.id_to_token(top)!r}")


if __name__ == "__main__":
    main()
