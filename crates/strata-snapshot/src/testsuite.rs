//! The shared driver test suite: containerd's snapshotter suite
//! (core/snapshots/testsuite), written anew for strata's Snapshotter. Every storage driver
//! runs all of it (see tests/suite.rs); each test gets a fresh store root and mounts only
//! through guards, so nothing stays mounted when it ends, even when it fails.

use crate::mount::MountGuard;
use crate::{open_driver, Kind, Mount, PrepareOpts, SnapshotError, Snapshotter, VOLATILE_LABEL};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One test: the snapshotter under test and a scratch directory for mount points.
pub type Test = fn(&Snapshotter, &Path);

/// Every test of the suite, by name.
pub const TESTS: &[(&str, Test)] = &[
    ("basic", basic),
    ("stat_active", stat_active),
    ("stat_committed", stat_committed),
    ("transitivity", transitivity),
    ("prepare_view_failing", prepare_view_failing),
    ("update", update),
    ("remove", remove),
    ("walk", walk),
    ("layer_file_update", layer_file_update),
    (
        "remove_directory_in_lower_layer",
        remove_directory_in_lower_layer,
    ),
    ("chown", chown),
    (
        "directory_permission_on_commit",
        directory_permission_on_commit,
    ),
    ("remove_intermediate_snapshot", remove_intermediate_snapshot),
    (
        "deleted_files_in_child_snapshot",
        deleted_files_in_child_snapshot,
    ),
    ("move_file_from_lower_layer", move_file_from_lower_layer),
    ("view_readonly", view_readonly),
    ("stat_in_walk", stat_in_walk),
    ("close_twice", close_twice),
    ("root_permission", root_permission),
    ("rename", rename),
    ("layers_128_mount", layers_128_mount),
    ("diff_reproduces_changes", diff_reproduces_changes),
    ("volatile_record_lost", volatile_record_lost),
];

/// Opens `driver` on a fresh store under `root`.
pub fn open(driver: &str, root: &Path) -> Snapshotter {
    let db = Arc::new(strata_store::Db::open(&root.join("strata.db")).expect("open db"));
    let drv = open_driver(driver, &root.join(driver), &[]).expect("open driver");
    // Where tree tops are costly (ext4 without a journal), drivers get spares as the
    // engine gives them.
    let spares = strata_store::fsutil::SpareDirs::open(&root.join("spares")).expect("spares");
    if let Some(s) = &spares {
        s.replenish();
    }
    Snapshotter::new(db, drv, &root.join("tmp"), spares).expect("snapshotter")
}

/// Closes a snapshotter when dropped, so a failing test releases what its driver set up
/// (btrfs: the loop-backed pool) as a passing one does.
struct Closing(Snapshotter);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close().expect("close the snapshotter");
    }
}

fn find(name: &str) -> Test {
    TESTS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no test {name}"))
        .1
}

fn run_in(driver: &str, name: &str, root: &Path) {
    let test = find(name);
    let sn = Closing(open(driver, root));
    let work = root.join("work");
    fs::create_dir_all(&work).expect("work dir");
    test(&sn.0, &work);
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("strata-suite-")
        .tempdir()
        .expect("tempdir")
}

/// Runs test `name` against `driver` in a new temporary root.
pub fn run(driver: &str, name: &str) {
    let root = tempdir();
    run_in(driver, name, root.path());
}

/// Runs test `name` against `driver` with the store root on a btrfs filesystem made for
/// the test (so the btrfs driver uses it directly, with no pool of its own).
pub fn run_on_btrfs(driver: &str, name: &str) {
    let dir = tempdir();
    let pool =
        crate::btrfs::LoopPool::open(&dir.path().join("fs.img"), &dir.path().join("fs"), 1 << 30)
            .expect("make a btrfs filesystem");
    struct Unmount(crate::btrfs::LoopPool);
    impl Drop for Unmount {
        fn drop(&mut self) {
            self.0.close().expect("unmount the test's btrfs");
        }
    }
    let pool = Unmount(pool);
    let root = pool.0.mountpoint().join("store");
    fs::create_dir_all(&root).expect("store root");
    run_in(driver, name, &root);
}

static MOUNT_SEQ: AtomicUsize = AtomicUsize::new(0);

fn mount(work: &Path, mounts: &[Mount]) -> MountGuard {
    let n = MOUNT_SEQ.fetch_add(1, Ordering::Relaxed);
    let g = MountGuard::new(mounts, &work.join(format!("m{n}"))).expect("mount");
    if mounts.iter().any(|m| m.kind == "overlay") {
        const OVERLAYFS_MAGIC: i64 = 0x794c7630;
        assert_eq!(
            rustix::fs::statfs(g.path()).unwrap().f_type,
            OVERLAYFS_MAGIC,
            "an overlay mount is overlayfs"
        );
    }
    if mounts.iter().any(|m| m.kind == "aufs") {
        const FUSE_MAGIC: i64 = 0x65735546;
        assert_eq!(
            rustix::fs::statfs(g.path()).unwrap().f_type,
            FUSE_MAGIC,
            "an aufs mount is the FUSE union"
        );
    }
    g
}

/// Prepares `key` on `parent`, lets `f` change the tree, and commits it as `name`.
fn layer(sn: &Snapshotter, work: &Path, name: &str, parent: Option<&str>, f: impl FnOnce(&Path)) {
    let key = format!("{name}-active");
    let m = sn
        .prepare(&key, parent, &PrepareOpts::default())
        .expect("prepare");
    {
        let g = mount(work, &m);
        f(g.path());
    }
    sn.commit(name, &key).expect("commit");
}

fn view<T>(sn: &Snapshotter, work: &Path, parent: &str, f: impl FnOnce(&Path) -> T) -> T {
    let key = format!("view-{}", MOUNT_SEQ.fetch_add(1, Ordering::Relaxed));
    let m = sn.view(&key, Some(parent)).expect("view");
    let out = {
        let g = mount(work, &m);
        f(g.path())
    };
    sn.remove(&key).expect("remove view");
    out
}

fn write(p: &Path, rel: &str, data: &str) {
    let path = p.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

fn read(p: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(p.join(rel)).ok()
}

/// A tree described by value (type, mode, owner, content) for comparisons.
pub fn snapshot_tree(root: &Path) -> BTreeMap<String, String> {
    strata_archive::walk::describe_tree(root, false).expect("describe tree")
}

pub fn basic(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "committed-1", None, |p| {
        write(p, "foo/bar", "bar");
        write(p, "a/b/c", "c");
        fs::create_dir(p.join("empty")).unwrap();
    });
    let info = sn.stat("committed-1").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent, None);
    assert!(matches!(
        sn.stat("committed-1-active"),
        Err(SnapshotError::NotFound(_))
    ));
    layer(sn, work, "committed-2", Some("committed-1"), |p| {
        assert_eq!(
            read(p, "foo/bar").as_deref(),
            Some("bar"),
            "child sees the parent"
        );
        write(p, "bar", "new");
        fs::remove_dir_all(p.join("a/b")).unwrap();
    });
    assert_eq!(
        sn.stat("committed-2").unwrap().parent.as_deref(),
        Some("committed-1")
    );
    view(sn, work, "committed-2", |p| {
        assert_eq!(read(p, "bar").as_deref(), Some("new"));
        assert_eq!(read(p, "foo/bar").as_deref(), Some("bar"));
        assert!(p.join("a").is_dir());
        assert!(!p.join("a/b").exists(), "whiteout of a/b honoured");
        assert!(p.join("empty").is_dir());
    });
    sn.remove("committed-2").unwrap();
    sn.remove("committed-1").unwrap();
}

pub fn stat_active(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    sn.prepare("active", Some("base"), &PrepareOpts::default())
        .unwrap();
    let info = sn.stat("active").unwrap();
    assert_eq!(info.kind, Kind::Active);
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert_eq!(info.name, "active");
}

pub fn stat_committed(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    layer(sn, work, "top", Some("base"), |p| write(p, "g", "y"));
    let info = sn.stat("top").unwrap();
    assert_eq!(info.kind, Kind::Committed);
    assert_eq!(info.parent.as_deref(), Some("base"));
}

pub fn transitivity(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "a", None, |p| write(p, "from-a", "a"));
    layer(sn, work, "b", Some("a"), |p| write(p, "from-b", "b"));
    view(sn, work, "b", |p| {
        assert_eq!(read(p, "from-a").as_deref(), Some("a"));
        assert_eq!(read(p, "from-b").as_deref(), Some("b"));
    });
}

pub fn prepare_view_failing(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    sn.prepare("key", Some("base"), &PrepareOpts::default())
        .unwrap();
    assert!(matches!(
        sn.prepare("key", Some("base"), &PrepareOpts::default()),
        Err(SnapshotError::AlreadyExists(_))
    ));
    assert!(matches!(
        sn.view("key", Some("base")),
        Err(SnapshotError::AlreadyExists(_))
    ));
    assert!(matches!(
        sn.view("base", None),
        Err(SnapshotError::AlreadyExists(_))
    ));
    assert!(matches!(
        sn.prepare("other", Some("missing"), &PrepareOpts::default()),
        Err(SnapshotError::NotFound(_))
    ));
    assert!(
        matches!(
            sn.prepare("other", Some("key"), &PrepareOpts::default()),
            Err(SnapshotError::FailedPrecondition(_))
        ),
        "an active snapshot is never a parent"
    );
    assert!(
        !sn.exists("other").unwrap(),
        "a failed prepare leaves no record"
    );
}

pub fn update(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    let mut info = sn.stat("base").unwrap();
    info.labels.insert("a".into(), "1".into());
    info.labels.insert("b".into(), "2".into());
    let got = sn.update(&info, &[]).unwrap();
    assert_eq!(got.labels.len(), 2);
    let mut only_b = got.clone();
    only_b.labels.insert("b".into(), "3".into());
    only_b.labels.insert("a".into(), "ignored".into());
    let got = sn.update(&only_b, &["labels.b"]).unwrap();
    assert_eq!(got.labels["a"], "1");
    assert_eq!(got.labels["b"], "3");
    let mut removed = got.clone();
    removed.labels.remove("a");
    let got = sn.update(&removed, &["labels.a"]).unwrap();
    assert!(!got.labels.contains_key("a"));
    assert!(
        matches!(
            sn.update(&got, &["kind"]),
            Err(SnapshotError::InvalidArgument(_))
        ),
        "immutable fields are refused"
    );
    assert!(matches!(
        sn.update(&got, &["parent"]),
        Err(SnapshotError::InvalidArgument(_))
    ));
    assert_eq!(sn.stat("base").unwrap().kind, Kind::Committed);
}

pub fn remove(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    sn.prepare("active", Some("base"), &PrepareOpts::default())
        .unwrap();
    sn.remove("active").unwrap();
    sn.remove("base").unwrap();
    assert!(matches!(sn.remove("base"), Err(SnapshotError::NotFound(_))));
    assert!(
        sn.orphans().unwrap().is_empty(),
        "removed snapshots leave no storage"
    );
}

pub fn walk(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    sn.prepare("active", Some("base"), &PrepareOpts::default())
        .unwrap();
    sn.view("view", Some("base")).unwrap();
    let mut seen = BTreeMap::new();
    sn.walk(&mut |i| {
        seen.insert(i.name.clone(), i.kind);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen["base"], Kind::Committed);
    assert_eq!(seen["active"], Kind::Active);
    assert_eq!(seen["view"], Kind::View);
}

pub fn layer_file_update(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| write(p, "etc/conf", "one"));
    layer(sn, work, "l2", Some("l1"), |p| write(p, "etc/conf", "two"));
    layer(sn, work, "l3", Some("l2"), |p| {
        write(p, "etc/conf", "three-longer")
    });
    view(sn, work, "l2", |p| {
        assert_eq!(read(p, "etc/conf").as_deref(), Some("two"))
    });
    view(sn, work, "l3", |p| {
        assert_eq!(read(p, "etc/conf").as_deref(), Some("three-longer"))
    });
    view(sn, work, "l1", |p| {
        assert_eq!(
            read(p, "etc/conf").as_deref(),
            Some("one"),
            "lower layer unchanged"
        )
    });
}

pub fn remove_directory_in_lower_layer(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| {
        write(p, "lib/a", "a");
        write(p, "lib/sub/b", "b");
    });
    layer(sn, work, "l2", Some("l1"), |p| {
        fs::remove_dir_all(p.join("lib")).unwrap()
    });
    view(sn, work, "l2", |p| assert!(!p.join("lib").exists()));
    layer(sn, work, "l3", Some("l2"), |p| write(p, "lib/new", "n"));
    view(sn, work, "l3", |p| {
        assert_eq!(read(p, "lib/new").as_deref(), Some("n"));
        assert!(
            !p.join("lib/a").exists(),
            "a recreated directory does not resurrect old files"
        );
    });
}

