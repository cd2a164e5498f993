#!/usr/bin/env python3
"""Times commands in rounds: each round runs every command once, in turn.

On a small machine, background work (a daemon's housekeeping, deferred block discards)
comes and goes over seconds; timed one command after another, as hyperfine does, it lands
on whichever command runs then. Interleaved, every command meets the same conditions.

Usage: interleave.py OUT.json RUNS WARMUP NAME COMMAND [NAME COMMAND ...]
Writes hyperfine's JSON shape (results: command, times, mean), read by summarize.py.
"""
import json
import shlex
import statistics
import subprocess
import sys
import time

out, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = sys.argv[4:]
if len(pairs) % 2 or not pairs:
    sys.exit(__doc__)
commands = [(pairs[i], shlex.split(pairs[i + 1])) for i in range(0, len(pairs), 2)]
times = {name: [] for name, _ in commands}
for round_no in range(warmup + runs):
    for name, argv in commands:
        start = time.perf_counter()
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{name} failed ({done.returncode}): {done.stderr.decode().strip()}")
        if round_no >= warmup:
            times[name].append(elapsed)
results = [{"command": name, "times": t, "mean": statistics.mean(t)} for name, t in times.items()]
with open(out, "w") as f:
    json.dump({"results": results}, f)
for r in results:
    print(f"{r['command']}: median {statistics.median(r['times']) * 1000:.1f} ms")
