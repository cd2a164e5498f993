#!/usr/bin/env python3
"""Prints hyperfine results as a markdown table: median, min, max and ratio to strata."""
import json
import statistics
import sys

out_dir, names = sys.argv[1], sys.argv[2:]
for name in names:
    with open(f"{out_dir}/{name}.json") as f:
        results = json.load(f)["results"]
    medians = {r["command"]: statistics.median(r["times"]) for r in results}
    base = medians.get("strata")
    print(f"\n**{name}** ({len(results[0]['times'])} runs)\n")
    print("| command | median s | min s | max s | strata / this |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        m = medians[r["command"]]
        ratio = f"{base / m:.2f}x" if base and m else "-"
        print(f"| {r['command']} | {m:.3f} | {min(r['times']):.3f} | {max(r['times']):.3f} | {ratio} |")
