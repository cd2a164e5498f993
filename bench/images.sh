#!/usr/bin/env bash
# Image benchmarks, strata side by side with docker and podman in one run:
#   import of a debootstrap rootfs tarball, save (vs `tar -cf` of the same tree), load.
# Medians of hyperfine runs; every run starts from a store without the image.
# Usage: bash bench/images.sh [RUNS]   (needs root; results appended to bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-7}
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
# Before each run an engine loses only its own image. ext4 allocates inodes slowly for a
# while after a large delete (GNU tar -xf: 0.48 s normally, up to 2.9 s right after an
# rm -rf of the same tree, measured here), so caches are dropped after the removal.
settle="sync; echo 3 > /proc/sys/vm/drop_caches"
rm_strata="$S rmi -f bench:import >/dev/null 2>&1 || true; $settle"
rm_docker="$DOCKER rmi -f bench:import >/dev/null 2>&1 || true; $settle"
rm_podman="$PODMAN rmi -f bench:import >/dev/null 2>&1 || true; $settle"

# import
hf import \
    --prepare "$rm_strata" -n strata "$S import $TAR bench:import" \
    --prepare "$rm_docker" -n docker "$DOCKER import $TAR bench:import" \
    --prepare "$rm_podman" -n podman "$PODMAN import $TAR bench:import"

# save (the imported image), against tar -cf of the same tree
$S image inspect bench:import >/dev/null 2>&1 || $S import "$TAR" bench:import >/dev/null
$DOCKER image inspect bench:import >/dev/null 2>&1 || $DOCKER import "$TAR" bench:import >/dev/null
$PODMAN image inspect bench:import >/dev/null 2>&1 || $PODMAN import "$TAR" bench:import >/dev/null
hf save \
    --prepare "rm -f $BENCH/save-*.tar; $settle" \
    -n strata "$S save -o $BENCH/save-strata.tar bench:import" \
    -n docker "$DOCKER save -o $BENCH/save-docker.tar bench:import" \
    -n podman "$PODMAN save -o $BENCH/save-podman.tar bench:import" \
    -n "tar -cf" "tar -C $ROOTFS -cf $BENCH/save-tar.tar ."

# load: the same docker-saved archive into each engine, image absent before every run
$DOCKER save -o "$BENCH/load-input.tar" bench:import
hf load \
    --prepare "$rm_strata" -n strata "$S load -i $BENCH/load-input.tar" \
    --prepare "$rm_docker" -n docker "$DOCKER load -i $BENCH/load-input.tar" \
    --prepare "$rm_podman" -n podman "$PODMAN load -i $BENCH/load-input.tar"

python3 bench/summarize.py "$OUT" import save load | tee "$OUT/summary.md"
