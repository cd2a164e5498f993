//! What only the btrfs driver does: writes that share extents with the image, size limits
//! through quota groups, its loop-backed pool (reattached after being detached behind
//! strata's back, detached by `system reset`), a root that is btrfs itself, and
//! subvolumes a container made inside its writable layer. Needs root and btrfs-progs.

mod common;
use common::*;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `btrfs filesystem du`'s total and exclusive bytes for `path`.
fn du(path: &Path) -> (u64, u64) {
    let out = sh(
        "btrfs",
        &["filesystem", "du", "-s", "--raw", path.to_str().unwrap()],
    );
    let row: Vec<u64> = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    (row[0], row[1])
}

/// Loop devices attached to files under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    sh("losetup", &["-a"])
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(str::to_string)
        .collect()
}

fn pool_mount(s: &Store) -> PathBuf {
    s.root().join("btrfs/fs")
}

fn info(s: &Store) -> String {
    s.ok(&["info"])
}

#[test]
fn writes_share_extents_with_the_image() {
    let s = Store::new("btrfs");
    // 64 MiB of data that no filesystem could store as one repeated block.
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let layer = Layer::new().file("big", &big).build();
    s.ok(&[
        "import",
        s.file("big.tar", &layer).to_str().unwrap(),
        "big:1",
    ]);
    s.ok(&["create", "--name", "c", "big:1", "true"]);
    let merged = PathBuf::from(s.ok(&["mount", "c"]).trim());
    let file = merged.join("big");
    let (total, excl) = du(&file);
    assert_eq!(total, 64 << 20);
    assert_eq!(
        excl, 0,
        "a fresh container shares every extent with its image"
    );
    // One byte changed in place: btrfs copies the block it touches, not the file.
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(b"!").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let (total, excl) = du(&file);
    assert_eq!(total, 64 << 20);
    assert!(
        excl > 0 && excl <= 128 << 10,
        "one write costs about a block, not a copy-up: {excl} exclusive bytes"
    );
    s.ok(&["umount", "c"]);
    // The image is untouched, and the change is the container's.
    s.ok(&["create", "--name", "d", "big:1", "true"]);
    let fresh = PathBuf::from(s.ok(&["mount", "d"]).trim());
    assert_eq!(std::fs::read(fresh.join("big")).unwrap(), big);
    s.ok(&["umount", "d"]);
    assert_eq!(s.ok(&["diff", "c"]).trim(), "C /big");
    assert!(mounted_under(s.dir.path()).is_empty());
}

#[test]
fn size_limit_stops_a_container_and_sizes_come_from_quota_groups() {
    let s = Store::new("btrfs");
    s.busybox();
    assert!(info(&s).contains("Quotas: disabled"));
    // A container writing 20 MB, with the options given.
    let write_20mb = |opts: &[&str]| {
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.extend([
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/fill",
            "bs=1M",
            "count=20",
        ]);
        s.run(&args)
    };
    let out = write_20mb(&["--storage-opt", "size=10M", "--name", "limited"]);
    assert_eq!(out.status.code(), Some(1), "dd fails at the limit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Disk quota exceeded") || err.contains("No space left"),
        "{err}"
    );
    assert!(info(&s).contains("Quotas: enabled"));
    assert_eq!(
        s.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.StorageOpt.size}}",
            "limited"
        ])
        .trim(),
        "10M"
    );
    // Without a limit the same write succeeds, and `ps -s` reads the container's
    // exclusive bytes from its quota group.
    assert!(write_20mb(&["--name", "free"]).status.success());
    let size = s.ok(&[
        "ps",
        "-a",
        "-s",
        "--filter",
        "name=free",
        "--format",
        "{{.Size}}",
    ]);
    // 20 MiB of data plus the subvolume's own metadata blocks.
    let mb: f64 = size.split("MB").next().unwrap().parse().unwrap();
    assert!((20.9..21.6).contains(&mb), "{size}");
    // Bad sizes and unknown options are refused before anything is made.
    let before = s.ok(&["ps", "-aq"]);
    assert!(s
        .fails(&["create", "--storage-opt", "size=lots", "busybox", "true"])
        .contains("invalid --storage-opt size=lots"));
    assert!(s
        .fails(&["create", "--storage-opt", "color=red", "busybox", "true"])
        .contains("unknown --storage-opt"));
    assert_eq!(s.ok(&["ps", "-aq"]), before);
}

