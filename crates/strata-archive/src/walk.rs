//! fd-based tree walking helpers shared by apply, write, diff and copy: nothing here follows
//! a symlink, so a tree being changed underneath cannot redirect a walk out of it.

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use xattr::FileExt;

/// The names in a directory, without `.` and `..`, sorted (so tars are deterministic).
pub fn list_dir(dfd: &impl AsFd) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    for e in rfs::Dir::read_from(dfd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Removes `name` in `dfd`, recursively, never following symlinks.
pub fn remove_entry(dfd: &impl AsFd, name: &OsStr) -> io::Result<()> {
    match rfs::unlinkat(dfd, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = open_dir_at(dfd, name)?;
    for child in list_dir(&sub)? {
        remove_entry(&sub, &child)?;
    }
    match rfs::unlinkat(dfd, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn open_dir_at(dfd: &impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dfd,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub fn open_file_at(dfd: &impl AsFd, name: &OsStr) -> io::Result<File> {
    Ok(File::from(rfs::openat(
        dfd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?))
}

pub fn lstat_at(dfd: &impl AsFd, name: &OsStr) -> io::Result<Stat> {
    Ok(rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Sets owner, permissions (when given) and times of `name` in `dfd` without following it:
/// for symlinks, devices and FIFOs, which cannot be opened to be changed through an fd.
pub fn set_meta_at(
    dfd: &impl AsFd,
    name: &OsStr,
    uid: u32,
    gid: u32,
    mode: Option<Mode>,
    times: &rustix::fs::Timestamps,
) -> io::Result<()> {
    rfs::chownat(
        dfd,
        name,
        Some(rfs::Uid::from_raw(uid)),
        Some(rfs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if let Some(mode) = mode {
        // After chown, which clears set-id bits; the entry was just made by us, not a symlink.
        rfs::chmodat(dfd, name, mode, AtFlags::empty())?;
    }
    rfs::utimensat(dfd, name, times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Extended attributes of an open regular file or directory, sorted by name.
pub fn xattrs(file: &File) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match file.list_xattr() {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        let Some(n) = name.to_str() else { continue };
        if let Some(v) = file.get_xattr(&name)? {
            out.push((n.to_string(), v));
        }
    }
    out.sort();
    Ok(out)
}

pub fn readlink_at(dfd: &impl AsFd, name: &OsStr) -> io::Result<OsString> {
    let target = rfs::readlinkat(dfd, name, Vec::new())?;
    Ok(OsStr::from_bytes(target.as_bytes()).to_os_string())
}

/// Describes every entry below `root` (type, mode, owner, content or target, device,
/// xattrs, and file mtimes when `with_mtimes`) by relative path: two trees are equal as
/// layers when their descriptions are. Used by tests and checks to compare trees by value.
pub fn describe_tree(
    root: &std::path::Path,
    with_mtimes: bool,
) -> io::Result<std::collections::BTreeMap<String, String>> {
    fn walk(
        dfd: &OwnedFd,
        rel: &std::path::Path,
        with_mtimes: bool,
        out: &mut std::collections::BTreeMap<String, String>,
    ) -> io::Result<()> {
        for name in list_dir(dfd)? {
            let st = lstat_at(dfd, &name)?;
            let path = rel.join(&name);
            let mut what = match file_type(&st) {
                FileType::Directory => {
                    let sub = open_dir_at(dfd, &name)?;
                    walk(&sub, &path, with_mtimes, out)?;
                    format!("dir xattrs={:?}", xattrs(&File::from(sub))?)
                }
                FileType::RegularFile => {
                    let f = open_file_at(dfd, &name)?;
                    let attrs = xattrs(&f)?;
                    let mut data = Vec::new();
                    io::Read::read_to_end(&mut &f, &mut data)?;
                    let digest = sha2::Digest::finalize(
                        <sha2::Sha256 as sha2::Digest>::new_with_prefix(&data),
                    );
                    format!(
                        "file size={} sha256={} xattrs={attrs:?}",
                        data.len(),
                        hex::encode(digest)
                    )
                }
                FileType::Symlink => format!("symlink -> {:?}", readlink_at(dfd, &name)?),
                other => format!(
                    "{other:?} rdev={}:{}",
                    rustix::fs::major(st.st_rdev),
                    rustix::fs::minor(st.st_rdev)
                ),
            };
            what.push_str(&format!(
                " mode={:o} owner={}:{}",
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid
            ));
            if with_mtimes
                && file_type(&st) != FileType::Directory
                && file_type(&st) != FileType::Symlink
            {
                what.push_str(&format!(" mtime={}", st.st_mtime));
            }
            out.insert(path.display().to_string(), what);
        }
        Ok(())
    }
    let fd = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = std::collections::BTreeMap::new();
    walk(&fd, std::path::Path::new(""), with_mtimes, &mut out)?;
    Ok(out)
}
