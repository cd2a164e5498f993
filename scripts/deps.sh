#!/usr/bin/env bash
# Installs what strata's scripts need on a fresh Debian machine: a Rust toolchain is
# assumed (rustup's cargo); the rest comes from Debian's packages.
set -euo pipefail
need=()
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The exec driver: libseccomp to build libcontainer, runc for `--runtime runc` (tested),
# ps for `top`, pkg-config to find libseccomp.
[ -e /usr/include/seccomp.h ] || need+=(libseccomp-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v ps >/dev/null 2>&1 || need+=(procps)
# `run --init` runs Debian's static tini as PID 1, as docker runs docker-init (tini).
command -v tini-static >/dev/null 2>&1 || need+=(tini)
# The btrfs driver formats its loop-backed pool with mkfs.btrfs; tests read `btrfs
# filesystem du`.
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
# Volume tests format an image file for the local driver's -o device=; the test volume
# plugin is a python3 script.
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
# The thin pool's tests judge its metadata with thin_check and thin_dump.
command -v thin_check >/dev/null 2>&1 || need+=(thin-provisioning-tools)
# The aufs driver's union is a FUSE server: fusermount3 and mount.fuse3 (for `mount -t
# fuse.strata-aufs`) come with fuse3.
command -v mount.fuse3 >/dev/null 2>&1 || need+=(fuse3)
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
grep -qw btrfs /proc/filesystems 2>/dev/null || modprobe btrfs 2>/dev/null || true
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
