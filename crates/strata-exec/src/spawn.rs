//! Starting a shim from the CLI. The shim binary runs from a sealed memfd copy, so nothing
//! in a container can rewrite the binary on the host through /proc/PID/exe of a process
//! started from it (CVE-2019-5736: the exe link of a shim-forked process that has not yet
//! exec'd names the memfd, whose seals forbid writes).

use crate::shim::{CLIENT_FD, READY_FD};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
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

/// A read-only, sealed in-memory copy of `binary`.
fn sealed_copy(binary: &Path) -> std::io::Result<File> {
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
    Ok(mem)
}

pub struct Spawned {
    pub child: Child,
    /// Read to its end: "ok..." once the container runs, else the error.
    pub ready: File,
}

/// Starts `strata-shim ARGS...`: fd 3 is the ready pipe, fd 4 the optional pre-connected
/// attach client. `detach` puts it in a session of its own with stdio on /dev/null (it
/// outlives the CLI); otherwise it shares the CLI's stdio.
pub fn spawn_shim(
    args: &[&OsStr],
    client: Option<OwnedFd>,
    detach: bool,
) -> std::io::Result<Spawned> {
    // Every fd the child rearranges sits above the numbers it moves them to (3, 4).
    let high = |fd: OwnedFd| rustix::io::fcntl_dupfd_cloexec(&fd, 10);
    let mem = high(sealed_copy(&shim_binary())?.into())?;
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let ready_w = high(ready_w)?;
    let client = client.map(high).transpose()?;
    let mut cmd = Command::new(format!("/proc/self/fd/{}", mem.as_raw_fd()));
    cmd.arg0("strata-shim").args(args);
    if detach {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    let ready_fd = ready_w.as_raw_fd();
    let client_fd = client.as_ref().map(|c| c.as_raw_fd());
    // SAFETY: only async-signal-safe calls (setsid, dup2) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if detach {
                libc::setsid();
            }
            if libc::dup2(ready_fd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            match client_fd {
                Some(fd) if libc::dup2(fd, CLIENT_FD) < 0 => {
                    return Err(std::io::Error::last_os_error())
                }
                Some(_) => {}
                None => {
                    libc::close(CLIENT_FD);
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(ready_w);
    drop(client);
    Ok(Spawned {
        child,
        ready: File::from(ready_r),
    })
}

impl Spawned {
    /// Waits for the shim's word: `Ok` with what followed "ok", or the error it gave.
    pub fn wait_ready(&mut self) -> Result<String, String> {
        let mut msg = String::new();
        let _ = self.ready.read_to_string(&mut msg);
        match msg.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_string()),
            None if msg.is_empty() => Err("the shim exited before the container started".into()),
            None => Err(msg),
        }
    }
}
