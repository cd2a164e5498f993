//! Thin devices as files, over FUSE: without device-mapper (nor nbd or ublk) the kernel
//! cannot see a thin device as a block device, but a loop device over a file can.
//!
//! The mount's root lists one file per device, named by its id, whose size is the device's
//! virtual size, plus `.pool`, the pool's status in `KEY: VALUE` lines. The namespace is
//! also the control interface, so one process owns the pool:
//! - create `ID`: a new thin device; truncate it to give it its size;
//! - hard link `ORIGIN` to `ID`: a snapshot of ORIGIN (the same size);
//! - unlink `ID`: delete the device (refused while it is open);
//! - fsync a device: commit the pool; reads and writes go to the pool; a hole punched
//!   (what a loop device does for a discard) unmaps whole blocks and zeroes the rest.
//!
//! Sizes are the one thing dm-thin's metadata does not keep: they live in a sizes file beside
//! the metadata (see [`crate::sizes`]).

use crate::sizes::Sizes;
use crate::{Error, Pool};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROOT: u64 = 1;
const STATUS: u64 = 2;
const STATUS_NAME: &str = ".pool";
/// Device `id` is node `id + FIRST_DEVICE`.
const FIRST_DEVICE: u64 = 3;
const TTL: Duration = Duration::from_secs(1);
/// Written data is committed at least this often (and on every fsync).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

struct State {
    pool: Pool,
    sizes: Sizes,
    open: HashMap<u64, u32>,
    failed: Option<String>,
}

pub struct Server {
    state: Arc<(Mutex<State>, Condvar)>,
}

fn errno(e: &Error) -> Errno {
    match e {
        Error::NoDevice(_) => Errno::ENOENT,
        Error::DeviceExists(_) => Errno::EEXIST,
        Error::NoSpace(_) | Error::MetadataFull => Errno::ENOSPC,
        Error::Invalid(_) => Errno::EINVAL,
        Error::Io(e) => Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)),
        Error::Corrupt(_) => Errno::EIO,
    }
}

