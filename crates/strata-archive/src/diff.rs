//! The diff of two full trees: what a layer on `lower` must hold to give `upper`.
//! Correct for every driver (containerd's "naive diff"); drivers with an upper dir or a
//! branch write their native diff with `write_tree` instead.

use crate::walk::{file_type, list_dir, lstat_at, open_dir_at, open_file_at, readlink_at, xattrs};
use crate::whiteout::WhiteoutFormat;
use crate::write::TreeWriter;
use rustix::fs::{FileType, Stat};
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        p,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

pub fn diff_trees<W: Write>(lower: &Path, upper: &Path, w: W) -> io::Result<W> {
    diff_trees_pruned(lower, upper, w, &|_| false)
}

/// Bytes of the regular files a layer on `lower` would carry to give `upper`: the size
/// docker reports for a writable layer on drivers without an upper dir (its naive
/// `DiffSize`), without writing the layer.
pub fn changes_size(lower: &Path, upper: &Path) -> io::Result<u64> {
    changes_size_pruned(lower, upper, &|_| false)
}

/// [`diff_trees`] for an `upper` that is a snapshot of `lower` (inode numbers shared),
/// skipping every directory that has the same inode number in both trees and for which
/// `untouched(inode)` says that neither it nor anything below it changed. The walk is the
/// same one, so the tar is identical; only subtrees that cannot differ are not read.
pub fn diff_trees_pruned<W: Write>(
    lower: &Path,
    upper: &Path,
    w: W,
    untouched: &dyn Fn(u64) -> bool,
) -> io::Result<W> {
    let (lfd, ufd) = (open_dir(lower)?, open_dir(upper)?);
    let mut tw = TreeWriter::new(w, WhiteoutFormat::Apply);
    compare_dirs(&mut tw, &lfd, &ufd, Path::new(""), untouched)?;
    tw.finish()
}

/// [`changes_size`] with the pruning of [`diff_trees_pruned`].
pub fn changes_size_pruned(
    lower: &Path,
    upper: &Path,
    untouched: &dyn Fn(u64) -> bool,
) -> io::Result<u64> {
    let (lfd, ufd) = (open_dir(lower)?, open_dir(upper)?);
    let mut counter = SizeCounter(0);
    compare_dirs(&mut counter, &lfd, &ufd, Path::new(""), untouched)?;
    Ok(counter.0)
}

/// Where the comparison reports what differs.
trait DiffSink {
    fn whiteout(&mut self, rel: &Path, like: &Stat) -> io::Result<()>;
    fn entry(&mut self, dfd: &OwnedFd, name: &OsStr, rel: &Path, recursive: bool)
        -> io::Result<()>;
}

impl<W: Write> DiffSink for TreeWriter<W> {
    fn whiteout(&mut self, rel: &Path, like: &Stat) -> io::Result<()> {
        self.append_whiteout(rel, like)
    }
    fn entry(
        &mut self,
        dfd: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        recursive: bool,
    ) -> io::Result<()> {
        self.append(dfd, name, rel, recursive)
    }
}

struct SizeCounter(u64);

impl DiffSink for SizeCounter {
    fn whiteout(&mut self, _rel: &Path, _like: &Stat) -> io::Result<()> {
        Ok(())
    }
    fn entry(
        &mut self,
        dfd: &OwnedFd,
        name: &OsStr,
        _rel: &Path,
        recursive: bool,
    ) -> io::Result<()> {
        let st = lstat_at(dfd, name)?;
        match file_type(&st) {
            FileType::RegularFile => self.0 += st.st_size as u64,
            FileType::Directory if recursive => {
                let sub = open_dir_at(dfd, name)?;
                for child in list_dir(&sub)? {
                    self.entry(&sub, &child, Path::new(""), true)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn compare_dirs(
    tw: &mut dyn DiffSink,
    lfd: &OwnedFd,
    ufd: &OwnedFd,
    rel: &Path,
    untouched: &dyn Fn(u64) -> bool,
) -> io::Result<()> {
    let lower = list_dir(lfd)?;
    let upper = list_dir(ufd)?;
    let (mut i, mut j) = (0, 0);
    while i < lower.len() || j < upper.len() {
        let take_lower_only = j >= upper.len() || (i < lower.len() && lower[i] < upper[j]);
        if take_lower_only {
            let st = lstat_at(lfd, &lower[i])?;
            tw.whiteout(&rel.join(&lower[i]), &st)?;
            i += 1;
            continue;
        }
        let name = &upper[j];
        let in_lower = i < lower.len() && lower[i] == *name;
        let child = rel.join(name);
        if !in_lower {
            tw.entry(ufd, name, &child, true)?;
        } else {
            let ls = lstat_at(lfd, name)?;
            let us = lstat_at(ufd, name)?;
            let both_dirs =
                file_type(&ls) == FileType::Directory && file_type(&us) == FileType::Directory;
            if both_dirs && ls.st_ino == us.st_ino && untouched(us.st_ino) {
                // The same directory, and nothing in it changed: nothing to find there.
            } else if both_dirs {
                let ld = open_dir_at(lfd, name)?;
                let ud = open_dir_at(ufd, name)?;
                if meta_differs(&ls, &us)
                    || xattrs(&ld.try_clone()?.into())? != xattrs(&ud.try_clone()?.into())?
                {
                    tw.entry(ufd, name, &child, false)?;
                }
                compare_dirs(tw, &ld, &ud, &child, untouched)?;
            } else if file_type(&ls) != file_type(&us) || entry_differs(lfd, ufd, name, &ls, &us)? {
                tw.entry(ufd, name, &child, true)?;
            }
            i += 1;
        }
        j += 1;
    }
    Ok(())
}

fn meta_differs(a: &Stat, b: &Stat) -> bool {
    a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || a.st_mtime != b.st_mtime
        || a.st_mtime_nsec != b.st_mtime_nsec
}

/// Same rule as docker's changes walker: metadata, size, device and link target decide;
/// equal mtimes to the nanosecond with equal sizes mean unchanged content.
fn entry_differs(
    lfd: &impl AsFd,
    ufd: &impl AsFd,
    name: &OsStr,
    ls: &Stat,
    us: &Stat,
) -> io::Result<bool> {
    if meta_differs(ls, us) || ls.st_size != us.st_size || ls.st_rdev != us.st_rdev {
        return Ok(true);
    }
    match file_type(us) {
        FileType::Symlink => Ok(readlink_at(lfd, name)? != readlink_at(ufd, name)?),
        FileType::RegularFile => {
            Ok(xattrs(&open_file_at(lfd, name)?)? != xattrs(&open_file_at(ufd, name)?)?)
        }
        _ => Ok(false),
    }
}
