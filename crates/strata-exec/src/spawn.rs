//! Starting shim processes. What forks into a container (the native runtime's creator, an
//! exec) runs from the shim binary as seen through a read-only mount that belongs to no
//! mount namespace, so nothing in a container can rewrite the binary on the host through
//! /proc/PID/exe (CVE-2019-5736: the exe link of a process forked from it that has not yet
//! exec'd names the file on that mount, and opening it for writing fails with EROFS; the
//! mount cannot be made writable from anywhere, as it is in no namespace's tree). Where the
//! mount API is missing, a sealed memfd copy serves instead. The long-lived monitor runs
//! from the view too when there is one, and then forks the native create step without an
//! exec; otherwise it runs from the binary on disk and never enters a container.

use crate::shim::{CLIENT_FD, GO_FD, READY_FD};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mount::{MountAttrFlags, OpenTreeFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The shim binary: `STRATA_SHIM`, or `strata-shim` next to the running executable.
pub fn shim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_SHIM") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("strata-shim")))
        .unwrap_or_else(|| PathBuf::from("strata-shim"))
}

/// `fd` again at a number above 10: clear of the numbers (0-4) a child moves its fds to.
pub(crate) fn above_moved_fds(fd: impl AsFd) -> rustix::io::Result<OwnedFd> {
    rustix::io::fcntl_dupfd_cloexec(fd, 10)
}

/// A read-only, sealed in-memory copy of `binary`, at an fd number above 10.
fn sealed_copy(binary: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "strata-shim",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut mem = File::from(fd);
    let mut src = File::open(binary).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("opening the shim {}: {e}", binary.display()),
        )
    })?;
    std::io::copy(&mut src, &mut mem)?;
    rustix::fs::fcntl_add_seals(
        &mem,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    Ok(above_moved_fds(&mem)?)
}

/// `binary` opened (O_PATH, at an fd number above 10) through a read-only, nosuid, nodev
/// clone of its directory's mount that is attached nowhere. A copy of the binary costs 3 ms
/// per container start (6 MB); this costs a mount clone and is what runc reaches with a
/// lower-only overlayfs.
fn read_only_view(binary: &Path) -> std::io::Result<OwnedFd> {
    let binary = std::fs::canonicalize(binary)?;
    let (Some(dir), Some(name)) = (binary.parent(), binary.file_name()) else {
        return Err(std::io::Error::other(format!(
            "the shim {} is not a file in a directory",
            binary.display()
        )));
    };
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    crate::mount_attr::set(
        &tree,
        (MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV)
            .bits()
            .into(),
        0,
        false,
    )?;
    let exe = rustix::fs::openat(
        &tree,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(above_moved_fds(&exe)?)
}

/// Which image of the shim binary a process runs from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShimExe {
    /// The binary on disk.
    #[default]
    Disk,
    /// The read-only view, else a sealed copy: the process forks into a container.
    Sealed,
    /// The read-only view, else the binary on disk: the monitor, which forks the native
    /// create step itself when it runs from the view (a 6 MB copy per running container
    /// would cost too much memory).
    ViewOrDisk,
}

/// A command running the shim binary as `exe` says (keep the returned fd open until the
/// child is spawned).
pub fn shim_command(exe: ShimExe) -> std::io::Result<(Command, Option<OwnedFd>)> {
    let binary = shim_binary();
    // Kernels before 5.12 (no mount_setattr), or no right to clone mounts.
    let unsupported =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM));
    let fd = match exe {
        ShimExe::Disk => None,
        ShimExe::Sealed => Some(match read_only_view(&binary) {
            Ok(fd) => fd,
            Err(e) if unsupported(&e) => sealed_copy(&binary)?,
            Err(e) => return Err(e),
        }),
        ShimExe::ViewOrDisk => match read_only_view(&binary) {
            Ok(fd) => Some(fd),
            Err(e) if unsupported(&e) => None,
            Err(e) => return Err(e),
        },
    };
    let mut c = match &fd {
        Some(fd) => Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => Command::new(binary),
    };
    c.arg0("strata-shim");
    Ok((c, fd))
}

