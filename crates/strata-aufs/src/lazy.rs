//! Lazy copy-up. The first modification of a large lower file makes its copy in the writable
//! branch a sparse file of the same size, with the lower file's owner, mode, xattrs and times,
//! and returns: a fill thread then copies the lower data into the copy's holes. Until the
//! copy is whole, a hole reads as the lower file's bytes there, and a write first fills the
//! partial blocks at its edges, so a block is either still the lower file's (a hole) or
//! entirely the copy's. Both sides take the copy's lock: the fill never writes over a
//! write, and the lock is an open-file-description lock too, so another process finishing
//! the copy (the driver before it tars the branch as a diff) waits its turn as well.
//!
//! Crash safety comes from a record in [`RECORDS`]: the copy's file handle and the lower
//! file's path, synced before the copy is renamed into place and removed once the filled
//! copy is synced. A copy a record names is finished before anything trusts it whole: by the
//! next mount of the branch, or by [`finish_copy_ups`].
//!
//! A write a crash loses leaves a hole, which reads as the lower file's bytes: what a lost
//! write leaves on any filesystem, the old contents.

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, SeekFrom};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The writable branch's directory of records of unfinished lazy copies.
pub(crate) const RECORDS: &str = ".wh..wh.lazy";
/// Files this large or larger are copied up lazily; smaller ones are copied whole (a few
/// milliseconds at most).
pub(crate) const LAZY_MIN: u64 = 4 << 20;
/// Bytes filled per turn of the lock: a read or write of the copy waits at most this long.
const FILL_CHUNK: u64 = 512 << 10;
const MAGIC: &[u8] = b"strata-aufs lazy copy 1\n";
/// `MAX_HANDLE_SZ` in the kernel.
const MAX_HANDLE: usize = 128;

/// A copy being filled: its fds, and whether it is whole.
pub(crate) struct LazyCopy {
    upper: File,
    lower: File,
    /// The lower file's size: the copy is whole once its holes below this are filled.
    lower_size: u64,
    block: u64,
    record: OsString,
    records: OwnedFd,
    /// The filled copy is synced before its record goes (not for a `volatile` mount).
    sync: bool,
    /// `true` once the copy is whole.
    done: Mutex<bool>,
    /// Reads and writes waiting for the lock: the fill lets them go first (a mutex is not
    /// fair, and the fill would take it back at once, turn after turn).
    waiting: AtomicUsize,
}

/// The copy's lock, held: the in-process mutex and the open-file-description lock on the
/// copy for other processes.
struct Held<'a> {
    done: MutexGuard<'a, bool>,
    fd: BorrowedFd<'a>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = ofd_lock(self.fd, libc::F_UNLCK as i16);
    }
}

fn ofd_lock(fd: BorrowedFd<'_>, kind: i16) -> io::Result<()> {
    // SAFETY: a zeroed flock is valid; F_OFD_SETLKW reads it and touches nothing else.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as i16;
    loop {
        // SAFETY: `l` outlives the call.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLKW, &mut l) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The path `fd` was opened by, as the kernel has it now.
fn path_of_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(
        rfs::CWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        Vec::new(),
    )?
    .into_bytes())
}

/// A file handle (`name_to_handle_at`) of `fd`'s file: opens it again after a crash, from
/// the branch, whatever it has been renamed to since.
fn file_handle(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // u32 units keep the kernel's `struct file_handle` aligned.
    let mut buf = vec![0u32; (8 + MAX_HANDLE) / 4];
    buf[0] = MAX_HANDLE as u32;
    let mut mount_id = 0;
    // SAFETY: `buf` holds a file_handle header with room for MAX_HANDLE bytes after it.
    let rc = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = 8 + buf[0] as usize;
    Ok(buf.iter().flat_map(|w| w.to_ne_bytes()).take(len).collect())
}

fn open_by_handle(mount: BorrowedFd<'_>, handle: &[u8]) -> io::Result<OwnedFd> {
    if handle.len() < 8 || handle.len() > 8 + MAX_HANDLE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad file handle",
        ));
    }
    let mut buf = vec![0u32; (8 + MAX_HANDLE) / 4];
    for (i, c) in handle.chunks(4).enumerate() {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        buf[i] = u32::from_ne_bytes(w);
    }
    if buf[0] as usize != handle.len() - 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad file handle",
        ));
    }
    // SAFETY: `buf` holds a complete file_handle; the fd returned is ours.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn encode(handle: &[u8], lower: &[u8]) -> Vec<u8> {
    let mut r = MAGIC.to_vec();
    r.extend_from_slice(&(handle.len() as u32).to_le_bytes());
    r.extend_from_slice(handle);
    r.extend_from_slice(&(lower.len() as u32).to_le_bytes());
    r.extend_from_slice(lower);
    r
}

