//! `strata-shim exec`: runs one more process in a running container (`strata exec`), with
//! the CLI's stdio, or a pty relayed to it, and exits with the process's exit code.

use crate::runtime::{self, ProcessIo};
use crate::shim::{receive_console, READY_FD};
use crate::state;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecConfig {
    pub id: String,
    pub runtime: String,
    pub runtime_path: Option<PathBuf>,
    pub runtime_state: PathBuf,
    /// The process object (OCI spec `process`) as a file.
    pub process: PathBuf,
    pub tty: bool,
    pub console_socket: PathBuf,
}

fn dup_std(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: 0, 1, 2 are open for the life of the process (the starter gives them).
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(rustix::io::fcntl_dupfd_cloexec(b, 3)?)
}

/// Relays between our stdin/stdout and the pty master until the process exits.
fn relay(master: File, pid: i32) -> i32 {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut m_in = master.try_clone().expect("dup");
    let mut m_out = master;
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut stdin_open = true;
    // Once every slave end is closed the master reports a hang-up to every poll: from then
    // on the process's exit is waited for on its pidfd (else on the timeout), not spun on.
    let mut pty_open = true;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let mut buf = [0u8; 16 << 10];
    loop {
        if let Some(code) = crate::shim::reap_pid(pid) {
            // Drain what the pty still holds.
            crate::shim::set_nonblocking_file(&m_out);
            while let Ok(n) = m_out.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = stdout.flush();
            return code;
        }
        let sin = std::io::stdin();
        // An ended fd is left out, not polled for nothing: poll reports a hang-up anyway.
        let mut fds = Vec::with_capacity(3);
        if pty_open {
            fds.push(PollFd::new(&m_out, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&sin, PollFlags::IN));
        }
        if let Some(p) = &pidfd {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        let t = rustix::time::Timespec::try_from(std::time::Duration::from_millis(100)).ok();
        if poll(&mut fds, t.as_ref()).is_err() {
            continue;
        }
        let (pty_ready, stdin_ready) = {
            let mut r = fds.iter().map(|f| !f.revents().is_empty());
            (
                pty_open && r.next().unwrap_or(false),
                stdin_open && r.next().unwrap_or(false),
            )
        };
        drop(fds);
        if pty_ready {
            match m_out.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: every slave end is closed.
                _ => pty_open = false,
            }
        }
        if stdin_ready {
            match stdin.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = m_in.write_all(&buf[..n]);
                }
                _ => stdin_open = false,
            }
        }
    }
}

/// Runs the exec described by `config`; the return value is the exit code.
pub fn exec(config: &Path) -> i32 {
    // SAFETY: fd 3 is the ready pipe by contract with the starter.
    let mut ready = Some(unsafe { File::from_raw_fd(READY_FD) });
    let _ = rustix::io::fcntl_setfd(
        ready.as_ref().expect("ready").as_fd(),
        rustix::io::FdFlags::CLOEXEC,
    );
    let tell = crate::shim::tell;
    let cfg: ExecConfig = match state::read_json(config) {
        Ok(c) => c,
        Err(e) => {
            tell(&mut ready, &format!("reading {}: {e}", config.display()));
            return 125;
        }
    };
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    let rt = runtime::open(
        &cfg.runtime,
        cfg.runtime_path.as_deref(),
        &cfg.runtime_state,
    );
    let io = (|| -> std::io::Result<(ProcessIo, Option<UnixListener>)> {
        let stdio = [dup_std(0)?, dup_std(1)?, dup_std(2)?];
        if cfg.tty {
            let _ = std::fs::remove_file(&cfg.console_socket);
            let l = UnixListener::bind(&cfg.console_socket)?;
            Ok((
                ProcessIo::Console {
                    socket: cfg.console_socket.clone(),
                    stdio,
                },
                Some(l),
            ))
        } else {
            let [stdin, stdout, stderr] = stdio;
            Ok((
                ProcessIo::Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
                None,
            ))
        }
    })();
    let (io, listener) = match io {
        Ok(x) => x,
        Err(e) => {
            tell(&mut ready, &format!("setting up the exec's stdio: {e}"));
            return 125;
        }
    };
    crate::shim::default_sigpipe();
    let pid = match rt.exec(&cfg.id, &cfg.process, io) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::remove_file(&cfg.console_socket);
            tell(&mut ready, &e.0);
            return crate::start_error_code(&e.0);
        }
    };
    let master = match listener.as_ref().map(receive_console).transpose() {
        Ok(m) => m,
        Err(e) => {
            tell(&mut ready, &e);
            return 125;
        }
    };
    let _ = std::fs::remove_file(&cfg.console_socket);
    tell(&mut ready, &format!("ok {pid}"));
    match master {
        Some(m) => relay(File::from(m), pid),
        None => loop {
            match crate::shim::wait_any(true) {
                Some((p, code)) if p == pid => return code,
                Some(_) => {}
                None => return 255,
            }
        },
    }
}
