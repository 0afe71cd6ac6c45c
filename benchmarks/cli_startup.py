"""How long the ``lowprob`` command takes to answer before any work, next to importing torch.

Run: python benchmarks/cli_startup.py [--reps 5]

Prints the median wall time of each command over ``--reps`` runs, measured in the same run as
``python -c "import torch"``, and the ratio to it. ``--help`` and argument errors must not import
torch (tests/test_new_user.py checks that; this script shows what it is worth).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "lowprob --help": ["lowprob", "--help"],
    "lowprob estimate --help": ["lowprob", "estimate", "--help"],
    "lowprob estimate ... --method magic (an argument error)":
        ["lowprob", "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "8", "--method", "magic"],
    "lowprob estimate ... --budget 0 (an argument error)":
        ["lowprob", "estimate", "--model", "gelu-1l", "--dist", "hex", "--target", "8", "--budget", "0"],
}


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("lowprob") is None:
        sys.exit("the lowprob command is not on PATH: activate the environment it is installed in")
    times = {name: statistics.median(wall(cmd) for _ in range(args.reps)) for name, cmd in COMMANDS.items()}
    torch_time = times['python -c "import torch"']
    print(f"| command | median wall time (s), {args.reps} runs | vs importing torch |")
    print("|---|---|---|")
    for name, t in times.items():
        print(f"| `{name}` | {t:.3f} | {t / torch_time:.2f}x |")


if __name__ == "__main__":
    main()
