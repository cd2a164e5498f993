#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (as root: the tests
# mount overlayfs and bind mounts), then a check that no test left a mount behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ "$(id -u)" != 0 ]; then
    echo "the tests need root (they mount filesystems)" >&2
    exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The helper programs (strata-shim, strata-aufs, strata-thinpool) the tests run by path.
cargo build --workspace --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
leftover=$(findmnt -rn -o TARGET | grep -E 'strata-(suite|cli|aufs-test|aufs-posix|thinpool-test)-|/tmp/\.tmp' || true)
if [ -n "$leftover" ]; then
    echo "tests left mounts behind:" >&2
    echo "$leftover" >&2
    exit 1
fi
# Nor a loop device (the btrfs driver's pools, the tests' own btrfs filesystems).
loops=$(losetup -a | grep -E 'strata-(suite|cli|thinpool-test)-|/tmp/\.tmp' || true)
if [ -n "$loops" ]; then
    echo "tests left loop devices behind:" >&2
    echo "$loops" >&2
    exit 1
fi
# No container cgroup (v1 hierarchies or v2) nor shim may outlive the tests.
cgroups=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/strata/*' 2>/dev/null || true)
shims=$(pgrep -f '^strata-shim' || true)
# Nor a union or thin pool server (each exits when its mount goes).
sleep 1
servers=$( (pgrep -x strata-aufs; pgrep -x strata-thinpool) || true)
shims=$(printf '%s\n%s' "$shims" "$servers" | sed '/^$/d' | paste -sd, -)
if [ -n "$cgroups$shims" ]; then
    echo "tests left containers behind:" >&2
    echo "$cgroups" >&2
    [ -z "$shims" ] || ps -o pid,args -p "$shims" >&2
    exit 1
fi
