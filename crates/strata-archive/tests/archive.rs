//! Applying and writing layer archives: every entry type round-trips, whiteouts take each
//! driver's form, diffs reproduce trees, and hostile archives are refused or contained.
//! Needs root (devices, ownership, trusted xattrs).

use std::fs;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use strata_archive::walk::describe_tree;
use strata_archive::{
    apply_layer, diff_trees, write_tree, ApplyError, ApplyOptions, WhiteoutFormat,
};

fn opts(format: WhiteoutFormat) -> ApplyOptions<'static> {
    ApplyOptions {
        whiteouts: format,
        budget: None,
    }
}

fn apply(tar: &[u8], dir: &Path, format: WhiteoutFormat) -> Result<(), ApplyError> {
    apply_layer(Cursor::new(tar), dir, opts(format)).map(|_| ())
}

/// An entry header with any name bytes at all, as a hostile archive would carry.
fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    let nb = name.as_bytes();
    h.as_old_mut().name[..nb.len()].copy_from_slice(nb);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(1_234_567_890);
    h.set_size(size);
    h
}

/// A layer holding every kind of entry a layer can hold.
fn every_entry_type() -> Vec<u8> {
    tar_of(|b| {
        use tar::EntryType as T;
        b.append_data(
            &mut header(T::Directory, 0o750, 1000, 0),
            "dir/",
            io::empty(),
        )
        .unwrap();
        b.append_pax_extensions([
            ("SCHILY.xattr.user.note", b"hello".as_slice()),
            (
                "SCHILY.xattr.security.capability",
                &[
                    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ][..],
            ),
        ])
        .unwrap();
        b.append_data(
            &mut header(T::Regular, 0o4755, 1000, 5),
            "dir/setuid-with-caps",
            &b"hello"[..],
        )
        .unwrap();
        b.append_link(
            &mut header(T::Link, 0o644, 0, 0),
            "dir/hardlink",
            "dir/setuid-with-caps",
        )
        .unwrap();
        b.append_link(
            &mut header(T::Symlink, 0o777, 7, 0),
            "dir/symlink",
            "/etc/passwd",
        )
        .unwrap();
        b.append_data(&mut header(T::Fifo, 0o600, 0, 0), "dir/fifo", io::empty())
            .unwrap();
        let mut c = header(T::Char, 0o666, 0, 0);
        c.set_device_major(1).unwrap();
        c.set_device_minor(3).unwrap();
        b.append_data(&mut c, "dev/null", io::empty()).unwrap();
        let mut blk = header(T::Block, 0o660, 0, 0);
        blk.set_device_major(7).unwrap();
        blk.set_device_minor(0).unwrap();
        b.append_data(&mut blk, "dev/loop0", io::empty()).unwrap();
        let long = format!("deep/{}/file", "x".repeat(150));
        b.append_data(&mut header(T::Regular, 0o600, 0, 3), &long, &b"abc"[..])
            .unwrap();
        b.append_data(&mut header(T::Regular, 0o644, 0, 0), "empty", io::empty())
            .unwrap();
    })
}