impl Server {
    /// Serves `pool`; device sizes are kept in `sizes_path`.
    pub fn new(pool: Pool, sizes_path: PathBuf) -> io::Result<Server> {
        let mut pool = pool;
        let devices: Vec<u64> = pool
            .devices()
            .map_err(io::Error::other)?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let sizes = Sizes::open(&sizes_path, &devices)?;
        Ok(Server {
            state: Arc::new((
                Mutex::new(State {
                    pool,
                    sizes,
                    open: HashMap::new(),
                    failed: None,
                }),
                Condvar::new(),
            )),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits written data every [`COMMIT_EVERY`] in the background.
    pub fn start_committer(&self) {
        let state = Arc::downgrade(&self.state);
        std::thread::spawn(move || loop {
            std::thread::sleep(COMMIT_EVERY);
            let Some(state) = state.upgrade() else { return };
            let mut st = state.0.lock().unwrap_or_else(|p| p.into_inner());
            if st.pool.has_changes() && st.failed.is_none() {
                if let Err(e) = st.pool.commit() {
                    st.failed = Some(e.to_string());
                }
            }
        });
    }

    fn attr(ino: u64, size: u64, kind: FileType, perm: u16) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn status(st: &mut State) -> String {
        let u = st.pool.usage();
        let bs = st.pool.block_bytes() as u64;
        let mut s = format!(
            "Block Size: {bs}\nData Used: {}\nData Total: {}\nMetadata Used: {}\nMetadata Total: {}\nTransaction: {}\nDevices: {}\n",
            u.data_used * bs,
            u.data_total * bs,
            u.metadata_used * 4096,
            u.metadata_total * 4096,
            st.pool.transaction_id(),
            st.sizes.len(),
        );
        if let Some(f) = &st.failed {
            s.push_str(&format!("Failed: {f}\n"));
        }
        s
    }

    fn node_attr(&self, st: &mut State, ino: u64) -> Result<FileAttr, Errno> {
        match ino {
            ROOT => Ok(Self::attr(ROOT, 0, FileType::Directory, 0o700)),
            STATUS => Ok(Self::attr(
                STATUS,
                Self::status(st).len() as u64,
                FileType::RegularFile,
                0o400,
            )),
            _ => {
                let id = ino - FIRST_DEVICE;
                st.pool.details(id).map_err(|e| errno(&e))?;
                let size = st.sizes.get(id);
                Ok(Self::attr(ino, size, FileType::RegularFile, 0o600))
            }
        }
    }

    fn device_id(name: &OsStr) -> Result<u64, Errno> {
        name.to_str()
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|id| *id < 1 << 24)
            .ok_or(Errno::EINVAL)
    }

    fn set_size(st: &mut State, id: u64, size: u64) -> Result<(), Errno> {
        st.sizes
            .set(id, size)
            .map_err(|e| Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn commit(st: &mut State) -> Result<(), Errno> {
        // A failed commit left the pool's state unknown: nothing more is committed.
        if st.failed.is_some() {
            return Err(Errno::EIO);
        }
        st.pool.commit().map_err(|e| {
            st.failed = Some(e.to_string());
            errno(&e)
        })
    }

    /// Runs `f` on each block piece of `[offset, offset + len)`: (vblock, offset in the
    /// block, offset in the buffer, length).
    fn pieces(
        bs: u64,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize, usize) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let vb = pos / bs;
            let inner = (pos % bs) as usize;
            let n = (bs as usize - inner).min(len - done);
            f(vb, inner, done, n)?;
            done += n;
        }
        Ok(())
    }
}

impl Filesystem for Server {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn destroy(&mut self) {
        let mut st = self.lock();
        if st.pool.has_changes() {
            let _ = Self::commit(&mut st);
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let mut st = self.lock();
        let ino = if name == STATUS_NAME {
            Ok(STATUS)
        } else {
            Self::device_id(name).map(|id| id + FIRST_DEVICE)
        };
        match ino.and_then(|i| self.node_attr(&mut st, i)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(_) => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut st = self.lock();
        match self.node_attr(&mut st, ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock();
        let r = (|| {
            if ino.0 < FIRST_DEVICE {
                return Err(Errno::EPERM);
            }
            if let Some(size) = size {
                let id = ino.0 - FIRST_DEVICE;
                let bs = st.pool.block_bytes() as u64;
                let old = st.sizes.get(id);
                // Shrinking unmaps the blocks past the new end.
                for vb in size.div_ceil(bs)..old.div_ceil(bs) {
                    st.pool.discard(id, vb).map_err(|e| errno(&e))?;
                }
                Self::set_size(&mut st, id, size)?;
                Self::commit(&mut st)?;
            }
            self.node_attr(&mut st, ino.0)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock();
        let r = (|| {
            if parent.0 != ROOT {
                return Err(Errno::EPERM);
            }
            let id = Self::device_id(name)?;
            st.pool.create_thin(id).map_err(|e| errno(&e))?;
            Self::set_size(&mut st, id, 0)?;
            Self::commit(&mut st)?;
            *st.open.entry(id).or_default() += 1;
            self.node_attr(&mut st, id + FIRST_DEVICE)
        })();
        match r {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = self.lock();
        let r = (|| {
            if newparent.0 != ROOT || ino.0 < FIRST_DEVICE {
                return Err(Errno::EPERM);
            }
            let origin = ino.0 - FIRST_DEVICE;
            let id = Self::device_id(newname)?;
            st.pool.create_snap(id, origin).map_err(|e| errno(&e))?;
            let size = st.sizes.get(origin);
            Self::set_size(&mut st, id, size)?;
            Self::commit(&mut st)?;
            self.node_attr(&mut st, id + FIRST_DEVICE)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = (|| {
            if parent.0 != ROOT {
                return Err(Errno::EPERM);
            }
            let id = Self::device_id(name)?;
            if st.open.get(&id).copied().unwrap_or(0) > 0 {
                return Err(Errno::EBUSY);
            }
            st.pool.delete(id).map_err(|e| errno(&e))?;
            st.sizes.remove(id);
            Self::commit(&mut st)
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        if ino.0 == STATUS {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        match self.node_attr(&mut st, ino.0) {
            Ok(_) => {
                *st.open.entry(ino.0 - FIRST_DEVICE).or_default() += 1;
                // No page cache here: whatever sits on the device caches its own.
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 >= FIRST_DEVICE {
            let mut st = self.lock();
            if let Some(n) = st.open.get_mut(&(ino.0 - FIRST_DEVICE)) {
                *n = n.saturating_sub(1);
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.lock();
        if ino.0 == STATUS {
            let s = Self::status(&mut st);
            let b = s.as_bytes();
            let start = (offset as usize).min(b.len());
            let end = (start + size as usize).min(b.len());
            return reply.data(&b[start..end]);
        }
        let r = (|| {
            let id = ino.0 - FIRST_DEVICE;
            let dev_size = st.sizes.get(id);
            let len = (size as u64).min(dev_size.saturating_sub(offset)) as usize;
            let mut buf = vec![0u8; len];
            let bs = st.pool.block_bytes() as u64;
            Self::pieces(bs, offset, len, |vb, inner, at, n| {
                st.pool
                    .read(id, vb, inner, &mut buf[at..at + n])
                    .map_err(|e| errno(&e))
            })?;
            Ok(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.lock();
        let r = (|| {
            if ino.0 < FIRST_DEVICE {
                return Err(Errno::EPERM);
            }
            let id = ino.0 - FIRST_DEVICE;
            let dev_size = st.sizes.get(id);
            if offset + data.len() as u64 > dev_size {
                return Err(Errno::ENOSPC);
            }
            let bs = st.pool.block_bytes() as u64;
            Self::pieces(bs, offset, data.len(), |vb, inner, at, n| {
                st.pool
                    .write(id, vb, inner, &data[at..at + n])
                    .map_err(|e| errno(&e))
            })
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        match Self::commit(&mut st) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            if ino.0 < FIRST_DEVICE {
                return Err(Errno::EPERM);
            }
            if mode & libc::FALLOC_FL_PUNCH_HOLE == 0 {
                // Space is allocated on write; reserving it ahead is not offered.
                return if mode == 0 {
                    Ok(())
                } else {
                    Err(Errno::EOPNOTSUPP)
                };
            }
            let id = ino.0 - FIRST_DEVICE;
            let bs = st.pool.block_bytes() as u64;
            let zeros = vec![0u8; bs as usize];
            Self::pieces(bs, offset, length as usize, |vb, inner, _, n| {
                if inner == 0 && n as u64 == bs {
                    st.pool.discard(id, vb)
                } else if st.pool.mapping(id, vb).map_err(|e| errno(&e))?.is_some() {
                    st.pool.write(id, vb, inner, &zeros[..n])
                } else {
                    Ok(())
                }
                .map_err(|e| errno(&e))
            })
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// `user.thin.mapped_bytes` and `user.thin.exclusive_bytes` of a device: what it maps,
    /// and what only it refers to (its own writes since it was snapshotted).
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut st = self.lock();
        let r = (|| {
            if ino.0 < FIRST_DEVICE {
                return Err(Errno::ENODATA);
            }
            let id = ino.0 - FIRST_DEVICE;
            let bs = st.pool.block_bytes() as u64;
            let blocks = match name.to_str() {
                Some("user.thin.mapped_bytes") => {
                    st.pool.details(id).map_err(|e| errno(&e))?.mapped_blocks
                }
                Some("user.thin.exclusive_bytes") => {
                    st.pool.exclusive_blocks(id).map_err(|e| errno(&e))?
                }
                _ => return Err(Errno::ENODATA),
            };
            Ok((blocks * bs).to_string())
        })();
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(v.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let st = self.lock();
        let mut entries = vec![
            (ROOT, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
            (STATUS, FileType::RegularFile, STATUS_NAME.to_string()),
        ];
        entries.extend(
            st.sizes
                .devices()
                .map(|id| (id + FIRST_DEVICE, FileType::RegularFile, id.to_string())),
        );
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.lock();
        let u = st.pool.usage();
        let bs = st.pool.block_bytes() as u64;
        let free = (u.data_total - u.data_used) * bs / 4096;
        reply.statfs(u.data_total * bs / 4096, free, free, 0, 0, 4096, 255, 4096);
    }
}

/// Mounts the server for `pool` on `mountpoint` and serves until unmounted.
pub fn serve(pool: Pool, sizes: PathBuf, mountpoint: &Path) -> io::Result<()> {
    let server = Server::new(pool, sizes)?;
    server.start_committer();
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        fuser::MountOption::FSName("strata-thinpool".into()),
        fuser::MountOption::Subtype("strata-thinpool".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    cfg.n_threads = Some(2);
    cfg.clone_fd = true;
    fuser::Session::new(server, mountpoint, &cfg)?.run()
}
