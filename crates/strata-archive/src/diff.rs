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

pub fn diff_trees<W: Write>(lower: &Path, upper: &Path, w: W) -> io::Result<W> {
    let open = |p: &Path| -> io::Result<OwnedFd> {
        Ok(rustix::fs::open(
            p,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?)
    };
    let (lfd, ufd) = (open(lower)?, open(upper)?);
    let mut tw = TreeWriter::new(w, WhiteoutFormat::Apply);
    compare_dirs(&mut tw, &lfd, &ufd, Path::new(""))?;
    tw.finish()
}

fn compare_dirs<W: Write>(
    tw: &mut TreeWriter<W>,
    lfd: &impl AsFd,
    ufd: &impl AsFd,
    rel: &Path,
) -> io::Result<()> {
    let lower = list_dir(lfd)?;
    let upper = list_dir(ufd)?;
    let (mut i, mut j) = (0, 0);
    while i < lower.len() || j < upper.len() {
        let take_lower_only = j >= upper.len() || (i < lower.len() && lower[i] < upper[j]);
        if take_lower_only {
            let st = lstat_at(lfd, &lower[i])?;
            tw.append_whiteout(&rel.join(&lower[i]), &st)?;
            i += 1;
            continue;
        }
        let name = &upper[j];
        let in_lower = i < lower.len() && lower[i] == *name;
        let child = rel.join(name);
        if !in_lower {
            tw.append(ufd, name, &child, true)?;
        } else {
            let ls = lstat_at(lfd, name)?;
            let us = lstat_at(ufd, name)?;
            let both_dirs =
                file_type(&ls) == FileType::Directory && file_type(&us) == FileType::Directory;
            if both_dirs {
                let ld = open_dir_at(lfd, name)?;
                let ud = open_dir_at(ufd, name)?;
                if meta_differs(&ls, &us)
                    || xattrs(&ld.try_clone()?.into())? != xattrs(&ud.try_clone()?.into())?
                {
                    tw.append(ufd, name, &child, false)?;
                }
                compare_dirs(tw, &ld, &ud, &child)?;
            } else if file_type(&ls) != file_type(&us) || entry_differs(lfd, ufd, name, &ls, &us)? {
                tw.append(ufd, name, &child, true)?;
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
