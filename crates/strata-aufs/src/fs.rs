//! The union itself: nodes, copy-up, whiteouts, and the FUSE operations.
//!
//! Names are resolved through per-directory merged views ([`DirView`]), or, for the first
//! few names looked up in a directory, by probing each branch for the name alone (walking
//! down a path through 100 layers should not read 100 copies of every directory on the
//! way). A node is known by
//! the paths it was looked up by; its number (`st_ino`, which FUSE also uses as the node
//! id) is derived from the branch and inode number it was first found at, so the same
//! files get the same numbers across lookups and remounts of the same branches, and hard
//! links in a branch share one. All namespace state sits behind one lock; file data goes
//! straight between the kernel and the branch file (passthrough) or through an fd.

use crate::copyup::{self, fd_path, temp_name, Data};
use crate::lazy::{self, LazyCopy};
use crate::view::{self, cookie, reserved, whiteout_name, DirView, Entry, Listing, OPAQUE};
use crate::{BranchMode, MountConfig};
use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags, Stat};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust entries and attributes. Everything that changes them goes
/// through this filesystem, and the kernel drops what its own operations invalidate.
const TTL: Duration = Duration::from_secs(3600);
const ROOT: u64 = 1;
/// Node numbers past derivable ones (a collision, a huge branch inode number).
const OVERFLOW: u64 = 1 << 63;
const PLNK: &str = ".wh..wh.plnk";
/// The writable branch's log of copy-ups: 16-byte records (copy's inode number, node
/// number), node number 0 when the copy was removed. Not synced: losing its tail after a
/// crash only renumbers some copied-up files.
const XINO: &str = ".wh..wh.xino";
/// Writable-branch directories kept open at most (see `State::wdirs`).
const WDIRS: usize = 64;
/// Directories of the other branches kept open at most (see `State::rdirs`).
const RDIRS: usize = 256;
/// Names probed in a directory before its view is built instead: a probe costs two
/// lookups per branch, a merge about a dozen lookups' worth per branch.
const PROBES: usize = 4;

type Res<T> = std::result::Result<T, Errno>;

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn rerr(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

struct BranchFd {
    fd: OwnedFd,
    /// Its whiteouts and opaque markers are in effect (see [`crate::Branch::whiteouts`]).
    whiteouts: bool,
}

struct Node {
    /// The union paths it is known by (hard links give several); empty once all are gone.
    paths: Vec<PathBuf>,
    /// (branch, inode number) pairs that name this node's file.
    idents: Vec<(u16, u64)>,
    lookups: u64,
    generation: u64,
}

/// Names resolved in a directory whose view is not built (see [`view::probe`]). Valid
/// until the directory's view is built: every change to a directory's names goes through
/// its view first.
struct Probed {
    /// The branches the directory's contents come from, top first, down to an opaque one.
    dirs: Vec<u16>,
    /// `None`: absent or whited out.
    names: HashMap<OsString, Option<Entry>>,
}

/// A branch directory names are looked up in (see [`Union::lookup_dir`]).
enum LookupDir<'a> {
    Root(BorrowedFd<'a>),
    Opened(OwnedFd),
    Kept(Arc<OwnedFd>),
}

impl AsFd for LookupDir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            LookupDir::Root(fd) => fd.as_fd(),
            LookupDir::Opened(fd) => fd.as_fd(),
            LookupDir::Kept(fd) => fd.as_fd(),
        }
    }
}

/// An open file.
struct Handle {
    ino: u64,
    file: Arc<File>,
    /// Holds the kernel's passthrough registration while the file is open.
    _backing: Option<Arc<BackingId>>,
    /// The lazy copy it was opened on while that was being filled.
    lazy: Option<Arc<LazyCopy>>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    by_path: HashMap<PathBuf, u64>,
    by_ident: HashMap<(u16, u64), u64>,
    views: HashMap<PathBuf, DirView>,
    probed: HashMap<PathBuf, Probed>,
    /// Per node: the branch file registered for passthrough, while open.
    backing: HashMap<u64, (u16, Weak<BackingId>)>,
    next_overflow: u64,
    /// Copies in the writable branch by inode number, with the node number their lower
    /// original had (aufs's "xino"): a copied-up file keeps its number across forgets and
    /// remounts. Loaded from and appended to [`XINO`].
    xino: HashMap<u64, u64>,
    xino_log: Option<File>,
    /// Open (O_PATH) directories of the writable branch by path, for the operations that
    /// make and change objects there (an untar asks for the same few directories thousands
    /// of times). Emptied whenever a directory there is renamed or removed, so a path never
    /// finds another directory than the one it names.
    wdirs: HashMap<PathBuf, Arc<OwnedFd>>,
    /// Open (O_PATH) directories of the other branches, by branch, then path: a name is
    /// looked up or a file opened there with one call, not after a walk from the branch
    /// root (a container reads mostly from its image's layers). Nothing changes those
    /// branches through the union, and changes made to them behind its back are not
    /// looked for (aufs's default, `udba=none`), so an entry stays right until the map,
    /// full, is emptied.
    rdirs: Vec<HashMap<PathBuf, Arc<OwnedFd>>>,
}

