#!/usr/bin/env python3
"""strata-aufs beside fuse-overlayfs and kernel overlayfs on the same layers (issue 8).

Every row mounts each filesystem afresh over the same lower layers (plain directories on
this machine's ext4) with an empty upper/writable dir, waits for the mount to answer a
statfs, times one operation in this process (or one command), and reports the median of
RUNS runs; the three take turns going first. Run by bench/aufs.sh.
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH = sys.argv[1]
HELPER = sys.argv[2]
ROOTFS_TAR = sys.argv[3]
RUNS = int(sys.argv[4])
# Extra strata-aufs mount options (to compare settings, e.g. ",threads=1").
AUFS_OPTS = sys.argv[5] if len(sys.argv) > 5 else ""
# Only the rows whose name contains this text (to look at one kind of operation).
ONLY = os.environ.get("ONLY", "")
LAYERS = f"{BENCH}/l"  # l/0 .. l/99, l/0 the bottom
FS = ["strata-aufs", "fuse-overlayfs", "overlayfs"]
MiB = 1 << 20


def sh(*args, **kw):
    subprocess.run(args, check=True, **kw)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def make_layers():
    if os.path.exists(f"{LAYERS}/done"):
        return
    shutil.rmtree(LAYERS, ignore_errors=True)
    for i in range(100):
        d = f"{LAYERS}/{i}"
        os.makedirs(f"{d}/shared")
        for j in range(20):  # 20 names of its own in a directory every layer has
            with open(f"{d}/shared/f{i}_{j}", "w") as f:
                f.write("x")
    # Found only in the bottom layer: a lookup walks every layer above it.
    os.makedirs(f"{LAYERS}/0/deep/er")
    open(f"{LAYERS}/0/deep/er/file", "w").close()
    with open(f"{LAYERS}/0/big1g", "wb") as f:  # sequential read
        for _ in range(1024):
            f.write(os.urandom(MiB))
    with open(f"{LAYERS}/0/big500m", "wb") as f:  # copy-up
        for _ in range(500):
            f.write(os.urandom(MiB))
    os.makedirs(f"{LAYERS}/0/rootfs")
    sh("tar", "-xf", ROOTFS_TAR, "-C", f"{LAYERS}/0/rootfs")
    open(f"{LAYERS}/done", "w").close()


def top(n):
    """The top `n` layers, top first."""
    return [f"{LAYERS}/{i}" for i in range(99, 99 - n, -1)]


def bottom(n):
    """The bottom `n` layers (layer 0 among them), top first."""
    return [f"{LAYERS}/{i}" for i in range(n - 1, -1, -1)]


class Mount:
    """One filesystem over `lowers` (top first), with a fresh upper dir."""

    def __init__(self, fs, lowers, keep=False):
        self.fs = fs
        self.keep = keep
        self.top = f"{BENCH}/run"
        shutil.rmtree(self.top, ignore_errors=True)
        for d in ("upper", "work", "mnt"):
            os.makedirs(f"{self.top}/{d}")
        self.mnt = f"{self.top}/mnt"
        up, work = f"{self.top}/upper", f"{self.top}/work"
        if fs == "strata-aufs":
            br = ":".join([f"{up}=rw"] + [f"{l}=ro" for l in lowers])
            sh(HELPER, "-o", f"br={br}{AUFS_OPTS}", "none", self.mnt)
        elif fs == "fuse-overlayfs":
            sh("fuse-overlayfs", "-o", f"lowerdir={':'.join(lowers)},upperdir={up},workdir={work}", self.mnt)
        else:
            sh("mount", "-t", "overlay", "overlay", "-o",
               f"lowerdir={':'.join(lowers)},upperdir={up},workdir={work}", self.mnt)

    def __enter__(self):
        # The mount answers (its server is up) before anything is timed, for all three.
        os.statvfs(self.mnt)
        return self

    def __exit__(self, *exc):
        for _ in range(100):
            if subprocess.run(["umount", self.mnt], stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.05)
        if self.keep:
            # Many files: kept until the row is done (see KEEP_ROWS).
            os.rename(self.top, f"{BENCH}/kept/{len(os.listdir(f'{BENCH}/kept'))}")
        else:
            shutil.rmtree(self.top, ignore_errors=True)
        # Let the server exit and ext4 settle the deleted upper (freeing a 1 GiB file
        # goes on after the unlink) before the next run.
        os.sync()
        time.sleep(0.5)


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def seq_write(m, sync=True):
    def w():
        fd = os.open(f"{m.mnt}/newbig", os.O_WRONLY | os.O_CREAT, 0o644)
        buf = b"\0" * MiB
        for _ in range(1024):
            os.write(fd, buf)
        if sync:
            os.fsync(fd)
        os.close(fd)
    return timed(w)


def seq_write_cached(m):
    # Into the page cache: the filesystem's own cost per write, not the disk's.
    return seq_write(m, sync=False)


def read_all(path):
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, MiB):
        pass
    os.close(fd)


def seq_read_cold(m):
    drop_caches()
    return timed(lambda: read_all(f"{m.mnt}/big1g"))


def seq_read_warm(m):
    read_all(f"{m.mnt}/big1g")
    return timed(lambda: read_all(f"{m.mnt}/big1g"))


def first_write(m):
    os.sync()
    def w():
        fd = os.open(f"{m.mnt}/big500m", os.O_WRONLY)
        os.pwrite(fd, b"!", 4096 * 1000)
        os.close(fd)
    return timed(w)


def first_write_whole(m):
    """The first write, then until the copy holds all the data: strata-aufs copies a large
    file up lazily (the write returns at once and a thread fills the copy behind it, its
    record in .wh..wh.lazy removed once the filled copy is synced)."""
    records = f"{m.top}/upper/.wh..wh.lazy"
    def w():
        fd = os.open(f"{m.mnt}/big500m", os.O_WRONLY)
        os.pwrite(fd, b"!", 4096 * 1000)
        os.close(fd)
        while os.path.isdir(records) and os.listdir(records):
            time.sleep(0.001)
    os.sync()
    return timed(w)


def readdir(m):
    return timed(lambda: os.listdir(f"{m.mnt}/shared"))


def lookup(m):
    return timed(lambda: os.stat(f"{m.mnt}/deep/er/file"))


def untar(m):
    return timed(lambda: sh("tar", "-xf", ROOTFS_TAR, "-C", m.mnt))


def find(m):
    return timed(lambda: sh("find", f"{m.mnt}/rootfs", stdout=subprocess.DEVNULL))


ROWS = [
    ("1 GiB sequential write (page cache)", seq_write_cached, bottom(1)),
    ("1 GiB sequential write (fsync)", seq_write, bottom(1)),
    ("1 GiB sequential read, cold", seq_read_cold, bottom(1)),
    ("1 GiB sequential read, warm", seq_read_warm, bottom(1)),
    ("first write to a 500 MB lower file (copy-up)", first_write, bottom(1)),
    ("first write to a 500 MB lower file, until the copy is whole", first_write_whole, bottom(1)),
    ("readdir of a directory in every layer, 1 layer", readdir, top(1)),
    ("readdir of a directory in every layer, 10 layers", readdir, top(10)),
    ("readdir of a directory in every layer, 100 layers", readdir, top(100)),
    ("first lookup of a bottom-layer file, 1 layer", lookup, bottom(1)),
    ("first lookup of a bottom-layer file, 10 layers", lookup, bottom(10)),
    ("first lookup of a bottom-layer file, 100 layers", lookup, bottom(100)),
    ("untar of the rootfs tarball", untar, top(1)),
    ("find over the rootfs (fresh mount)", find, bottom(1)),
]


# Rows whose runs make thousands of files: their upper dirs are deleted after the row, not
# between runs. ext4 skips inodes freed in the last 30 seconds when it allocates new ones
# (`recently_deleted`, a scan of inode table blocks per candidate), so an untar right after
# deleting the previous run's 6,768 files measured that scan (2-4 s more for every
# filesystem, in the allocating process) rather than the filesystem under test.
KEEP_ROWS = {"untar of the rootfs tarball"}


def fmt(s):
    return f"{s * 1000:.2f} ms" if s < 1 else f"{s:.3f} s"


def main():
    make_layers()
    results = {}
    rows = [r for r in ROWS if ONLY in r[0]]
    for name, fn, lowers in rows:
        times = {fs: [] for fs in FS}
        keep = name in KEEP_ROWS
        os.makedirs(f"{BENCH}/kept", exist_ok=True)
        for run in range(RUNS):
            # Each filesystem goes first, second and third in turn.
            for fs in FS[run % 3:] + FS[:run % 3]:
                with Mount(fs, lowers, keep) as m:
                    times[fs].append(fn(m))
        shutil.rmtree(f"{BENCH}/kept", ignore_errors=True)
        med = {fs: statistics.median(t) for fs, t in times.items()}
        results[name] = med
        print(f"{name}: " + ", ".join(f"{fs} {fmt(med[fs])}" for fs in FS), flush=True)
    if any("cold" in r[0] for r in rows):
        # The floor under every filesystem's cold read: the lower file read on ext4 itself.
        def direct():
            drop_caches()
            return timed(lambda: read_all(f"{LAYERS}/0/big1g"))
        print(f"1 GiB sequential read, cold, of the lower file on ext4 itself: "
              f"{fmt(statistics.median(direct() for _ in range(RUNS)))}", flush=True)
    print()
    print(f"| operation ({RUNS} runs, medians) | strata-aufs | fuse-overlayfs | kernel overlayfs | "
          "strata-aufs / fuse-overlayfs | strata-aufs / kernel |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in rows:
        m = results[name]
        a, f, k = m["strata-aufs"], m["fuse-overlayfs"], m["overlayfs"]
        print(f"| {name} | **{fmt(a)}** | {fmt(f)} | {fmt(k)} | {a / f:.2f}x | {a / k:.2f}x |")


main()
