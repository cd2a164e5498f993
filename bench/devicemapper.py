#!/usr/bin/env python3
"""The devicemapper driver's thin pool (issue 7), in one run beside a plain file and a qcow2
image, each exported to the kernel the same way (a file, a loop device with direct I/O,
ext4 on it):

- snapshot creation of a thin device with 10 MiB and with 10 GiB mapped (a hard link on the
  pool's server: the snapshot and the commit that makes it durable);
- fio: 1 GiB sequential write and read, 4 KiB random write and read;
- fio 4 KiB random overwrites of a 512 MiB file in a fresh snapshot for 10 s, once (every
  first write to a block copies it: the pool's 64 KiB blocks, qcow2's 64 KiB clusters; the
  plain file has no snapshots and is copied first, untimed).

Usage: python3 bench/devicemapper.py BENCH_DIR STRATA_THINPOOL RUNS (root). Run by
bench/devicemapper.sh.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

BENCH, POOL_BIN, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZE = 4 << 30


def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)


def out(*a):
    return subprocess.run(a, check=True, capture_output=True, text=True).stdout.strip()


def wait_for(path, timeout=10):
    t = time.time()
    while not os.path.exists(path):
        if time.time() - t > timeout:
            raise SystemExit(f"{path} did not appear")
        time.sleep(0.01)


class Backend:
    """A block device made of a file, with ext4 mounted on it."""

    def __init__(self, name):
        self.name = name
        self.dir = f"{BENCH}/{name}"
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.loops, self.mounts, self.procs = [], [], []

    # qemu-storage-daemon's FUSE export corrupts data under a loop device with direct I/O
    # on this machine (ext4 finds its group descriptors broken right after mkfs): that one
    # goes through the page cache.
    direct_io = True

    def attach(self, f):
        dio = "--direct-io=on" if self.direct_io else "--direct-io=off"
        lo = out("losetup", "-f", "--show", dio, f)
        self.loops.append(lo)
        return lo

    def mount(self, lo, name, mkfs=False):
        if mkfs:
            sh("mkfs.ext4", "-q", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", lo)
        m = f"{self.dir}/{name}"
        os.makedirs(m, exist_ok=True)
        sh("mount", lo, m)
        self.mounts.append(m)
        return m

    def release(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", m])
        for lo in self.loops:
            subprocess.run(["losetup", "-d", lo])
        self.mounts, self.loops = [], []

    def stop(self):
        self.release()
        for p in self.procs:
            p.terminate()
            p.wait()
        self.procs = []


class Plain(Backend):
    def origin(self):
        f = f"{self.dir}/disk"
        with open(f, "wb") as fh:
            fh.truncate(SIZE)
        return self.mount(self.attach(f), "o", mkfs=True)

    def snapshot(self):
        # A plain file has no snapshots: a copy stands in (its cost is not timed).
        self.release()
        sh("cp", "--sparse=always", f"{self.dir}/disk", f"{self.dir}/copy")
        return self.mount(self.attach(f"{self.dir}/copy"), "s")


class Thin(Backend):
    def start(self):
        os.makedirs(f"{self.dir}/dev", exist_ok=True)
        p = subprocess.Popen([POOL_BIN, "serve", "--metadata", f"{self.dir}/meta", "--data", f"{self.dir}/data",
                              "--sizes", f"{self.dir}/sizes", f"{self.dir}/dev"])
        self.procs.append(p)
        wait_for(f"{self.dir}/dev/.pool")

    def origin(self):
        sh(POOL_BIN, "format", f"{self.dir}/meta", f"{self.dir}/data", "65536", str(100 << 30), str(1 << 30))
        self.start()
        with open(f"{self.dir}/dev/1", "wb") as fh:
            fh.truncate(SIZE)
        return self.mount(self.attach(f"{self.dir}/dev/1"), "o", mkfs=True)

    def snapshot(self):
        self.release()
        os.link(f"{self.dir}/dev/1", f"{self.dir}/dev/2")
        return self.mount(self.attach(f"{self.dir}/dev/2"), "s")

    def stop(self):
        self.release()
        subprocess.run(["umount", f"{self.dir}/dev"])
        for p in self.procs:
            p.wait()
        self.procs = []


class Qcow2(Backend):
    direct_io = False

    def export(self, image):
        exp = f"{self.dir}/export"
        open(exp, "w").close()
        p = subprocess.Popen([
            "qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file,filename={image},cache.direct=on",
            "--blockdev", "driver=qcow2,node-name=qcow2,file=file",
            "--export", f"type=fuse,id=exp,node-name=qcow2,mountpoint={exp},writable=on",
        ])
        self.procs.append(p)
        t = time.time()
        while os.stat(exp).st_size == 0:
            if time.time() - t > 10:
                raise SystemExit("qemu-storage-daemon did not export")
            time.sleep(0.01)
        return exp

    def origin(self):
        sh("qemu-img", "create", "-q", "-f", "qcow2", f"{self.dir}/base.qcow2", str(SIZE))
        return self.mount(self.attach(self.export(f"{self.dir}/base.qcow2")), "o", mkfs=True)

    def snapshot(self):
        self.stop()
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{self.dir}/base.qcow2", "-F", "qcow2", f"{self.dir}/snap.qcow2")
        return self.mount(self.attach(self.export(f"{self.dir}/snap.qcow2")), "s")


def fio(directory, rw, bs, size, extra=()):
    o = out("fio", "--name=j", f"--directory={directory}", "--filename=f", f"--rw={rw}", f"--bs={bs}",
            f"--size={size}", "--direct=1", "--ioengine=psync", "--output-format=json", *extra)
    job = json.loads(o)["jobs"][0]
    side = job["write"] if "write" in rw else job["read"]
    return side["bw_bytes"] / 1e6, side["iops"]


def snapshot_times():
    """Time of `ln dev/ORIGIN dev/NEW` for an origin with 10 MiB and 10 GiB mapped."""
    b = Thin("snaptime")
    sh(POOL_BIN, "format", f"{b.dir}/meta", f"{b.dir}/data", "65536", str(100 << 30), str(1 << 30))
    b.start()
    res = {}
    for dev, mapped in ((1, 10 << 20), (2, 10 << 30)):
        path = f"{b.dir}/dev/{dev}"
        with open(path, "wb") as fh:
            fh.truncate(mapped)
        fd = os.open(path, os.O_WRONLY)
        chunk = b"\1" * (1 << 20)
        for _ in range(mapped >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
        os.close(fd)
        times = []
        for i in range(RUNS * 4):
            new = f"{b.dir}/dev/{1000 + dev * 100 + i}"
            t = time.perf_counter()
            os.link(path, new)
            times.append(time.perf_counter() - t)
        res[mapped] = statistics.median(times)
    b.stop()
    return res


def main():
    snaps = snapshot_times()
    print(f"snapshot (link, committed): 10 MiB mapped {snaps[10 << 20] * 1e3:.2f} ms, "
          f"10 GiB mapped {snaps[10 << 30] * 1e3:.2f} ms", flush=True)
    rows = {}
    for cls in (Plain, Thin, Qcow2):
        b = cls(cls.__name__.lower())
        r = {k: [] for k in ("seq write MB/s", "seq read MB/s", "rand write IOPS", "rand read IOPS", "snapshot rand overwrite IOPS")}
        try:
            m = b.origin()
            for _ in range(RUNS):
                r["seq write MB/s"].append(fio(m, "write", "1M", "1G", ["--end_fsync=1"])[0])
                r["seq read MB/s"].append(fio(m, "read", "1M", "1G")[0])
                r["rand write IOPS"].append(fio(m, "randwrite", "4k", "1G", ["--runtime=10", "--time_based"])[1])
                r["rand read IOPS"].append(fio(m, "randread", "4k", "1G", ["--runtime=10", "--time_based"])[1])
            # A 512 MiB file, then one fresh snapshot overwritten at random for 10 s (a
            # second run would find the blocks already copied).
            fio(m, "write", "1M", "512M", ["--end_fsync=1"])
            s = b.snapshot()
            r["snapshot rand overwrite IOPS"].append(
                fio(s, "randwrite", "4k", "512M", ["--runtime=10", "--time_based", "--overwrite=1"])[1])
        finally:
            b.stop()
        rows[cls.__name__] = {k: statistics.median(v) for k, v in r.items()}
        print(cls.__name__, rows[cls.__name__], flush=True)
    print()
    print(f"| fio ({RUNS} runs, medians) | strata thin device | plain file | qcow2 (qemu-storage-daemon) | thin / plain | thin / qcow2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in rows["Thin"]:
        t, p, q = rows["Thin"][k], rows["Plain"][k], rows["Qcow2"][k]
        print(f"| {k} | **{t:,.0f}** | {p:,.0f} | {q:,.0f} | {t / p:.2f} | {t / q:.2f} |")


main()
