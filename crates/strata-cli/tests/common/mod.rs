//! Test helpers: a store in a temp dir driven through the real `strata` binary, and
//! builders for layer tarballs and image archives.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Store {
    pub dir: tempfile::TempDir,
    pub driver: &'static str,
    /// The runtime tests that run containers ask for.
    pub runtime: std::cell::OnceCell<String>,
}

impl Store {
    /// A store on `driver`; `btrfs-native` is the btrfs driver with the store's root on a
    /// btrfs filesystem made for the test (the driver then needs no pool of its own).
    pub fn new(driver: &'static str) -> Store {
        let (driver, on_btrfs) = match driver {
            "btrfs-native" => ("btrfs", true),
            d => (d, false),
        };
        let s = Store {
            dir: tempfile::Builder::new()
                .prefix("strata-cli-")
                .tempdir()
                .unwrap(),
            driver,
            runtime: std::cell::OnceCell::new(),
        };
        if on_btrfs {
            s.mount_btrfs_root();
        }
        s
    }

    /// Mounts a new btrfs filesystem (in a sparse file, loop-mounted with autoclear) where
    /// the store's root goes; `Drop` unmounts it with everything else under the store.
    pub fn mount_btrfs_root(&self) {
        let img = self.dir.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        let root = self.root();
        std::fs::create_dir_all(&root).unwrap();
        for (cmd, args) in [
            ("mkfs.btrfs", vec!["-q", img.to_str().unwrap()]),
            (
                "mount",
                vec!["-o", "loop", img.to_str().unwrap(), root.to_str().unwrap()],
            ),
        ] {
            let out = Command::new(cmd).args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Where the driver keeps one entry per snapshot.
    pub fn layer_dir(&self) -> PathBuf {
        match self.driver {
            "btrfs" => self.root().join("btrfs/fs/subvolumes"),
            "devicemapper" => self.root().join("devicemapper/dev"),
            d => self.root().join(d),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(args)
            .env("STRATA_ROOT", self.root())
            .env("STRATA_STORAGE_DRIVER", self.driver);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "strata {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The store's state as the tests compare it: image list, tags, layer storage, blobs.
    pub fn state(&self) -> String {
        let images = self.ok(&[
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}:{{.Tag}}",
        ]);
        let list = |p: PathBuf| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .map(|r| {
                    r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        format!(
            "{images}\nlayers={:?}\nblobs={:?}",
            list(self.layer_dir()),
            list(self.root().join("content/blobs/sha256"))
        )
    }

    /// The store is consistent: `system check` finds nothing.
    pub fn check_clean(&self) {
        let out = self.ok(&["system", "check"]);
        assert!(out.contains("No problems found"), "{out}");
    }
}

impl Store {
    /// Imports a busybox image (from Debian's busybox-static) as `busybox`, with a
    /// passwd naming root, `app` (1000, also in group `extra` 2000) and nobody.
    pub fn busybox(&self) {
        let bin =
            std::fs::read("/bin/busybox").expect("busybox-static is installed (scripts/deps.sh)");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        let mut layer = Layer::new()
            .dir("bin")
            .dir("etc")
            .dir("proc")
            .dir("sys")
            .dir("dev")
            .dir("root")
            .with_mode("tmp", tar::EntryType::Directory, 0o1777, b"")
            .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
            .file("etc/group", b"root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
            .with_mode("bin/busybox", tar::EntryType::Regular, 0o755, &bin);
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                layer = layer.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        let tar = self.file("busybox.tar", &layer.build());
        self.ok(&["import", tar.to_str().unwrap(), "busybox"]);
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Everything goes: containers a failing test left running are killed, and what
        // the driver set up (btrfs: its loop-backed pool) is unmounted and detached.
        if self.root().join("strata.db").exists() {
            let _ = self.cmd(&["system", "reset", "-f"]).output();
        }
        // Unmount anything a failing test left mounted under the store, deepest first.
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root = self.dir.path().display().to_string();
            let mut targets: Vec<&str> = mi
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|t| t.starts_with(&root))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = rustix_unmount(t);
            }
        }
    }
}

fn rustix_unmount(t: &str) -> std::io::Result<()> {
    let s = std::process::Command::new("umount")
        .arg("-l")
        .arg(t)
        .status()?;
    if s.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("umount"))
    }
}

/// A layer tarball built entry by entry.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn dir(mut self, path: &str) -> Layer {
        self.b
            .append_data(
                &mut Self::header(tar::EntryType::Directory, 0o755, 0),
                path,
                std::io::empty(),
            )
            .unwrap();
        self
    }

    pub fn file(mut self, path: &str, data: &[u8]) -> Layer {
        self.b
            .append_data(
                &mut Self::header(tar::EntryType::Regular, 0o644, data.len() as u64),
                path,
                data,
            )
            .unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        self.b
            .append_link(
                &mut Self::header(tar::EntryType::Symlink, 0o777, 0),
                path,
                target,
            )
            .unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Layer {
        self.b
            .append_link(
                &mut Self::header(tar::EntryType::Link, 0o644, 0),
                path,
                target,
            )
            .unwrap();
        self
    }

    pub fn whiteout(self, path: &str) -> Layer {
        let (dir, name) = path
            .rsplit_once('/')
            .map(|(d, n)| (format!("{d}/"), n))
            .unwrap_or((String::new(), path));
        self.file(&format!("{dir}.wh.{name}"), b"")
    }

    pub fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// An entry with the given type and mode.
    pub fn with_mode(mut self, path: &str, kind: tar::EntryType, mode: u32, data: &[u8]) -> Layer {
        self.b
            .append_data(&mut Self::header(kind, mode, data.len() as u64), path, data)
            .unwrap();
        self
    }

    /// A header written byte for byte, whatever its name (for hostile archives).
    pub fn raw(
        mut self,
        name: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) -> Layer {
        let mut h = Self::header(kind, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A docker-archive (docker save's legacy layout) holding images made of `layers`.
pub struct Archive {
    b: tar::Builder<Vec<u8>>,
    manifest: Vec<serde_json::Value>,
    written: std::collections::HashSet<String>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive {
            b: tar::Builder::new(Vec::new()),
            manifest: Vec::new(),
            written: Default::default(),
        }
    }

    pub fn put(&mut self, path: &str, data: &[u8]) {
        if self.written.insert(path.to_string()) {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            self.b.append_data(&mut h, path, data).unwrap();
        }
    }

    /// Adds an image; returns its ID (hex).
    pub fn image(&mut self, tags: &[&str], layers: &[Vec<u8>]) -> String {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect();
        let history: Vec<serde_json::Value> = (0..layers.len()).map(|i| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("/bin/sh -c #(nop) layer {i}")})).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history,
        }))
        .unwrap();
        let id = sha256_hex(&config);
        self.put(&format!("{id}.json"), &config);
        let mut paths = Vec::new();
        for l in layers {
            let p = format!("{}/layer.tar", sha256_hex(l));
            self.put(&p, l);
            paths.push(p);
        }
        self.manifest.push(
            serde_json::json!({"Config": format!("{id}.json"), "RepoTags": tags, "Layers": paths}),
        );
        id
    }

    /// The archive as put so far, without a generated manifest.json.
    pub fn build_raw(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    pub fn build(mut self) -> Vec<u8> {
        let m = serde_json::to_vec(&self.manifest).unwrap();
        self.put("manifest.json", &m);
        self.b.into_inner().unwrap()
    }
}

/// Mounts below `dir`, but for a btrfs store's own pool (`root/btrfs/fs`), which stays
/// mounted while the store exists, as docker's loop-lvm pool did, and a test's own
/// filesystem mounted as the store's root (`btrfs-native`).
pub fn mounted_under(dir: &Path) -> Vec<String> {
    let store_root = format!("{}/root", dir.display());
    all_mounts_under(dir)
        .into_iter()
        .filter(|t| {
            !t.ends_with("/btrfs/fs") && !t.ends_with("/devicemapper/dev") && *t != store_root
        })
        .collect()
}

/// Every mount point below `dir`, a store's own included.
pub fn all_mounts_under(dir: &Path) -> Vec<String> {
    let root = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| t.starts_with(&root))
        .map(str::to_string)
        .collect()
}