pub fn chown(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| {
        write(p, "dir/file", "data");
        std::os::unix::fs::chown(p.join("dir/file"), Some(0), Some(0)).unwrap();
    });
    layer(sn, work, "l2", Some("l1"), |p| {
        std::os::unix::fs::chown(p.join("dir/file"), Some(1), Some(2)).unwrap();
        std::os::unix::fs::chown(p.join("dir"), Some(3), Some(4)).unwrap();
    });
    view(sn, work, "l2", |p| {
        let md = fs::metadata(p.join("dir/file")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1, 2));
        assert_eq!(read(p, "dir/file").as_deref(), Some("data"));
        let md = fs::metadata(p.join("dir")).unwrap();
        assert_eq!((md.uid(), md.gid()), (3, 4));
    });
    view(sn, work, "l1", |p| {
        assert_eq!(fs::metadata(p.join("dir/file")).unwrap().uid(), 0)
    });
}

pub fn directory_permission_on_commit(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| {
        for (d, mode) in [("d700", 0o700), ("d750", 0o750), ("d777", 0o777)] {
            fs::create_dir(p.join(d)).unwrap();
            fs::set_permissions(p.join(d), fs::Permissions::from_mode(mode)).unwrap();
        }
    });
    layer(sn, work, "l2", Some("l1"), |p| {
        write(p, "d750/child", "c");
        fs::create_dir(p.join("d755")).unwrap();
        fs::set_permissions(p.join("d755"), fs::Permissions::from_mode(0o755)).unwrap();
    });
    view(sn, work, "l2", |p| {
        for (d, mode) in [
            ("d700", 0o700),
            ("d750", 0o750),
            ("d777", 0o777),
            ("d755", 0o755),
        ] {
            assert_eq!(
                fs::metadata(p.join(d)).unwrap().mode() & 0o7777,
                mode,
                "{d}"
            );
        }
    });
}

pub fn remove_intermediate_snapshot(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    layer(sn, work, "mid", Some("base"), |p| write(p, "g", "y"));
    sn.prepare("top", Some("mid"), &PrepareOpts::default())
        .unwrap();
    assert!(matches!(
        sn.remove("mid"),
        Err(SnapshotError::FailedPrecondition(_))
    ));
    assert!(matches!(
        sn.remove("base"),
        Err(SnapshotError::FailedPrecondition(_))
    ));
    sn.remove("top").unwrap();
    sn.remove("mid").unwrap();
    sn.remove("base").unwrap();
}

pub fn deleted_files_in_child_snapshot(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| {
        write(p, "keep", "k");
        write(p, "gone", "g");
        write(p, "dir/gone-too", "g");
    });
    layer(sn, work, "l2", Some("l1"), |p| {
        fs::remove_file(p.join("gone")).unwrap();
        fs::remove_file(p.join("dir/gone-too")).unwrap();
    });
    view(sn, work, "l2", |p| {
        assert!(p.join("keep").exists());
        assert!(!p.join("gone").exists());
        assert!(!p.join("dir/gone-too").exists());
        assert!(p.join("dir").is_dir());
    });
}

pub fn move_file_from_lower_layer(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| write(p, "dir/file", "payload"));
    layer(sn, work, "l2", Some("l1"), |p| {
        fs::create_dir(p.join("newdir")).unwrap();
        fs::rename(p.join("dir/file"), p.join("newdir/file")).unwrap();
    });
    view(sn, work, "l2", |p| {
        assert!(!p.join("dir/file").exists());
        assert_eq!(read(p, "newdir/file").as_deref(), Some("payload"));
    });
}

pub fn view_readonly(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "x"));
    view(sn, work, "base", |p| {
        let err = fs::write(p.join("new"), "x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EROFS),
            "views are read-only: {err}"
        );
        assert!(fs::write(p.join("f"), "y").is_err());
    });
}

pub fn stat_in_walk(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "a", None, |p| write(p, "f", "x"));
    layer(sn, work, "b", Some("a"), |p| write(p, "g", "y"));
    let mut n = 0;
    sn.walk(&mut |i| {
        let again = sn.stat(&i.name)?;
        assert_eq!(&again, i);
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 2);
}

