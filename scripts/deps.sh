#!/usr/bin/env bash
# Installs what strata's scripts need on a fresh Debian machine: a Rust toolchain is
# assumed (rustup's cargo); the rest comes from Debian's packages.
set -euo pipefail
need=()
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v python3 >/dev/null 2>&1 || need+=(python3)
grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null || true
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi
