//! Deleting what a removal set aside in a store's trash (see strata-engine's `trash`):
//! done by a shim after its foreground client has returned, and by recovery.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Deletes each of `paths` that is an entry of `trash` with nothing mounted at or below
/// it; returns those deleted. Anything else is left alone: the list comes from another
/// process, and a tree with a mount in it would be deleted through the mount.
pub fn sweep(trash: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    if paths.is_empty() {
        return Vec::new();
    }
    let mounts = mount_points();
    let mut done = Vec::new();
    for p in paths {
        let in_trash = p.parent() == Some(trash)
            && p.file_name()
                .is_some_and(|n| n != ".." && n != "." && !n.is_empty());
        let mounted = mounts.iter().any(|m| m.starts_with(p));
        if in_trash && !mounted && std::fs::remove_dir_all(p).is_ok() {
            done.push(p.clone());
        }
    }
    done
}

/// Every mount point in this process's mount namespace.
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape(field))))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/a\040b\011c\134d"), b"/a b\tc\\d");
        assert_eq!(unescape(br"/plain\0"), br"/plain\0");
    }

    #[test]
    fn only_entries_of_the_trash_are_deleted() {
        let root = tempfile::tempdir().unwrap();
        let trash = root.path().join("trash");
        let kept = root.path().join("kept");
        let entry = trash.join("0123");
        std::fs::create_dir_all(entry.join("diff/etc")).unwrap();
        std::fs::write(entry.join("diff/etc/hosts"), b"x").unwrap();
        std::fs::create_dir_all(&kept).unwrap();
        let asked = [entry.clone(), kept.clone(), trash.join("..")];
        assert_eq!(sweep(&trash, &asked), vec![entry.clone()]);
        assert!(!entry.exists());
        assert!(kept.exists());
        assert!(trash.exists());
    }

    #[test]
    fn a_tree_with_a_mount_in_it_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let trash = root.path().join("trash");
        let entry = trash.join("0123");
        let target = entry.join("merged");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(root.path().join("file"), b"keep").unwrap();
        std::fs::create_dir_all(root.path().join("src")).unwrap();
        std::fs::write(root.path().join("src/data"), b"keep").unwrap();
        rustix::mount::mount_bind(root.path().join("src"), &target).unwrap();
        let swept = sweep(&trash, std::slice::from_ref(&entry));
        rustix::mount::unmount(&target, rustix::mount::UnmountFlags::empty()).unwrap();
        assert!(swept.is_empty());
        assert_eq!(
            std::fs::read(root.path().join("src/data")).unwrap(),
            b"keep"
        );
        assert!(entry.exists());
    }
}
