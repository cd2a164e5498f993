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
use std::ffi::CString;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

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

/// Whether this process's binary cannot be written through /proc/self/exe: it sits on a
/// read-only mount (the view, or a read-only filesystem).
pub fn running_read_only() -> bool {
    rustix::fs::statvfs("/proc/self/exe")
        .is_ok_and(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

pub struct Spawned {
    pub child: ShimChild,
    /// Read to its end: "ok..." once the container runs, else the error.
    pub ready: File,
    /// A gated shim's go socket (see `SpawnOptions::gated`).
    go: Option<std::os::unix::net::UnixStream>,
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

/// The program a shim process executes (as `exe` says), with the fd that keeps a view or
/// copy alive until the exec.
fn shim_program(exe: ShimExe) -> std::io::Result<(CString, Option<OwnedFd>)> {
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
    let path = match &fd {
        Some(fd) => format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes(),
        None => binary.into_os_string().into_vec(),
    };
    let path = CString::new(path).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the shim path has a NUL")
    })?;
    Ok((path, fd))
}

/// In a forked child before its exec: `fd` moved to number `to`, or `to` closed when there
/// is none (no stray fd of the parent's sits at a number the shim reads). Only dup2 and
/// close: async-signal-safe.
fn place_fd(fd: Option<i32>, to: i32) -> bool {
    // SAFETY: plain fd syscalls on numbers; no Rust object owns `to` in the child.
    unsafe {
        match fd {
            Some(fd) => libc::dup2(fd, to) == to,
            None => {
                libc::close(to);
                true
            }
        }
    }
}

/// A shim process `spawn_shim` started (its parent reaps it).
pub struct ShimChild {
    pid: rustix::process::Pid,
    status: Option<ExitStatus>,
}

impl ShimChild {
    pub fn id(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// Waits for the shim to exit (once; later calls give the same status).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        loop {
            match rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty()) {
                Ok(Some((_, st))) => {
                    let s = ExitStatus::from_raw(st.as_raw());
                    self.status = Some(s);
                    return Ok(s);
                }
                Ok(None) => continue,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Where a gated shim's parent lets it run: the CPUs it may use itself (restored by the shim
/// once it has its go, `restore_cpus`).
const SHIM_CPUS_ENV: &str = "STRATA_SHIM_CPUS";

/// The caller's CPUs, for starting a gated shim on another one than the caller's. Some
/// schedulers (this machine's VM packs its vCPUs) keep a forked child on its parent's CPU
/// while another idles; the caller goes on working after the fork, and the shim's exec and
/// start-up would wait behind it (1.3 ms here) instead of running beside it.
struct CpuPlacement {
    allowed: libc::cpu_set_t,
    current: usize,
}

impl CpuPlacement {
    fn now() -> Option<CpuPlacement> {
        // SAFETY: plain syscalls filling a local cpu_set_t.
        unsafe {
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0
            {
                return None;
            }
            let current = usize::try_from(libc::sched_getcpu()).ok()?;
            Some(CpuPlacement { allowed, current })
        }
    }

    fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        // SAFETY: CPU_ISSET reads the set.
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &self.allowed) })
    }

    fn allowed_list(&self) -> String {
        self.cpus()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Pins `pid` to the next allowed CPU after the current one (nothing with one CPU).
    fn move_elsewhere(&self, pid: i32) {
        let other = self
            .cpus()
            .find(|&c| c > self.current)
            .or_else(|| self.cpus().find(|&c| c != self.current));
        if let Some(c) = other {
            // SAFETY: plain syscall on a local set.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(c, &mut set);
                libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
        }
    }
}

