#!/usr/bin/env bash
# strata's main job end to end: build strata, import a busybox base image, make a
# two-layer image on top of it, and show images, history, layers shared, disk usage,
# a save/load round trip and a store check. Uses its own store (default ./demo-store).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -q
strata() { ./target/release/strata "$@"; }
export STRATA_ROOT="${STRATA_ROOT:-$PWD/demo-store}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# A busybox root filesystem: the static binary and its applets as symlinks.
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
for applet in $("$work/rootfs/bin/busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$work/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
tar -C "$work/rootfs" -cf "$work/busybox.tar" .

step strata import -c 'CMD ["sh"]' busybox.tar busybox:latest
strata import -c 'CMD ["sh"]' -m "busybox from Debian's busybox-static" "$work/busybox.tar" busybox:latest

# A second layer on top of busybox, packed as docker save would pack it.
step "strata save busybox | (add a layer) | strata load"
strata save -o "$work/base.tar" busybox:latest
python3 - "$work" <<'PY'
import hashlib, io, json, sys, tarfile
work = sys.argv[1]
src = tarfile.open(f"{work}/base.tar")
files = {m.name: src.extractfile(m).read() for m in src.getmembers() if m.isfile()}
entry = json.loads(files["manifest.json"])[0]
config = json.loads(files[entry["Config"]])
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.GNU_FORMAT) as t:
    for name, data in [("etc/motd", b"hello from the app layer\n"), ("app/run.sh", b"#!/bin/sh\necho app\n")]:
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o755; info.mtime = 1700000000
        t.addfile(info, io.BytesIO(data))
    wh = tarfile.TarInfo("etc/.wh.passwd"); wh.size = 0
    t.addfile(wh, io.BytesIO(b""))
layer = layer.getvalue()
digest = "sha256:" + hashlib.sha256(layer).hexdigest()
config["rootfs"]["diff_ids"].append(digest)
import datetime
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
config["created"] = now
config["history"].append({"created": now, "created_by": "/bin/sh -c #(nop) ADD app/ /app (and remove /etc/passwd)"})
config["config"]["Cmd"] = ["/app/run.sh"]
cbytes = json.dumps(config).encode()
cname = "blobs/sha256/" + hashlib.sha256(cbytes).hexdigest()
lname = "blobs/sha256/" + digest[7:]
out = tarfile.open(f"{work}/app.tar", "w")
def put(name, data):
    info = tarfile.TarInfo(name); info.size = len(data); out.addfile(info, io.BytesIO(data))
put(entry["Layers"][0], files[entry["Layers"][0]])
put(lname, layer)
put(cname, cbytes)
put("manifest.json", json.dumps([{"Config": cname, "RepoTags": ["app:1.0"], "Layers": entry["Layers"] + [lname]}]).encode())
out.close()
PY
strata load -i "$work/app.tar"

step strata images
strata images
step strata history app:1.0
strata history app:1.0
step strata system df -v
strata system df -v | sed -n '1,6p'
step "strata image mount app:1.0   (the union of both layers, read-only)"
mnt=$(strata image mount app:1.0)
echo "$mnt"; ls "$mnt"; cat "$mnt/etc/motd"; [ ! -e "$mnt/etc/passwd" ] && echo "/etc/passwd: removed by the app layer's whiteout"
strata image umount app:1.0 >/dev/null
step "strata create --name demo app:1.0; strata cp note.txt demo:/etc/; strata diff demo"
strata rm demo >/dev/null 2>&1 || true
strata create --name demo app:1.0 >/dev/null
echo "written into the container's thin layer" > "$work/note.txt"
strata cp "$work/note.txt" demo:/etc/
strata diff demo
step "strata ps -a -s   (the container's own size, and what it sees)"
strata ps -a -s
step "strata commit -m 'add a note' demo app:1.1; strata history app:1.1"
strata commit -m "add a note" demo app:1.1
strata history app:1.1
strata rm demo >/dev/null
step "strata run --rm app:1.1 cat /etc/note.txt   (the committed layer, in a running container)"
strata run --rm app:1.1 cat /etc/note.txt
step "strata run -d --name web --memory 32m app:1.1 sh -c 'echo serving; sleep 1000'; exec, top, logs, stop"
strata rm -f web >/dev/null 2>&1 || true
strata run -d --name web --memory 32m app:1.1 sh -c 'echo serving; sleep 1000'
strata exec web sh -c 'echo "in the container: pid $$, hostname $(hostname)"; grep -E "CapEff|Seccomp:" /proc/self/status'
strata top web
strata ps
strata logs web
strata stop -t 1 web
strata ps -a --filter name=web
strata rm web >/dev/null
step "strata info | grep -A6 'Storage Driver'"
strata info | grep -A6 'Storage Driver'
step "strata save app:1.1 busybox | strata --root other load"
other=$(mktemp -d)
strata save app:1.1 busybox:latest | STRATA_ROOT="$other" ./target/release/strata load
STRATA_ROOT="$other" ./target/release/strata images
rm -rf "$other"
step "the same images on the btrfs driver (a loop-backed pool here: the root is not btrfs)"
bt=$(mktemp -d)
B() { STRATA_ROOT="$bt" STRATA_STORAGE_DRIVER=btrfs ./target/release/strata "$@"; }
strata save app:1.1 busybox:latest | B load
B run --name w --storage-opt size=64m app:1.1 sh -c 'echo changed > /etc/note.txt'
B diff w
B ps -a -s
B info 2>/dev/null | grep -A10 'Storage Driver'
B system reset -f
echo "after system reset: $(losetup -a | grep -c "$bt") loop devices, $(findmnt -rn | grep -c "$bt") mounts"
rm -rf "$bt"
step strata system check
strata system check
echo
echo "Store: $STRATA_ROOT (remove it with: rm -rf $STRATA_ROOT)"
