#!/usr/bin/env bash
# Volumes (issue 5), strata side by side with docker and podman in one run: a container
# writing 1 GiB (dd, conv=fsync) to a named volume, and the same write to its writable
# layer, each a whole `run --rm`; plus the same dd on the host filesystem as the floor.
# Usage: bash bench/volumes.sh [RUNS]   (root; installs docker.io, podman, hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
source bench/peers.sh
cargo build --release --locked -q
S="$PWD/target/release/strata --root $BENCH/strata-vol"
OUT="$BENCH/results"
mkdir -p "$OUT" "$BENCH/host"
import_busybox "$S" "$DOCKER" "$PODMAN"
for e in "$S" "$DOCKER" "$PODMAN"; do
    $e volume inspect benchvol >/dev/null 2>&1 || $e volume create benchvol >/dev/null
done
dd="dd if=/dev/zero bs=1M count=1024 conv=fsync"
# Writable-layer runs are named containers, removed before the next run: a `--rm`
# container's layer is mounted `volatile` by strata and podman, where fsync does nothing.
wl() { echo "sync; $1 rm -f wl >/dev/null 2>&1 || true"; }
hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json "$OUT/volume-write.json" \
    --prepare sync -n "host filesystem" "$dd of=$BENCH/host/f" \
    --prepare sync -n "strata volume" "$S run --rm -v benchvol:/v bb:1 $dd of=/v/f" \
    --prepare sync -n "docker volume" "$DOCKER run --rm --network none -v benchvol:/v bb:1 $dd of=/v/f" \
    --prepare sync -n "podman volume" "$PODMAN run --rm --network none -v benchvol:/v bb:1 $dd of=/v/f" \
    --prepare "$(wl "$S")" -n "strata writable layer" "$S run --name wl bb:1 $dd of=/f" \
    --prepare "$(wl "$DOCKER")" -n "docker writable layer" "$DOCKER run --name wl --network none bb:1 $dd of=/f" \
    --prepare "$(wl "$PODMAN")" -n "podman writable layer" "$PODMAN run --name wl --network none bb:1 $dd of=/f"
python3 - "$OUT/volume-write.json" <<'EOF'
import json, statistics, sys
rs = json.load(open(sys.argv[1]))["results"]
med = {r["command"]: statistics.median(r["times"]) for r in rs}
host = med["host filesystem"]
print(f"\n**1 GiB write, conv=fsync** ({len(rs[0]['times'])} runs)\n")
print("| what | median s | min s | max s | MiB/s | / host |")
print("|---|---:|---:|---:|---:|---:|")
for r in rs:
    m = med[r["command"]]
    print(f"| {r['command']} | {m:.2f} | {min(r['times']):.2f} | {max(r['times']):.2f} | {1024 / m:.0f} | {m / host:.2f}x |")
EOF
rm -f "$BENCH/host/f"
for e in "$S" "$DOCKER" "$PODMAN"; do $e rm -f wl >/dev/null 2>&1 || true; done
$S volume rm benchvol >/dev/null; $DOCKER volume rm benchvol >/dev/null; $PODMAN volume rm benchvol >/dev/null