/// In a gated shim that has its go: the CPUs its starter may use again (see
/// `CpuPlacement`); its parent moved it before sending the go. What it starts inherits them.
pub fn restore_cpus() {
    let Some(list) = std::env::var_os(SHIM_CPUS_ENV) else {
        return;
    };
    // SAFETY: plain syscall on a local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let mut any = false;
        for c in list
            .to_string_lossy()
            .split(',')
            .filter_map(|c| c.parse::<usize>().ok())
        {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
                any = true;
            }
        }
        if any {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// What the child writes on its ready pipe when it cannot execute the shim.
const EXEC_FAILED: &[u8] = b"could not execute the strata-shim binary\n";

/// Starts `strata-shim ARGS...` with fd 3 the ready pipe (see `SpawnOptions` for the rest).
/// The caller goes on as soon as the child is forked, without waiting for its exec (as
/// `std::process::Command` does): the exec, about half a millisecond, overlaps the
/// caller's next steps. A shim that cannot be executed says so on the ready pipe.
pub fn spawn_shim(args: &[&OsStr], opts: SpawnOptions) -> std::io::Result<Spawned> {
    let (program, exe) = shim_program(opts.exe)?;
    // Everything the child uses is made before the fork: between fork and exec it only
    // makes async-signal-safe calls on these.
    let cstr = |a: &OsStr| {
        CString::new(a.as_bytes()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a shim argument has a NUL",
            )
        })
    };
    let mut argv_owned = vec![CString::from(c"strata-shim")];
    for a in args {
        argv_owned.push(cstr(a)?);
    }
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let cpus = if opts.gated {
        CpuPlacement::now()
    } else {
        None
    };
    let mut env_owned = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k != SHIM_CPUS_ENV {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            env_owned.push(cstr(OsStr::from_bytes(&kv))?);
        }
    }
    if let Some(c) = &cpus {
        env_owned.push(cstr(OsStr::new(&format!(
            "{SHIM_CPUS_ENV}={}",
            c.allowed_list()
        )))?);
    }
    let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let ready_w = above_moved_fds(ready_w)?;
    let client = opts.client.map(above_moved_fds).transpose()?;
    // A socket, not a pipe: writing to a shim that died must fail, not raise SIGPIPE.
    let (go_r, go_w) = if opts.gated {
        let (r, w) = std::os::unix::net::UnixStream::pair()?;
        (Some(above_moved_fds(r)?), Some(w))
    } else {
        (None, None)
    };
    let stdio = match opts.stdio {
        Some(fds) => Some(fds.map(above_moved_fds)),
        None if opts.detach => {
            let null = |w: bool| {
                let f = if w { OFlags::WRONLY } else { OFlags::RDONLY };
                rustix::fs::open("/dev/null", f | OFlags::CLOEXEC, Mode::empty())
                    .and_then(above_moved_fds)
            };
            Some([null(false), null(true), null(true)])
        }
        None => None,
    }
    .map(|[i, o, e]| rustix::io::Result::Ok([i?, o?, e?]))
    .transpose()?;
    let raw = |f: &Option<OwnedFd>| f.as_ref().map(|f| f.as_raw_fd());
    let stdio_fds = stdio.as_ref().map(|s| s.each_ref().map(|f| f.as_raw_fd()));
    let (ready_fd, client_fd, go_fd) = (ready_w.as_raw_fd(), raw(&client), raw(&go_r));
    // SAFETY: the child makes only async-signal-safe calls (setsid, sigprocmask, signal,
    // dup2, close, execve, write, _exit) on data prepared above, then leaves by exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; in the child only.
        unsafe {
            if opts.detach {
                libc::setsid();
            }
            // As a fresh process: no blocked signals, SIGPIPE at its default.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut placed = match stdio_fds {
                Some([i, o, e]) => {
                    place_fd(Some(i), 0) && place_fd(Some(o), 1) && place_fd(Some(e), 2)
                }
                None => true,
            };
            placed = placed
                && place_fd(Some(ready_fd), READY_FD)
                && place_fd(client_fd, CLIENT_FD)
                && place_fd(go_fd, GO_FD);
            if placed {
                libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            libc::write(READY_FD, EXEC_FAILED.as_ptr().cast(), EXEC_FAILED.len());
            libc::_exit(127);
        }
    }
    if let Some(c) = &cpus {
        c.move_elsewhere(pid);
    }
    drop((exe, ready_w, client, go_r, stdio));
    Ok(Spawned {
        child: ShimChild {
            pid: rustix::process::Pid::from_raw(pid).expect("a forked child's pid"),
            status: None,
        },
        ready: File::from(ready_r),
        go: go_w,
    })
}

impl Spawned {
    /// Lets a gated shim go on with `message` (nothing for one that was not gated).
    pub fn go(&mut self, message: &[u8]) -> std::io::Result<()> {
        match self.go.take() {
            // A shim that died gives EPIPE here, not SIGPIPE.
            Some(w) => crate::stream::send_all(&w, message),
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