/// Whether this process's binary cannot be written through /proc/self/exe: it sits on a
/// read-only mount (the view, or a read-only filesystem).
pub fn running_read_only() -> bool {
    rustix::fs::statvfs("/proc/self/exe")
        .is_ok_and(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

pub struct Spawned {
    pub child: Child,
    /// Read to its end: "ok..." once the container runs, else the error.
    pub ready: File,
    /// A gated shim's go pipe (see `SpawnOptions::gated`).
    go: Option<File>,
}

/// How to start a shim process.
#[derive(Default)]
pub struct SpawnOptions {
    /// An already connected attach client, handed over as fd 4.
    pub client: Option<OwnedFd>,
    /// A session of its own with stdio on /dev/null: it outlives the caller.
    pub detach: bool,
    /// What it runs from.
    pub exe: ShimExe,
    /// Its fds 0-2 (otherwise the caller's, or /dev/null when detached).
    pub stdio: Option<[OwnedFd; 3]>,
    /// Started before what it reads is written: it waits for `Spawned::go`'s message
    /// (and exits, having done nothing, if the `Spawned` is dropped first). Its exec and
    /// start-up then overlap the caller's preparations.
    pub gated: bool,
}

/// In a forked child before its exec: `fd` moved to number `to`, or `to` closed when there
/// is none (no stray fd of the parent's sits at a number the shim reads). Only dup2 and
/// close: async-signal-safe.
fn place_fd(fd: Option<i32>, to: i32) -> std::io::Result<()> {
    // SAFETY: plain fd syscalls on numbers; no Rust object owns `to` in the child.
    unsafe {
        match fd {
            Some(fd) if libc::dup2(fd, to) < 0 => return Err(std::io::Error::last_os_error()),
            Some(_) => {}
            None => {
                libc::close(to);
            }
        }
    }
    Ok(())
}

/// Starts `strata-shim ARGS...` with fd 3 the ready pipe (see `SpawnOptions` for the rest).
pub fn spawn_shim(args: &[&OsStr], opts: SpawnOptions) -> std::io::Result<Spawned> {
    let (mut cmd, exe) = shim_command(opts.exe)?;
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let ready_w = above_moved_fds(ready_w)?;
    let client = opts.client.map(above_moved_fds).transpose()?;
    let (go_r, go_w) = if opts.gated {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        (Some(above_moved_fds(r)?), Some(File::from(w)))
    } else {
        (None, None)
    };
    cmd.args(args);
    if let Some([i, o, e]) = opts.stdio {
        cmd.stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e));
    } else if opts.detach {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    let detach = opts.detach;
    let ready_fd = ready_w.as_raw_fd();
    let client_fd = client.as_ref().map(|c| c.as_raw_fd());
    let go_fd = go_r.as_ref().map(|g| g.as_raw_fd());
    // SAFETY: only async-signal-safe calls (setsid, dup2, close) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if detach {
                libc::setsid();
            }
            place_fd(Some(ready_fd), READY_FD)?;
            place_fd(client_fd, CLIENT_FD)?;
            place_fd(go_fd, GO_FD)
        });
    }
    let child = cmd.spawn()?;
    drop(exe);
    drop(ready_w);
    drop(client);
    drop(go_r);
    Ok(Spawned {
        child,
        ready: File::from(ready_r),
        go: go_w,
    })
}

impl Spawned {
    /// Lets a gated shim go on with `message` (nothing for one that was not gated).
    pub fn go(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self.go.take() {
            Some(mut w) => w.write_all(message),
            None => Ok(()),
        }
    }

    /// Gives a gated shim up before `go`: it exits having done nothing, and is reaped.
    pub fn abandon(mut self) {
        drop(self.go.take());
        let _ = self.child.wait();
    }

    /// Waits for the shim's word: `Ok` with what followed "ok", or the error it gave.
    pub fn wait_ready(&mut self) -> Result<String, String> {
        read_ready(&mut self.ready)
    }
}

/// Reads a ready pipe's one line (or all of it if the writer never ends a line): "ok REST"
/// gives REST, anything else is the error. Not to the pipe's end: a container's init,
/// forked before it execs, may hold the write end.
pub(crate) fn read_ready(ready: &mut File) -> Result<String, String> {
    let mut bytes = Vec::new();
    let mut b = [0u8; 512];
    while let Ok(n) = ready.read(&mut b) {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&b[..n]);
        if bytes.ends_with(b"\n") {
            break;
        }
    }
    let msg = String::from_utf8_lossy(&bytes).trim_end().to_string();
    match msg.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim().to_string()),
        None if msg.is_empty() => Err("the shim exited before the container started".into()),
        None => Err(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a container could reach through /proc/PID/exe of a process run from the view
    /// cannot be opened for writing, nor is it a writable copy: it is the binary itself.
    #[test]
    fn the_read_only_view_cannot_be_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("shim");
        std::fs::write(&bin, b"\x7fELF not really").unwrap();
        let fd = read_only_view(&bin).unwrap();
        let via = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&via)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert_eq!(std::fs::read(&via).unwrap(), b"\x7fELF not really");
        // The binary stays writable where it lives: only the view is read-only.
        std::fs::write(&bin, b"updated").unwrap();
        assert_eq!(std::fs::read(&via).unwrap(), b"updated");
    }
}
