//! The btrfs driver's diff reads only what changed (find-new over inode generations) and
//! must write exactly the tar the full comparison writes. Needs root and btrfs-progs.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use strata_snapshot::btrfs::ioctl;
use strata_snapshot::testsuite::open;
use strata_snapshot::{PrepareOpts, Snapshotter};

fn write(p: &Path, data: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// A tree with enough untouched directories that pruning matters.
fn base_tree(root: &Path) {
    for d in 0..30 {
        for f in 0..10 {
            write(&root.join(format!("d{d}/sub/f{f}")), &format!("{d}-{f}"));
        }
    }
    write(&root.join("a/b/c/deep"), "deep");
    write(&root.join("a/b/c/gone"), "gone");
    write(&root.join("a/b/c/meta"), "meta");
    write(&root.join("a/b/x/xattr"), "x");
    write(&root.join("a/b/x/linked"), "linked");
    write(&root.join("tree/one/two/three"), "3");
    write(&root.join("moving/inside"), "in");
    write(&root.join("becomes-dir"), "file");
    write(&root.join("read-only-here/r"), "read me");
    std::os::unix::fs::symlink("a/b/c/deep", root.join("link")).unwrap();
}

/// Every kind of change, each in a different corner of the tree.
fn change(root: &Path) {
    write(&root.join("a/b/c/deep"), "deeper now");
    fs::remove_file(root.join("a/b/c/gone")).unwrap();
    fs::set_permissions(root.join("a/b/c/meta"), fs::Permissions::from_mode(0o600)).unwrap();
    let f = fs::File::open(root.join("a/b/x/xattr")).unwrap();
    rustix::fs::fsetxattr(f.as_fd(), "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    fs::hard_link(
        root.join("a/b/x/linked"),
        root.join("d3/sub/link-to-linked"),
    )
    .unwrap();
    fs::remove_dir_all(root.join("tree/one")).unwrap();
    fs::rename(root.join("moving"), root.join("moved")).unwrap();
    fs::remove_file(root.join("becomes-dir")).unwrap();
    write(&root.join("becomes-dir/now"), "a dir");
    write(&root.join("new/dir/file"), "new");
    // An old mtime set on purpose: a metadata-only change the walker must still see.
    let st = Command::new("touch")
        .args(["-d", "@1000"])
        .arg(root.join("d7/sub/f3"))
        .status()
        .unwrap();
    assert!(st.success());
    // Reading changes nothing a layer records (an atime update at most).
    assert_eq!(fs::read(root.join("read-only-here/r")).unwrap(), b"read me");
}

struct Closing(Snapshotter);
impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close().unwrap();
    }
}

#[test]
fn pruned_diff_writes_the_same_tar_as_the_full_comparison() {
    let dir = tempfile::Builder::new()
        .prefix("strata-suite-")
        .tempdir()
        .unwrap();
    let sn = Closing(open("btrfs", dir.path()));
    let sn = &sn.0;
    sn.prepare("base", None, &PrepareOpts::default()).unwrap();
    let (lower, _) = sn.apply_dir("base").unwrap().unwrap();
    base_tree(&lower);
    sn.commit("layer", "base").unwrap();
    sn.prepare("c", Some("layer"), &PrepareOpts::default())
        .unwrap();
    let (upper, _) = sn.apply_dir("c").unwrap().unwrap();
    change(&upper);

    // The snapshot's creation generation, as btrfs-progs reads it.
    let fd = fs::File::open(&upper).unwrap();
    let id = ioctl::subvol_id(fd.as_fd()).unwrap();
    let show = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(&upper)
        .output()
        .unwrap();
    let show = String::from_utf8(show.stdout).unwrap();
    let gen_at_creation: u64 = show
        .lines()
        .find_map(|l| l.trim().strip_prefix("Gen at creation:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        ioctl::created_transid(fd.as_fd(), id).unwrap(),
        Some(gen_at_creation)
    );
    // Only what changed is found (once committed): 30 untouched directories of 10 files
    // are not.
    ioctl::commit_transaction(fd.as_fd()).unwrap();
    let changed = ioctl::changed_inodes(fd.as_fd(), id, gen_at_creation).unwrap();
    assert!(
        (10..40).contains(&changed.len()),
        "{} inodes reported changed",
        changed.len()
    );

    let mut fast = Vec::new();
    sn.diff("c", &mut fast).unwrap();
    let full = strata_archive::diff_trees(&lower, &upper, Vec::new()).unwrap();
    assert!(!full.is_empty());
    assert!(
        fast == full,
        "the pruned diff differs from the full comparison"
    );
    assert_eq!(
        sn.changes_sizes(&["c"]).unwrap(),
        vec![Some(strata_archive::changes_size(&lower, &upper).unwrap())]
    );
}