pub fn close_twice(sn: &Snapshotter, _work: &Path) {
    sn.close().unwrap();
    sn.close().unwrap();
}

pub fn root_permission(sn: &Snapshotter, work: &Path) {
    let m = sn.prepare("empty", None, &PrepareOpts::default()).unwrap();
    let g = mount(work, &m);
    assert_eq!(fs::metadata(g.path()).unwrap().mode() & 0o7777, 0o755);
}

/// Renaming a directory that lives in a lower layer. overlay2 runs without redirect_dir
/// (its native diff depends on it), so the kernel answers EXDEV and, like `mv`, the move is
/// a copy and a delete; the result must be the same on every driver.
pub fn rename(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "l1", None, |p| {
        write(p, "old/a", "a");
        write(p, "old/sub/b", "b");
        write(p, "file", "f");
    });
    layer(sn, work, "l2", Some("l1"), |p| {
        move_path(&p.join("old"), &p.join("new")).unwrap();
        fs::rename(p.join("file"), p.join("file2")).unwrap();
    });
    view(sn, work, "l2", |p| {
        assert!(!p.join("old").exists());
        assert_eq!(read(p, "new/a").as_deref(), Some("a"));
        assert_eq!(read(p, "new/sub/b").as_deref(), Some("b"));
        assert_eq!(read(p, "file2").as_deref(), Some("f"));
        assert!(!p.join("file").exists());
    });
}

fn move_path(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_recursive(from, to)?;
            fs::remove_dir_all(from)
        }
        other => other,
    }
}

