//! The union filesystem through real mounts made by the `strata-aufs` helper (as root).
//! Each test has its own branches under a temp dir and unmounts what it mounted.

use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const HELPER: &str = env!("CARGO_BIN_EXE_strata-aufs");

/// Branch dirs `b0..bN` and a mount point, all under one temp dir.
struct Union {
    dir: tempfile::TempDir,
    spec: String,
    mounted: bool,
}

impl Union {
    /// `modes[i]` is branch `i`'s mode (`rw`/`ro`), leftmost first.
    fn new(modes: &[&str]) -> Union {
        let dir = tempfile::Builder::new()
            .prefix("strata-aufs-test-")
            .tempdir()
            .unwrap();
        let mut spec = Vec::new();
        for (i, m) in modes.iter().enumerate() {
            let b = dir.path().join(format!("b{i}"));
            fs::create_dir(&b).unwrap();
            spec.push(format!("{}={m}", b.display()));
        }
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Union {
            dir,
            spec: spec.join(":"),
            mounted: false,
        }
    }

    fn branch(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("b{i}"))
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn m(&self, rel: &str) -> PathBuf {
        self.mnt().join(rel)
    }

    fn mount_with(&mut self, extra: &str) {
        let o = Command::new(HELPER)
            .arg("-o")
            .arg(format!("br={}{extra}", self.spec))
            .arg("none")
            .arg(self.mnt())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        self.mounted = true;
    }

    fn mount(&mut self) {
        self.mount_with(",allow_other");
    }

    fn unmount(&mut self) {
        if self.mounted {
            rustix::mount::unmount(self.mnt(), rustix::mount::UnmountFlags::empty()).unwrap();
            self.mounted = false;
        }
    }

    fn remount(&mut self) {
        self.unmount();
        self.mount();
    }
}

