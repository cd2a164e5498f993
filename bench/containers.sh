#!/usr/bin/env bash
# Container benchmarks, strata side by side with docker and podman in one run:
#   create of 100 containers (time, and disk per container), `ps -a -s` with 100 and 1000
#   containers, and commit of a container that wrote 10 x 1 MiB and modified a 1 MiB image
#   file, and of one that wrote 1000 small files. Medians of hyperfine runs.
# Usage: bash bench/containers.sh [RUNS] [SECTIONS]   (needs root; run after bench/images.sh
#   made the rootfs tarball). SECTIONS: any of create,ps,commit (default all).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
SECTIONS=${2:-create,ps,commit}
run_section() { [[ ",$SECTIONS," == *",$1,"* ]]; }
source bench/peers.sh
cargo build --release --locked -q
S="$PWD/target/release/strata --root $BENCH/strata-ctr"
TAR="$BENCH/rootfs.tar"
[ -f "$TAR" ] || { echo "run bench/images.sh first (it makes $TAR)"; exit 1; }
OUT="$BENCH/results"
mkdir -p "$OUT"
hf() { hyperfine --style basic --export-json "$OUT/$1.json" "${@:2}"; }
settle="sync; echo 3 > /proc/sys/vm/drop_caches"
for e in "$S" "$DOCKER" "$PODMAN"; do
    $e image inspect ctr:1 >/dev/null 2>&1 || $e import "$TAR" ctr:1 >/dev/null
done
rm_all() { # removes every container of engine $1
    local ids; ids=$($1 ps -a -q)
    [ -z "$ids" ] || echo "$ids" | xargs -n 200 $1 rm -f >/dev/null
}
export -f rm_all

# create x100 (each run starts with no containers); then disk per container
creates() { echo "for i in \$(seq 100); do $1 create ctr:1 sh >/dev/null; done"; }
if run_section create; then
hf create-100 --runs "$RUNS" \
    --prepare "bash -c 'rm_all \"$S\"'; $settle" -n strata "$(creates "$S")" \
    --prepare "bash -c 'rm_all \"$DOCKER\"'; $settle" -n docker "$(creates "$DOCKER")" \
    --prepare "bash -c 'rm_all \"$PODMAN\"'; $settle" -n podman "$(creates "$PODMAN")"
{
    echo "disk per created container (KiB, du of the engine's root, metadata included):"
    for pair in "strata:$S:$BENCH/strata-ctr" "docker:$DOCKER:$BENCH/docker" "podman:$PODMAN:$BENCH/podman"; do
        IFS=: read -r name cmd root <<<"$pair"
        rm_all "$cmd"; sync; before=$(du -sk "$root" | cut -f1)
        for i in $(seq 100); do $cmd create ctr:1 sh >/dev/null; done
        sync; after=$(du -sk "$root" | cut -f1)
        echo "  $name: $(( (after - before) / 100 ))"
    done
} | tee "$OUT/disk-per-container.txt"
fi

# ps -a -s with 100 and 1000 containers
if run_section ps; then
for e in "$S" "$DOCKER" "$PODMAN"; do
    rm_all "$e"
    for i in $(seq 100); do $e create ctr:1 sh >/dev/null; done
done
hf ps-100 --runs 10 --warmup 2 -n strata "$S ps -a -s" -n docker "$DOCKER ps -a -s" -n podman "$PODMAN ps -a -s"
for e in "$S" "$DOCKER" "$PODMAN"; do
    for i in $(seq 900); do $e create ctr:1 sh >/dev/null; done
done
hf ps-1000 --runs 10 --warmup 2 -n strata "$S ps -a -s" -n docker "$DOCKER ps -a -s" -n podman "$PODMAN ps -a -s"
for e in "$S" "$DOCKER" "$PODMAN"; do rm_all "$e"; done
fi

# commit: a fresh container with fresh random content before every run. A commit follows
# the writes it captures, so caches stay warm (sync only); earlier containers are renamed
# aside, not removed, so no run follows a large delete (see bench/images.sh on ext4).
MOD=usr/share/perl/5.36.0/unicore/Name.pl
aside() { echo "$1 rename $2 old-\$(date +%s%N) >/dev/null 2>&1"; }
# Staging directories are new every run and deleted only after the section, for the same
# reason.
prep_big() { # engine
    echo "$(aside "$1" c-big); d=$BENCH/stage/\$(date +%s%N); mkdir -p \$d/new \$d/mod;
      for i in \$(seq 10); do head -c 1048576 /dev/urandom > \$d/new/f\$i; done;
      cp $BENCH/rootfs/$MOD \$d/mod/Name.pl; head -c 16 /dev/urandom | dd of=\$d/mod/Name.pl bs=1 seek=100 conv=notrunc 2>/dev/null;
      $1 create --name c-big ctr:1 sh >/dev/null; $1 cp \$d/new c-big:/ ; $1 cp \$d/mod/Name.pl c-big:/$MOD; sync"
}
prep_small() {
    echo "$(aside "$1" c-small); d=$BENCH/stage/\$(date +%s%N); mkdir -p \$d/many;
      n=\$(date +%s%N); for i in \$(seq 1000); do echo \$n-\$i > \$d/many/f\$i; done;
      $1 create --name c-small ctr:1 sh >/dev/null; $1 cp \$d/many c-small:/ ; sync"
}
if run_section commit; then
hf commit-10x1MiB --runs "$RUNS" \
    --prepare "$(prep_big "$S")" -n strata "$S commit c-big c-big:1" \
    --prepare "$(prep_big "$DOCKER")" -n docker "$DOCKER commit c-big c-big:1" \
    --prepare "$(prep_big "$PODMAN")" -n podman "$PODMAN commit c-big c-big:1"
hf commit-1000-files --runs "$RUNS" \
    --prepare "$(prep_small "$S")" -n strata "$S commit c-small c-small:1" \
    --prepare "$(prep_small "$DOCKER")" -n docker "$DOCKER commit c-small c-small:1" \
    --prepare "$(prep_small "$PODMAN")" -n podman "$PODMAN commit c-small c-small:1"
for e in "$S" "$DOCKER" "$PODMAN"; do rm_all "$e"; $e image prune -f >/dev/null 2>&1 || true; done
rm -rf "$BENCH/stage"
fi

names=()
run_section create && names+=(create-100)
run_section ps && names+=(ps-100 ps-1000)
run_section commit && names+=(commit-10x1MiB commit-1000-files)
python3 bench/summarize.py "$OUT" "${names[@]}" | tee "$OUT/containers-summary-$SECTIONS.md"
if run_section create; then cat "$OUT/disk-per-container.txt"; fi
