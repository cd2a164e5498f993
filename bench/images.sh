#!/usr/bin/env bash
# Image benchmarks, strata side by side with docker and podman in one run:
#   import of a debootstrap rootfs tarball, save (vs `tar -cf` of the same tree), load.
# Medians of hyperfine runs; every run starts from a store without the image.
# Usage: bash bench/images.sh [RUNS]   (needs root; results appended to bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
source bench/peers.sh
cargo build --release --locked -q
S="$PWD/target/release/strata --root $BENCH/strata"
ROOTFS="$BENCH/rootfs"
if [ ! -x "$ROOTFS/bin/sh" ]; then
    debootstrap --variant=minbase --include=python3-minimal,perl,ca-certificates bookworm "$ROOTFS" http://deb.debian.org/debian >"$BENCH/debootstrap.log"
fi
TAR="$BENCH/rootfs.tar"
[ -f "$TAR" ] || tar -C "$ROOTFS" --numeric-owner -cf "$TAR" .
echo "rootfs tarball: $(du -m "$TAR" | cut -f1) MB, $(tar -tf "$TAR" | wc -l) entries"
OUT="$BENCH/results"
mkdir -p "$OUT"
hf() { hyperfine --style basic --runs "$RUNS" --export-json "$OUT/$1.json" "${@:2}"; }

# import
hf import \
    --prepare "$S rmi -f bench:import >/dev/null 2>&1 || true; $DOCKER rmi -f bench:import >/dev/null 2>&1 || true; $PODMAN rmi -f bench:import >/dev/null 2>&1 || true; sync" \
    -n strata "$S import $TAR bench:import" \
    -n docker "$DOCKER import $TAR bench:import" \
    -n podman "$PODMAN import $TAR bench:import"

# save (the imported image), against tar -cf of the same tree
rm -f "$BENCH"/save-*.tar
hf save \
    --prepare "rm -f $BENCH/save-*.tar; sync" \
    -n strata "$S save -o $BENCH/save-strata.tar bench:import" \
    -n docker "$DOCKER save -o $BENCH/save-docker.tar bench:import" \
    -n podman "$PODMAN save -o $BENCH/save-podman.tar bench:import" \
    -n "tar -cf" "tar -C $ROOTFS -cf $BENCH/save-tar.tar ."

# load: the same docker-saved archive into each engine, image absent before every run
$DOCKER save -o "$BENCH/load-input.tar" bench:import
hf load \
    --prepare "$S rmi -f bench:import >/dev/null 2>&1 || true; $DOCKER rmi -f bench:import >/dev/null 2>&1 || true; $PODMAN rmi -f bench:import >/dev/null 2>&1 || true; sync" \
    -n strata "$S load -i $BENCH/load-input.tar" \
    -n docker "$DOCKER load -i $BENCH/load-input.tar" \
    -n podman "$PODMAN load -i $BENCH/load-input.tar"

python3 bench/summarize.py "$OUT" import save load | tee "$OUT/summary.md"
