//! A directory that paths are resolved inside of, by the kernel.
//!
//! Every lookup goes through openat2 with `RESOLVE_IN_ROOT` (absolute symlinks and `..`
//! stay inside the root) and `RESOLVE_NO_MAGICLINKS`. Changes are then made with *at calls
//! on the resolved parent directory fd and a single final name that contains no `/` and is
//! not `..`, with `AT_SYMLINK_NOFOLLOW` where the call would otherwise follow. This is the
//! kernel primitive pathrs wraps; strata needs the raw parent fd for mknodat/linkat/
//! fchownat on every tar entry, so it uses openat2 directly.

use rustix::fs::{mkdirat, openat2, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` (resolved inside the root) with `flags`.
    pub fn open_at(&self, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        // With RESOLVE_IN_ROOT the kernel answers a `..` lookup with EAGAIN when any mount
        // or rename happened meanwhile (anywhere on the system), asking the caller to retry.
        let mut attempts = 0;
        loop {
            match openat2(
                &self.fd,
                rel,
                flags | OFlags::CLOEXEC,
                Mode::empty(),
                RESOLVE,
            ) {
                Err(Errno::AGAIN) if attempts < 1000 => attempts += 1,
                other => return Ok(other?),
            }
        }
    }

    /// Opens directory `rel`, creating missing components (mode 0755) when `create` is set.
    pub fn open_dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        match self.open_at(rel, OFlags::DIRECTORY | OFlags::RDONLY) {
            Err(e) if create && e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                let name = rel
                    .file_name()
                    .ok_or_else(|| io::Error::other("cannot create the root"))?;
                let pfd = self.open_dir(parent, true)?;
                match mkdirat(&pfd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                self.open_at(rel, OFlags::DIRECTORY | OFlags::RDONLY)
            }
            other => other,
        }
    }
}

/// Turns a path from an archive into a clean relative path, refusing any that would leave
/// the root lexically (`..` past the top). Leading `/` and `./` are dropped as tar does.
pub fn clean_relative(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(format!("path {raw:?} leaves the root with `..`"));
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}
