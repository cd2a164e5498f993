#!/usr/bin/env bash
# The devicemapper driver's userspace thin pool beside a plain file and a qcow2 image
# (qemu-storage-daemon's FUSE export), all as loop devices with ext4 (issue 7): snapshot
# creation, fio sequential and random I/O, random overwrites of a fresh snapshot; then
# container create on devicemapper beside overlay2. See bench/devicemapper.py.
# Usage: bash bench/devicemapper.sh [RUNS]   (root; installs fio, qemu-utils and hyperfine)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
command -v fio >/dev/null || apt-get install -y -qq fio >/dev/null
command -v qemu-storage-daemon >/dev/null || apt-get install -y -qq qemu-utils >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
bash scripts/deps.sh
cargo build --release --locked -q
BENCH=${BENCH:-/var/tmp/strata-bench-dm}
mkdir -p "$BENCH"
python3 bench/devicemapper.py "$BENCH" "$PWD/target/release/strata-thinpool" "$RUNS"

# Container create: one `strata create` per run on an imported busybox image.
BIN="$PWD/target/release/strata"
if [ ! -f "$BENCH/busybox.tar" ]; then
    r="$BENCH/rootfs"; rm -rf "$r"; mkdir -p "$r/bin"
    cp /bin/busybox "$r/bin/"; ln -s busybox "$r/bin/sh"; ln -s busybox "$r/bin/true"
    tar -C "$r" -cf "$BENCH/busybox.tar" . && rm -rf "$r"
fi
for d in overlay2 devicemapper; do
    "$BIN" --root "$BENCH/$d" system reset -f >/dev/null 2>&1 || true
    rm -rf "${BENCH:?}/$d"
    "$BIN" --root "$BENCH/$d" --storage-driver "$d" import "$BENCH/busybox.tar" bb:1 >/dev/null
done
hyperfine --style basic --runs $((RUNS * 10)) --warmup 3 \
    -n overlay2 "$BIN --root $BENCH/overlay2 create bb:1 true" \
    -n devicemapper "$BIN --root $BENCH/devicemapper create bb:1 true"
for d in overlay2 devicemapper; do "$BIN" --root "$BENCH/$d" system reset -f >/dev/null; done
