"""Per decade of p: zeros / median |log10 q/p| (a zero at 1e-12) / > 2 decades low / > 2 decades high / covered,
for row files named on the command line as LABEL=PATH, on the targets every file has.

Run: python table.py "before=a.jsonl" "kept=b.jsonl"
"""

import json
import math
import statistics
import sys

sets: dict[str, list[dict]] = {}
for arg in sys.argv[1:]:
    label, path = arg.split("=", 1)
    with open(path) as f:
        sets[label] = [json.loads(line) for line in f]
common = set.intersection(*({(r["model"], r["dist"], r["target"]) for r in rows} for rows in sets.values()))
decades = sorted({math.floor(math.log10(r["p"])) for rows in sets.values() for r in rows})
print("| decade | n | " + " | ".join(sets) + " |")
for d in [*decades, None]:
    cells, n = [], 0
    for rows in sets.values():
        sel = [r for r in rows if (r["model"], r["dist"], r["target"]) in common
               and (d is None or math.floor(math.log10(r["p"])) == d)]
        n = len(sel)
        err = [math.log10(max(r["probability"], 1e-12) / r["p"]) for r in sel]
        cover = sum(r["interval"][0] <= r["p"] <= r["interval"][1] for r in sel)
        cells.append(f"{sum(r['probability'] == 0 for r in sel)} / {statistics.median(map(abs, err)):.2f} / "
                     f"{sum(e < -2 for e in err)} / {sum(e > 2 for e in err)} / {cover / n:.0%}")
    print(f"| {d} | {n} | " + " | ".join(cells) + " |")
