#!/usr/bin/env bash
# The btrfs driver side by side with overlay2 in one run (issue 6), both strata, both on
# this machine's ext4 (btrfs through its loop-backed pool):
#   - container create (hyperfine, one `strata create` per run);
#   - first write to a 500 MB file of the image: one byte written in place in a fresh
#     container, timed in-process around open+pwrite+close (overlay2 copies the whole file
#     up, btrfs copies one block);
#   - commit of a container that wrote 10 x 1 MiB into an image of 20,000 files (hyperfine,
#     a fresh container each run).
# Usage: bash bench/btrfs.sh [RUNS]   (root; installs hyperfine and btrfs-progs)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
bash scripts/deps.sh
cargo build --release --locked -q
BIN="$PWD/target/release/strata"
BENCH=${BENCH:-/var/tmp/strata-bench-btrfs}
OUT="$BENCH/results"
mkdir -p "$BENCH" "$OUT"
for d in overlay2 btrfs; do
    "$BIN" --root "$BENCH/$d" system reset -f >/dev/null 2>&1 || true
done
rm -rf "$BENCH/overlay2" "$BENCH/btrfs" "$BENCH/stage"
mkdir -p "$BENCH/stage"

# The image: busybox, one 500 MB file of incompressible data, and 20,000 small files in
# 200 directories (so a diff that compared whole trees would show in commit's time).
if [ ! -f "$BENCH/big.tar" ]; then
    r="$BENCH/rootfs"; rm -rf "$r"; mkdir -p "$r/bin"
    cp /bin/busybox "$r/bin/"; ln -s busybox "$r/bin/sh"; ln -s busybox "$r/bin/true"
    head -c 500000000 /dev/urandom > "$r/big"
    python3 -c '
import os, sys
for d in range(200):
    p = f"{sys.argv[1]}/usr/share/d{d}"
    os.makedirs(p)
    for f in range(100):
        with open(f"{p}/f{f}", "w") as fh:
            fh.write(f"{d}/{f}\n" * 20)' "$r"
    tar -C "$r" -cf "$BENCH/big.tar" .
    rm -rf "$r"
fi
S() { "$BIN" --root "$BENCH/$1" --storage-driver "$1" "${@:2}"; }
for d in overlay2 btrfs; do S "$d" import "$BENCH/big.tar" big:1 >/dev/null; done
export -f S; export BIN BENCH

# 1. create
hyperfine --style basic --runs "$RUNS" --warmup 3 --export-json "$OUT/create.json" \
    -n overlay2 "$BIN --root $BENCH/overlay2 create big:1 true" \
    -n btrfs "$BIN --root $BENCH/btrfs create big:1 true"

# 2. first write to the 500 MB file, in a fresh mounted container each time
first_write() { # driver
    local times=()
    for i in $(seq "$RUNS"); do
        local m; m=$(S "$1" mount "$(S "$1" create big:1 true)")
        sync
        times+=("$(python3 -c '
import os, sys, time
t = time.perf_counter()
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"!", 4096 * 1000)
os.close(fd)
print(time.perf_counter() - t)' "$m/big")")
    done
    printf '%s\n' "${times[@]}" | python3 -c '
import statistics, sys
t = sorted(float(x) for x in sys.stdin)
print(f"{sys.argv[1]}: median {statistics.median(t)*1000:.3f} ms, min {t[0]*1000:.3f} ms, max {t[-1]*1000:.3f} ms ({len(t)} runs)")' "$1"
}
{ echo "first write to a 500 MB image file (one byte, in place):"; first_write overlay2; first_write btrfs; } | tee "$OUT/first-write.txt"
for d in overlay2 btrfs; do
    S "$d" ps -aq --no-trunc | xargs -r -n 100 "$BIN" --root "$BENCH/$d" rm -f >/dev/null
done

# 3. commit of 10 MiB of new files. The previous container is renamed aside, not removed:
# btrfs deletes subvolumes (and discards their extents) in the background, and a timed run
# right after a removal would measure that cleanup (as bench/containers.sh does for ext4).
prep() { # driver
    echo "d=$BENCH/stage/\$(date +%s%N); mkdir -p \$d/new; for i in \$(seq 10); do head -c 1048576 /dev/urandom > \$d/new/f\$i; done;
      $BIN --root $BENCH/$1 rename c old-\$(date +%s%N) >/dev/null 2>&1; $BIN --root $BENCH/$1 create --name c big:1 true >/dev/null;
      $BIN --root $BENCH/$1 cp \$d/new c:/ ; sync"
}
hyperfine --style basic --runs "$RUNS" --export-json "$OUT/commit.json" \
    --prepare "$(prep overlay2)" -n overlay2 "$BIN --root $BENCH/overlay2 commit c" \
    --prepare "$(prep btrfs)" -n btrfs "$BIN --root $BENCH/btrfs commit c"

python3 - "$OUT" <<'EOF'
import json, statistics, sys
for name in ["create", "commit"]:
    with open(f"{sys.argv[1]}/{name}.json") as f:
        rs = json.load(f)["results"]
    med = {r["command"]: statistics.median(r["times"]) for r in rs}
    print(f"\n**{name}** ({len(rs[0]['times'])} runs)\n")
    print("| driver | median ms | min ms | max ms | btrfs / this |")
    print("|---|---:|---:|---:|---:|")
    for r in rs:
        m = med[r["command"]]
        print(f"| {r['command']} | {m*1000:.1f} | {min(r['times'])*1000:.1f} | {max(r['times'])*1000:.1f} | {med['btrfs']/m:.2f}x |")
EOF
cat "$OUT/first-write.txt"
for d in overlay2 btrfs; do S "$d" system reset -f >/dev/null; done
rm -rf "$BENCH/stage"
