//! Applying a layer tar to a directory.

use crate::root::{clean_relative, Root};
use crate::walk::{list_dir, remove_entry, set_meta_at};
use crate::whiteout::{self, WhiteoutFormat};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use xattr::FileExt;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("layer archive is not a valid tar (truncated or corrupt): {0}")]
    Tar(io::Error),
    #[error("layer archive entry {path:?}: {reason}")]
    Entry { path: String, reason: String },
    #[error("layer archive entry {path:?}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}")]
    Budget(io::Error),
}

/// Called with the bytes written so far (holes excluded) about every MiB; an error stops
/// the apply. The engine uses it to bound decompression bombs and keep the disk from filling.
pub type WriteBudget<'a> = &'a mut dyn FnMut(u64) -> io::Result<()>;

pub struct ApplyOptions<'a> {
    pub whiteouts: WhiteoutFormat,
    pub budget: Option<WriteBudget<'a>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Apparent bytes of regular files, as docker counts a layer's size.
    pub size: u64,
    pub entries: u64,
}

const BUDGET_EVERY: u64 = 1 << 20;

struct Applier<'a, 'b> {
    root: Root,
    opts: &'a mut ApplyOptions<'b>,
    written: u64,
    next_budget_check: u64,
    /// Paths this layer created, kept so an opaque marker spares them (Apply format).
    created: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, Timestamps)>,
    stats: ApplyStats,
    /// The directory the previous entry went into: entries of one directory come together,
    /// so this saves a lookup per entry. Dropped whenever anything is removed, since a
    /// removal could replace it or an ancestor.
    last_dir: Option<(PathBuf, std::rc::Rc<OwnedFd>)>,
    /// The owner a new file in `last_dir` gets (computed once per directory).
    last_dir_owner: Option<(u32, u32)>,
    /// Who owns a file this process creates in `last_dir`, and the umask, to skip chown and
    /// chmod calls that would change nothing (most files of most layers).
    creator: Creator,
}

#[derive(Clone, Copy)]
struct Creator {
    uid: u32,
    gid: u32,
    umask: u32,
}

/// The process umask, read without changing it (umask(2) would, process-wide).
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Umask:")
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
        })
        .unwrap_or(0o777)
}

/// Applies the tar stream `r` to the directory `target`. Returns the stats and the reader,
/// positioned after the tar's end-of-archive marker, so the caller can finish hashing it.
pub fn apply_layer<R: Read>(
    r: R,
    target: &Path,
    mut opts: ApplyOptions<'_>,
) -> Result<(ApplyStats, R), ApplyError> {
    let root = Root::open(target).map_err(|e| ApplyError::Io {
        path: target.display().to_string(),
        source: e,
    })?;
    let mut ap = Applier {
        root,
        opts: &mut opts,
        written: 0,
        next_budget_check: BUDGET_EVERY,
        created: HashSet::new(),
        dir_times: Vec::new(),
        stats: ApplyStats::default(),
        last_dir: None,
        last_dir_owner: None,
        creator: Creator {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            umask: current_umask(),
        },
    };
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(ApplyError::Tar)? {
        let mut entry = entry.map_err(ApplyError::Tar)?;
        ap.entry(&mut entry)?;
    }
    // Directory times last, deepest first, so creating children does not disturb them.
    for (rel, ts) in ap.dir_times.iter().rev() {
        if let Ok(fd) = ap
            .root
            .open_at(rel, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW)
        {
            let _ = rfs::futimens(&fd, ts);
        }
    }
    let stats = ap.stats.clone();
    Ok((stats, archive.into_inner()))
}

