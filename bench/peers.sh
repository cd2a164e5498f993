#!/usr/bin/env bash
# Starts the peers for side-by-side benchmarks on this machine: dockerd (own data root and
# socket, no networking) and podman (root, own storage, runc, cgroupfs, ulimits within the
# hard limit). Installs them from Debian's packages if missing. Sourced by the benchmarks.
set -euo pipefail
BENCH=${BENCH:-/var/tmp/strata-bench}
mkdir -p "$BENCH"
if ! command -v dockerd >/dev/null || ! command -v podman >/dev/null || ! command -v hyperfine >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq docker.io podman runc hyperfine debootstrap >/dev/null
fi
export DOCKER_HOST="unix://$BENCH/docker.sock"
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker)
if ! $DOCKER info >/dev/null 2>&1; then
    dockerd --data-root "$BENCH/docker" --exec-root "$BENCH/docker-exec" --pidfile "$BENCH/docker.pid" \
        -H "$DOCKER_HOST" --storage-driver overlay2 --iptables=false --ip6tables=false --bridge=none \
        >"$BENCH/dockerd.log" 2>&1 &
    for _ in $(seq 100); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.2; done
fi
# runc sets each rlimit from inside the container's init, where raising one needs
# CAP_SYS_RESOURCE, which this machine lacks: modest limits well under the hard ones.
hard=$(( $(ulimit -Hn) < 1024 ? $(ulimit -Hn) : 1024 ))
hard_nproc=$(( $(ulimit -Hu) < 1024 ? $(ulimit -Hu) : 1024 ))
cat > "$BENCH/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${hard}:${hard}", "nproc=${hard_nproc}:${hard_nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$BENCH/containers.conf"
PODMAN="podman --root $BENCH/podman --runroot $BENCH/podman-run --storage-driver overlay"
export DOCKER PODMAN

# The busybox image every engine runs (Debian's busybox-static with all its applets), from
# one tarball; `import_busybox ENGINE...` imports it as bb:1 where it is missing.
BUSYBOX_ROOTFS="$BENCH/busybox-rootfs"
BUSYBOX_TAR="$BENCH/busybox-all.tar"
if [ ! -f "$BUSYBOX_TAR" ]; then
    rm -rf "$BUSYBOX_ROOTFS"
    mkdir -p "$BUSYBOX_ROOTFS"/{bin,etc,proc,sys,dev,tmp}
    cp /bin/busybox "$BUSYBOX_ROOTFS/bin/"
    for a in $(/bin/busybox --list); do
        [ "$a" = busybox ] || ln -sf busybox "$BUSYBOX_ROOTFS/bin/$a"
    done
    echo 'root:x:0:0:root:/root:/bin/sh' > "$BUSYBOX_ROOTFS/etc/passwd"
    tar -C "$BUSYBOX_ROOTFS" -cf "$BUSYBOX_TAR" .
fi
import_busybox() {
    for e in "$@"; do
        $e image inspect bb:1 >/dev/null 2>&1 || $e import "$BUSYBOX_TAR" bb:1 >/dev/null
    done
}