/// (copy's handle, lower file's path) of a whole record; `None` for one a crash cut short,
/// whose copy was never renamed into place.
fn decode(r: &[u8]) -> Option<(&[u8], &[u8])> {
    let r = r.strip_prefix(MAGIC)?;
    fn take(r: &[u8]) -> Option<(&[u8], &[u8])> {
        let n = u32::from_le_bytes(r.get(..4)?.try_into().ok()?) as usize;
        let rest = r.get(4..)?;
        Some((rest.get(..n)?, rest.get(n..)?))
    }
    let (handle, r) = take(r)?;
    let (lower, r) = take(r)?;
    r.is_empty().then_some((handle, lower))
}

/// Where the next data at or after `pos` starts in `f` (`None`: only a hole is left).
fn next_data(f: &File, pos: u64) -> io::Result<Option<u64>> {
    match rfs::seek(f, SeekFrom::Data(pos)) {
        Ok(d) => Ok(Some(d)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes sparse `tmp` of `size` bytes in `dir` ready to be a lazy copy: `false` when its
/// filesystem does not report holes (`SEEK_DATA` would call the whole file data).
pub(crate) fn holes_reported(dir: BorrowedFd<'_>, tmp: &OsStr) -> io::Result<bool> {
    let f = File::from(rfs::openat(
        dir,
        tmp,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?);
    Ok(next_data(&f, 0)?.is_none())
}

impl LazyCopy {
    /// Starts a lazy copy: `upper` (the sparse copy, not yet renamed into place) of `lower`.
    /// Its record is written (and synced unless `!sync`) before this returns.
    pub(crate) fn begin(
        root: BorrowedFd<'_>,
        upper: OwnedFd,
        lower: OwnedFd,
        sync: bool,
    ) -> io::Result<LazyCopy> {
        let handle = file_handle(upper.as_fd())?;
        let lower_path = path_of_fd(lower.as_fd())?;
        let lower_path = lower_path.as_slice();
        if !lower_path.starts_with(b"/") || lower_path.ends_with(b" (deleted)") {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "lower file has no path",
            ));
        }
        match rfs::mkdirat(root, RECORDS, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let records = rfs::openat(
            root,
            RECORDS,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rfs::fstat(&upper)?;
        let record = OsString::from(st.st_ino.to_string());
        let r = File::from(rfs::openat(
            &records,
            &record,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        r.write_all_at(&encode(&handle, lower_path), 0)?;
        if sync {
            r.sync_data()?;
            rfs::fsync(&records)?;
        }
        LazyCopy::new(upper, lower, record, records, sync)
    }

    fn new(
        upper: OwnedFd,
        lower: OwnedFd,
        record: OsString,
        records: OwnedFd,
        sync: bool,
    ) -> io::Result<LazyCopy> {
        let (upper, lower) = (File::from(upper), File::from(lower));
        let block = (rfs::fstat(&upper)?.st_blksize as u64).max(4096);
        let lower_size = rfs::fstat(&lower)?.st_size as u64;
        Ok(LazyCopy {
            upper,
            lower,
            lower_size,
            block,
            record,
            records,
            sync,
            done: Mutex::new(false),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The copy's inode number.
    pub(crate) fn ino(&self) -> io::Result<u64> {
        Ok(rfs::fstat(&self.upper)?.st_ino)
    }

    fn hold(&self) -> io::Result<Held<'_>> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.lock_file(done)
    }

    /// The lock for a fill step, once nobody else waits for it.
    fn hold_for_fill(&self) -> io::Result<Held<'_>> {
        loop {
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
            if self.waiting.load(Ordering::SeqCst) == 0 {
                return self.lock_file(done);
            }
            drop(done);
            std::thread::yield_now();
        }
    }

    fn lock_file<'a>(&'a self, done: MutexGuard<'a, bool>) -> io::Result<Held<'a>> {
        ofd_lock(self.upper.as_fd(), libc::F_WRLCK as i16)?;
        Ok(Held {
            done,
            fd: self.upper.as_fd(),
        })
    }

    /// The copy's status, taken between fill steps.
    pub(crate) fn stat(&self) -> io::Result<rfs::Stat> {
        let _held = self.hold()?;
        Ok(rfs::fstat(&self.upper)?)
    }

    pub(crate) fn is_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `size` bytes at `off` of the union file: the copy's data where it has some,
    /// the lower file's elsewhere.
    pub(crate) fn read(&self, off: u64, size: usize) -> io::Result<Vec<u8>> {
        let held = self.hold()?;
        let len = rfs::fstat(&self.upper)?.st_size as u64;
        let end = (off + size as u64).min(len);
        let mut buf = vec![0u8; end.saturating_sub(off) as usize];
        if *held.done {
            // Whole: any hole left is one the lower file has too, zeros either way.
            read_full(&self.upper, &mut buf, off)?;
            return Ok(buf);
        }
        let mut pos = off;
        while pos < end {
            let (from, stop) = match next_data(&self.upper, pos)? {
                Some(d) if d <= pos => {
                    let hole = rfs::seek(&self.upper, SeekFrom::Hole(pos))?;
                    (&self.upper, hole.min(end))
                }
                d => (&self.lower, d.map_or(end, |d| d.min(end))),
            };
            if stop <= pos {
                // SEEK_DATA and SEEK_HOLE disagree: never loop on it.
                return Err(io::Error::other("copy's holes changed while read"));
            }
            read_full(
                from,
                &mut buf[(pos - off) as usize..(stop - off) as usize],
                pos,
            )?;
            pos = stop;
        }
        Ok(buf)
    }

    /// Writes `data` at `off` through `f` (the caller's fd on the copy), its edge blocks
    /// filled from the lower file first.
    pub(crate) fn write(&self, f: &File, data: &[u8], off: u64) -> io::Result<()> {
        let held = self.hold()?;
        if !*held.done && !data.is_empty() {
            let first = off - off % self.block;
            let last = off + data.len() as u64 - 1;
            let last = last - last % self.block;
            for b in [first, last] {
                if b < self.lower_size && next_data(&self.upper, b)? != Some(b) {
                    let mut edge = vec![0u8; (self.block.min(self.lower_size - b)) as usize];
                    read_full(&self.lower, &mut edge, b)?;
                    self.upper.write_all_at(&edge, b)?;
                }
            }
        }
        f.write_all_at(data, off)
    }

    /// Fills the copy to the end, a chunk per turn of the lock; then it is whole and its
    /// record goes.
    pub(crate) fn finish(&self) -> io::Result<()> {
        let (mut pos, mut buf) = (0, Vec::new());
        while let Some(next) = self.fill(pos, &mut buf)? {
            pos = next;
        }
        Ok(())
    }

    /// Empties the copy (a truncation to zero): nothing of the lower file is left to fill.
    pub(crate) fn discard(&self) -> io::Result<()> {
        let mut held = self.hold()?;
        // A crash before the record goes finds an empty file, which needs no filling.
        rfs::ftruncate(&self.upper, 0)?;
        self.drop_record()?;
        *held.done = true;
        Ok(())
    }

    fn drop_record(&self) -> io::Result<()> {
        match rfs::unlinkat(&self.records, &self.record, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Fills the holes of one chunk from `pos`; `None` once the copy is whole, or gone. The
    /// lower file's bytes are read before the lock is taken (they never change), so a read
    /// or write of the copy never waits for the disk on the fill's behalf.
    fn fill(&self, pos: u64, buf: &mut Vec<u8>) -> io::Result<Option<u64>> {
        let want = FILL_CHUNK.min(self.lower_size.saturating_sub(pos)) as usize;
        buf.resize(want, 0);
        let unfilled = next_data(&self.upper, pos)? != Some(pos)
            || rfs::seek(&self.upper, SeekFrom::Hole(pos))? < pos + want as u64;
        if unfilled {
            read_full(&self.lower, buf, pos)?;
        }
        let mut held = self.hold_for_fill()?;
        if *held.done {
            return Ok(None);
        }
        let st = rfs::fstat(&self.upper)?;
        if st.st_nlink == 0 {
            // Removed: no new reader can find it, and a crash frees it. Those that have it
            // open go on reading through the lower file.
            self.drop_record()?;
            return Ok(None);
        }
        // Never past the copy's end: a copy truncated to zero needs nothing more.
        let whole = self.lower_size.min(st.st_size as u64);
        if pos >= whole {
            if self.sync {
                self.upper.sync_data()?;
            }
            self.drop_record()?;
            *held.done = true;
            return Ok(None);
        }
        let end = (pos + want as u64).min(whole);
        let mut p = pos;
        let mut filled = false;
        while unfilled && p < end {
            let data = next_data(&self.upper, p)?;
            let stop = data.map_or(end, |d| d.min(end));
            if stop > p {
                let at = (p - pos) as usize..(stop - pos) as usize;
                self.upper.write_all_at(&buf[at], p)?;
                filled = true;
            }
            match data {
                Some(d) if d < end => {
                    p = (rfs::seek(&self.upper, SeekFrom::Hole(d))?).min(end);
                }
                _ => break,
            }
        }
        if filled {
            // Filling is no modification: the copy keeps the time its last write gave it.
            let times = rfs::Timestamps {
                last_access: rfs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rfs::UTIME_OMIT,
                },
                last_modification: rfs::Timespec {
                    tv_sec: st.st_mtime as _,
                    tv_nsec: st.st_mtime_nsec as _,
                },
            };
            rfs::futimens(&self.upper, &times)?;
            if self.sync {
                // Writeback starts now, so the final sync waits only for the tail.
                // SAFETY: plain syscall on an fd we own; it only starts writeback.
                unsafe {
                    libc::sync_file_range(
                        self.upper.as_raw_fd(),
                        pos as i64,
                        (end - pos) as i64,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
            }
        }
        Ok(Some(end))
    }
}

/// Reads `buf` from `f` at `off`, short only at the file's end (what is past it stays as
/// it was: zeros here); returns the bytes read.
pub(crate) fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The unfinished copies recorded in the writable branch whose root is `root`; records of
/// copies that no longer exist, and records a crash cut short, are removed.
pub(crate) fn recorded(root: BorrowedFd<'_>, sync: bool) -> io::Result<Vec<LazyCopy>> {
    let records = match rfs::openat(
        root,
        RECORDS,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let names = crate::copyup::entries(&records)?;
    // open_by_handle_at takes no O_PATH fd for the filesystem.
    let root = rfs::openat(
        root,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let root_path = path_of_fd(root.as_fd())?;
    let mut out = Vec::new();
    for (name, _) in names {
        let mut raw = Vec::new();
        io::Read::read_to_end(
            &mut File::from(rfs::openat(
                &records,
                &name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?),
            &mut raw,
        )?;
        let upper = decode(&raw)
            .map(|(handle, lower)| (open_by_handle(root.as_fd(), handle), lower))
            .and_then(|(upper, lower)| match upper {
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => None,
                u => Some((u, lower)),
            });
        let Some((upper, lower)) = upper else {
            rfs::unlinkat(&records, &name, AtFlags::empty())?;
            continue;
        };
        let lower_path = Path::new(OsStr::from_bytes(lower));
        let context = |e: io::Error, what: &str| {
            io::Error::new(
                e.kind(),
                format!(
                    "unfinished copy-up recorded in {RECORDS}/{}: {what} {}: {e}",
                    name.to_string_lossy(),
                    lower_path.display()
                ),
            )
        };
        let upper = upper.map_err(|e| context(e, "copy of"))?;
        // A file handle opens any file of the filesystem: the copy must be in this branch,
        // and its lower file outside it, or the record is none of the union's.
        let upper_path = path_of_fd(upper.as_fd())?;
        let inside = |p: &[u8]| {
            p.strip_prefix(root_path.as_slice())
                .is_some_and(|rest| rest.starts_with(b"/") || root_path == b"/")
        };
        if !inside(&upper_path) || inside(lower) {
            return Err(context(
                io::Error::new(io::ErrorKind::InvalidData, "not a copy in this branch"),
                "copy of",
            ));
        }
        let lower = rfs::open(
            lower_path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| context(e.into(), "lower file"))?;
        out.push(LazyCopy::new(
            upper,
            lower,
            name,
            records.try_clone()?,
            sync,
        )?);
    }
    Ok(out)
}

/// Finishes every lazy copy-up recorded in writable branch `branch`, so that its files are
/// whole and the branch can be read directly (as a layer's diff). Safe while a union over
/// the branch is mounted: the server and this take the same locks.
pub fn finish_copy_ups(branch: &Path) -> io::Result<()> {
    let root = rfs::open(
        branch,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for copy in recorded(root.as_fd(), true)? {
        copy.finish()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_file_outside_the_branch_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let branch = t.path().join("branch");
        std::fs::create_dir_all(branch.join(RECORDS)).unwrap();
        // A sparse file beside the branch, and a "lower" file of bytes to fill it with.
        let victim = t.path().join("victim");
        File::create(&victim).unwrap().set_len(1 << 20).unwrap();
        let src = t.path().join("src");
        std::fs::write(&src, vec![b'!'; 1 << 20]).unwrap();
        let handle = file_handle(File::open(&victim).unwrap().as_fd()).unwrap();
        let record = encode(&handle, src.as_os_str().as_bytes());
        std::fs::write(branch.join(RECORDS).join("1"), record).unwrap();
        let e = finish_copy_ups(&branch).unwrap_err();
        assert!(e.to_string().contains("not a copy in this branch"), "{e}");
        assert!(std::fs::read(&victim).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn records_round_trip_and_cut_ones_are_refused() {
        let r = encode(b"\x08\0\0\0\x01\0\0\0abcdefgh", b"/l/0/big");
        assert_eq!(
            decode(&r),
            Some((&b"\x08\0\0\0\x01\0\0\0abcdefgh"[..], &b"/l/0/big"[..]))
        );
        for n in 0..r.len() {
            assert_eq!(decode(&r[..n]), None, "cut at {n}");
        }
    }
}