fn entry_err(path: &Path, reason: impl Into<String>) -> ApplyError {
    ApplyError::Entry {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn errno_err(path: &Path) -> impl Fn(Errno) -> ApplyError + '_ {
    move |e| ApplyError::Io {
        path: path.display().to_string(),
        source: e.into(),
    }
}

impl Applier<'_, '_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw = entry.path().map_err(ApplyError::Tar)?.into_owned();
        let rel = clean_relative(&raw).map_err(|r| entry_err(&raw, r))?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            return Ok(()); // the root itself: "./"
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        self.stats.entries += 1;
        let name_bytes = name.as_bytes();
        if self.opts.whiteouts != WhiteoutFormat::Literal && aufs_meta(&rel) {
            // aufs's own records (`.wh..wh.plnk/`, `.wh..wh.lazy/`, ...) belong to the
            // branch that made them: nothing from a tar becomes one, or goes under one.
            return Ok(());
        }

        if name_bytes.starts_with(whiteout::PREFIX.as_bytes())
            && !matches!(
                self.opts.whiteouts,
                WhiteoutFormat::Aufs | WhiteoutFormat::Literal
            )
        {
            return self.whiteout(&rel, &parent, &name);
        }
        if self.opts.whiteouts == WhiteoutFormat::Aufs && name_bytes == whiteout::PREFIX.as_bytes()
        {
            return Err(entry_err(
                &rel,
                "a bare `.wh.` whiteout names nothing; the archive is malformed",
            ));
        }

        let header = entry.header().clone();
        let kind = header.entry_type();
        let pfd = self.parent_dir(&parent).map_err(io_err(&rel))?;
        let mode = Mode::from_raw_mode(header.mode().map_err(ApplyError::Tar)? & 0o7777);
        let uid = header.uid().map_err(ApplyError::Tar)? as u32;
        let gid = header.gid().map_err(ApplyError::Tar)? as u32;
        let mtime = header.mtime().map_err(ApplyError::Tar)? as i64;
        let ts = Timestamps {
            last_access: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
            last_modification: Timespec {
                tv_sec: mtime,
                tv_nsec: 0,
            },
        };
        let xattrs = pax_xattrs(entry)?;

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                let existing = rfs::statat(&pfd, &name, AtFlags::SYMLINK_NOFOLLOW);
                match existing {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                    Ok(_) => {
                        self.last_dir = None;
                        remove_entry(&pfd, &name).map_err(io_err(&rel))?;
                        rfs::mkdirat(&pfd, &name, mode).map_err(errno_err(&rel))?;
                    }
                    Err(_) => rfs::mkdirat(&pfd, &name, mode).map_err(errno_err(&rel))?,
                }
                let fd = rfs::openat(
                    &pfd,
                    &name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno_err(&rel))?;
                self.set_owner_mode_xattrs(&fd, &rel, uid, gid, mode, &xattrs)?;
                self.dir_times.push((rel.clone(), ts));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let fd = self
                    .create_replacing(&pfd, &name, || {
                        rfs::openat(
                            &*pfd,
                            &name,
                            OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::WRONLY
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(mode.as_raw_mode() & 0o777),
                        )
                    })
                    .map_err(io_err(&rel))?;
                let mut file = File::from(fd);
                let fresh = self.new_file_owner(&pfd).map_err(io_err(&rel))?;
                let len = self.copy_sparse(entry, &mut file, &rel)?;
                self.stats.size += len;
                // Skip what creation already got right: the owner, and permission bits the
                // umask let through (set-id bits always need a chmod, after any chown).
                let needs_chown = (uid, gid) != fresh;
                let needs_chmod = needs_chown
                    || mode.as_raw_mode() & 0o7000 != 0
                    || mode.as_raw_mode() & self.creator.umask != 0;
                if needs_chown || needs_chmod {
                    self.set_owner_mode_xattrs(&file, &rel, uid, gid, mode, &xattrs)?;
                } else {
                    self.set_owner_mode_xattrs_with(&file, &rel, None, None, &xattrs)?;
                }
                rfs::futimens(&file, &ts).map_err(errno_err(&rel))?;
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ApplyError::Tar)?
                    .ok_or_else(|| entry_err(&rel, "symlink without a target"))?;
                self.create_replacing(&pfd, &name, || {
                    rfs::symlinkat(target.as_ref(), &*pfd, &name)
                })
                .map_err(io_err(&rel))?;
                set_meta_at(&pfd, &name, uid, gid, None, &ts).map_err(io_err(&rel))?;
            }
            T::Link => {
                let raw_target = entry
                    .link_name()
                    .map_err(ApplyError::Tar)?
                    .ok_or_else(|| entry_err(&rel, "hard link without a target"))?;
                let target = clean_relative(&raw_target).map_err(|r| entry_err(&rel, r))?;
                let tname = target
                    .file_name()
                    .ok_or_else(|| entry_err(&rel, "hard link to the root"))?;
                let tparent = self
                    .root
                    .open_dir(target.parent().unwrap_or(Path::new("")), false)
                    .map_err(|e| {
                        entry_err(
                            &rel,
                            format!("hard link target {target:?} is not in the layer: {e}"),
                        )
                    })?;
                let tst = rfs::statat(&tparent, tname, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                    entry_err(
                        &rel,
                        format!("hard link target {target:?} is not in the layer: {e}"),
                    )
                })?;
                if FileType::from_raw_mode(tst.st_mode) == FileType::Directory {
                    return Err(entry_err(&rel, "hard link to a directory"));
                }
                if target == rel {
                    return Ok(());
                }
                self.create_replacing(&pfd, &name, || {
                    rfs::linkat(&tparent, tname, &*pfd, &name, AtFlags::empty())
                })
                .map_err(io_err(&rel))?;
            }
            T::Char | T::Block | T::Fifo => {
                let ft = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                // FIFOs carry no device numbers; tar writers often leave the fields blank.
                let dev = if kind == T::Fifo {
                    rfs::makedev(0, 0)
                } else {
                    rfs::makedev(
                        header.device_major().map_err(ApplyError::Tar)?.unwrap_or(0),
                        header.device_minor().map_err(ApplyError::Tar)?.unwrap_or(0),
                    )
                };
                self.create_replacing(&pfd, &name, || rfs::mknodat(&*pfd, &name, ft, mode, dev))
                    .map_err(io_err(&rel))?;
                set_meta_at(&pfd, &name, uid, gid, Some(mode), &ts).map_err(io_err(&rel))?;
            }
            other => {
                return Err(entry_err(
                    &rel,
                    format!("unsupported tar entry type {other:?}"),
                ))
            }
        }
        if self.opts.whiteouts == WhiteoutFormat::Apply {
            self.created.insert(rel);
        }
        Ok(())
    }

    /// The directory `parent` (created if missing), resolved inside the root.
    fn parent_dir(&mut self, parent: &Path) -> io::Result<std::rc::Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.last_dir {
            if p == parent {
                return Ok(fd.clone());
            }
        }
        let fd = std::rc::Rc::new(self.root.open_dir(parent, true)?);
        self.last_dir = Some((parent.to_path_buf(), fd.clone()));
        self.last_dir_owner = None;
        Ok(fd)
    }

    /// The owner a file created in `dir` gets: ours, or the directory's group when the
    /// directory is set-gid.
    fn new_file_owner(&mut self, dir: &OwnedFd) -> io::Result<(u32, u32)> {
        let cached = self
            .last_dir
            .as_ref()
            .is_some_and(|(_, fd)| std::ptr::eq(&**fd, dir));
        if let (true, Some(owner)) = (cached, self.last_dir_owner) {
            return Ok(owner);
        }
        let st = rfs::fstat(dir)?;
        let gid = if st.st_mode & 0o2000 != 0 {
            st.st_gid
        } else {
            self.creator.gid
        };
        let owner = (self.creator.uid, gid);
        if cached {
            self.last_dir_owner = Some(owner);
        }
        Ok(owner)
    }

    /// Runs `create`; if the name is taken, removes what is there (a directory with all in
    /// it) and runs it again. New names, the common case, cost one call.
    fn create_replacing<T>(
        &mut self,
        dfd: &OwnedFd,
        name: &OsStr,
        create: impl Fn() -> rustix::io::Result<T>,
    ) -> io::Result<T> {
        match create() {
            Err(Errno::EXIST) => {
                self.last_dir = None;
                replace_non_dir(dfd, name)?;
                Ok(create()?)
            }
            other => Ok(other?),
        }
    }

    fn whiteout(&mut self, rel: &Path, parent: &Path, name: &OsStr) -> Result<(), ApplyError> {
        let name_bytes = name.as_bytes();
        if name_bytes == whiteout::OPAQUE.as_bytes() {
            let dfd = self.root.open_dir(parent, true).map_err(io_err(rel))?;
            match self.opts.whiteouts {
                WhiteoutFormat::Overlay => {
                    File::from(dfd)
                        .set_xattr(whiteout::OVERLAY_OPAQUE_XATTR, b"y")
                        .map_err(io_err(rel))?;
                }
                _ => {
                    // Everything below that this layer did not itself create goes.
                    for child in list_dir(&dfd).map_err(io_err(rel))? {
                        if !self.created.contains(&parent.join(&child)) {
                            self.last_dir = None;
                            remove_entry(&dfd, &child).map_err(io_err(rel))?;
                        }
                    }
                }
            }
            return Ok(());
        }
        let target = &name_bytes[whiteout::PREFIX.len()..];
        if target.is_empty() {
            return Err(entry_err(
                rel,
                "a bare `.wh.` whiteout names nothing; the archive is malformed",
            ));
        }
        if target == b"." || target == b".." || target.contains(&b'/') {
            return Err(entry_err(rel, "whiteout names an invalid file"));
        }
        let target = OsStr::from_bytes(target);
        match self.opts.whiteouts {
            WhiteoutFormat::Overlay => {
                let dfd = self.root.open_dir(parent, true).map_err(io_err(rel))?;
                self.last_dir = None;
                replace_non_dir(&dfd, target).map_err(io_err(rel))?;
                rfs::mknodat(
                    &dfd,
                    target,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(errno_err(rel))?;
            }
            _ => {
                // Resolved inside the root: a whiteout under a symlinked ancestor cannot reach out.
                match self.root.open_dir(parent, false) {
                    Ok(dfd) => {
                        self.last_dir = None;
                        remove_entry(&dfd, target).map_err(io_err(rel))?
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            || e.raw_os_error() == Some(libc::ENOTDIR) => {}
                    Err(e) => return Err(io_err(rel)(e)),
                }
            }
        }
        Ok(())
    }

    fn set_owner_mode_xattrs(
        &self,
        fd: &impl AsFd,
        rel: &Path,
        uid: u32,
        gid: u32,
        mode: Mode,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        self.set_owner_mode_xattrs_with(fd, rel, Some((uid, gid)), Some(mode), xattrs)
    }

    fn set_owner_mode_xattrs_with(
        &self,
        fd: &impl AsFd,
        rel: &Path,
        owner: Option<(u32, u32)>,
        mode: Option<Mode>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        // chown before chmod: chown clears set-id bits.
        if let Some((uid, gid)) = owner {
            rfs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid))).map_err(errno_err(rel))?;
        }
        if let Some(mode) = mode {
            rfs::fchmod(fd, mode).map_err(errno_err(rel))?;
        }
        if !xattrs.is_empty() {
            let file = File::from(fd.as_fd().try_clone_to_owned().map_err(io_err(rel))?);
            for (k, v) in xattrs {
                file.set_xattr(k, v)
                    .map_err(|e| entry_err(rel, format!("setting xattr {k}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Copies entry data, leaving runs of zeros as holes so sparse files stay sparse and a
    /// stream of zeros costs no disk.
    fn copy_sparse<R: Read>(
        &mut self,
        src: &mut R,
        dst: &mut File,
        rel: &Path,
    ) -> Result<u64, ApplyError> {
        const CHUNK: usize = 64 * 1024;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        let mut buf = vec![0u8; CHUNK];
        let mut off: u64 = 0;
        let mut ends_in_hole = false;
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                match src.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(ApplyError::Tar(e)),
                }
            }
            if filled == 0 {
                break;
            }
            ends_in_hole = buf[..filled] == ZEROS[..filled];
            if !ends_in_hole {
                let mut done = 0;
                while done < filled {
                    done += rustix::io::pwrite(&*dst, &buf[done..filled], off + done as u64)
                        .map_err(errno_err(rel))?;
                }
                self.written += filled as u64;
                if self.written >= self.next_budget_check {
                    self.next_budget_check = self.written + BUDGET_EVERY;
                    if let Some(budget) = self.opts.budget.as_mut() {
                        budget(self.written).map_err(ApplyError::Budget)?;
                    }
                }
            }
            off += filled as u64;
            if filled < CHUNK {
                break;
            }
        }
        // A file ending in a hole gets its length from ftruncate; otherwise writes set it.
        if ends_in_hole {
            rfs::ftruncate(&*dst, off).map_err(errno_err(rel))?;
        }
        Ok(off)
    }
}

fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<Vec<(String, Vec<u8>)>, ApplyError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Tar)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Tar)?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                // Overlay's own xattrs are never taken from an archive: they would forge
                // opaque dirs or redirects.
                if !name.starts_with(whiteout::OVERLAY_XATTR_PREFIX) {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn uid_of(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}
fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

/// Makes room for a non-directory at `name`: removes whatever is there (a directory with
/// everything in it).
fn replace_non_dir(dfd: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match rfs::unlinkat(dfd, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) => remove_entry(dfd, name),
        Err(e) => Err(e.into()),
    }
}

/// Whether `rel` is or lies under an aufs metadata name (`.wh..wh.*`, the opaque marker
/// itself excepted).
fn aufs_meta(rel: &Path) -> bool {
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        let b = c.as_os_str().as_bytes();
        let last = parts.peek().is_none();
        if b.starts_with(whiteout::META_PREFIX.as_bytes())
            && !(last && b == whiteout::OPAQUE.as_bytes())
        {
            return true;
        }
    }
    false
}
