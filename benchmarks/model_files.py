"""Shipped model files: size on disk and load time (checksums included), per model.

Run: python benchmarks/model_files.py
Load time is measured in this process after the imports (median of 5 loads), and once in a fresh
interpreter (``python -c 'import lowprob; lowprob.load_model(...)'``) so the import cost is visible too.
"""

import argparse
import statistics
import subprocess
import sys
import time

from lowprob import load_model
from lowprob.models.zoo import FILES, SHIPPED_CONFIGS, shipped_dir


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    total = 0
    print(f"{'model':<9} {'files (bytes)':>14} {'load (ms, median of 5)':>24} {'fresh process (s)':>18}")
    for name in SHIPPED_CONFIGS:
        size = sum((shipped_dir(name) / f).stat().st_size for f in FILES)
        total += size
        times = []
        for _ in range(5):
            t = time.perf_counter()
            load_model(name)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import lowprob; lowprob.load_model({name!r})"], check=True)
        fresh = time.perf_counter() - t
        print(f"{name:<9} {size:>14,} {1000 * statistics.median(times):>24.1f} {fresh:>18.2f}")
    print(f"total shipped model files: {total / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