pub struct Union {
    branches: Vec<BranchFd>,
    /// The leftmost writable branch: where every change lands.
    write: Option<u16>,
    passthrough: AtomicBool,
    /// The kernel lets directories be read without opendir (FUSE_NO_OPENDIR_SUPPORT).
    no_opendir: AtomicBool,
    /// Set-ID bits are cleared here, not by the kernel (FUSE_HANDLE_KILLPRIV_V2): see
    /// [`kill_suidgid`].
    killpriv: AtomicBool,
    /// Ask for FUSE over io_uring at init.
    uring: bool,
    /// Copy-ups are not synced (see [`crate::MountConfig::volatile`]).
    volatile: bool,
    /// Seeds every map the request threads make: a `RandomState::new()` there would first
    /// seed a per-thread key with a `getrandom` call, 4-6 µs of a fresh mount's first
    /// lookup.
    hasher: RandomState,
    state: Mutex<State>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Lazy copies being filled, by the copy's inode number (see [`crate::lazy`]).
    lazy: Arc<Mutex<HashMap<u64, Arc<LazyCopy>>>>,
    /// Their fill threads: the server waits for them before it exits.
    fillers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Opens directory `rel` (not empty) below `dir`, never leaving `dir` nor following a
/// link.
fn dir_beneath(dir: impl AsFd, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    Ok(rfs::openat2(
        dir,
        rel,
        flags | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )?)
}

fn derive_ino(branch: u16, ino: u64) -> Option<u64> {
    (ino < 1 << 48).then(|| ((branch as u64 + 1) << 48) | ino)
}

/// A branch's copy of a directory is not there (or is no directory).
fn absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dirent(t: rfs::FileType) -> Option<FileType> {
    Some(match t {
        rfs::FileType::Directory => FileType::Directory,
        rfs::FileType::Symlink => FileType::Symlink,
        rfs::FileType::CharacterDevice => FileType::CharDevice,
        rfs::FileType::BlockDevice => FileType::BlockDevice,
        rfs::FileType::Fifo => FileType::NamedPipe,
        rfs::FileType::Socket => FileType::Socket,
        rfs::FileType::RegularFile => FileType::RegularFile,
        _ => return None,
    })
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn attr(ino: u64, st: &Stat) -> FileAttr {
    let kind = kind_of(st.st_mode);
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: time(st.st_ctime, st.st_ctime_nsec as i64),
        kind,
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// What a negative entry (node 0) carries: the kernel reads no attributes from it.
fn absent_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Longest name: a whiteout for it must fit in the branch's name limit, as aufs reports.
const NAME_MAX: usize = 255 - 4;

/// A name that may be created: not reserved, short enough to be whited out later.
fn check_name(name: &OsStr) -> Res<()> {
    if reserved(name) {
        return Err(Errno::EPERM);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

fn reply_empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, r: Res<(FileAttr, u64)>) {
    match r {
        Ok((a, g)) => reply.entry(&TTL, &a, Generation(g)),
        Err(e) => reply.error(e),
    }
}

/// Marks directory `name` of `dir` opaque: lower branches' directories of its name do not
/// show through.
fn put_opaque(dir: &OwnedFd, name: &OsStr) -> Res<()> {
    let d = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(rerr)?;
    drop(
        rfs::openat(
            &d,
            OPAQUE,
            OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(rerr)?,
    );
    Ok(())
}

/// `setattr` on a file that is only left as an open fd (removed while open).
#[allow(clippy::too_many_arguments)]
fn set_attrs_fd(
    f: &File,
    ino: u64,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
) -> Res<FileAttr> {
    if uid.is_some() || gid.is_some() {
        rfs::fchown(f, uid.map(rfs::Uid::from_raw), gid.map(rfs::Gid::from_raw)).map_err(rerr)?;
    }
    if let Some(m) = mode {
        rfs::fchmod(f, Mode::from_raw_mode(m & 0o7777)).map_err(rerr)?;
    }
    if let Some(size) = size {
        rfs::ftruncate(f, size).map_err(rerr)?;
    }
    if atime.is_some() || mtime.is_some() {
        let ts = rfs::Timestamps {
            last_access: to_timestamp(atime),
            last_modification: to_timestamp(mtime),
        };
        rfs::futimens(f, &ts).map_err(rerr)?;
    }
    rfs::fstat(f).map(|s| attr(ino, &s)).map_err(rerr)
}

/// Set-user-ID, or set-group-ID with group execute (without it, the bit marks mandatory
/// locking, not privilege): the bits a write or chown by an unprivileged user clears.
fn set_id(mode: u32) -> bool {
    mode & libc::S_ISUID != 0
        || mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP
}

/// Clears the set-ID bits of an open regular file, as the kernel does for a local
/// filesystem when someone without CAP_FSETID writes, truncates or chowns it. With
/// FUSE_HANDLE_KILLPRIV_V2 this is the server's job; in return the kernel stops asking for
/// `security.capability` before every write (one request per write() otherwise). The
/// capability xattr itself goes with any write to the branch file (the branch's kernel
/// drops it).
fn kill_suidgid(f: &impl AsFd) -> Res<()> {
    match without_set_id(&rfs::fstat(f).map_err(rerr)?) {
        Some(m) => rfs::fchmod(f, m).map_err(rerr),
        None => Ok(()),
    }
}

/// The mode of a regular file `s` with its set-ID bits cleared, if it has any.
fn without_set_id(s: &Stat) -> Option<Mode> {
    if kind_of(s.st_mode) != FileType::RegularFile || !set_id(s.st_mode) {
        return None;
    }
    let mut mode = s.st_mode & 0o7777 & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    Some(Mode::from_raw_mode(mode))
}

fn split(path: &Path) -> (&Path, &OsStr) {
    (
        path.parent().unwrap_or(Path::new("")),
        path.file_name().unwrap_or_default(),
    )
}

fn to_timestamp(t: Option<TimeOrNow>) -> rfs::Timespec {
    match t {
        None => rfs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rfs::Timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => rfs::Timespec {
                tv_sec: d.as_secs() as _,
                tv_nsec: d.subsec_nanos() as _,
            },
            Err(e) => {
                let d = e.duration();
                let (s, n) = if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (
                        -(d.as_secs() as i64) - 1,
                        1_000_000_000 - d.subsec_nanos() as i64,
                    )
                };
                rfs::Timespec {
                    tv_sec: s as _,
                    tv_nsec: n as _,
                }
            }
        },
    }
}

impl Union {
    pub fn new(config: &MountConfig) -> io::Result<Union> {
        if config.branches.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no branches: give br=DIR[=rw|ro]:DIR...",
            ));
        }
        let mut branches = Vec::new();
        for b in &config.branches {
            let fd = rfs::open(
                &b.path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("branch {}: {e}", b.path.display()),
                )
            })?;
            branches.push(BranchFd {
                fd,
                whiteouts: b.whiteouts,
            });
        }
        let write = if config.readonly {
            None
        } else {
            config
                .branches
                .iter()
                .position(|b| b.mode == BranchMode::ReadWrite)
                .map(|i| i as u16)
        };
        let mut state = State {
            next_overflow: OVERFLOW,
            ..State::default()
        };
        if let Some(w) = write {
            let root = &branches[w as usize].fd;
            if let Ok(fd) = rfs::openat(root, XINO, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            {
                let mut buf = Vec::new();
                io::Read::read_to_end(&mut File::from(fd), &mut buf)?;
                for r in buf.chunks_exact(16) {
                    let ino = u64::from_le_bytes(r[..8].try_into().expect("8 bytes"));
                    match u64::from_le_bytes(r[8..].try_into().expect("8 bytes")) {
                        0 => state.xino.remove(&ino),
                        id => state.xino.insert(ino, id),
                    };
                }
            }
            let log = rfs::openat(
                root,
                XINO,
                OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            state.xino_log = Some(File::from(log));
        }
        let recorded = match write {
            Some(w) => lazy::recorded(branches[w as usize].fd.as_fd(), !config.volatile)?,
            None => Vec::new(),
        };
        let union = Union {
            branches,
            write,
            passthrough: AtomicBool::new(config.passthrough),
            no_opendir: AtomicBool::new(false),
            killpriv: AtomicBool::new(false),
            uring: config.uring,
            volatile: config.volatile,
            hasher: RandomState::new(),
            state: Mutex::new(state),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            lazy: Arc::default(),
            fillers: Mutex::default(),
        };
        // Copies a crash (or a killed server) left unfinished are read through and filled
        // as if just made.
        for copy in recorded {
            union.start_fill(Arc::new(copy))?;
        }
        Ok(union)
    }

    /// Registers lazy copy `copy` and starts filling it.
    fn start_fill(&self, copy: Arc<LazyCopy>) -> io::Result<()> {
        let ino = copy.ino()?;
        self.lazy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino, copy.clone());
        let registry = self.lazy.clone();
        let t = std::thread::Builder::new()
            .name("fill".into())
            .spawn(move || {
                if let Err(e) = copy.finish() {
                    // Reads go on through the lower file; the record stays for the next
                    // mount to finish.
                    eprintln!("strata-aufs: filling a copy-up: {e}");
                }
                let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
                if r.get(&ino).is_some_and(|c| Arc::ptr_eq(c, &copy)) {
                    r.remove(&ino);
                }
            })?;
        let mut fillers = self.fillers.lock().unwrap_or_else(|p| p.into_inner());
        fillers.retain(|t| !t.is_finished());
        fillers.push(t);
        Ok(())
    }

    /// The lazy copy being filled that `f` (a file of the writable branch) is, if any.
    fn lazy_copy(&self, f: impl AsFd) -> Option<Arc<LazyCopy>> {
        self.lazy_copy_by(|| rfs::fstat(f).ok())
    }

    /// The lazy copy being filled whose status `stat` gives, if any: `stat` runs only while
    /// some copy is being filled.
    fn lazy_copy_by(&self, stat: impl FnOnce() -> Option<Stat>) -> Option<Arc<LazyCopy>> {
        let r = self.lazy.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_empty() {
            return None;
        }
        let ino = stat()?.st_ino;
        r.get(&ino).filter(|c| !c.is_done()).cloned()
    }

    /// `s` of a file in the writable branch as it stands between two fill steps: a step
    /// moves the copy's modification time and then puts it back.
    fn settled(&self, s: Stat) -> Stat {
        if kind_of(s.st_mode) != FileType::RegularFile {
            return s;
        }
        let copy = {
            let r = self.lazy.lock().unwrap_or_else(|p| p.into_inner());
            match r.get(&s.st_ino) {
                Some(c) => c.clone(),
                None => return s,
            }
        };
        copy.stat()
            .ok()
            .filter(|c| c.st_dev == s.st_dev)
            .unwrap_or(s)
    }

    /// The lazy copy being filled at union path `path` (in the writable branch), if any.
    fn lazy_copy_at(&self, st: &mut State, path: &Path) -> Option<Arc<LazyCopy>> {
        if path.as_os_str().is_empty() {
            return None;
        }
        let (parent, name) = split(path);
        self.lazy_copy_by(|| {
            let dir = self.wdir(st, parent).ok()?;
            rfs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writable(&self) -> Res<u16> {
        self.write.ok_or(Errno::EROFS)
    }

    /// Opens directory `rel` of branch `b`, never leaving the branch nor following a link.
    fn dir_fd(&self, b: u16, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let root = &self.branches[b as usize].fd;
        if rel.as_os_str().is_empty() {
            let flags = flags | OFlags::DIRECTORY | OFlags::CLOEXEC;
            return Ok(rfs::openat(root, ".", flags, Mode::empty())?);
        }
        dir_beneath(root, rel, flags)
    }

    /// Directory `rel` of branch `b` to look names up in (`*at` calls): the branch root's
    /// own fd when `rel` is the root, one kept in [`State::rdirs`] in a branch the union
    /// does not write, else opened `O_PATH` by [`Self::dir_fd`].
    fn lookup_dir(&self, st: &mut State, b: u16, rel: &Path) -> io::Result<LookupDir<'_>> {
        if rel.as_os_str().is_empty() {
            return Ok(LookupDir::Root(self.branches[b as usize].fd.as_fd()));
        }
        if Some(b) == self.write {
            return Ok(LookupDir::Opened(self.dir_fd(b, rel, OFlags::PATH)?));
        }
        Ok(LookupDir::Kept(self.rdir(st, b, rel)?))
    }

    /// Directory `rel` (not the root) of branch `b`, which the union does not write, from
    /// [`State::rdirs`] or opened there: from its parent's entry when that is kept (one
    /// name to resolve), else from the branch root.
    fn rdir(&self, st: &mut State, b: u16, rel: &Path) -> io::Result<Arc<OwnedFd>> {
        let b = b as usize;
        if let Some(fd) = st.rdirs.get(b).and_then(|m| m.get(rel)) {
            return Ok(fd.clone());
        }
        let (parent, name) = split(rel);
        let kept_parent = st.rdirs.get(b).and_then(|m| m.get(parent)).cloned();
        let fd = Arc::new(match kept_parent {
            Some(p) => dir_beneath(&*p, Path::new(name), OFlags::PATH)?,
            None => self.dir_fd(b as u16, rel, OFlags::PATH)?,
        });
        // Bounded: each entry holds a file descriptor.
        if st.rdirs.iter().map(HashMap::len).sum::<usize>() >= RDIRS {
            st.rdirs.iter_mut().for_each(HashMap::clear);
        }
        if st.rdirs.len() <= b {
            st.rdirs
                .resize_with(b + 1, || HashMap::with_hasher(self.hasher.clone()));
        }
        st.rdirs[b].insert(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    /// Index in `open` of branch `b`'s copy of `rel`, opened there if it is not yet.
    fn lookup_dir_once<'s>(
        &'s self,
        st: &mut State,
        open: &mut Vec<(u16, LookupDir<'s>)>,
        b: u16,
        rel: &Path,
    ) -> io::Result<usize> {
        if let Some(i) = open.iter().position(|o| o.0 == b) {
            return Ok(i);
        }
        open.push((b, self.lookup_dir(st, b, rel)?));
        Ok(open.len() - 1)
    }

    fn parent_fd(&self, b: u16, path: &Path) -> io::Result<OwnedFd> {
        self.dir_fd(b, split(path).0, OFlags::PATH)
    }

    /// Directory `rel` of the writable branch, from [`State::wdirs`] or opened there.
    fn wdir(&self, st: &mut State, rel: &Path) -> Res<Arc<OwnedFd>> {
        if let Some(fd) = st.wdirs.get(rel) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(
            self.dir_fd(self.writable()?, rel, OFlags::PATH)
                .map_err(errno)?,
        );
        // Bounded: each entry holds a file descriptor.
        if st.wdirs.len() >= WDIRS {
            st.wdirs.clear();
        }
        st.wdirs.insert(rel.to_path_buf(), fd.clone());
        Ok(fd)
    }

    fn stat_in(&self, st: &mut State, b: u16, path: &Path) -> Res<Stat> {
        if path.as_os_str().is_empty() {
            return rfs::fstat(&self.branches[b as usize].fd).map_err(rerr);
        }
        let (parent, name) = split(path);
        if Some(b) == self.write {
            let dir = self.wdir(st, parent)?;
            return rfs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map(|s| self.settled(s))
                .map_err(rerr);
        }
        let dir = self.lookup_dir(st, b, parent).map_err(errno)?;
        rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)
    }

    fn read_branch_dir(
        &self,
        b: u16,
        rel: &Path,
    ) -> io::Result<Option<Vec<(OsString, FileType, u64)>>> {
        let fd = match self.dir_fd(b, rel, OFlags::RDONLY) {
            Ok(fd) => fd,
            Err(e) if absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let mut dir = rfs::Dir::new(fd)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name);
            let kind = match kind_of_dirent(e.file_type()) {
                Some(k) => k,
                None => kind_of(rfs::statat(dir.fd()?, name, AtFlags::SYMLINK_NOFOLLOW)?.st_mode),
            };
            out.push((name.to_os_string(), kind, e.ino()));
        }
        Ok(Some(out))
    }

    /// Makes sure the merged view of directory `dir` is built.
    fn ensure_view(&self, st: &mut State, dir: &Path) -> Res<()> {
        if st.views.contains_key(dir) {
            return Ok(());
        }
        let dirs: Vec<u16> = if dir.as_os_str().is_empty() {
            (0..self.branches.len() as u16).collect()
        } else {
            let e = self.entry(st, dir)?;
            if e.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            e.dirs
        };
        let wh = |b: u16| self.branches[b as usize].whiteouts;
        let v = DirView::build(&self.hasher, &dirs, wh, |b| self.read_branch_dir(b, dir))
            .map_err(errno)?;
        st.views.insert(dir.to_path_buf(), v);
        st.probed.remove(dir);
        Ok(())
    }

    fn view<'a>(&self, st: &'a mut State, dir: &Path) -> Res<&'a mut DirView> {
        self.ensure_view(st, dir)?;
        Ok(st.views.get_mut(dir).expect("view built"))
    }

    /// What `path` is in the union.
    fn entry(&self, st: &mut State, path: &Path) -> Res<Entry> {
        Ok(self.resolve(st, path)?.0)
    }

    /// What `path` is in the union, with the stat of its top copy when finding it took one
    /// (a probe).
    fn resolve(&self, st: &mut State, path: &Path) -> Res<(Entry, Option<Stat>)> {
        if path.as_os_str().is_empty() {
            let dirs = match st.views.get(path) {
                Some(v) => v.dirs.clone(),
                None => (0..self.branches.len() as u16).collect(),
            };
            let mut e = Entry::new(*dirs.first().unwrap_or(&0), FileType::Directory, 0, false);
            e.dirs = dirs;
            return Ok((e, None));
        }
        let (parent, name) = split(path);
        let known = match (st.views.get(parent), st.probed.get(parent)) {
            (Some(v), _) => Some(v.entries.get(name).cloned()),
            (None, Some(p)) => match p.names.get(name) {
                Some(e) => Some(e.clone()),
                None if p.names.len() >= PROBES => {
                    Some(self.view(st, parent)?.entries.get(name).cloned())
                }
                None => None,
            },
            (None, None) => None,
        };
        match known {
            Some(e) => Ok((e.ok_or(Errno::ENOENT)?, None)),
            None => {
                let (e, s) = self.probe(st, parent, name)?;
                Ok((e.ok_or(Errno::ENOENT)?, s))
            }
        }
    }

    /// Resolves `name` in `dir` (which has no view) by probing its branches; remembers it.
    fn probe(
        &self,
        st: &mut State,
        dir: &Path,
        name: &OsStr,
    ) -> Res<(Option<Entry>, Option<Stat>)> {
        // The directory's copies opened in this call: opened once per branch for every
        // name looked at there.
        let mut open = Vec::new();
        if !st.probed.contains_key(dir) {
            let e = self.entry(st, dir)?;
            if e.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            let mut dirs = Vec::new();
            for b in e.dirs {
                if !self.branches[b as usize].whiteouts {
                    dirs.push(b);
                    continue;
                }
                let marker = match self.lookup_dir_once(st, &mut open, b, dir) {
                    Ok(i) => rfs::statat(&open[i].1, OPAQUE, AtFlags::SYMLINK_NOFOLLOW),
                    Err(e) if absent(&e) => continue,
                    Err(e) => return Err(errno(e)),
                };
                dirs.push(b);
                match marker {
                    Ok(_) => break,
                    Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(rerr(e)),
                }
            }
            let names = HashMap::with_hasher(self.hasher.clone());
            st.probed.insert(dir.to_path_buf(), Probed { dirs, names });
        }
        let dirs = st.probed[dir].dirs.clone();
        let mut top = None;
        let wh = |b: u16| self.branches[b as usize].whiteouts;
        let found = view::probe(&dirs, wh, name, |b, n| {
            let i = self.lookup_dir_once(st, &mut open, b, dir)?;
            match rfs::statat(&open[i].1, n, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => {
                    if top.is_none() && n == name {
                        top = Some(s);
                    }
                    Ok(Some((kind_of(s.st_mode), s.st_ino)))
                }
                Err(rustix::io::Errno::NOENT) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .map_err(errno)?;
        st.probed
            .get_mut(dir)
            .expect("probed")
            .names
            .insert(name.to_os_string(), found.clone());
        Ok((found, top))
    }

    fn path_of(&self, st: &State, ino: INodeNo) -> Res<PathBuf> {
        if ino.0 == ROOT {
            return Ok(PathBuf::new());
        }
        st.nodes
            .get(&ino.0)
            .and_then(|n| n.paths.first().cloned())
            .ok_or(Errno::ENOENT)
    }

    fn child_path(&self, st: &State, parent: INodeNo, name: &OsStr) -> Res<PathBuf> {
        if reserved(name) {
            return Err(Errno::ENOENT);
        }
        Ok(self.path_of(st, parent)?.join(name))
    }

    /// The node for `path`, found at (`branch`, `ino`); counts one kernel lookup.
    fn node_for(&self, st: &mut State, path: &Path, ident: (u16, u64)) -> (u64, u64) {
        if path.as_os_str().is_empty() {
            return (ROOT, 0);
        }
        let id = match st.by_path.get(path).or_else(|| st.by_ident.get(&ident)) {
            Some(&id) => id,
            None => {
                let copied = (Some(ident.0) == self.write)
                    .then(|| st.xino.get(&ident.1).copied())
                    .flatten();
                let id = match copied.or_else(|| derive_ino(ident.0, ident.1)) {
                    Some(id) if !st.nodes.contains_key(&id) => id,
                    _ => {
                        st.next_overflow += 1;
                        st.next_overflow
                    }
                };
                st.nodes.insert(
                    id,
                    Node {
                        paths: Vec::new(),
                        idents: vec![ident],
                        lookups: 0,
                        generation: 0,
                    },
                );
                st.by_ident.insert(ident, id);
                id
            }
        };
        let node = st.nodes.get_mut(&id).expect("node");
        node.lookups += 1;
        if !node.paths.iter().any(|p| p == path) {
            node.paths.push(path.to_path_buf());
            st.by_path.insert(path.to_path_buf(), id);
        }
        (id, node.generation)
    }

    /// Looks `path` up for the kernel: its attributes under its node number.
    fn lookup_path(&self, st: &mut State, path: &Path) -> Res<(FileAttr, u64)> {
        let (mut e, s) = self.resolve(st, path)?;
        let mut s = match s {
            Some(s) => s,
            None => self.stat_in(st, e.branch, path)?,
        };
        if s.st_nlink > 1 && e.kind == FileType::RegularFile && self.linked_copy_exists(&e, &s) {
            // Another name of this lower file was copied up (before a remount, say): this
            // name is the same file, so it becomes a link to that copy too.
            self.copy_up(st, path, true)?;
            e = self.entry(st, path)?;
            s = self.stat_in(st, e.branch, path)?;
        }
        let (id, generation) = self.node_for(st, path, (e.branch, s.st_ino));
        Ok((self.merged_attr(st, id, path, &e, &s), generation))
    }

    fn attr_of(&self, st: &mut State, ino: INodeNo, path: &Path) -> Res<FileAttr> {
        let e = self.entry(st, path)?;
        let s = self.stat_in(st, e.branch, path)?;
        Ok(self.merged_attr(st, ino.0, path, &e, &s))
    }

    /// Attributes of `path` from its top copy `s`. A directory merged from several branches
    /// counts its links over the merged view when that is at hand (2 plus subdirectories,
    /// as aufs does) and says 1, "unknown", otherwise (as btrfs does), so that tools never
    /// skip subdirectories on a wrong count.
    fn merged_attr(&self, st: &State, id: u64, path: &Path, e: &Entry, s: &Stat) -> FileAttr {
        let mut a = attr(id, s);
        if e.kind == FileType::Directory && e.dirs.len() > 1 {
            a.nlink = st.views.get(path).map_or(1, |v| {
                2 + v
                    .entries
                    .values()
                    .filter(|c| c.kind == FileType::Directory)
                    .count() as u32
            });
        }
        a
    }

    /// Forgets `path` as a name of its node (it was removed or renamed away).
    fn drop_path(&self, st: &mut State, path: &Path) {
        if let Some(id) = st.by_path.remove(path) {
            if let Some(n) = st.nodes.get_mut(&id) {
                n.paths.retain(|p| p != path);
                if n.paths.is_empty() {
                    // Its numbers may be reused by new files; keep them off this node.
                    for i in std::mem::take(&mut n.idents) {
                        st.by_ident.remove(&i);
                    }
                }
            }
        }
        // What lies below a directory was found through its view or its probes.
        let had_view = st.views.remove(path).is_some();
        if st.probed.remove(path).is_some() || had_view {
            st.views.retain(|k, _| !k.starts_with(path));
            st.probed.retain(|k, _| !k.starts_with(path));
        }
    }

    /// Copies directory `dir` (and its parents) up to the writable branch.
    fn copy_up_dir(&self, st: &mut State, dir: &Path) -> Res<()> {
        if dir.as_os_str().is_empty() {
            return Ok(());
        }
        let w = self.writable()?;
        let e = self.entry(st, dir)?;
        if e.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        if e.branch == w {
            return Ok(());
        }
        if e.branch < w {
            return Err(Errno::EROFS);
        }
        let (parent, name) = split(dir);
        self.copy_up_dir(st, parent)?;
        let ino = self.copy_object(e.branch, dir, w, true)?;
        let pv = self.view(st, parent)?;
        if let Some(pe) = pv.entry_mut(name) {
            pe.branch = w;
            pe.ino = ino;
            pe.dirs.insert(0, w);
            pe.shadows = true;
        }
        if let Some(v) = st.views.get_mut(dir) {
            v.dirs.insert(0, w);
        }
        if let Some(p) = st.probed.get_mut(dir) {
            p.dirs.insert(0, w);
        }
        self.alias(st, dir, (e.branch, e.ino), (w, ino));
        Ok(())
    }

    /// Records that what was found at `old` is now the copy at `new` (after a copy-up):
    /// the same node, under the same number from now on.
    fn alias(&self, st: &mut State, path: &Path, old: (u16, u64), new: (u16, u64)) {
        let id = st
            .by_path
            .get(path)
            .or_else(|| st.by_ident.get(&old))
            .copied()
            .or_else(|| derive_ino(old.0, old.1));
        let Some(id) = id else { return };
        if st.by_path.contains_key(path) {
            st.by_ident.insert(new, id);
            if let Some(n) = st.nodes.get_mut(&id) {
                n.idents.push(new);
            }
        }
        self.log_xino(st, new.1, id);
    }

    fn log_xino(&self, st: &mut State, ino: u64, id: u64) {
        if id == 0 && st.xino.remove(&ino).is_none() {
            return;
        }
        if id != 0 {
            st.xino.insert(ino, id);
        }
        if let Some(log) = &st.xino_log {
            let mut rec = [0u8; 16];
            rec[..8].copy_from_slice(&ino.to_le_bytes());
            rec[8..].copy_from_slice(&id.to_le_bytes());
            let _ = io::Write::write_all(&mut &*log, &rec);
        }
    }

    /// The copy at inode `ino` of the writable branch is going away (its last name).
    fn forget_copy(&self, st: &mut State, dir: &OwnedFd, name: &OsStr, ino: u64) {
        if !st.xino.contains_key(&ino) {
            return;
        }
        let last = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| s.st_nlink <= 1 || kind_of(s.st_mode) == FileType::Directory);
        if last {
            self.log_xino(st, ino, 0);
        }
    }

    /// Copies `path` from branch `from` into the same place in branch `w`; returns the
    /// copy's inode number. Files linked more than once go through the hard-link store, so
    /// every name of a lower file copied up ends up as a link to one copy (aufs's plnk).
    fn copy_object(&self, from: u16, path: &Path, w: u16, with_data: bool) -> Res<u64> {
        let (_, name) = split(path);
        let src_dir = self.parent_fd(from, path).map_err(errno)?;
        let dst_dir = self.parent_fd(w, path).map_err(errno)?;
        let s = rfs::statat(&src_dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
        let linked = kind_of(s.st_mode) == FileType::RegularFile && s.st_nlink > 1;
        let plnk_name = OsString::from(format!("{from}.{}", s.st_ino));
        let plnk = if linked {
            let root = &self.branches[w as usize].fd;
            match rfs::mkdirat(root, PLNK, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(rerr(e)),
            }
            let p = self
                .dir_fd(w, Path::new(PLNK), OFlags::PATH)
                .map_err(errno)?;
            if rfs::linkat(&p, &plnk_name, &dst_dir, name, AtFlags::empty()).is_ok() {
                return rfs::statat(&dst_dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| s.st_ino)
                    .map_err(rerr);
            }
            Some(p)
        } else {
            None
        };
        let tmp = temp_name();
        let lazy = (with_data && !linked && self.lazy_candidate(&src_dir, name, &s))
            .then(|| self.begin_lazy(w, &src_dir, name, &s, &dst_dir, &tmp))
            .flatten();
        if lazy.is_none() {
            let data = if with_data { Data::Whole } else { Data::Empty };
            copyup::copy_object(
                src_dir.as_fd(),
                name,
                &s,
                dst_dir.as_fd(),
                &tmp,
                data,
                self.volatile,
            )
            .map_err(errno)?;
        }
        if let Some(p) = &plnk {
            let _ = rfs::linkat(&dst_dir, &tmp, p, &plnk_name, AtFlags::empty());
        }
        let renamed = rfs::renameat(&dst_dir, &tmp, &dst_dir, name);
        if renamed.is_err() {
            let _ = rfs::unlinkat(&dst_dir, &tmp, AtFlags::REMOVEDIR);
            let _ = rfs::unlinkat(&dst_dir, &tmp, AtFlags::empty());
        }
        if let Some(copy) = lazy {
            // Even when the rename failed: the fill then finds the copy gone and drops its
            // record.
            self.start_fill(Arc::new(copy)).map_err(errno)?;
        }
        renamed.map_err(rerr)?;
        rfs::statat(&dst_dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| s.st_ino)
            .map_err(rerr)
    }

    /// Whether lower file `src_dir/name` (`s`) is copied up lazily: a large regular file
    /// whose copy may be written to while it is filled. Not one with set-ID bits (its
    /// writes are checked here) or file capabilities (the kernel drops
    /// `security.capability` at every write into the copy, the fill's among them).
    fn lazy_candidate(&self, src_dir: &OwnedFd, name: &OsStr, s: &Stat) -> bool {
        kind_of(s.st_mode) == FileType::RegularFile
            && s.st_size as u64 >= lazy::LAZY_MIN
            && !set_id(s.st_mode)
            && copyup::get_xattr(&fd_path(src_dir.as_fd(), name), b"security.capability").is_err()
    }

    /// Makes `dst_dir/tmp` a sparse copy of `src_dir/name` with its record written; `None`
    /// (and no `tmp`) where the writable branch cannot hold one.
    fn begin_lazy(
        &self,
        w: u16,
        src_dir: &OwnedFd,
        name: &OsStr,
        s: &Stat,
        dst_dir: &OwnedFd,
        tmp: &OsStr,
    ) -> Option<LazyCopy> {
        let made = (|| -> io::Result<Option<LazyCopy>> {
            let (src, dst) = (src_dir.as_fd(), dst_dir.as_fd());
            copyup::copy_object(src, name, s, dst, tmp, Data::Sparse, self.volatile)?;
            if !lazy::holes_reported(dst, tmp)? {
                return Ok(None);
            }
            let open = |dir, name, flags| {
                rfs::openat(
                    dir,
                    name,
                    flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            let upper = open(dst, tmp, OFlags::RDWR)?;
            let lower = open(src, name, OFlags::RDONLY)?;
            let root = self.branches[w as usize].fd.as_fd();
            LazyCopy::begin(root, upper, lower, !self.volatile).map(Some)
        })();
        match made {
            Ok(Some(copy)) => Some(copy),
            _ => {
                let _ = rfs::unlinkat(dst_dir, tmp, AtFlags::empty());
                None
            }
        }
    }

    /// Whether the hard-link store holds a copy of lower file `s` found at `e`.
    fn linked_copy_exists(&self, e: &Entry, s: &Stat) -> bool {
        let Some(w) = self.write else { return false };
        e.branch > w
            && self
                .dir_fd(w, Path::new(PLNK), OFlags::PATH)
                .is_ok_and(|d| {
                    rfs::statat(
                        &d,
                        format!("{}.{}", e.branch, s.st_ino),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .is_ok()
                })
    }

    /// Copies `path` up to the writable branch (its data only if `with_data`).
    fn copy_up(&self, st: &mut State, path: &Path, with_data: bool) -> Res<()> {
        let w = self.writable()?;
        let e = self.entry(st, path)?;
        if e.branch == w {
            return Ok(());
        }
        if e.branch < w {
            return Err(Errno::EROFS);
        }
        if e.kind == FileType::Directory {
            return self.copy_up_dir(st, path);
        }
        let (parent, name) = split(path);
        self.copy_up_dir(st, parent)?;
        let ino = self.copy_object(e.branch, path, w, with_data)?;
        if let Some(pe) = self.view(st, parent)?.entry_mut(name) {
            pe.branch = w;
            pe.ino = ino;
            pe.shadows = true;
        }
        self.alias(st, path, (e.branch, e.ino), (w, ino));
        Ok(())
    }

    /// Copies a whole merged directory tree up (for renaming a directory with lower parts).
    fn copy_up_tree(&self, st: &mut State, dir: &Path) -> Res<()> {
        self.copy_up_dir(st, dir)?;
        let names: Vec<(OsString, FileType)> = self
            .view(st, dir)?
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.kind))
            .collect();
        for (n, kind) in names {
            let p = dir.join(&n);
            if kind == FileType::Directory {
                self.copy_up_tree(st, &p)?;
            } else {
                self.copy_up(st, &p, true)?;
            }
        }
        Ok(())
    }

    fn put_whiteout(&self, dir: &OwnedFd, name: &OsStr) -> Res<()> {
        let fd = rfs::openat(
            dir,
            whiteout_name(name),
            OFlags::CREATE | OFlags::WRONLY | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o444),
        )
        .map_err(rerr)?;
        drop(fd);
        Ok(())
    }

    fn clear_whiteout(&self, dir: &OwnedFd, name: &OsStr) -> Res<()> {
        match rfs::unlinkat(dir, whiteout_name(name), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(rerr(e)),
        }
    }

    /// Makes `name` in `parent` with `make` (given the parent's directory in the writable
    /// branch and whether the name hides a lower one), owned by the caller; answers its
    /// lookup.
    fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        is_dir: bool,
        make: impl FnOnce(&OwnedFd, bool) -> Res<()>,
    ) -> Res<(FileAttr, u64)> {
        let mut st = self.lock();
        let pp = self.path_of(&st, parent)?;
        let (_, dir, hidden) = self.prepare_create(&mut st, &pp, name)?;
        make(&dir, hidden)?;
        self.own_new(req, &dir, name, is_dir)?;
        self.finish_create(&mut st, &pp, name, &dir, hidden)
    }

    /// Prepares to create `name` in `parent`: the parent copied up, the name free. Returns
    /// the parent's fd in the writable branch and whether the name hides a lower one.
    fn prepare_create(
        &self,
        st: &mut State,
        parent: &Path,
        name: &OsStr,
    ) -> Res<(u16, Arc<OwnedFd>, bool)> {
        check_name(name)?;
        let w = self.writable()?;
        let v = self.view(st, parent)?;
        if v.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let hidden = v.hidden.contains(name);
        self.copy_up_dir(st, parent)?;
        let dir = self.wdir(st, parent)?;
        Ok((w, dir, hidden))
    }

    /// Ownership for a new object: the caller's, the group from a set-group-ID parent.
    fn own_new(&self, req: &Request, dir: &OwnedFd, name: &OsStr, is_dir: bool) -> Res<()> {
        // `dir` is the parent in the writable branch, copied up with its mode if need be.
        let ps = rfs::fstat(dir).map_err(rerr)?;
        let setgid = ps.st_mode & libc::S_ISGID != 0;
        let gid = if setgid { ps.st_gid } else { req.gid() };
        rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(req.uid())),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(rerr)?;
        if setgid && is_dir {
            let s = rfs::statat(dir, name, AtFlags::empty()).map_err(rerr)?;
            rfs::chmodat(
                dir,
                name,
                Mode::from_raw_mode((s.st_mode & 0o7777) | libc::S_ISGID),
                AtFlags::empty(),
            )
            .map_err(rerr)?;
        }
        Ok(())
    }

    /// Registers a new object `name` made in the writable branch and answers its lookup.
    fn finish_create(
        &self,
        st: &mut State,
        parent: &Path,
        name: &OsStr,
        dir: &OwnedFd,
        hidden: bool,
    ) -> Res<(FileAttr, u64)> {
        // The parent's view knows every whiteout of its branches: only a hidden name can
        // have one in the writable branch.
        if hidden {
            self.clear_whiteout(dir, name)?;
        }
        let w = self.writable()?;
        let s = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
        let path = parent.join(name);
        self.view(st, parent)?.insert(
            name.to_os_string(),
            Entry::new(w, kind_of(s.st_mode), s.st_ino, hidden),
        );
        let (id, generation) = self.node_for(st, &path, (w, s.st_ino));
        Ok((attr(id, &s), generation))
    }

    /// Removes `name` from `parent`: from the writable branch if it is there, with a
    /// whiteout if a lower branch has it.
    fn remove(&self, st: &mut State, parent: &Path, name: &OsStr, is_dir: bool) -> Res<()> {
        let w = self.writable()?;
        let path = parent.join(name);
        let e = self.entry(st, &path)?;
        match (is_dir, e.kind == FileType::Directory) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            _ => {}
        }
        if e.branch < w {
            return Err(Errno::EROFS);
        }
        if is_dir && !self.view(st, &path)?.entries.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        let needs_whiteout = e.shadows || e.branch != w || e.dirs.len() > 1;
        self.copy_up_dir(st, parent)?;
        let dir = self.dir_fd(w, parent, OFlags::PATH).map_err(errno)?;
        if needs_whiteout {
            // Before the removal: a crash in between leaves the name visible, not lost.
            self.put_whiteout(&dir, name)?;
        }
        if e.branch == w {
            self.forget_copy(st, &dir, name, e.ino);
            if is_dir {
                st.wdirs.clear();
                let d = self.dir_fd(w, &path, OFlags::RDONLY).map_err(errno)?;
                copyup::clear_dir(&d).map_err(errno)?;
                rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(rerr)?;
            } else {
                rfs::unlinkat(&dir, name, AtFlags::empty()).map_err(rerr)?;
            }
        }
        self.view(st, parent)?.remove(name, needs_whiteout);
        self.drop_path(st, &path);
        Ok(())
    }

    fn rename_paths(&self, st: &mut State, from: &Path, to: &Path) {
        // Only a directory can have nodes, views or probes below it, and a directory that
        // is renamed had the views of its whole tree built by its copy-up: anything else
        // moves alone, without a scan of every known path.
        let moved: Vec<(PathBuf, u64)> = if st.views.contains_key(from) {
            st.by_path
                .iter()
                .filter(|(p, _)| p.starts_with(from))
                .map(|(p, id)| (p.clone(), *id))
                .collect()
        } else {
            st.by_path
                .get(from)
                .map(|id| (from.to_path_buf(), *id))
                .into_iter()
                .collect()
        };
        for (old, id) in moved {
            let new = to.join(old.strip_prefix(from).expect("prefix"));
            st.by_path.remove(&old);
            st.by_path.insert(new.clone(), id);
            if let Some(n) = st.nodes.get_mut(&id) {
                for p in n.paths.iter_mut().filter(|p| **p == old) {
                    *p = new.clone();
                }
            }
        }
        if !st.views.contains_key(from) {
            return;
        }
        st.probed.retain(|k, _| !k.starts_with(from));
        let views: Vec<PathBuf> = st
            .views
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in views {
            let v = st.views.remove(&old).expect("view");
            st.views
                .insert(to.join(old.strip_prefix(from).expect("prefix")), v);
        }
    }

    fn do_rename(&self, st: &mut State, from: &Path, to: &Path, flags: RenameFlags) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        // Directories may move or be replaced below.
        st.wdirs.clear();
        let w = self.writable()?;
        let (fparent, fname) = split(from);
        let (tparent, tname) = split(to);
        check_name(tname)?;
        let src = self.entry(st, from)?;
        if src.branch < w {
            return Err(Errno::EROFS);
        }
        let src_dir = src.kind == FileType::Directory;
        if src_dir && to.starts_with(from) && to != from {
            return Err(Errno::EINVAL);
        }
        let dst = match self.entry(st, to) {
            Ok(e) => Some(e),
            Err(e) if e == Errno::ENOENT => None,
            Err(e) => return Err(e),
        };
        if from == to {
            return Ok(());
        }
        if let Some(d) = &dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if d.branch < w {
                return Err(Errno::EROFS);
            }
            match (src_dir, d.kind == FileType::Directory) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                (true, true) if !self.view(st, to)?.entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        let src_lower = src.shadows || src.branch != w || src.dirs.len() > 1;
        if src_dir {
            self.copy_up_tree(st, from)?;
        } else {
            self.copy_up(st, from, true)?;
        }
        self.copy_up_dir(st, tparent)?;
        let fdir = self.dir_fd(w, fparent, OFlags::PATH).map_err(errno)?;
        let tdir = self.dir_fd(w, tparent, OFlags::PATH).map_err(errno)?;
        let dst_shadows = match &dst {
            Some(d) => {
                if d.branch == w {
                    self.forget_copy(st, &tdir, tname, d.ino);
                }
                if d.kind == FileType::Directory && d.branch == w {
                    // An empty merged directory may still hold whiteouts in this branch.
                    let dd = self.dir_fd(w, to, OFlags::RDONLY).map_err(errno)?;
                    copyup::clear_dir(&dd).map_err(errno)?;
                }
                true
            }
            None => self.view(st, tparent)?.hidden.contains(tname),
        };
        if src_dir && dst_shadows {
            // Lower directories of the new name must not show through.
            put_opaque(&fdir, fname)?;
        }
        if src_lower {
            self.put_whiteout(&fdir, fname)?;
        }
        rfs::renameat(&fdir, fname, &tdir, tname).map_err(rerr)?;
        self.clear_whiteout(&tdir, tname)?;
        let s = rfs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
        self.view(st, fparent)?.remove(fname, src_lower);
        if dst.is_some() {
            self.drop_path(st, to);
        }
        let mut e = Entry::new(w, src.kind, s.st_ino, dst_shadows);
        if src_dir && !dst_shadows {
            e.dirs = vec![w];
        }
        self.view(st, tparent)?.insert(tname.to_os_string(), e);
        self.rename_paths(st, from, to);
        if let Some(v) = st.views.get_mut(to) {
            v.dirs = vec![w];
        }
        Ok(())
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, h);
        fh
    }

    fn file(&self, fh: FileHandle) -> Res<Arc<File>> {
        self.open_handle(fh).map(|(f, _)| f)
    }

    /// An open file, with the lazy copy it reads and writes through while that is filled.
    fn open_handle(&self, fh: FileHandle) -> Res<(Arc<File>, Option<Arc<LazyCopy>>)> {
        match self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
        {
            Some(h) => Ok((h.file.clone(), h.lazy.clone())),
            None => Err(Errno::EBADF),
        }
    }

    /// Some open file of node `ino`: what is left of a file removed while open.
    fn open_file_of(&self, ino: u64) -> Option<Arc<File>> {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|h| h.ino == ino)
            .map(|h| h.file.clone())
    }

    /// Opens the union file `path` (already copied up if it is to be written).
    fn open_file(&self, st: &mut State, path: &Path, flags: i32) -> Res<(File, u16)> {
        let e = self.entry(st, path)?;
        let keep = libc::O_ACCMODE
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_DIRECT
            | libc::O_SYNC
            | libc::O_DSYNC
            | libc::O_NOATIME;
        let flags =
            OFlags::from_bits_retain((flags & keep) as u32) | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let (parent, name) = split(path);
        let dir = self.lookup_dir(st, e.branch, parent).map_err(errno)?;
        let fd = rfs::openat(&dir, name, flags, Mode::empty()).map_err(rerr)?;
        Ok((File::from(fd), e.branch))
    }

    /// The kernel's passthrough registration for node `ino` backed by `file` from branch
    /// `b`; `None` when passthrough is off or the node is open on another branch's file.
    fn backing(
        &self,
        st: &mut State,
        ino: u64,
        b: u16,
        file: &File,
        open: impl FnOnce(BorrowedFd<'_>) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        // A write that passes through never reaches this server, which must clear set-ID
        // bits on writes (killpriv): such files are written through it.
        if self.killpriv.load(Ordering::Relaxed)
            && rfs::fstat(file).is_ok_and(|s| set_id(s.st_mode))
        {
            return None;
        }
        if let Some((branch, weak)) = st.backing.get(&ino) {
            if let Some(id) = weak.upgrade() {
                return (*branch == b).then_some(id);
            }
        }
        // A handle through this server (a lazy copy's, say) may have the node's pages
        // mapped, and the kernel refuses passthrough to a node with cached pages in use.
        if self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|h| h.ino == ino && h._backing.is_none())
        {
            return None;
        }
        let id = Arc::new(open(file.as_fd()).ok()?);
        st.backing.insert(ino, (b, Arc::downgrade(&id)));
        Some(id)
    }

    fn open_flags(&self, b: u16, passthrough: bool) -> FopenFlags {
        if passthrough {
            FopenFlags::empty()
        } else if self.passthrough.load(Ordering::Relaxed) {
            // The node is passed through on another handle; stay out of the page cache.
            FopenFlags::FOPEN_DIRECT_IO
        } else if Some(b) != self.write {
            // Lower files never change: keep their pages across opens.
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    fn listing(&self, st: &mut State, dir: &Path) -> Res<Listing> {
        let v = self.view(st, dir)?;
        if let Some(l) = &v.listing {
            return Ok(l.clone());
        }
        let raw: Vec<(OsString, FileType, u16, u64)> = v
            .entries
            .iter()
            .map(|(n, e)| (n.clone(), e.kind, e.branch, e.ino))
            .collect();
        let mut list: Vec<(u64, OsString, FileType, u64)> = raw
            .into_iter()
            .map(|(n, kind, b, ino)| {
                let id = st
                    .by_path
                    .get(&dir.join(&n))
                    .copied()
                    .or_else(|| st.by_ident.get(&(b, ino)).copied())
                    .or_else(|| {
                        (Some(b) == self.write)
                            .then(|| st.xino.get(&ino).copied())
                            .flatten()
                    })
                    .or_else(|| derive_ino(b, ino))
                    .unwrap_or(OVERFLOW);
                (cookie(&n), n, kind, id)
            })
            .collect();
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let l = Arc::new(list);
        st.views.get_mut(dir).expect("view").listing = Some(l.clone());
        Ok(l)
    }
}

impl Drop for Union {
    /// Unmounted: the copies still being filled are finished before the server exits, so
    /// that the writable branch is whole for whoever reads it next.
    fn drop(&mut self) {
        let fillers = std::mem::take(self.fillers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for t in fillers {
            let _ = t.join();
        }
    }
}

impl Filesystem for Union {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config
            .add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS | InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.set_max_write(1 << 20);
        let no_opendir = config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok();
        self.no_opendir.store(no_opendir, Ordering::Relaxed);
        let killpriv = config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok();
        self.killpriv.store(killpriv, Ordering::Relaxed);
        if self.uring {
            let _ = config.add_capabilities(InitFlags::FUSE_OVER_IO_URING);
        }
        // Files read and written through this server while passthrough is on (a lazy
        // copy being filled) are opened FOPEN_DIRECT_IO; this lets them be mapped shared.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        if self.passthrough.load(Ordering::Relaxed) {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(ok, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.lock();
        let r = self
            .child_path(&st, parent, name)
            .and_then(|p| self.lookup_path(&mut st, &p))
            .map_err(|e| {
                // Such a name cannot be made here (see NAME_MAX); one found in a branch is
                // served all the same.
                if e == Errno::ENOENT && name.len() > NAME_MAX {
                    Errno::ENAMETOOLONG
                } else {
                    e
                }
            });
        match r {
            // The kernel keeps the name's absence (node 0) as long as an entry: a name only
            // appears through this filesystem's own operations, which replace it.
            Err(e) if e == Errno::ENOENT => reply.entry(&TTL, &absent_attr(), Generation(0)),
            r => reply_entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(n) = st.nodes.get_mut(&ino.0) else {
            return;
        };
        n.lookups = n.lookups.saturating_sub(nlookup);
        if n.lookups == 0 {
            let n = st.nodes.remove(&ino.0).expect("node");
            for p in n.paths {
                st.by_path.remove(&p);
            }
            for i in n.idents {
                if st.by_ident.get(&i) == Some(&ino.0) {
                    st.by_ident.remove(&i);
                }
            }
            st.backing.remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let fstat = |f: Arc<File>| {
            rfs::fstat(&*f)
                .map(|s| attr(ino.0, &self.settled(s)))
                .map_err(rerr)
        };
        let r = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => fstat(f),
            None => {
                let mut st = self.lock();
                match self.path_of(&st, ino) {
                    Ok(p) => self.attr_of(&mut st, ino, &p),
                    Err(e) => {
                        // Removed while open: what is left is the open file.
                        drop(st);
                        self.open_file_of(ino.0).map_or(Err(e), fstat)
                    }
                }
            }
        };
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.lock();
        let r = (|| -> Res<FileAttr> {
            let path = match self.path_of(&st, ino) {
                Ok(p) => p,
                Err(e) => {
                    let f = self.open_file_of(ino.0).ok_or(e)?;
                    return set_attrs_fd(&f, ino.0, mode, uid, gid, size, atime, mtime);
                }
            };
            let open = fh.and_then(|fh| self.file(fh).ok());
            if open.is_none() {
                self.copy_up(&mut st, &path, size != Some(0))?;
            }
            let (dir, name) = if path.as_os_str().is_empty() {
                (self.wdir(&mut st, &path)?, OsStr::new("."))
            } else {
                (self.wdir(&mut st, split(&path).0)?, split(&path).1)
            };
            if uid.is_some() || gid.is_some() {
                rfs::chownat(
                    &dir,
                    name,
                    uid.map(rfs::Uid::from_raw),
                    gid.map(rfs::Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(rerr)?;
            }
            if let Some(m) = mode {
                rfs::chmodat(
                    &dir,
                    name,
                    Mode::from_raw_mode(m & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(rerr)?;
            }
            if let Some(size) = size {
                // Holes past the new end would read as the lower file's bytes.
                let copy = self
                    .lazy_copy_at(&mut st, &path)
                    .or_else(|| open.as_ref().and_then(|f| self.lazy_copy(&**f)));
                if let Some(copy) = copy {
                    match size {
                        0 => copy.discard(),
                        _ => copy.finish(),
                    }
                    .map_err(errno)?;
                }
                match &open {
                    Some(f) => f.set_len(size).map_err(errno)?,
                    None => {
                        let f = rfs::openat(
                            &dir,
                            name,
                            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        )
                        .map_err(rerr)?;
                        rfs::ftruncate(&f, size).map_err(rerr)?;
                    }
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ts = rfs::Timestamps {
                    last_access: to_timestamp(atime),
                    last_modification: to_timestamp(mtime),
                };
                rfs::utimensat(&dir, name, &ts, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
            }
            // The kernel leaves clearing set-ID bits on chown and truncate to the server
            // (killpriv) and does not pass on whether the caller may keep them
            // (CAP_FSETID): root may, anyone else may not.
            let changes_owner = uid.is_some() || gid.is_some();
            if self.killpriv.load(Ordering::Relaxed)
                && req.uid() != 0
                && (changes_owner || size.is_some())
            {
                match &open {
                    Some(f) => kill_suidgid(&**f)?,
                    None => {
                        let s = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
                        if let Some(m) = without_set_id(&s) {
                            rfs::chmodat(&dir, name, m, AtFlags::empty()).map_err(rerr)?;
                        }
                    }
                }
            }
            match &open {
                Some(f) => rfs::fstat(&**f)
                    .map(|s| attr(ino.0, &self.settled(s)))
                    .map_err(rerr),
                None => self.attr_of(&mut st, ino, &path),
            }
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let mut st = self.lock();
        let r = (|| -> Res<Vec<u8>> {
            let path = self.path_of(&st, ino)?;
            let e = self.entry(&mut st, &path)?;
            let (parent, name) = split(&path);
            let dir = self.lookup_dir(&mut st, e.branch, parent).map_err(errno)?;
            rfs::readlinkat(&dir, name, Vec::new())
                .map(|t| t.into_bytes())
                .map_err(rerr)
        })();
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = rfs::FileType::from_raw_mode(mode);
        let mode = Mode::from_raw_mode(mode & !umask & 0o7777);
        reply_entry(
            reply,
            self.make_node(req, parent, name, false, |dir, _| {
                rfs::mknodat(dir, name, kind, mode, rdev as _).map_err(rerr)
            }),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = Mode::from_raw_mode(mode & !umask & 0o7777);
        reply_entry(
            reply,
            self.make_node(req, parent, name, true, |dir, hidden| {
                rfs::mkdirat(dir, name, mode).map_err(rerr)?;
                if hidden {
                    // A lower directory of this name was deleted: its contents stay hidden.
                    put_opaque(dir, name)?;
                }
                Ok(())
            }),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = self
            .path_of(&st, parent)
            .and_then(|pp| self.remove(&mut st, &pp, name, false));
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = self
            .path_of(&st, parent)
            .and_then(|pp| self.remove(&mut st, &pp, name, true));
        reply_empty(reply, r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.make_node(req, parent, link_name, false, |dir, _| {
                rfs::symlinkat(target, dir, link_name).map_err(rerr)
            }),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            let from = self.child_path(&st, parent, name)?;
            let to = self.path_of(&st, newparent)?.join(newname);
            self.do_rename(&mut st, &from, &to, flags)
        })();
        reply_empty(reply, r);
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
            let src = self.path_of(&st, ino)?;
            let pp = self.path_of(&st, newparent)?;
            let (w, dir, hidden) = self.prepare_create(&mut st, &pp, newname)?;
            self.copy_up(&mut st, &src, true)?;
            let sdir = self.parent_fd(w, &src).map_err(errno)?;
            rfs::linkat(&sdir, split(&src).1, &dir, newname, AtFlags::empty()).map_err(rerr)?;
            self.clear_whiteout(&dir, newname)?;
            let s = rfs::statat(&dir, newname, AtFlags::SYMLINK_NOFOLLOW).map_err(rerr)?;
            self.view(&mut st, &pp)?.insert(
                newname.to_os_string(),
                Entry::new(w, kind_of(s.st_mode), s.st_ino, hidden),
            );
            let path = pp.join(newname);
            let node = st.nodes.get_mut(&ino.0).ok_or(Errno::ENOENT)?;
            node.lookups += 1;
            node.paths.push(path.clone());
            let generation = node.generation;
            st.by_path.insert(path, ino.0);
            Ok((attr(ino.0, &s), generation))
        })();
        reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut st = self.lock();
        let r = (|| {
            let path = self.path_of(&st, ino)?;
            let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            let truncates = flags.0 & libc::O_TRUNC != 0;
            if writes || truncates {
                self.copy_up(&mut st, &path, !truncates)?;
            }
            if truncates {
                if let Some(copy) = self.lazy_copy_at(&mut st, &path) {
                    copy.discard().map_err(errno)?;
                }
            }
            self.open_file(&mut st, &path, flags.0)
        })();
        let (file, b) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let lazy = if Some(b) == self.write {
            self.lazy_copy(&file)
        } else {
            None
        };
        let backing = match lazy {
            // Holes read as the lower file's bytes: only this server knows that.
            Some(_) => None,
            None => self.backing(&mut st, ino.0, b, &file, |fd| reply.open_backing(fd)),
        };
        drop(st);
        let open_flags = self.open_flags(b, backing.is_some());
        let fh = self.new_fh(Handle {
            ino: ino.0,
            file: Arc::new(file),
            _backing: backing.clone(),
            lazy,
        });
        match backing {
            Some(id) => reply.opened_passthrough(FileHandle(fh), open_flags, &id),
            None => reply.opened(FileHandle(fh), open_flags),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.open_handle(fh).and_then(|(f, lazy)| {
            if let Some(copy) = lazy {
                return copy.read(offset, size as usize).map_err(errno);
            }
            let mut buf = vec![0u8; size as usize];
            let n = lazy::read_full(&f, &mut buf, offset).map_err(errno)?;
            buf.truncate(n);
            Ok(buf)
        });
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.open_handle(fh).and_then(|(f, lazy)| {
            match lazy {
                Some(copy) => copy.write(&f, data, offset),
                None => f.write_all_at(data, offset),
            }
            .map_err(errno)?;
            if wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                kill_suidgid(&*f)?;
            }
            Ok(())
        });
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
        // Nothing is buffered here: the kernel stops sending flush on every close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
            .map_err(errno)
        });
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir.load(Ordering::Relaxed) {
            // Directories need no handle (listings are kept per directory and resume by
            // name hash): the kernel stops sending opendir and releasedir, two round trips
            // per directory read.
            return reply.error(Errno::ENOSYS);
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut st = self.lock();
        let listing = self
            .path_of(&st, ino)
            .and_then(|p| self.listing(&mut st, &p));
        drop(st);
        let listing = match listing {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        if offset == 0 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset <= 1 && reply.add(INodeNo(ROOT), 2, FileType::Directory, "..") {
            return reply.ok();
        }
        // Offsets are name hashes: a listing that changed between two calls resumes
        // where it left off, without skipping or repeating a name that stayed.
        let start = listing.partition_point(|e| e.0 <= offset);
        for (c, name, kind, id) in &listing[start..] {
            if reply.add(INodeNo(*id), *c, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let st = self.lock();
        let r = (|| {
            let path = self.path_of(&st, ino)?;
            let w = self.writable()?;
            let d = self.dir_fd(w, &path, OFlags::RDONLY).map_err(errno)?;
            rfs::fsync(&d).map_err(rerr)
        })();
        match r {
            Ok(()) | Err(Errno::ENOENT) | Err(Errno::EROFS) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let b = self.write.unwrap_or(0);
        match rfs::fstatfs(&self.branches[b as usize].fd) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                (s.f_namelen as usize).min(NAME_MAX + 4).saturating_sub(4) as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(rerr(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        let r = (|| {
            let path = self.path_of(&st, ino)?;
            self.copy_up(&mut st, &path, true)?;
            if name == "security.capability" {
                // The fill's writes would drop it again.
                if let Some(copy) = self.lazy_copy_at(&mut st, &path) {
                    copy.finish().map_err(errno)?;
                }
            }
            let w = self.writable()?;
            let (_dir, p) = self.xattr_target(w, &path)?;
            rfs::lsetxattr(
                OsStr::from_bytes(&p),
                name,
                value,
                rfs::XattrFlags::from_bits_retain(flags as u32),
            )
            .map_err(rerr)
        })();
        reply_empty(reply, r);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut st = self.lock();
        let r = (|| {
            let path = self.path_of(&st, ino)?;
            let e = self.entry(&mut st, &path)?;
            let (_dir, p) = self.xattr_target(e.branch, &path)?;
            copyup::get_xattr(&p, name.as_bytes()).map_err(errno)
        })();
        drop(st);
        match r {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut st = self.lock();
        let r = (|| {
            let path = self.path_of(&st, ino)?;
            let e = self.entry(&mut st, &path)?;
            let (_dir, p) = self.xattr_target(e.branch, &path)?;
            copyup::list_xattrs(&p).map_err(errno)
        })();
        drop(st);
        match r {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(&n);
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32)
                } else if buf.len() > size as usize {
                    reply.error(Errno::ERANGE)
                } else {
                    reply.data(&buf)
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.lock();
        let r = (|| {
            let path = self.path_of(&st, ino)?;
            self.copy_up(&mut st, &path, true)?;
            let w = self.writable()?;
            let (_dir, p) = self.xattr_target(w, &path)?;
            rfs::lremovexattr(OsStr::from_bytes(&p), name).map_err(rerr)
        })();
        reply_empty(reply, r);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks modes itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.lock();
        let r = (|| {
            let pp = self.path_of(&st, parent)?;
            let (_, dir, hidden) = self.prepare_create(&mut st, &pp, name)?;
            let keep =
                libc::O_ACCMODE | libc::O_APPEND | libc::O_DIRECT | libc::O_SYNC | libc::O_DSYNC;
            let oflags = OFlags::from_bits_retain((flags & keep) as u32)
                | OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::CLOEXEC;
            let fd = rfs::openat(
                &dir,
                name,
                oflags,
                Mode::from_raw_mode(mode & !umask & 0o7777),
            )
            .map_err(rerr)?;
            self.own_new(req, &dir, name, false)?;
            let (a, g) = self.finish_create(&mut st, &pp, name, &dir, hidden)?;
            Ok((a, g, File::from(fd)))
        })();
        let (a, g, file) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let w = self.write.unwrap_or(0);
        let backing = self.backing(&mut st, a.ino.0, w, &file, |fd| reply.open_backing(fd));
        drop(st);
        let open_flags = self.open_flags(w, backing.is_some());
        let fh = self.new_fh(Handle {
            ino: a.ino.0,
            file: Arc::new(file),
            _backing: backing.clone(),
            lazy: None,
        });
        match backing {
            Some(id) => {
                reply.created_passthrough(&TTL, &a, Generation(g), FileHandle(fh), open_flags, &id)
            }
            None => reply.created(&TTL, &a, Generation(g), FileHandle(fh), open_flags),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.open_handle(fh).and_then(|(f, lazy)| {
            if let Some(copy) = lazy {
                // What an allocated range reads as differs between filesystems (a hole to
                // ext4's SEEK_DATA, data to tmpfs's): the copy is made whole first.
                copy.finish().map_err(errno)?;
            }
            rfs::fallocate(
                &*f,
                rfs::FallocateFlags::from_bits_retain(mode as u32),
                offset,
                length,
            )
            .map_err(rerr)
        });
        reply_empty(reply, r);
    }
}

impl Union {
    /// A path naming `path` in branch `b` for the xattr calls (see [`fd_path`]), with the
    /// directory fd it goes through, which must stay open while the path is used.
    fn xattr_target(&self, b: u16, path: &Path) -> Res<(OwnedFd, Vec<u8>)> {
        if path.as_os_str().is_empty() {
            let d = self.dir_fd(b, path, OFlags::PATH).map_err(errno)?;
            let p = fd_path(d.as_fd(), OsStr::new("."));
            return Ok((d, p));
        }
        let dir = self.parent_fd(b, path).map_err(errno)?;
        let p = fd_path(dir.as_fd(), split(path).1);
        Ok((dir, p))
    }
}
