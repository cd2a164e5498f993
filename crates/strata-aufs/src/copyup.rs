//! Copying one object (file, directory, link, device) from a lower branch into the
//! writable one, with its owner, mode, times and extended attributes. The copy is made
//! under a temporary `.wh..wh.` name, its data synced, and renamed into place, so a crash
//! leaves either the lower object visible or the complete copy: without the sync the rename
//! can reach the disk before the data (ext4 allocates blocks at writeback), and the copy
//! would come back empty over a lower file that was whole.

use rustix::fs::{self as rfs, AtFlags, FileType as RFileType, Mode, OFlags, Stat, Timestamps};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name, hidden from listings as aufs metadata.
pub(crate) fn temp_name() -> OsString {
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!(".wh..wh..tmp.{}.{n}", std::process::id()))
}

/// `/proc/self/fd/DIR/NAME`: a path for the *xattr calls that have no `*at` form; the final
/// component is never followed (`l*xattr`), the directory is the fd's.
pub(crate) fn fd_path(dir: BorrowedFd<'_>, name: &OsStr) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    p
}

pub(crate) fn list_xattrs(path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let path = OsStr::from_bytes(path);
    let mut buf = vec![0u8; 1024];
    loop {
        match rfs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect())
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn get_xattr(path: &[u8], name: &[u8]) -> io::Result<Vec<u8>> {
    let path = OsStr::from_bytes(path);
    let name = OsStr::from_bytes(name);
    let mut buf = vec![0u8; 256];
    loop {
        match rfs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn copy_xattrs(src: &[u8], dst: &[u8]) -> io::Result<()> {
    for name in list_xattrs(src)? {
        let value = match get_xattr(src, &name) {
            Ok(v) => v,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        match rfs::lsetxattr(
            OsStr::from_bytes(dst),
            OsStr::from_bytes(&name),
            &value,
            rfs::XattrFlags::empty(),
        ) {
            // A namespace the writable branch's filesystem does not take.
            Err(rustix::io::Errno::NOTSUP) => {}
            r => r?,
        }
    }
    Ok(())
}

fn timestamps(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: rfs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rfs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Sets owner, mode, xattrs and times of `dst_dir/name` from `st` and the source's xattrs.
fn copy_meta(
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    st: &Stat,
    dst_dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    let kind = RFileType::from_raw_mode(st.st_mode);
    rfs::chownat(
        dst_dir,
        name,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if kind != RFileType::Symlink {
        // After chown, which may clear set-ID bits.
        rfs::chmodat(
            dst_dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    copy_xattrs(&fd_path(src_dir, src_name), &fd_path(dst_dir, name))?;
    rfs::utimensat(dst_dir, name, &timestamps(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Bytes copied between starts of writeback, for a copy that is synced at the end.
const WRITEBACK_CHUNK: usize = 8 << 20;

/// Copies a regular file's bytes, skipping holes; reflinks where the filesystem can. With
/// `sync`, writeback of each chunk starts as soon as it is copied (`sync_file_range`), so
/// the disk writes go on while the rest is copied and the closing `fdatasync` waits only
/// for the tail: a synced 500 MB copy-up took the copy's time plus the disk's before.
fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64, sync: bool) -> io::Result<()> {
    if size == 0 || rfs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let chunk = if sync { WRITEBACK_CHUNK } else { usize::MAX };
    let mut pos = 0u64;
    while pos < size {
        let data = match rfs::seek(src, rfs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break, // only a hole is left
            Err(e) => return Err(e.into()),
        };
        let hole = rfs::seek(src, rfs::SeekFrom::Hole(data))?.min(size);
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let start = off_out;
            let len = ((hole - off_in) as usize).min(chunk);
            let n = rfs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), len)?;
            if n == 0 {
                break;
            }
            if sync {
                // SAFETY: plain syscall on an fd we own; it only starts writeback.
                let rc = unsafe {
                    libc::sync_file_range(
                        dst.as_raw_fd(),
                        start as i64,
                        n as i64,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        pos = hole;
    }
    rfs::ftruncate(dst, size)?;
    Ok(())
}

/// What a regular file's copy gets of its data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Data {
    /// All of it, synced unless the mount is `volatile`.
    Whole,
    /// None (for a copy-up that truncates anyway).
    Empty,
    /// Only its size: a sparse file that a lazy copy fills (see [`crate::lazy`]).
    Sparse,
}

/// Creates `dst_dir/tmp` as a copy of `src_dir/name`: a directory empty, a regular file
/// with as much of its data as `data` says.
pub(crate) fn copy_object(
    src_dir: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
    dst_dir: BorrowedFd<'_>,
    tmp: &OsStr,
    data: Data,
    volatile: bool,
) -> io::Result<()> {
    let kind = RFileType::from_raw_mode(st.st_mode);
    let made = match kind {
        RFileType::RegularFile => (|| {
            let dst = rfs::openat(
                dst_dir,
                tmp,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            if data == Data::Sparse {
                rfs::ftruncate(&dst, st.st_size as u64)?;
            }
            if data == Data::Whole {
                let src = rfs::openat(
                    src_dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                copy_data(&src, &dst, st.st_size as u64, !volatile)?;
                if !volatile && st.st_size > 0 {
                    rfs::fdatasync(&dst)?;
                }
            }
            Ok(())
        })(),
        RFileType::Symlink => rfs::readlinkat(src_dir, name, Vec::new())
            .and_then(|target| rfs::symlinkat(target.as_c_str(), dst_dir, tmp))
            .map_err(io::Error::from),
        RFileType::Directory => {
            rfs::mkdirat(dst_dir, tmp, Mode::from_raw_mode(0o700)).map_err(io::Error::from)
        }
        _ => rfs::mknodat(
            dst_dir,
            tmp,
            kind,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            st.st_rdev,
        )
        .map_err(io::Error::from),
    };
    let done = made.and_then(|()| copy_meta(src_dir, name, st, dst_dir, tmp));
    if done.is_err() {
        let flags = if kind == RFileType::Directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let _ = rfs::unlinkat(dst_dir, tmp, flags);
    }
    done
}

/// The names in directory `dir` (opened for reading), with their types; `.` and `..` left
/// out.
pub(crate) fn entries(dir: impl AsFd) -> io::Result<Vec<(OsString, RFileType)>> {
    let mut out = Vec::new();
    for e in rfs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((OsStr::from_bytes(n).to_os_string(), e.file_type()));
        }
    }
    Ok(out)
}

/// Removes everything inside directory `dir` of the writable branch (whiteouts, markers and
/// metadata that keep a merged-empty directory from being removed).
pub(crate) fn clear_dir(dir: &OwnedFd) -> io::Result<()> {
    let fd = rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for (n, kind) in entries(&fd)? {
        if kind == RFileType::Directory {
            let sub = rfs::openat(
                fd.as_fd(),
                &n,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            clear_dir(&sub)?;
            rfs::unlinkat(&fd, &n, AtFlags::REMOVEDIR)?;
        } else {
            rfs::unlinkat(&fd, &n, AtFlags::empty())?;
        }
    }
    Ok(())
}
