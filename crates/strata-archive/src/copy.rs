//! Copying a whole tree with everything a layer holds: types, owners, modes, times,
//! xattrs, hard links and holes. The vfs driver builds each snapshot this way.

use crate::walk::{
    file_type, list_dir, lstat_at, open_dir_at, open_file_at, readlink_at, set_meta_at, xattrs,
};
use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, SeekFrom, Stat, Timespec, Timestamps,
};
use rustix::io::Errno;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use xattr::FileExt;

/// Copies the contents and metadata of `src` into the existing empty directory `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let open = |p: &Path| -> io::Result<OwnedFd> {
        Ok(rfs::open(
            p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    };
    let (sfd, dfd) = (open(src)?, open(dst)?);
    let mut links = HashMap::new();
    copy_dir_contents(&sfd, &dfd, &mut links)?;
    let st = rfs::fstat(&sfd)?;
    set_meta(&dfd, &st)?;
    copy_xattrs(&File::from(sfd.try_clone()?), &File::from(dfd.try_clone()?))?;
    rfs::futimens(&dfd, &times(&st))?;
    Ok(())
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn set_meta(fd: &impl AsFd, st: &Stat) -> io::Result<()> {
    rfs::fchown(
        fd,
        Some(rfs::Uid::from_raw(st.st_uid)),
        Some(rfs::Gid::from_raw(st.st_gid)),
    )?;
    rfs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    Ok(())
}

fn copy_xattrs(src: &File, dst: &File) -> io::Result<()> {
    for (k, v) in xattrs(src)? {
        dst.set_xattr(&k, &v)?;
    }
    Ok(())
}

fn copy_dir_contents(
    sfd: &impl AsFd,
    dfd: &impl AsFd,
    links: &mut HashMap<(u64, u64), (OwnedFd, std::ffi::OsString)>,
) -> io::Result<()> {
    for name in list_dir(sfd)? {
        copy_entry(sfd, dfd, &name, links)?;
    }
    Ok(())
}

fn copy_entry(
    sfd: &impl AsFd,
    dfd: &impl AsFd,
    name: &OsStr,
    links: &mut HashMap<(u64, u64), (OwnedFd, std::ffi::OsString)>,
) -> io::Result<()> {
    let st = lstat_at(sfd, name)?;
    let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
    match file_type(&st) {
        FileType::Directory => {
            rfs::mkdirat(dfd, name, Mode::from_raw_mode(0o700))?;
            let s = open_dir_at(sfd, name)?;
            let d = open_dir_at(dfd, name)?;
            copy_dir_contents(&s, &d, links)?;
            set_meta(&d, &st)?;
            copy_xattrs(&File::from(s), &File::from(d.try_clone()?))?;
            rfs::futimens(&d, &times(&st))?;
        }
        FileType::RegularFile => {
            let key = (st.st_dev, st.st_ino);
            if st.st_nlink > 1 {
                if let Some((first_dir, first_name)) = links.get(&key) {
                    rfs::linkat(
                        first_dir,
                        first_name.as_os_str(),
                        dfd,
                        name,
                        AtFlags::empty(),
                    )?;
                    return Ok(());
                }
            }
            let src = open_file_at(sfd, name)?;
            let dst = File::from(rfs::openat(
                dfd,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?);
            copy_data(&src, &dst, st.st_size as u64)?;
            set_meta(&dst, &st)?;
            copy_xattrs(&src, &dst)?;
            rfs::futimens(&dst, &times(&st))?;
            if st.st_nlink > 1 {
                let dir = dfd.as_fd().try_clone_to_owned()?;
                links.insert(key, (dir, name.to_os_string()));
            }
        }
        FileType::Symlink => {
            let target = readlink_at(sfd, name)?;
            rfs::symlinkat(target.as_os_str(), dfd, name)?;
            set_meta_at(dfd, name, st.st_uid, st.st_gid, None, &times(&st))?;
        }
        ft @ (FileType::CharacterDevice
        | FileType::BlockDevice
        | FileType::Fifo
        | FileType::Socket) => {
            rfs::mknodat(dfd, name, ft, mode, st.st_rdev)?;
            set_meta_at(dfd, name, st.st_uid, st.st_gid, Some(mode), &times(&st))?;
        }
        FileType::Unknown => {}
    }
    Ok(())
}

/// Copies bytes `from..to` of `src` to the same offsets of `dst` through a buffer.
fn copy_range(src: &File, dst: &File, mut from: u64, to: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
    while from < to {
        let want = ((to - from) as usize).min(buf.len());
        let n = rustix::io::pread(src, &mut buf[..want], from)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += rustix::io::pwrite(dst, &buf[done..n], from + done as u64)?;
        }
        from += n as u64;
    }
    Ok(())
}

/// Copies only the data extents (SEEK_DATA/SEEK_HOLE) with copy_file_range, so holes stay
/// holes and the kernel moves the bytes (or shares them, on filesystems that reflink).
fn copy_data(src: &File, dst: &File, len: u64) -> io::Result<()> {
    if rfs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut pos: u64 = 0;
    while pos < len {
        let data = match rfs::seek(src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = rfs::seek(src, SeekFrom::Hole(data))?.min(len);
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let want = (hole - off_in) as usize;
            let n =
                match rfs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
                    // Between filesystems of different types the kernel refuses: copy by hand.
                    Err(Errno::XDEV) => {
                        copy_range(src, dst, off_in, hole)?;
                        break;
                    }
                    other => other?,
                };
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    rfs::ftruncate(dst, len)?;
    Ok(())
}
