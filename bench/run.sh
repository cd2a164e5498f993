#!/usr/bin/env bash
# Exec driver benchmarks, strata side by side with docker, podman and bare runc in one run:
#   `run --rm --network none IMAGE true` (strata native, strata --runtime runc, docker,
#   podman, and `runc run` on a prepared bundle: the bare-runtime floor), then 100 detached
#   `sleep` containers: total start time and memory per running container (the RSS of each
#   engine's per-container process: strata-shim, containerd-shim-runc-v2, conmon).
# Usage: bash bench/run.sh [RUNS]   (needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
source bench/peers.sh
cargo build --release --locked -q
S="$PWD/target/release/strata --root $BENCH/strata-run"
OUT="$BENCH/results"
mkdir -p "$OUT"

# The busybox image in every engine (bench/peers.sh), and a runc bundle of its rootfs.
import_busybox "$S" "$DOCKER" "$PODMAN"
ROOTFS="$BUSYBOX_ROOTFS"
BUNDLE="$BENCH/runc-bundle"
if [ ! -f "$BUNDLE/config.json" ]; then
    mkdir -p "$BUNDLE"
    (cd "$BUNDLE" && runc spec && ROOTFS="$ROOTFS" python3 - <<'PY'
import json, os
s = json.load(open("config.json"))
s["process"]["terminal"] = False
s["process"]["args"] = ["true"]
s["root"] = {"path": os.environ["ROOTFS"], "readonly": False}
json.dump(s, open("config.json", "w"))
PY
    )
fi

# Interleaved rounds (bench/interleave.py): this machine's background noise drifts over
# seconds, and one command's block would meet a different machine than the next one's.
python3 bench/interleave.py "$OUT/run-rm.json" "$RUNS" 3 \
    strata "$S run --rm --network none bb:1 true" \
    "strata --runtime runc" "$S run --rm --network none --runtime runc bb:1 true" \
    docker "$DOCKER run --rm --network none bb:1 true" \
    podman "$PODMAN run --rm --network none bb:1 true" \
    "runc run (bare)" "runc --root $BENCH/runc run --bundle $BUNDLE bench-bare"

# 100 detached sleep containers per engine: start time in all, then per-container memory.
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print 0}'; }
rss_of() { # median RSS (KiB) of processes named $1
    ps -C "$1" -o rss= | median
}
pss_of() { # median PSS (KiB: shared pages divided among their users) of processes named $1
    for p in $(pgrep -x "$1"); do awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup"; done | median
}
{
    echo "100 detached sleep containers:"
    for pair in "strata:$S:strata-shim" "docker:$DOCKER:containerd-shim" "podman:$PODMAN:conmon"; do
        IFS=: read -r name cmd proc <<<"$pair"
        ids=$($cmd ps -a -q); [ -z "$ids" ] || echo "$ids" | xargs $cmd rm -f >/dev/null
        start=$(date +%s%N)
        for i in $(seq 100); do $cmd run -d --network none bb:1 sleep 3600 >/dev/null; done
        end=$(date +%s%N)
        # Settle before reading memory: strata's shims drop their start-up pages once their
        # container has run for 200 ms.
        sleep 1
        running=$($cmd ps -q | wc -l)
        echo "  $name: start x100 $(( (end - start) / 1000000 )) ms, running $running," \
            "per-container process ($proc) median RSS $(rss_of "$proc") KiB, PSS $(pss_of "$proc") KiB"
        $cmd ps -a -q | xargs $cmd rm -f >/dev/null
    done
} | tee "$OUT/run-100.txt"
python3 bench/summarize.py "$OUT" run-rm