impl Drop for Union {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(self.mnt(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn write(p: impl AsRef<Path>, data: &str) {
    let p = p.as_ref();
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p).unwrap()
}

/// The pid of the server process serving the union mounted at `mnt`.
fn server_of(mnt: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let want = mnt.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.last() == Some(&want) && args.first().is_some_and(|a| a.ends_with(b"strata-aufs")) {
            return pid;
        }
    }
    panic!("no server for {}", mnt.display());
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("should fail").raw_os_error().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn seeds_example_leftmost_wins_and_the_ro_branch_refuses_writes() {
    // mount -t aufs -o br=/tmp/dir1=ro:/tmp/dir2=rw none /tmp/aufs
    let mut u = Union::new(&["ro", "rw"]);
    write(u.branch(0).join("same"), "from dir1");
    write(u.branch(1).join("same"), "from dir2");
    write(u.branch(1).join("only2"), "two");
    u.mount();
    assert_eq!(read(u.m("same")), "from dir1");
    assert_eq!(read(u.m("only2")), "two");
    // The leftmost copy lives in a read-only branch with nothing writable above it.
    let w = fs::OpenOptions::new().append(true).open(u.m("same"));
    assert_eq!(errno(w), libc::EROFS);
    assert_eq!(errno(fs::remove_file(u.m("same"))), libc::EROFS);
    // New files and changes to dir2's own files land in dir2.
    write(u.m("new"), "n");
    fs::write(u.m("only2"), "changed").unwrap();
    assert_eq!(read(u.branch(1).join("new")), "n");
    assert_eq!(read(u.branch(1).join("only2")), "changed");
    assert_eq!(read(u.branch(0).join("same")), "from dir1");
    assert_eq!(names(&u.mnt()), ["new", "only2", "same"]);
}

#[test]
fn copy_up_of_data_and_of_metadata_only_changes() {
    let mut u = Union::new(&["rw", "ro"]);
    let lower = u.branch(1);
    write(lower.join("d/data"), "lower data");
    for f in ["mode", "owner", "times", "xattr"] {
        write(lower.join("d").join(f), f);
    }
    xattr_set(&lower.join("d/xattr"), "user.kept", b"yes");
    u.mount();
    let upper = u.branch(0);

    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(u.m("d/data"))
        .unwrap();
    f.write_all(b" + more").unwrap();
    drop(f);
    assert_eq!(read(u.m("d/data")), "lower data + more");
    assert_eq!(read(upper.join("d/data")), "lower data + more");

    fs::set_permissions(u.m("d/mode"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(u.m("d/owner"), Some(1234), Some(5678)).unwrap();
    let t = fs::File::options()
        .write(true)
        .open(u.m("d/times"))
        .unwrap();
    t.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    drop(t);
    xattr_set(&u.m("d/xattr"), "user.added", b"1");

    let m = |p: &Path| fs::symlink_metadata(p).unwrap();
    assert_eq!(m(&upper.join("d/mode")).mode() & 0o777, 0o600);
    assert_eq!(
        (
            m(&upper.join("d/owner")).uid(),
            m(&upper.join("d/owner")).gid()
        ),
        (1234, 5678)
    );
    assert_eq!(m(&upper.join("d/times")).mtime(), 1_000_000);
    assert_eq!(xattr_get(&upper.join("d/xattr"), "user.kept"), b"yes");
    assert_eq!(xattr_get(&upper.join("d/xattr"), "user.added"), b"1");
    assert_eq!(xattr_get(&u.m("d/xattr"), "user.added"), b"1");
    // Every copy keeps its data; the lower branch is untouched.
    for f in ["mode", "owner", "times", "xattr"] {
        assert_eq!(read(upper.join("d").join(f)), f);
        assert_eq!(read(u.m("d").join(f)), f);
    }
    assert_eq!(read(lower.join("d/data")), "lower data");
    assert_eq!(m(&lower.join("d/mode")).mode() & 0o777, 0o644);
    assert!(xattr_list(&lower.join("d/xattr"))
        .iter()
        .all(|n| n != "user.added"));
    // The copied-up directory keeps the lower one's attributes.
    assert_eq!(
        m(&upper.join("d")).mode(),
        m(&lower.join("d")).mode(),
        "directory mode copied"
    );
}

#[test]
fn whiteouts_and_opaque_directories_are_made_and_honoured() {
    let mut u = Union::new(&["rw", "ro", "ro"]);
    write(u.branch(2).join("gone"), "x");
    write(u.branch(2).join("dir/a"), "a");
    write(u.branch(1).join("dir/b"), "b");
    write(u.branch(2).join("redo/old"), "old");
    write(u.branch(2).join("from"), "moved");
    write(u.branch(2).join("tree/sub/f"), "f");
    u.mount();
    let up = u.branch(0);

    fs::remove_file(u.m("gone")).unwrap();
    assert!(up.join(".wh.gone").exists());
    fs::remove_file(u.m("dir/a")).unwrap();
    fs::remove_file(u.m("dir/b")).unwrap();
    assert_eq!(names(&u.m("dir")), Vec::<String>::new());
    fs::remove_dir(u.m("dir")).unwrap();
    assert!(up.join(".wh.dir").exists());
    // A directory made where a lower one was deleted hides the old contents.
    fs::remove_file(u.m("redo/old")).unwrap();
    fs::remove_dir(u.m("redo")).unwrap();
    fs::create_dir(u.m("redo")).unwrap();
    assert!(up.join("redo/.wh..wh..opq").exists());
    assert!(!up.join(".wh.redo").exists());
    fs::rename(u.m("from"), u.m("to")).unwrap();
    assert!(up.join(".wh.from").exists());
    fs::rename(u.m("tree"), u.m("moved-tree")).unwrap();
    assert!(up.join(".wh.tree").exists());
    assert_eq!(read(u.m("moved-tree/sub/f")), "f");
    // Not empty in the merged view.
    fs::create_dir(u.m("full")).unwrap();
    write(u.m("full/x"), "x");
    assert_eq!(errno(fs::remove_dir(u.m("full"))), libc::ENOTEMPTY);

    for _ in 0..2 {
        assert_eq!(
            names(&u.mnt()),
            ["full", "moved-tree", "redo", "to"],
            "whiteouts hide lower names; whiteouts and markers are never listed"
        );
        assert_eq!(names(&u.m("redo")), Vec::<String>::new());
        assert_eq!(read(u.m("to")), "moved");
        assert!(!u.m("gone").exists() && !u.m("dir").exists() && !u.m("tree").exists());
        // The same after a remount: the branch alone says it all.
        u.remount();
    }
    // Names of aufs's own are refused.
    assert_eq!(errno(fs::write(u.m(".wh.sneaky"), "")), libc::EPERM);
    assert_eq!(errno(fs::metadata(u.m(".wh.gone"))), libc::ENOENT);
}

/// A server whose union was unmounted from outside leaves alone whatever is mounted at the
/// same path by the time it exits (as a container's root is, mounted again on a restart).
#[test]
fn an_exiting_server_leaves_a_newer_mount_alone() {
    let mut u = Union::new(&["rw"]);
    u.mount();
    let server = server_of(&u.mnt());
    // Held still, the server notices its unmount only after the path has a new mount.
    // SAFETY: plain kill(2) calls.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    u.unmount();
    rustix::mount::mount(
        "none",
        u.mnt(),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    u.mounted = true; // Drop takes the tmpfs away if an assertion fails.
    write(u.m("newer"), "still here");
    unsafe { libc::kill(server, libc::SIGCONT) };
    for _ in 0..500 {
        if !Path::new(&format!("/proc/{server}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        !Path::new(&format!("/proc/{server}")).exists(),
        "the server outlived its unmount"
    );
    assert_eq!(
        fs::read_to_string(u.m("newer")).ok().as_deref(),
        Some("still here"),
        "the exiting server unmounted the newer mount"
    );
    u.unmount();
}

/// Names made after a directory was renamed or removed land in the directory the path
/// names now (the union keeps the writable branch's directories open between requests).
#[test]
fn new_names_follow_renamed_and_removed_directories() {
    let mut u = Union::new(&["rw", "ro"]);
    write(u.branch(1).join("low/keep"), "lower");
    u.mount();
    write(u.m("a/f1"), "1");
    fs::rename(u.m("a"), u.m("b")).unwrap();
    fs::create_dir(u.m("a")).unwrap();
    write(u.m("a/f2"), "2");
    fs::set_permissions(u.m("a/f2"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(names(&u.branch(0).join("a")), ["f2"]);
    assert_eq!(names(&u.branch(0).join("b")), ["f1"]);
    assert_eq!(
        fs::metadata(u.branch(0).join("a/f2")).unwrap().mode() & 0o777,
        0o600
    );
    // Removed and made again.
    fs::remove_file(u.m("a/f2")).unwrap();
    fs::remove_dir(u.m("a")).unwrap();
    fs::create_dir(u.m("a")).unwrap();
    write(u.m("a/f3"), "3");
    assert_eq!(names(&u.branch(0).join("a")), ["f3"]);
    // A directory copied up from the lower branch, renamed, then made again.
    write(u.m("low/new"), "n");
    fs::rename(u.m("low"), u.m("moved")).unwrap();
    fs::create_dir(u.m("low")).unwrap();
    write(u.m("low/again"), "x");
    assert_eq!(names(&u.m("low")), ["again"]);
    assert_eq!(names(&u.m("moved")), ["keep", "new"]);
    assert_eq!(read(u.m("moved/keep")), "lower");
    u.remount();
    assert_eq!(names(&u.m("low")), ["again"]);
    assert_eq!(names(&u.m("moved")), ["keep", "new"]);
    assert_eq!(names(&u.m("b")), ["f1"]);
}

#[test]
fn hard_links_survive_copy_up() {
    let mut u = Union::new(&["rw", "ro"]);
    write(u.branch(1).join("a"), "shared");
    fs::create_dir(u.branch(1).join("d")).unwrap();
    fs::hard_link(u.branch(1).join("a"), u.branch(1).join("d/b")).unwrap();
    u.mount();
    let mnt = u.mnt();
    let ino = |p: &str| fs::metadata(mnt.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("d/b"), "links share an inode number");
    fs::write(u.m("a"), "changed through a").unwrap();
    assert_eq!(read(u.m("d/b")), "changed through a");
    assert_eq!(ino("a"), ino("d/b"));
    u.remount();
    assert_eq!(read(u.m("d/b")), "changed through a", "after a remount too");
    assert_eq!(ino("a"), ino("d/b"));
    let up = u.branch(0);
    assert_eq!(
        fs::metadata(up.join("a")).unwrap().ino(),
        fs::metadata(up.join("d/b")).unwrap().ino(),
        "the writable branch holds one file under both names"
    );
    assert_eq!(read(u.branch(1).join("d/b")), "shared");
    // A link made through the union is a link in the branch.
    fs::hard_link(u.m("a"), u.m("c")).unwrap();
    assert_eq!(ino("c"), ino("a"));
    assert_eq!(
        fs::metadata(up.join("c")).unwrap().ino(),
        fs::metadata(up.join("a")).unwrap().ino()
    );
}

fn inode_map(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.insert(
                e.path().strip_prefix(root).unwrap().display().to_string(),
                m.ino(),
            );
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn inode_numbers_are_stable_and_tools_walk_the_tree() {
    let mut u = Union::new(&["rw", "ro", "ro"]);
    for i in 0..30 {
        write(u.branch(1 + i % 2).join(format!("d{}/f{i}", i % 4)), "x");
    }
    std::os::unix::fs::symlink("d0/f0", u.branch(2).join("link")).unwrap();
    u.mount();
    write(u.m("d1/new"), "new");
    let first = inode_map(&u.mnt());
    let mut seen = HashMap::new();
    for (p, i) in &first {
        assert!(seen.insert(*i, p.clone()).is_none(), "{p} shares {i}");
    }
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    assert_eq!(
        inode_map(&u.mnt()),
        first,
        "the same after the kernel forgets"
    );
    u.remount();
    assert_eq!(inode_map(&u.mnt()), first, "the same after a remount");
    // find, du and tar walk it without complaint.
    for (tool, args) in [
        ("find", vec![".", "-type", "f"]),
        ("du", vec!["-s", "."]),
        ("tar", vec!["-cf", "/dev/null", "."]),
    ] {
        let o = Command::new(tool)
            .args(&args)
            .current_dir(u.mnt())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if tool == "find" {
            assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 31);
        }
    }
}

#[test]
fn readdir_merges_branches_once_per_name() {
    let mut u = Union::new(&["rw", "ro+wh", "ro", "ro"]);
    let mut expect = Vec::new();
    for i in 0..300 {
        let b = 1 + i % 3;
        write(u.branch(b).join(format!("n{i}")), "x");
        write(u.branch(3).join(format!("n{i}")), "dup");
        expect.push(format!("n{i}"));
    }
    fs::write(u.branch(1).join(".wh.n5"), "").unwrap();
    // A plain `ro` branch's whiteouts are not in effect (as in aufs): n8 stays.
    fs::write(u.branch(2).join(".wh.n8"), "").unwrap();
    fs::create_dir(u.branch(2).join(".wh..wh.plnk")).unwrap();
    expect.retain(|n| n != "n5" || 5 % 3 == 0);
    expect.sort();
    u.mount();
    assert_eq!(names(&u.mnt()), expect);
    // Listing twice (from the kernel's cache) and after a change.
    assert_eq!(names(&u.mnt()), expect);
    fs::remove_file(u.m("n7")).unwrap();
    expect.retain(|n| n != "n7");
    assert_eq!(names(&u.mnt()), expect);
}

/// Names looked up before their directory was ever listed are found by probing each
/// branch for them alone; they must resolve as the merged listing says.
#[test]
fn names_looked_up_before_a_listing_resolve_as_the_listing_shows() {
    let mut u = Union::new(&["rw", "ro+wh", "ro", "ro+wh"]);
    // (branch, path, content); branch 2 is plain `ro`: its whiteout hides nothing.
    let layout = [
        (1, ".wh.gone", ""),
        (1, "opq/new", "new"),
        (1, "opq/.wh..wh..opq", ""),
        (1, "over", "file"),
        (2, ".wh.kept", ""),
        (2, "d/two", "2"),
        (3, "gone", "x"),
        (3, "opq/old", "old"),
        (3, "over/inside", "x"),
        (3, "kept", "kept"),
        (3, "d/three", "3"),
        (3, "deep/er/file", "deep"),
    ];
    for (b, rel, data) in layout {
        write(u.branch(b).join(rel), data);
    }
    let paths = [
        "gone",
        "opq/old",
        "opq/new",
        "over",
        "over/inside",
        "kept",
        "d/two",
        "d/three",
        "deep/er/file",
        "nothere",
        "d/nothere",
    ];
    let look = |u: &Union| -> Vec<String> {
        paths
            .iter()
            .map(|p| match fs::read_to_string(u.m(p)) {
                Ok(s) => s,
                Err(e) => format!("errno {}", e.raw_os_error().unwrap()),
            })
            .collect()
    };
    let want: Vec<String> = [
        "errno 2", "errno 2", "new", "file", "errno 20", "kept", "2", "3", "deep", "errno 2",
        "errno 2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    u.mount();
    assert_eq!(look(&u), want, "looked up first");
    u.remount();
    for d in ["", "opq", "d", "deep", "deep/er"] {
        names(&u.m(d));
    }
    assert_eq!(look(&u), want, "looked up after listing");
    assert_eq!(names(&u.mnt()), ["d", "deep", "kept", "opq", "over"]);
    assert_eq!(names(&u.m("opq")), ["new"]);
    // A name made where a lookup found nothing, and one removed after a lookup found it.
    u.remount();
    assert!(!u.m("d/four").exists() && u.m("d/two").exists());
    write(u.m("d/four"), "4");
    fs::remove_file(u.m("d/two")).unwrap();
    assert_eq!(names(&u.m("d")), ["four", "three"]);
    u.remount();
    assert_eq!(names(&u.m("d")), ["four", "three"]);
}

#[test]
fn special_files_links_xattrs_statfs_and_fsync() {
    let mut u = Union::new(&["rw", "ro"]);
    std::os::unix::fs::symlink("target", u.branch(1).join("sym")).unwrap();
    u.mount();
    assert_eq!(fs::read_link(u.m("sym")).unwrap(), Path::new("target"));
    std::os::unix::fs::symlink("/abs", u.m("sym2")).unwrap();
    assert_eq!(
        fs::read_link(u.branch(0).join("sym2")).unwrap(),
        Path::new("/abs")
    );
    let ok = Command::new("mkfifo").arg(u.m("fifo")).status().unwrap();
    assert!(ok.success());
    let ok = Command::new("mknod")
        .args([u.m("null").to_str().unwrap(), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(ok.success());
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::metadata(u.branch(0).join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::metadata(u.m("null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    let sv = rustix::fs::statvfs(u.mnt()).unwrap();
    assert_eq!(sv.f_namemax, 251, "room for the .wh. prefix, as aufs");
    assert_eq!(
        errno(fs::write(u.m(&"n".repeat(252)), "")),
        libc::ENAMETOOLONG
    );
    let mut f = fs::File::create(u.m("synced")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    xattr_set(&u.m("synced"), "user.k", b"v");
    assert_eq!(xattr_list(&u.m("synced")), ["user.k"]);
}

#[test]
fn permissions_are_checked_for_other_users() {
    let mut u = Union::new(&["rw", "ro"]);
    write(u.branch(1).join("root-only"), "secret");
    fs::set_permissions(
        u.branch(1).join("root-only"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::create_dir(u.branch(1).join("open")).unwrap();
    fs::set_permissions(u.branch(1).join("open"), fs::Permissions::from_mode(0o777)).unwrap();
    u.mount();
    assert!(!as_nobody(&u.mnt(), "cat root-only").status.success());
    let o = as_nobody(&u.mnt(), "echo hi > open/mine && stat -c %u:%g open/mine");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "65534:65534");
    assert_eq!(
        fs::metadata(u.branch(0).join("open/mine")).unwrap().uid(),
        65534,
        "owned by its creator in the branch"
    );
}

/// Runs `script` with sh in `dir` as nobody (uid and gid 65534, no other groups).
fn as_nobody(dir: &Path, script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Set-ID bits go when someone without CAP_FSETID writes, truncates or chowns the file (the
/// union clears them: the kernel leaves it to the server), also for a file written through
/// after copy-up and a file opened before the write; root's writes keep them.
#[test]
fn set_id_bits_are_cleared_by_unprivileged_writes() {
    let mut u = Union::new(&["rw", "ro"]);
    for name in ["lower-w", "lower-t", "root-w"] {
        write(u.branch(1).join(name), "x");
        fs::set_permissions(u.branch(1).join(name), fs::Permissions::from_mode(0o6777)).unwrap();
    }
    u.mount();
    let mode = |name: &str| fs::metadata(u.mnt().join(name)).unwrap().mode() & 0o7777;
    let as_nobody = |script: &str| {
        let o = as_nobody(&u.mnt(), script);
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    as_nobody("echo more >> lower-w");
    assert_eq!(mode("lower-w"), 0o0777, "a write by nobody clears both");
    as_nobody("truncate -s 0 lower-t");
    assert_eq!(mode("lower-t"), 0o0777, "a truncate by nobody clears both");
    // Made in the union, written twice: the second write finds it set-ID again.
    fs::write(u.mnt().join("new"), "x").unwrap();
    for _ in 0..2 {
        fs::set_permissions(u.mnt().join("new"), fs::Permissions::from_mode(0o4777)).unwrap();
        as_nobody("echo more >> new");
        assert_eq!(mode("new"), 0o0777);
    }
    fs::OpenOptions::new()
        .append(true)
        .open(u.mnt().join("root-w"))
        .unwrap()
        .write_all(b"root")
        .unwrap();
    assert_eq!(mode("root-w"), 0o6777, "root may keep them");
    assert_eq!(
        fs::read_to_string(u.mnt().join("lower-w")).unwrap(),
        "xmore\n"
    );
}

#[test]
fn mount_helper_forms_and_bad_input() {
    let mut u = Union::new(&["rw", "ro"]);
    write(u.branch(1).join("f"), "via mount");
    // `mount -t fuse.strata-aufs -o OPTS none DIR` runs `mount.fuse3 strata-aufs#none DIR
    // -o OPTS`, which finds the helper on PATH (mount(8) itself resets PATH to the system
    // directories, where an installed helper lives; a test binary does not).
    let dir = Path::new(HELPER).parent().unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let o = Command::new("mount.fuse3")
        .arg("strata-aufs#none")
        .arg(u.mnt())
        .arg("-o")
        .arg(format!("br={},allow_other", u.spec))
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    u.mounted = true;
    assert_eq!(read(u.m("f")), "via mount");
    u.unmount();

    let run = |args: &[&str]| Command::new(HELPER).args(args).output().unwrap();
    let mnt = u.mnt();
    let mnt = mnt.to_str().unwrap();
    for (args, says) in [
        (vec!["none", mnt], "no branches"),
        (
            vec!["-o", "br=relative=rw", "none", mnt],
            "not an absolute path",
        ),
        (
            vec!["-o", "br=/nonexistent-branch=rw", "none", mnt],
            "/nonexistent-branch",
        ),
        (vec!["-o", "br=/tmp=rx", "none", mnt], "unknown mode"),
        (
            vec!["-o", "br=/tmp,bogus", "none", mnt],
            "unknown mount option \"bogus\"",
        ),
        (vec!["-o", "br=/tmp"], "usage"),
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
    assert!(!u.m("f").exists(), "nothing was mounted");
}

/// An fsx-style check: random writes, truncates, reads and mmap access to a few files (one
/// starting in a lower branch, so copy-up happens mid-run), against a model of every byte.
#[test]
fn random_io_matches_a_model() {
    random_io(",allow_other");
}

/// The same with file data served by the FUSE server itself, not the kernel's passthrough.
#[test]
fn random_io_matches_a_model_without_passthrough() {
    random_io(",allow_other,nopassthrough");
}

/// The same over `/dev/fuse` alone, the transport kept for kernels without FUSE over
/// io_uring.
#[test]
fn random_io_matches_a_model_over_dev_fuse() {
    random_io(",allow_other,nouring");
}

/// Requests come over io_uring: a queue per CPU, each served by a thread pinned to that
/// CPU, which serves what is asked on its CPU.
#[test]
fn requests_are_served_on_the_cpu_that_made_them() {
    let mut u = Union::new(&["rw", "ro"]);
    for i in 0..200 {
        write(u.branch(1).join(format!("d/f{i}")), "x");
    }
    u.mount();
    // The kernel holds requests back until every queue is registered, each by its thread
    // once started (and named): an answer means they all are.
    fs::metadata(u.mnt()).unwrap();
    let pid = server_of(&u.mnt());
    let possible = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let cpus: usize = possible
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap()
        .parse::<usize>()
        .unwrap()
        + 1;
    let mut rings = BTreeMap::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = read(t.path().join("comm"));
        if let Some(q) = comm.trim().strip_prefix("fuser-ring-") {
            rings.insert(q.parse::<usize>().unwrap(), t.path());
        }
    }
    assert_eq!(
        rings.len(),
        cpus,
        "a ring thread per possible CPU: {rings:?}"
    );
    let status = |field: &str| -> String {
        let s = read(rings[&0].join("status"));
        let line = s.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(
        status("Cpus_allowed_list:"),
        "0",
        "queue 0's thread is pinned to CPU 0"
    );
    let switches = || status("voluntary_ctxt_switches:").parse::<u64>().unwrap();
    // This thread moves to CPU 0 and looks up names never seen: each one a request that
    // queue 0's thread wakes for.
    // SAFETY: a zeroed cpu_set_t with CPU 0 set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    let before = switches();
    for i in 0..200 {
        assert_eq!(read(u.m(&format!("d/f{i}"))), "x");
    }
    let served = switches() - before;
    assert!(
        served >= 200,
        "queue 0's thread woke {served} times for 200 lookups and reads"
    );
}

/// Flags of the extents of `path` (FIEMAP): whether each block is allocated yet.
fn extent_flags(path: &Path) -> Vec<u32> {
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const EXTENTS: usize = 64;
    // struct fiemap (32 bytes) followed by EXTENTS struct fiemap_extent (56 bytes each).
    let mut buf = vec![0u64; (32 + 56 * EXTENTS) / 8];
    buf[1] = u64::MAX; // fm_length
    let words = buf.as_mut_ptr() as *mut u32;
    let f = fs::File::open(path).unwrap();
    // SAFETY: `buf` is a struct fiemap with room for EXTENTS extents; fm_flags 0 (no
    // sync: a sync would allocate what the test wants to see unallocated).
    let rc = unsafe {
        *words.add(6) = EXTENTS as u32; // fm_extent_count
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            FS_IOC_FIEMAP,
            buf.as_mut_ptr(),
        )
    };
    assert_eq!(
        rc,
        0,
        "FIEMAP on {} (the test's temp dir needs a filesystem with it, such as ext4): {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: filled in by the kernel: fm_mapped_extents, then each extent's fe_flags.
    unsafe {
        let n = *words.add(5) as usize;
        (0..n).map(|i| *words.add((32 + 56 * i + 40) / 4)).collect()
    }
}

/// A copy-up's data is on disk before the copy replaces the lower file (a crash must not
/// bring back an empty copy over a whole lower file); `volatile` mounts skip that.
#[test]
fn copied_up_data_is_synced_unless_volatile() {
    const DELALLOC: u32 = 0x4; // FIEMAP_EXTENT_DELALLOC: no block allocated yet
    for (opts, synced) in [(",allow_other", true), (",allow_other,volatile", false)] {
        let mut u = Union::new(&["rw", "ro"]);
        // Below the size copied up lazily (see `large_copy_ups_are_filled_behind_the_write`).
        let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
        fs::write(u.branch(1).join("big"), &data).unwrap();
        // The lower file's own blocks are allocated and on disk.
        rustix::fs::sync();
        u.mount_with(opts);
        let f = fs::OpenOptions::new().write(true).open(u.m("big")).unwrap();
        f.write_all_at(b"!", 4096).unwrap();
        let flags = extent_flags(&u.branch(0).join("big"));
        assert!(!flags.is_empty(), "{opts}: the copy has extents");
        let delalloc = flags.iter().any(|f| f & DELALLOC != 0);
        assert_eq!(delalloc, !synced, "{opts}: extent flags {flags:x?}");
        drop(f);
        let mut want = data;
        want[4096] = b'!';
        assert!(fs::read(u.m("big")).unwrap() == want, "{opts}: content");
    }
}

/// Requests the server has woken for, over all its threads.
fn server_wakeups(pid: i32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let s = read(t.path().join("status"));
            let line = s
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

/// An absent name is kept absent by the kernel (a negative entry): asking again costs no
/// request, and every way of making the name replaces the negative entry.
#[test]
fn absent_names_are_cached_until_made_here() {
    let mut u = Union::new(&["rw", "ro+wh"]);
    write(u.branch(1).join("gone"), "x");
    write(u.branch(1).join(".wh.hidden"), "");
    write(u.branch(1).join("src"), "moved");
    u.mount();
    fs::remove_file(u.m("gone")).unwrap();
    let names = ["new", "dir", "sym", "link", "renamed", "gone", "hidden"];
    for n in names {
        assert!(!u.m(n).exists(), "{n}");
    }
    let pid = server_of(&u.mnt());
    let before = server_wakeups(pid);
    for _ in 0..200 {
        for n in names {
            assert_eq!(errno(fs::metadata(u.m(n))), libc::ENOENT);
        }
    }
    let woke = server_wakeups(pid) - before;
    assert!(
        woke < 50,
        "the server woke {woke} times for 1,400 absent lookups"
    );
    write(u.m("new"), "1");
    fs::create_dir(u.m("dir")).unwrap();
    std::os::unix::fs::symlink("new", u.m("sym")).unwrap();
    fs::hard_link(u.m("new"), u.m("link")).unwrap();
    fs::rename(u.m("src"), u.m("renamed")).unwrap();
    write(u.m("gone"), "2");
    write(u.m("hidden"), "3");
    let look = |u: &Union| {
        assert_eq!(read(u.m("new")), "1");
        assert!(u.m("dir").is_dir());
        assert_eq!(read(u.m("sym")), "1");
        assert_eq!(read(u.m("link")), "1");
        assert_eq!(read(u.m("renamed")), "moved");
        assert!(!u.m("src").exists());
        assert_eq!(read(u.m("gone")), "2");
        assert_eq!(read(u.m("hidden")), "3");
    };
    look(&u);
    u.remount();
    look(&u);
}

fn random_io(options: &str) {
    let mut u = Union::new(&["rw", "ro"]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let lower: Vec<u8> = (0..200_000).map(|_| rng.gen()).collect();
    fs::write(u.branch(1).join("f0"), &lower).unwrap();
    u.mount_with(options);
    let mut model: Vec<Vec<u8>> = vec![lower, Vec::new(), Vec::new()];
    for (i, m) in model.iter().enumerate().skip(1) {
        fs::write(u.m(&format!("f{i}")), m).unwrap();
    }
    const MAX: usize = 1 << 20;
    for step in 0..3000 {
        let i = rng.gen_range(0..model.len());
        let path = u.m(&format!("f{i}"));
        let m = &mut model[i];
        match rng.gen_range(0..10) {
            0..=3 => {
                let off = rng.gen_range(0..=m.len().min(MAX - 1));
                let len = rng.gen_range(1..=65536.min(MAX - off));
                let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(&data, off as u64).unwrap();
                if m.len() < off + len {
                    m.resize(off + len, 0);
                }
                m[off..off + len].copy_from_slice(&data);
            }
            4 => {
                let len = rng.gen_range(0..MAX / 2);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len as u64)
                    .unwrap();
                m.resize(len, 0);
            }
            5 if !m.is_empty() => {
                // Through a shared mapping.
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                let off = rng.gen_range(0..m.len());
                let len = rng.gen_range(1..=(m.len() - off).min(20000));
                let v: u8 = rng.gen();
                mmap_fill(&f, m.len(), off, len, v);
                m[off..off + len].fill(v);
            }
            6 => {
                let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
                let data: Vec<u8> = (0..rng.gen_range(1..5000)).map(|_| rng.gen()).collect();
                if m.len() + data.len() <= MAX {
                    f.write_all(&data).unwrap();
                    m.extend_from_slice(&data);
                }
            }
            _ => {
                let mut f = fs::File::open(&path).unwrap();
                let off = rng.gen_range(0..=m.len());
                let len = rng.gen_range(0..100_000);
                f.seek(SeekFrom::Start(off as u64)).unwrap();
                let mut buf = Vec::new();
                f.take(len as u64).read_to_end(&mut buf).unwrap();
                let end = (off + len).min(m.len());
                assert!(
                    buf == m[off..end],
                    "step {step}: f{i} [{off}, {end}) differs"
                );
                assert_eq!(
                    fs::metadata(&path).unwrap().len(),
                    m.len() as u64,
                    "step {step}"
                );
            }
        }
    }
    u.unmount();
    u.mount_with(options);
    for (i, m) in model.iter().enumerate() {
        assert!(
            fs::read(u.m(&format!("f{i}"))).unwrap() == *m,
            "f{i} after a remount"
        );
    }
    assert_eq!(
        fs::read(u.branch(1).join("f0")).unwrap().len(),
        200_000,
        "lower untouched"
    );
}

fn mmap_fill(f: &fs::File, size: usize, off: usize, len: usize, v: u8) {
    use std::os::fd::AsFd;
    // SAFETY: a fresh shared mapping of `size` bytes of `f`, written inside its bounds and
    // unmapped before returning.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            size,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            f.as_fd(),
            0,
        )
        .unwrap();
        std::ptr::write_bytes((p as *mut u8).add(off), v, len);
        rustix::mm::msync(p, size, rustix::mm::MsyncFlags::SYNC).unwrap();
        rustix::mm::munmap(p, size).unwrap();
    }
}

fn xattr_set(p: &Path, name: &str, v: &[u8]) {
    rustix::fs::lsetxattr(p, name, v, rustix::fs::XattrFlags::empty()).unwrap();
}

fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).unwrap();
    buf.truncate(n);
    buf
}

fn xattr_list(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 1024];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap();
    buf[..n]
        .split(|c| *c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A blkio cgroup (v1) that slows the reads of the processes put in it from the disk that
/// holds `path`, removed on drop.
struct ReadThrottle {
    dir: PathBuf,
}

impl ReadThrottle {
    fn new(pid: i32, path: &Path, bytes_per_sec: u64) -> ReadThrottle {
        let root = Path::new("/sys/fs/cgroup/blkio");
        assert!(
            root.join("blkio.throttle.read_bps_device").exists(),
            "this test slows a server's reads with the cgroup v1 blkio controller, \
             which this machine does not mount at {}",
            root.display()
        );
        // Throttling is set on the whole disk, not on a partition of it.
        let dev = fs::metadata(path).unwrap().dev();
        let mut sys = PathBuf::from(format!(
            "/sys/dev/block/{}:{}",
            libc::major(dev),
            libc::minor(dev)
        ));
        if sys.join("partition").exists() {
            sys = sys.join("..");
        }
        let disk = fs::read_to_string(sys.join("dev")).unwrap();
        let dir = root.join(format!("strata-aufs-test-{pid}"));
        fs::create_dir(&dir).unwrap();
        let t = ReadThrottle { dir };
        fs::write(
            t.dir.join("blkio.throttle.read_bps_device"),
            format!("{} {bytes_per_sec}", disk.trim()),
        )
        .unwrap();
        fs::write(t.dir.join("cgroup.procs"), pid.to_string()).unwrap();
        t
    }

    /// Lets every thread of process `pid` but the one named `name` (and those it starts) go
    /// unthrottled again: cgroup v1 places threads one by one.
    fn keep_only(&self, pid: i32, name: &str) {
        let threads = || -> Vec<(String, String)> {
            fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .map(|t| {
                    let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                    (
                        t.file_name().into_string().unwrap(),
                        comm.trim().to_string(),
                    )
                })
                .collect()
        };
        // A new thread takes its name once it runs.
        let mut tries = 0;
        while !threads().iter().any(|(_, comm)| comm == name) {
            tries += 1;
            assert!(tries < 500, "no thread named {name} in process {pid}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for (tid, comm) in threads() {
            if comm != name {
                fs::write("/sys/fs/cgroup/blkio/tasks", tid).unwrap();
            }
        }
    }
}

impl Drop for ReadThrottle {
    fn drop(&mut self) {
        if let Ok(pids) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = fs::write("/sys/fs/cgroup/blkio/cgroup.procs", pid);
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Drops `path`'s pages from the page cache, so that reading it goes to the disk.
fn uncache(path: &Path) {
    let f = fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
}

fn kill_server(mnt: &Path) {
    let pid = server_of(mnt);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn records(u: &Union) -> Vec<String> {
    names(&u.branch(0).join(".wh..wh.lazy"))
}

/// Random reads, writes, appends and writes through a shared mapping of union file `path`
/// at offsets from `from` on, checked against `model`.
fn random_ops(path: &Path, model: &mut Vec<u8>, rng: &mut impl Rng, from: usize, steps: usize) {
    for step in 0..steps {
        match rng.gen_range(0..8) {
            0..=2 => {
                // Often unaligned: the edges of a write are filled from the lower file.
                let off = rng.gen_range(from..model.len() + 10_000);
                let data: Vec<u8> = (0..rng.gen_range(1..20_000)).map(|_| rng.gen()).collect();
                let f = fs::OpenOptions::new().write(true).open(path).unwrap();
                f.write_all_at(&data, off as u64).unwrap();
                if model.len() < off + data.len() {
                    model.resize(off + data.len(), 0);
                }
                model[off..off + data.len()].copy_from_slice(&data);
            }
            3 => {
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                let off = rng.gen_range(from..model.len());
                let len = rng.gen_range(1..=(model.len() - off).min(20_000));
                let v: u8 = rng.gen();
                mmap_fill(&f, model.len(), off, len, v);
                model[off..off + len].fill(v);
            }
            4 => {
                let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
                let data: Vec<u8> = (0..rng.gen_range(1..5000)).map(|_| rng.gen()).collect();
                f.write_all(&data).unwrap();
                model.extend_from_slice(&data);
            }
            _ => {
                let f = fs::File::open(path).unwrap();
                let off = rng.gen_range(from..model.len());
                let mut buf = vec![0u8; rng.gen_range(1..100_000)];
                let n = f.read_at(&mut buf, off as u64).unwrap();
                let end = (off + buf.len()).min(model.len());
                assert!(
                    buf[..n] == model[off..end],
                    "step {step}: [{off}, {end}) differs"
                );
                assert_eq!(fs::metadata(path).unwrap().len(), model.len() as u64);
            }
        }
    }
}

/// A large lower file's copy-up returns before its data is copied: the copy is a sparse
/// file whose holes read as the lower file's bytes, filled behind the write. The server's
/// reads are slowed (a blkio cgroup) so the filling is still going on while the file is
/// read and written at random, and while the server is killed: what a crash leaves is a
/// record, and the copy is finished by the next mount or by `finish_copy_ups`, the
/// driver's way before it reads the branch as a diff.
#[test]
fn large_copy_ups_are_filled_behind_the_write() {
    const SIZE: usize = 48 << 20;
    for finish_by_mount in [true, false] {
        let mut u = Union::new(&["rw", "ro"]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1a2e);
        let lower: Vec<u8> = (0..SIZE).map(|_| rng.gen()).collect();
        let lower_path = u.branch(1).join("big");
        fs::write(&lower_path, &lower).unwrap();
        uncache(&lower_path);
        u.mount();
        // The server's reads are slowed until the copy-up has started its fill thread,
        // which keeps the slowness; the rest of the server reads at the disk's speed.
        let server = server_of(&u.mnt());
        let throttle = ReadThrottle::new(server, &lower_path, 256 << 10);
        let mut model = lower;

        // The first write: the copy exists, sparse, with a record.
        let f = fs::OpenOptions::new().write(true).open(u.m("big")).unwrap();
        throttle.keep_only(server, "fill");
        f.write_all_at(b"first", 4096 * 1000 - 2).unwrap();
        model[4096 * 1000 - 2..4096 * 1000 + 3].copy_from_slice(b"first");
        drop(f);
        let copy = fs::metadata(u.branch(0).join("big")).unwrap();
        assert_eq!(copy.len(), SIZE as u64);
        assert!(
            copy.blocks() * 512 < SIZE as u64 / 2,
            "the copy is sparse at first: {} bytes allocated",
            copy.blocks() * 512
        );
        assert_eq!(records(&u).len(), 1, "one record of an unfinished copy");

        // Away from where the slow fill is reading (a read of a page under its I/O would
        // wait for it).
        random_ops(&u.m("big"), &mut model, &mut rng, 16 << 20, 200);
        // Filling is no modification: the time of the last write stays.
        let written = fs::metadata(u.m("big")).unwrap().modified().unwrap();
        let mid = fs::metadata(u.branch(0).join("big")).unwrap();
        assert!(
            mid.blocks() * 512 < SIZE as u64,
            "still filling when the server is killed ({} bytes allocated)",
            mid.blocks() * 512
        );
        kill_server(&u.mnt());
        drop(throttle);
        rustix::mount::unmount(u.mnt(), rustix::mount::UnmountFlags::DETACH).unwrap();
        u.mounted = false;
        assert_eq!(records(&u).len(), 1, "the crash leaves the record");

        if finish_by_mount {
            // The next mount reads through the lower file and fills the rest.
            u.mount();
            assert!(
                fs::read(u.m("big")).unwrap() == model,
                "after the crash, mounted"
            );
            u.unmount();
        } else {
            strata_aufs::finish_copy_ups(&u.branch(0)).unwrap();
        }
        // Unmounted (the server finishes what it fills before it exits) or finished: the
        // branch holds the whole file and no record.
        assert_eq!(records(&u), Vec::<String>::new());
        assert!(
            fs::read(u.branch(0).join("big")).unwrap() == model,
            "the branch's copy"
        );
        let copy = fs::metadata(u.branch(0).join("big")).unwrap();
        assert_eq!(copy.modified().unwrap(), written);
        assert!(copy.blocks() * 512 >= SIZE as u64, "whole");
        assert_eq!(
            fs::read(u.branch(1).join("big")).unwrap().len(),
            SIZE,
            "lower untouched"
        );
        u.mount();
        assert!(fs::read(u.m("big")).unwrap() == model, "remounted");
        u.unmount();
    }
}

/// Truncating a copy still being filled: to zero it needs no more filling; to another
/// size it is made whole first, so that no hole past the new end reads as lower bytes.
#[test]
fn truncating_a_large_copy_up() {
    const SIZE: usize = 16 << 20;
    let mut u = Union::new(&["rw", "ro"]);
    let lower: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
    for name in ["a", "b", "c"] {
        fs::write(u.branch(1).join(name), &lower).unwrap();
    }
    u.mount();
    // O_TRUNC: empty, then written past a hole.
    let f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(u.m("a"))
        .unwrap();
    f.write_all_at(b"x", 8 << 20).unwrap();
    drop(f);
    let mut want = vec![0u8; (8 << 20) + 1];
    want[8 << 20] = b'x';
    assert!(fs::read(u.m("a")).unwrap() == want, "a: zeros, then x");
    // Shrunk, then grown by a write past the end.
    let f = fs::OpenOptions::new().write(true).open(u.m("b")).unwrap();
    f.write_all_at(b"y", 10).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(b"z", 4 << 20).unwrap();
    drop(f);
    let mut want = lower[..1 << 20].to_vec();
    want[10] = b'y';
    want.resize(4 << 20, 0);
    want.push(b'z');
    assert!(fs::read(u.m("b")).unwrap() == want, "b: shrunk and grown");
    // truncate(2) by path, as the kernel sends it without an open file.
    fs::OpenOptions::new().write(true).open(u.m("c")).unwrap();
    let c = std::ffi::CString::new(u.m("c").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 3) }, 0);
    assert_eq!(fs::read(u.m("c")).unwrap(), &lower[..3]);
    u.remount();
    assert!(fs::read(u.m("a")).unwrap().len() == (8 << 20) + 1);
    assert!(fs::read(u.m("b")).unwrap() == want, "b after a remount");
    assert_eq!(records(&u), Vec::<String>::new());
}

/// A sparse lower file: its holes stay zeros in the copy, read through a handle opened
/// while the copy was filled and kept open after.
#[test]
fn a_sparse_large_file_is_copied_up_lazily() {
    const SIZE: u64 = 32 << 20;
    let mut u = Union::new(&["rw", "ro"]);
    let lower = fs::File::create(u.branch(1).join("sparse")).unwrap();
    lower.set_len(SIZE).unwrap();
    lower.write_all_at(b"head", 0).unwrap();
    lower.write_all_at(b"tail", SIZE - 4).unwrap();
    drop(lower);
    u.mount();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(u.m("sparse"))
        .unwrap();
    f.write_all_at(b"middle", SIZE / 2 + 1).unwrap();
    let mut want = vec![0u8; SIZE as usize];
    want[..4].copy_from_slice(b"head");
    want[SIZE as usize - 4..].copy_from_slice(b"tail");
    want[SIZE as usize / 2 + 1..SIZE as usize / 2 + 7].copy_from_slice(b"middle");
    while !records(&u).is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut got = vec![0u8; SIZE as usize];
    f.read_exact_at(&mut got, 0).unwrap();
    assert!(got == want, "through the handle opened while filling");
    drop(f);
    assert!(fs::read(u.m("sparse")).unwrap() == want, "opened again");
    u.unmount();
    assert!(
        fs::read(u.branch(0).join("sparse")).unwrap() == want,
        "the branch's copy"
    );
}

/// Lower-branch directories are kept open for lookups and opens (a bounded set), and the
/// server takes its hard open-files limit and makes its file table at mount, so that no
/// request waits for the kernel to grow a table its threads share. What is read stays
/// right as the union changes around it.
#[test]
fn lower_directories_are_kept_open_within_bounds() {
    use std::os::unix::process::CommandExt;
    let mut u = Union::new(&["rw", "ro"]);
    for i in 0..300 {
        write(u.branch(1).join(format!("t/d{i}/e/f")), &format!("{i}"));
    }
    write(u.branch(1).join("t/d0/e/g"), "lower g");
    // Started with a soft limit below the hard one (lowering needs no privilege).
    let mut helper = Command::new(HELPER);
    helper
        .arg("-o")
        .arg(format!("br={}", u.spec))
        .arg("none")
        .arg(u.mnt());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's soft limit.
    unsafe {
        helper.pre_exec(|| {
            let mut l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
            l.current = Some(256);
            rustix::process::setrlimit(rustix::process::Resource::Nofile, l)?;
            Ok(())
        });
    }
    let o = helper.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    u.mounted = true;
    fs::metadata(u.mnt()).unwrap();
    let pid = server_of(&u.mnt());
    let limits = read(format!("/proc/{pid}/limits"));
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        files[0], files[1],
        "soft and hard open-files limits: {files:?}"
    );
    let status_field = |field: &str| -> usize {
        let s = read(format!("/proc/{pid}/status"));
        let line = s.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let table = status_field("FDSize:");
    assert!(table >= 1024, "the file table has {table} slots at mount");
    for i in 0..300 {
        assert_eq!(read(u.m(&format!("t/d{i}/e/f"))), format!("{i}"));
    }
    let open = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(
        open < 400,
        "the server holds {open} files after 600 directories"
    );
    assert_eq!(status_field("FDSize:"), table, "the table never grew");
    // Under a directory made again over its lower copy, the lower names are gone.
    fs::remove_file(u.m("t/d0/e/f")).unwrap();
    fs::remove_file(u.m("t/d0/e/g")).unwrap();
    fs::remove_dir(u.m("t/d0/e")).unwrap();
    fs::create_dir(u.m("t/d0/e")).unwrap();
    assert_eq!(errno(fs::metadata(u.m("t/d0/e/g"))), libc::ENOENT);
    write(u.m("t/d0/e/g"), "upper g");
    assert_eq!(read(u.m("t/d0/e/g")), "upper g");
    // A renamed directory keeps its lower contents under its new name only.
    fs::rename(u.m("t/d1"), u.m("t/moved")).unwrap();
    assert_eq!(read(u.m("t/moved/e/f")), "1");
    assert_eq!(errno(fs::metadata(u.m("t/d1/e/f"))), libc::ENOENT);
    assert_eq!(read(u.m("t/d2/e/f")), "2");
    u.remount();
    assert_eq!(read(u.m("t/d0/e/g")), "upper g");
    assert_eq!(errno(fs::metadata(u.m("t/d0/e/f"))), libc::ENOENT);
    assert_eq!(read(u.m("t/moved/e/f")), "1");
    assert_eq!(read(u.branch(1).join("t/d0/e/g")), "lower g");
}
