//! Deleting what a removal set aside in a store's trash (see strata-engine's `trash`):
//! done by a shim after its foreground client has returned, and by recovery.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Deletes each of `paths` that is an entry of `trash`; returns those deleted. What is
/// mounted in an entry (a removed container's root, set aside still mounted) is unmounted
/// first, deepest first; an entry with a mount that cannot go (busy) is left alone, as is
/// anything outside the trash: the list comes from another process, and a tree with a
/// mount in it would be deleted through the mount.
pub fn sweep(trash: &Path, paths: &[PathBuf]) -> Vec<PathBuf> {
    let entries: Vec<&PathBuf> = paths
        .iter()
        .filter(|p| {
            p.parent() == Some(trash)
                && p.file_name()
                    .is_some_and(|n| n != ".." && n != "." && !n.is_empty())
        })
        .collect();
    if entries.is_empty() {
        return Vec::new();
    }
    let mut mounted: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| entries.iter().any(|p| m.starts_with(p)))
        .collect();
    mounted.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    mounted.retain(|m| rustix::mount::unmount(m, rustix::mount::UnmountFlags::empty()).is_err());
    let mut done = Vec::new();
    for p in entries {
        let busy = mounted.iter().any(|m| m.starts_with(p));
        if !busy && std::fs::remove_dir_all(p).is_ok() {
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
    fn mounts_in_an_entry_are_unmounted_first_and_a_busy_one_keeps_it() {
        let root = tempfile::tempdir().unwrap();
        let trash = root.path().join("trash");
        let src = root.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("data"), b"keep").unwrap();
        let (gone, kept) = (trash.join("0123"), trash.join("4567"));
        for entry in [&gone, &kept] {
            let target = entry.join("merged");
            std::fs::create_dir_all(&target).unwrap();
            rustix::mount::mount_bind(&src, &target).unwrap();
        }
        // A process still using a mount keeps it, and its entry, in place.
        let user = std::fs::File::open(kept.join("merged/data")).unwrap();
        let swept = sweep(&trash, &[gone.clone(), kept.clone()]);
        let still = mount_points().contains(&kept.join("merged"));
        drop(user);
        rustix::mount::unmount(kept.join("merged"), rustix::mount::UnmountFlags::empty()).unwrap();
        assert_eq!(swept, vec![gone.clone()]);
        assert!(!gone.exists());
        assert!(still && kept.join("merged").exists(), "a busy mount stays");
        assert_eq!(std::fs::read(src.join("data")).unwrap(), b"keep");
    }
}