fn copy_recursive(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(from)?.is_dir() {
        fs::create_dir(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_recursive(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(from, to).map(|_| ())
    }
}

/// 128 layers, each adding, changing and removing files; every prepared mount and the
/// final view must equal a flat directory that got the same changes.
pub fn layers_128_mount(sn: &Snapshotter, work: &Path) {
    let flat = work.join("flat");
    fs::create_dir_all(&flat).unwrap();
    let change = |p: &Path, i: usize| {
        write(p, &format!("layer-{i}"), &format!("added in {i}"));
        write(p, "shared/counter", &i.to_string());
        if i >= 1 {
            write(p, &format!("layer-{}", i - 1), &format!("changed in {i}"));
        }
        if i >= 2 {
            fs::remove_file(p.join(format!("layer-{}", i - 2))).unwrap();
        }
        if i.is_multiple_of(10) {
            fs::create_dir_all(p.join(format!("dirs/d{i}/x"))).unwrap();
        }
        if i % 10 == 5 {
            fs::remove_dir_all(p.join(format!("dirs/d{}", i - 5))).unwrap();
        }
    };
    let mut parent: Option<String> = None;
    for i in 0..128 {
        let name = format!("layer-{i}");
        let key = format!("active-{i}");
        let m = sn
            .prepare(&key, parent.as_deref(), &PrepareOpts::default())
            .unwrap();
        {
            let g = mount(work, &m);
            assert_eq!(
                snapshot_tree(g.path()),
                snapshot_tree(&flat),
                "layer {i} before changes"
            );
            change(g.path(), i);
            change(&flat, i);
            assert_eq!(
                snapshot_tree(g.path()),
                snapshot_tree(&flat),
                "layer {i} after changes"
            );
        }
        sn.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    let top = parent.unwrap();
    view(sn, work, &top, |p| {
        assert_eq!(snapshot_tree(p), snapshot_tree(&flat), "final view")
    });
}

/// Not in containerd's suite: the diff of a snapshot, applied on its parent the way the
/// engine applies layers, gives the same tree; for an active and a committed snapshot.
pub fn diff_reproduces_changes(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| {
        write(p, "etc/conf", "one");
        write(p, "etc/gone", "bye");
        write(p, "lib/a/b", "deep");
        write(p, "opaque/old", "old");
        // Large enough for aufs to copy it up lazily, filled behind the write.
        fs::write(p.join("big"), vec![7u8; 8 << 20]).unwrap();
        std::os::unix::fs::symlink("conf", p.join("etc/link")).unwrap();
        fs::set_permissions(p.join("etc/conf"), fs::Permissions::from_mode(0o600)).unwrap();
    });
    let m = sn
        .prepare("changed", Some("base"), &PrepareOpts::default())
        .unwrap();
    {
        let g = mount(work, &m);
        let p = g.path();
        write(p, "etc/conf", "two");
        let big = fs::OpenOptions::new()
            .write(true)
            .open(p.join("big"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&big, b"changed", (4 << 20) + 3).unwrap();
        drop(big);
        fs::remove_file(p.join("etc/gone")).unwrap();
        fs::remove_dir_all(p.join("lib/a")).unwrap();
        fs::remove_dir_all(p.join("opaque")).unwrap();
        write(p, "opaque/new", "new");
        write(p, "added/dir/file", "added");
        fs::set_permissions(p.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(p.join("etc/conf"), Some(7), Some(8)).unwrap();
        fs::remove_file(p.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("elsewhere", p.join("etc/link")).unwrap();
        fs::hard_link(p.join("added/dir/file"), p.join("added/hard")).unwrap();
    }
    let want = {
        let g = mount(work, &sn.mounts("changed").unwrap());
        snapshot_tree(g.path())
    };
    let check = |diff: Vec<u8>, key: &str| {
        sn.prepare(key, Some("base"), &PrepareOpts::default())
            .unwrap();
        match sn.apply_dir(key).unwrap() {
            Some((dir, format)) => {
                strata_archive::apply_layer(
                    io::Cursor::new(&diff),
                    &dir,
                    strata_archive::ApplyOptions {
                        whiteouts: format,
                        budget: None,
                    },
                )
                .unwrap();
            }
            None => {
                let g = mount(work, &sn.mounts(key).unwrap());
                strata_archive::apply_layer(
                    io::Cursor::new(&diff),
                    g.path(),
                    strata_archive::ApplyOptions {
                        whiteouts: strata_archive::WhiteoutFormat::Apply,
                        budget: None,
                    },
                )
                .unwrap();
            }
        }
        let g = mount(work, &sn.mounts(key).unwrap());
        assert_eq!(snapshot_tree(g.path()), want, "{key}");
    };
    let mut diff = Vec::new();
    sn.diff("changed", &mut diff).unwrap();
    check(diff, "rebuilt-from-active");
    sn.commit("changed-committed", "changed").unwrap();
    let mut diff = Vec::new();
    sn.diff("changed-committed", &mut diff).unwrap();
    check(diff, "rebuilt-from-committed");
}

/// A volatile snapshot's record is committed unsynced, so a power cut can lose it and
/// AUTOINCREMENT then gives its number again. Emulated by deleting the record and winding
/// the sequence back: the snapshot that gets the number must not see the lost one's data.
pub fn volatile_record_lost(sn: &Snapshotter, work: &Path) {
    layer(sn, work, "base", None, |p| write(p, "f", "base"));
    let volatile = PrepareOpts {
        labels: vec![(VOLATILE_LABEL.to_string(), "true".to_string())],
        ..Default::default()
    };
    let m = sn.prepare("lost", Some("base"), &volatile).unwrap();
    drop({
        let g = mount(work, &m);
        write(g.path(), "stale", "written before the power cut");
        g
    });
    let db = rusqlite::Connection::open(work.parent().unwrap().join("strata.db")).unwrap();
    let number = |key: &str| -> i64 {
        db.query_row("SELECT id FROM snapshots WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let lost = number("lost");
    db.execute_batch(
        "DELETE FROM snapshots WHERE key = 'lost';
         UPDATE sqlite_sequence SET seq = seq - 1 WHERE name = 'snapshots';",
    )
    .unwrap();
    assert_eq!(
        sn.orphans().unwrap(),
        [lost],
        "the lost snapshot's storage stays"
    );
    let m = sn
        .prepare("fresh", Some("base"), &PrepareOpts::default())
        .unwrap();
    assert_eq!(number("fresh"), lost, "the number is given again");
    {
        let g = mount(work, &m);
        assert_eq!(read(g.path(), "f").as_deref(), Some("base"));
        assert_eq!(
            read(g.path(), "stale"),
            None,
            "the lost snapshot's data shows"
        );
    }
    sn.remove("fresh").unwrap();
    sn.remove("base").unwrap();
    assert!(sn.orphans().unwrap().is_empty());
}
