#!/usr/bin/env bash
# strata-aufs (the aufs driver's union filesystem) beside fuse-overlayfs and kernel
# overlayfs, on the same layers in one run (issue 8): sequential write and read, copy-up,
# readdir and lookup at 1/10/100 layers, untar and find of a rootfs. See bench/aufs.py.
# Usage: [ONLY=TEXT] bash bench/aufs.sh [RUNS]   (root; installs fuse-overlayfs and
# debootstrap; ONLY runs just the rows whose name contains TEXT)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
command -v fuse-overlayfs >/dev/null || apt-get install -y -qq fuse-overlayfs >/dev/null
bash scripts/deps.sh
cargo build --release --locked -q -p strata-aufs
BENCH=${BENCH:-/var/tmp/strata-bench-aufs}
mkdir -p "$BENCH"
# The rootfs: a debootstrap minbase (about 230 MB unpacked), made once.
if [ ! -f "$BENCH/rootfs.tar" ]; then
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    rm -rf "$BENCH/rootfs"
    debootstrap --variant=minbase bookworm "$BENCH/rootfs" >/dev/null
    tar -C "$BENCH/rootfs" -cf "$BENCH/rootfs.tar" .
    rm -rf "$BENCH/rootfs"
fi
python3 bench/aufs.py "$BENCH" "$PWD/target/release/strata-aufs" "$BENCH/rootfs.tar" "$RUNS" "${AUFS_OPTS:-}"