#[test]
fn size_limit_is_refused_where_the_driver_cannot_enforce_it() {
    let s = Store::new("overlay2");
    s.busybox();
    let err = s.fails(&["create", "--storage-opt", "size=10M", "busybox", "true"]);
    assert!(
        err.contains("not supported by the overlay2 storage driver"),
        "{err}"
    );
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

#[test]
fn loop_pool_is_reattached_and_reset_detaches_it() {
    let s = Store::new("btrfs");
    s.busybox();
    s.ok(&["create", "--name", "keep", "busybox", "true"]);
    let note = s.file("note", b"kept across a detach\n");
    s.ok(&["cp", note.to_str().unwrap(), "keep:/note"]);
    let text = info(&s);
    let data_file = s.root().join("btrfs/loop/data");
    assert!(
        text.contains(&format!("Data file: {}", data_file.display())),
        "{text}"
    );
    assert!(text.contains("Backing Filesystem: extfs"), "{text}");
    let out = s.run(&["info"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Usage of loopback devices is strongly discouraged for production use"));
    // The sparse file is 100 GiB long and takes a few MB.
    let meta = std::fs::metadata(&data_file).unwrap();
    assert_eq!(meta.len(), 100 << 30);
    assert!(std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 1 << 30);
    // Behind strata's back: the loop device detached (flagged while mounted), then the
    // filesystem unmounted, which lets it go.
    let dev = sh("losetup", &["-j", data_file.to_str().unwrap()]);
    let dev = dev.split(':').next().unwrap().to_string();
    sh("losetup", &["-d", &dev]);
    sh("umount", &[pool_mount(&s).to_str().unwrap()]);
    for _ in 0..50 {
        if loops_under(s.dir.path()).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(loops_under(s.dir.path()).is_empty());
    // The next command attaches and mounts it again; nothing was lost.
    assert!(s.ok(&["images"]).contains("busybox"));
    let out = s.dir.path().join("out");
    s.ok(&["cp", "keep:/note", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"kept across a detach\n");
    assert_eq!(loops_under(s.dir.path()).len(), 1);
    s.check_clean();
    // Reset takes everything away, loop device and mount included.
    s.ok(&["system", "reset", "-f"]);
    assert!(loops_under(s.dir.path()).is_empty());
    assert!(mounted_under(s.dir.path()).is_empty());
    assert!(all_mounts_under(s.dir.path()).is_empty());
    assert!(!data_file.exists());
    assert_eq!(s.ok(&["images", "-q"]), "");
}

#[test]
fn a_root_on_btrfs_holds_subvolumes_directly() {
    let s = Store::new("btrfs-native");
    s.busybox();
    let out = s.run(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Backing Filesystem: btrfs"), "{text}");
    assert!(!text.contains("Data file"), "{text}");
    assert!(out.stderr.is_empty(), "no loopback warning");
    assert!(!s.root().join("btrfs/loop").exists());
    s.ok(&["run", "--name", "c", "busybox", "sh", "-c", "echo hi > /f"]);
    s.ok(&["commit", "c", "hi:1"]);
    assert_eq!(s.ok(&["run", "--rm", "hi:1", "cat", "/f"]), "hi\n");
    // Only the test's own filesystem is a mount: subvolumes are not mounted.
    assert_eq!(
        all_mounts_under(s.dir.path()),
        vec![s.root().display().to_string()]
    );
    s.ok(&["system", "reset", "-f"]);
    assert_eq!(
        std::fs::read_dir(s.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
}

#[test]
fn subvolumes_made_inside_a_container_go_with_it() {
    let s = Store::new("btrfs");
    s.busybox();
    s.ok(&["create", "--name", "c", "busybox", "true"]);
    let merged = PathBuf::from(s.ok(&["mount", "c"]).trim());
    sh(
        "btrfs",
        &[
            "subvolume",
            "create",
            merged.join("inner").to_str().unwrap(),
        ],
    );
    sh(
        "btrfs",
        &[
            "subvolume",
            "create",
            merged.join("inner/deeper").to_str().unwrap(),
        ],
    );
    std::fs::write(merged.join("inner/deeper/f"), b"x").unwrap();
    s.ok(&["umount", "c"]);
    let before = std::fs::read_dir(s.layer_dir()).unwrap().count();
    s.ok(&["rm", "c"]);
    assert_eq!(
        std::fs::read_dir(s.layer_dir()).unwrap().count(),
        before - 1
    );
    let listed = sh(
        "btrfs",
        &["subvolume", "list", pool_mount(&s).to_str().unwrap()],
    );
    assert!(!listed.contains("inner"), "{listed}");
    s.check_clean();
}

#[test]
fn loopsize_sets_the_pool_size_and_bad_options_are_refused() {
    let s = Store::new("btrfs");
    let data_file = s.root().join("btrfs/loop/data");
    let out = s.run(&["--storage-opt", "btrfs.loopsize=1k", "info"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid btrfs.loopsize \"1k\""));
    assert!(!data_file.exists(), "nothing made for a refused size");
    let err = s.fails(&["--storage-opt", "btrfs.color=red", "info"]);
    assert!(
        err.contains("unknown storage option \"btrfs.color\""),
        "{err}"
    );
    s.ok(&["--storage-opt", "btrfs.loopsize=2G", "info"]);
    assert_eq!(std::fs::metadata(&data_file).unwrap().len(), 2 << 30);
    assert!(info(&s).contains("Data Space Total: 2.1475 GB"));
    // Options of other drivers are refused by name.
    let o = Store::new("overlay2");
    let err = o.fails(&["--storage-opt", "btrfs.loopsize=2G", "info"]);
    assert!(err.contains("overlay2 takes no options"), "{err}");
}