#[test]
fn every_entry_type_applies_and_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    apply(&every_entry_type(), &a, WhiteoutFormat::Apply).unwrap();

    let md = fs::metadata(a.join("dir/setuid-with-caps")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert_eq!(md.mtime(), 1_234_567_890);
    assert_eq!(md.nlink(), 2, "hard link shares the inode");
    assert_eq!(
        xattr::get(a.join("dir/setuid-with-caps"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    assert!(
        xattr::get(a.join("dir/setuid-with-caps"), "security.capability")
            .unwrap()
            .is_some()
    );
    assert_eq!(
        fs::read_link(a.join("dir/symlink")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::symlink_metadata(a.join("dir/symlink")).unwrap().uid(),
        7
    );
    assert!(fs::metadata(a.join("dir/fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    let null = fs::metadata(a.join("dev/null")).unwrap();
    assert_eq!(
        (
            rustix::fs::major(null.rdev()),
            rustix::fs::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(fs::metadata(a.join("dir")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(
        fs::metadata(a.join("dir")).unwrap().mtime(),
        1_234_567_890,
        "directory mtime set after its children"
    );

    // Written back out and applied again, the tree is the same.
    let tar = write_tree(&a, Vec::new(), WhiteoutFormat::Apply).unwrap();
    apply(&tar, &b, WhiteoutFormat::Apply).unwrap();
    assert_eq!(
        describe_tree(&a, true).unwrap(),
        describe_tree(&b, true).unwrap()
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn whiteouts_in_each_format() {
    let layer = tar_of(|b| {
        raw(b, "keep/", tar::EntryType::Directory, None, b"");
        raw(b, "keep/new", tar::EntryType::Regular, None, b"n");
        raw(b, "keep/.wh..wh..opq", tar::EntryType::Regular, None, b"");
        raw(b, ".wh.gone", tar::EntryType::Regular, None, b"");
        raw(b, ".wh..wh.plnk", tar::EntryType::Directory, None, b"");
        // The union's own records, which a layer must never plant in a branch.
        raw(b, ".wh..wh.lazy/", tar::EntryType::Directory, None, b"");
        raw(
            b,
            ".wh..wh.lazy/12",
            tar::EntryType::Regular,
            None,
            b"forged",
        );
        raw(
            b,
            "keep/.wh..wh.plnk/1.2",
            tar::EntryType::Regular,
            None,
            b"x",
        );
    });
    let t = tempfile::tempdir().unwrap();
    // Apply (a full tree): deletions happen; an opaque dir keeps only this layer's files.
    let full = t.path().join("full");
    fs::create_dir_all(full.join("keep")).unwrap();
    fs::write(full.join("keep/old"), "o").unwrap();
    fs::write(full.join("gone"), "g").unwrap();
    apply(&layer, &full, WhiteoutFormat::Apply).unwrap();
    assert!(!full.join("gone").exists());
    assert!(!full.join("keep/old").exists());
    assert!(full.join("keep/new").exists());
    assert!(
        !full.join(".wh..wh.plnk").exists(),
        "aufs metadata is not part of the tree"
    );

    // Overlay: char device 0/0 and the opaque xattr; written back as .wh. entries.
    let upper = t.path().join("upper");
    fs::create_dir_all(&upper).unwrap();
    apply(&layer, &upper, WhiteoutFormat::Overlay).unwrap();
    let wh = fs::symlink_metadata(upper.join("gone")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr::get(upper.join("keep"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    let out = write_tree(&upper, Vec::new(), WhiteoutFormat::Overlay).unwrap();
    let names = entry_names(&out);
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    assert!(
        names.contains(&"keep/.wh..wh..opq".to_string()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "gone"));

    // aufs: whiteouts stay files, exactly as in the tar.
    let branch = t.path().join("branch");
    fs::create_dir_all(&branch).unwrap();
    apply(&layer, &branch, WhiteoutFormat::Aufs).unwrap();
    assert!(branch.join(".wh.gone").is_file());
    assert!(branch.join("keep/.wh..wh..opq").is_file());
    for meta in [".wh..wh.plnk", ".wh..wh.lazy", "keep/.wh..wh.plnk"] {
        assert!(
            !branch.join(meta).exists(),
            "{meta} is not taken from a tar"
        );
    }
}

fn entry_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(Cursor::new(tar));
    a.entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

#[test]
fn tree_diff_reproduces_the_upper_tree() {
    let t = tempfile::tempdir().unwrap();
    let (lower, upper, rebuilt) = (
        t.path().join("lower"),
        t.path().join("upper"),
        t.path().join("rebuilt"),
    );
    for d in [&lower, &upper, &rebuilt] {
        fs::create_dir_all(d).unwrap();
    }
    apply(&every_entry_type(), &lower, WhiteoutFormat::Apply).unwrap();
    strata_archive::copy_tree(&lower, &upper).unwrap();
    strata_archive::copy_tree(&lower, &rebuilt).unwrap();
    assert_eq!(
        describe_tree(&lower, true).unwrap(),
        describe_tree(&upper, true).unwrap(),
        "copy_tree keeps everything"
    );
    // Changes of every kind.
    fs::write(upper.join("dir/setuid-with-caps"), "changed").unwrap();
    fs::remove_file(upper.join("dir/fifo")).unwrap();
    fs::remove_dir_all(upper.join("deep")).unwrap();
    fs::create_dir_all(upper.join("added/sub")).unwrap();
    fs::write(upper.join("added/sub/f"), "new").unwrap();
    std::os::unix::fs::chown(upper.join("empty"), Some(5), Some(6)).unwrap();
    fs::set_permissions(upper.join("dir"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(upper.join("dev/null")).unwrap();
    fs::create_dir(upper.join("dev/null")).unwrap();
    let diff = diff_trees(&lower, &upper, Vec::new()).unwrap();
    let names = entry_names(&diff);
    assert!(
        names.contains(&".wh.deep".to_string()) && names.contains(&"dir/.wh.fifo".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("dev/loop0")),
        "unchanged entries are not in the diff: {names:?}"
    );
    apply(&diff, &rebuilt, WhiteoutFormat::Apply).unwrap();
    let (want, got) = (
        describe_tree(&upper, false).unwrap(),
        describe_tree(&rebuilt, false).unwrap(),
    );
    assert_eq!(want, got);
}

#[test]
fn compressed_layers_are_detected() {
    let plain = every_entry_type();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(Cursor::new(&plain), 3).unwrap();
    for (name, data, kind) in [
        ("plain", &plain, "none"),
        ("gzip", &gz, "gzip"),
        ("zstd", &zst, "zstd"),
    ] {
        let (c, mut r) = strata_archive::decompress(Cursor::new(data.clone())).unwrap();
        assert_eq!(c.name(), kind, "{name}");
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, plain, "{name}");
    }
    assert!(
        strata_archive::decompress(Cursor::new(b"\xfd7zXZ\x00rest".to_vec())).is_err(),
        "xz is refused, not run through a program"
    );
}

// ---------------------------------------------------------------- hostile archives

/// A target directory inside a sandbox, and a host directory outside it that nothing may touch.
struct Sandbox {
    _t: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), "precious").unwrap();
    Sandbox {
        root,
        outside,
        _t: t,
    }
}

impl Sandbox {
    fn outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("victim")],
            "nothing created outside the root"
        );
        let md = fs::metadata(self.outside.join("victim")).unwrap();
        assert_eq!(
            fs::read_to_string(self.outside.join("victim")).unwrap(),
            "precious"
        );
        assert_eq!(md.nlink(), 1, "no hard link made to a host file");
        assert_eq!(md.mode() & 0o7777, 0o644);
    }
}

#[test]
fn parent_traversal_is_refused() {
    let s = sandbox();
    let tar = tar_of(|b| raw(b, "../outside/evil", tar::EntryType::Regular, None, b"x"));
    let err = apply(&tar, &s.root, WhiteoutFormat::Apply).unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    s.outside_untouched();
}

#[test]
fn absolute_paths_stay_inside() {
    let s = sandbox();
    let evil = format!("{}/evil", s.outside.display());
    let tar = tar_of(|b| raw(b, &evil, tar::EntryType::Regular, None, b"x"));
    apply(&tar, &s.root, WhiteoutFormat::Apply).unwrap();
    assert!(s.root.join(evil.trim_start_matches('/')).exists());
    s.outside_untouched();
}

#[test]
fn symlink_then_write_stays_inside() {
    for target in ["/", "../../..", "OUTSIDE"] {
        let s = sandbox();
        let target = target.replace("OUTSIDE", &s.outside.display().to_string());
        let tar = tar_of(|b| {
            raw(b, "link", tar::EntryType::Symlink, Some(&target), b"");
            raw(b, "link/evil", tar::EntryType::Regular, None, b"x");
            raw(
                b,
                "link/victim",
                tar::EntryType::Regular,
                None,
                b"overwritten",
            );
        });
        let _ = apply(&tar, &s.root, WhiteoutFormat::Apply);
        s.outside_untouched();
    }
}

#[test]
fn hardlinks_to_host_files_are_refused() {
    let s = sandbox();
    let victim = s.outside.join("victim").display().to_string();
    for link in [victim.as_str(), "../outside/victim", "/etc/passwd"] {
        let tar = tar_of(|b| raw(b, "hl", tar::EntryType::Link, Some(link), b""));
        assert!(
            apply(&tar, &s.root, WhiteoutFormat::Apply).is_err(),
            "{link}"
        );
    }
    // Through a symlink to the host: the link is resolved inside the root.
    let outside = s.outside.display().to_string();
    let tar = tar_of(|b| {
        raw(b, "s", tar::EntryType::Symlink, Some(&outside), b"");
        raw(b, "hl", tar::EntryType::Link, Some("s/victim"), b"");
    });
    assert!(apply(&tar, &s.root, WhiteoutFormat::Apply).is_err());
    // A hard link to a symlink links the symlink itself, never its target.
    let tar = tar_of(|b| {
        raw(b, "sv", tar::EntryType::Symlink, Some(&victim), b"");
        raw(b, "hl2", tar::EntryType::Link, Some("sv"), b"");
    });
    apply(&tar, &s.root, WhiteoutFormat::Apply).unwrap();
    assert!(fs::symlink_metadata(s.root.join("hl2"))
        .unwrap()
        .file_type()
        .is_symlink());
    s.outside_untouched();
}

#[test]
fn bare_and_traversing_whiteouts_are_refused_or_contained() {
    let s = sandbox();
    for name in [".wh.", "dir/.wh.", ".wh..."] {
        let tar = tar_of(|b| raw(b, name, tar::EntryType::Regular, None, b""));
        assert!(
            apply(&tar, &s.root, WhiteoutFormat::Apply).is_err(),
            "{name} must be refused"
        );
        assert!(
            apply(&tar, &s.root, WhiteoutFormat::Overlay).is_err(),
            "{name} must be refused (overlay)"
        );
    }
    let tar = tar_of(|b| {
        raw(
            b,
            "../outside/.wh.victim",
            tar::EntryType::Regular,
            None,
            b"",
        )
    });
    assert!(apply(&tar, &s.root, WhiteoutFormat::Apply).is_err());
    // A whiteout under a symlinked ancestor resolves inside the root.
    let outside = s.outside.display().to_string();
    let tar = tar_of(|b| {
        raw(b, "d", tar::EntryType::Symlink, Some(&outside), b"");
        raw(b, "d/.wh.victim", tar::EntryType::Regular, None, b"");
        raw(b, "e", tar::EntryType::Symlink, Some(&outside), b"");
        raw(b, "e/.wh..wh..opq", tar::EntryType::Regular, None, b"");
    });
    let _ = apply(&tar, &s.root, WhiteoutFormat::Apply);
    s.outside_untouched();
}

#[test]
fn overlay_xattrs_are_never_taken_from_archives() {
    let s = sandbox();
    let tar = tar_of(|b| {
        b.append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.opaque", b"y".as_slice()),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc".as_slice()),
        ])
        .unwrap();
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0, 0),
            "forged/",
            io::empty(),
        )
        .unwrap();
    });
    apply(&tar, &s.root, WhiteoutFormat::Overlay).unwrap();
    assert_eq!(
        xattr::get(s.root.join("forged"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(s.root.join("forged"), "trusted.overlay.redirect").unwrap(),
        None
    );
}

#[test]
fn sparse_100gib_file_stays_sparse() {
    let s = sandbox();
    const SIZE: u64 = 100 << 30;
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(4096);
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(SIZE - 4096);
        gnu.sparse[0].set_length(4096);
        gnu.set_real_size(SIZE);
    }
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &[7u8; 4096][..]).unwrap();
    let tar = b.into_inner().unwrap();
    assert!(tar.len() < 16 * 1024, "a small archive");
    apply(&tar, &s.root, WhiteoutFormat::Apply).unwrap();
    let md = fs::metadata(s.root.join("huge")).unwrap();
    assert_eq!(md.len(), SIZE);
    assert!(
        md.blocks() * 512 <= 1 << 20,
        "only the data block is allocated, {} bytes used",
        md.blocks() * 512
    );
    let mut f = fs::File::open(s.root.join("huge")).unwrap();
    io::Seek::seek(&mut f, io::SeekFrom::Start(SIZE - 4096)).unwrap();
    let mut tail = vec![0; 4096];
    f.read_exact(&mut tail).unwrap();
    assert!(tail.iter().all(|b| *b == 7));
}

#[test]
fn write_budget_stops_a_bomb() {
    let s = sandbox();
    // 64 MiB of non-zero data from a small gzip stream: the budget refuses past 8 MiB.
    let mut plain = tar::Builder::new(Vec::new());
    let size = 64u64 << 20;
    plain
        .append_data(
            &mut header(tar::EntryType::Regular, 0o644, 0, size),
            "bomb",
            io::repeat(b'A').take(size),
        )
        .unwrap();
    let plain = plain.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    io::Write::write_all(&mut gz, &plain).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20);
    let (_, r) = strata_archive::decompress(Cursor::new(gz)).unwrap();
    let mut budget = |written: u64| {
        if written > 8 << 20 {
            Err(io::Error::other("over budget"))
        } else {
            Ok(())
        }
    };
    let err = apply_layer(
        r,
        &s.root,
        ApplyOptions {
            whiteouts: WhiteoutFormat::Apply,
            budget: Some(&mut budget),
        },
    )
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("over budget"), "{err}");
    assert!(
        fs::metadata(s.root.join("bomb"))
            .map(|m| m.len())
            .unwrap_or(0)
            <= 9 << 20
    );
}

#[test]
fn truncated_and_garbage_archives_fail_cleanly() {
    let s = sandbox();
    let full = every_entry_type();
    let err = apply(&full[..700], &s.root, WhiteoutFormat::Apply).unwrap_err();
    assert!(
        err.to_string().contains("truncated")
            || err.to_string().contains("corrupt")
            || err.to_string().contains("entry"),
        "{err}"
    );
    assert!(
        apply(
            b"this is not a tar archive at all, not even close.........",
            &s.root,
            WhiteoutFormat::Apply
        )
        .is_err()
            || fs::read_dir(&s.root).unwrap().count() == 0
    );
}

/// The kernel answers an in-root `..` lookup with EAGAIN when a mount or rename races it;
/// `Root` retries, so lookups through `..` never fail spuriously while others mount.
#[test]
fn in_root_lookups_survive_concurrent_mounts() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let churn_dir = t.path().join("churn");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(&churn_dir).unwrap();
    fs::write(root.join("etc/f"), "x").unwrap();
    std::os::unix::fs::symlink("../..", root.join("up")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, dir) = (stop.clone(), churn_dir.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                rustix::mount::mount(
                    "none",
                    &dir,
                    "tmpfs",
                    rustix::mount::MountFlags::empty(),
                    None,
                )
                .unwrap();
                rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::empty()).unwrap();
                n += 1;
            }
            n
        })
    };
    let r = strata_archive::Root::open(&root).unwrap();
    for _ in 0..200_000 {
        r.open_at(Path::new("up/etc/f"), rustix::fs::OFlags::RDONLY)
            .expect("lookup through .. while mounts change");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0, "mounts really changed meanwhile");
}
