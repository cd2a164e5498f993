//! The per-container shim: a small single-threaded process, started detached by the CLI,
//! that creates the container through a runtime, owns its stdio (pipes, or a pty), writes
//! the json-file log, serves attach clients, reaps the container's init, records its exit
//! (and whether the OOM killer ended it), applies the restart policy, and finally runs
//! strata's cleanup in its place. It outlives the CLI that started it.
//!
//! File descriptors it is started with: 3, a pipe to tell the starter "ok" or the error;
//! 4 (optional), an already connected attach client, so a foreground `run` misses no output.

use crate::runtime::{self, ProcessIo, Runtime};
use crate::state::{self, RunState, ShimConfig, Status};
use crate::{logs::LineBuffer, stream};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::process::Pid;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const READY_FD: i32 = 3;
pub const CLIENT_FD: i32 = 4;
/// Open in a shim started ahead of its container's config (`SpawnOptions::gated`): the
/// container's directory on it (`go_message`) says go; its closing first says the start
/// was given up.
pub const GO_FD: i32 = 5;
/// Where the shim holds its container's private network namespace (`start --private-net`):
/// the spec joins it as `netns_path`. Each run of the container gets a new one; the last
/// goes with the shim.
pub const NETNS_FD: i32 = 6;
/// Created by `stop`/`kill` before signalling: the exit was asked for, so no restart.
pub const STOPPED_MARK: &str = "stopped";

struct Client {
    sock: UnixStream,
    want: u8,
    hello: bool,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Its stdin closing closes the container's (`run -i` without `-d`).
    stdin_once: bool,
    gone: bool,
}

/// Output buffered for a client that reads too slowly beyond this is dropped with it.
const CLIENT_BUFFER_LIMIT: usize = 8 << 20;

impl Client {
    fn new(sock: UnixStream, stdin_once: bool) -> Client {
        let _ = sock.set_nonblocking(true);
        Client {
            sock,
            want: 0,
            hello: false,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            stdin_once,
            gone: false,
        }
    }

    fn send(&mut self, kind: u8, data: &[u8]) {
        let bit = match kind {
            stream::STDOUT => stream::WANT_STDOUT,
            stream::STDERR => stream::WANT_STDERR,
            _ => 0xff,
        };
        if self.gone || !self.hello || self.want & bit == 0 {
            return;
        }
        self.outbuf
            .extend_from_slice(&stream::header(kind, data.len()));
        self.outbuf.extend_from_slice(data);
        if self.outbuf.len() > CLIENT_BUFFER_LIMIT {
            self.gone = true;
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() && !self.gone {
            match self.sock.write(&self.outbuf) {
                Ok(0) => self.gone = true,
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.gone = true,
            }
        }
    }
}

/// The container's side of stdio as the shim holds it.
struct Io {
    stdout: Option<File>,
    stderr: Option<File>,
    /// Where client stdin goes: the pipe's write end, or the pty master.
    stdin: Option<File>,
    stdin_pending: Vec<u8>,
    close_stdin_when_drained: bool,
    tty: bool,
    log: File,
    out_lines: LineBuffer,
    err_lines: LineBuffer,
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn dev_null() -> std::io::Result<OwnedFd> {
    Ok(File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into())
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    if let Ok(fl) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK);
    }
}

/// Receives the pty master a runtime sends over the console socket.
pub(crate) fn receive_console(listener: &UnixListener) -> Result<OwnedFd, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut waited = 0;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && waited < 100 => {
                std::thread::sleep(Duration::from_millis(50));
                waited += 1;
            }
            Err(e) => return Err(format!("waiting for the container's terminal: {e}")),
        }
    };
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut data = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    rustix::net::recvmsg(
        &conn,
        &mut iov,
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the container's terminal: {e}"))?;
    for msg in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err("the runtime sent no terminal".into())
}

/// Starts one run of the container: stdio, create, start. Returns the init pid.
fn launch(
    cfg: &ShimConfig,
    rt: &dyn Runtime,
    dir: &Path,
    io: &mut Option<Io>,
    log: &File,
) -> Result<i32, String> {
    let (proc_io, mine) = if cfg.tty {
        let _ = std::fs::remove_file(&cfg.console_socket);
        let listener = UnixListener::bind(&cfg.console_socket)
            .map_err(|e| format!("console socket {}: {e}", cfg.console_socket.display()))?;
        let n = || dev_null().map_err(|e| e.to_string());
        let pio = ProcessIo::Console {
            socket: cfg.console_socket.clone(),
            stdio: [n()?, n()?, n()?],
        };
        (pio, Some(listener))
    } else {
        (
            ProcessIo::Pipes {
                stdin: dev_null().map_err(|e| e.to_string())?,
                stdout: dev_null().map_err(|e| e.to_string())?,
                stderr: dev_null().map_err(|e| e.to_string())?,
            },
            None,
        )
    };
    let mut new_io = Io {
        stdout: None,
        stderr: None,
        stdin: None,
        stdin_pending: Vec::new(),
        close_stdin_when_drained: false,
        tty: cfg.tty,
        log: log.try_clone().map_err(|e| e.to_string())?,
        out_lines: LineBuffer::default(),
        err_lines: LineBuffer::default(),
    };
    let proc_io = match proc_io {
        ProcessIo::Pipes { .. } => {
            let e = |e: std::io::Error| e.to_string();
            let (out_r, out_w) = cloexec_pipe().map_err(e)?;
            let (err_r, err_w) = cloexec_pipe().map_err(e)?;
            let stdin = if cfg.open_stdin {
                let (in_r, in_w) = cloexec_pipe().map_err(e)?;
                new_io.stdin = Some(File::from(in_w));
                in_r
            } else {
                dev_null().map_err(e)?
            };
            new_io.stdout = Some(File::from(out_r));
            new_io.stderr = Some(File::from(err_r));
            ProcessIo::Pipes {
                stdin,
                stdout: out_w,
                stderr: err_w,
            }
        }
        console => console,
    };
    // The native runtime's creator also starts the container; an OCI runtime binary
    // protects itself (runc runs from its own sealed copy) and is driven from here.
    let (pid, running) = if cfg.runtime_path.is_none() {
        (create_sealed(dir, proc_io)?, true)
    } else {
        (rt.create(&cfg.id, dir, proc_io).map_err(|e| e.0)?, false)
    };
    let started = (|| -> Result<(), String> {
        if let Some(listener) = &mine {
            let master = receive_console(listener)?;
            let m = File::from(master);
            new_io.stdin = Some(m.try_clone().map_err(|e| e.to_string())?);
            new_io.stdout = Some(m);
            let _ = std::fs::remove_file(&cfg.console_socket);
        }
        if !running {
            rt.start(&cfg.id).map_err(|e| e.0)?;
        }
        Ok(())
    })();
    if let Err(e) = started {
        let _ = rt.delete(&cfg.id);
        return Err(e);
    }
    for f in [&new_io.stdout, &new_io.stderr, &new_io.stdin]
        .into_iter()
        .flatten()
    {
        set_nonblocking(f.as_fd());
    }
    *io = Some(new_io);
    Ok(pid)
}

/// Creates the container with the native runtime in a short-lived process whose binary
/// cannot be written through /proc/PID/exe (the container's init is forked from it); the
/// init becomes our child when that process exits, as we are a subreaper. The container's
/// stdio ends are its fds 0-2; it reports "ok PID" or the error on fd 3. A monitor that
/// runs from the read-only view forks it; otherwise it is started from the view (or a
/// sealed copy) of the binary.
fn create_sealed(dir: &Path, io: ProcessIo) -> Result<i32, String> {
    let stdio = match io {
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => [stdin, stdout, stderr],
        ProcessIo::Console { stdio, .. } => stdio,
    };
    let res = if crate::spawn::running_read_only() {
        create_forked(dir, stdio)
    } else {
        let opts = crate::spawn::SpawnOptions {
            exe: crate::spawn::ShimExe::Sealed,
            stdio: Some(stdio),
            ..Default::default()
        };
        let mut creator = crate::spawn::spawn_shim(&["create".as_ref(), dir.as_os_str()], opts)
            .map_err(|e| format!("starting the container's creator: {e}"))?;
        let res = creator.wait_ready();
        let _ = creator.child.wait();
        res
    };
    res?.parse()
        .map_err(|_| "the container's creator reported no pid".to_string())
}

/// `create_sealed` without an exec: a forked child arranges its fds as `create` expects
/// (stdio 0-2, the result pipe 3, nothing else) and runs it.
fn create_forked(dir: &Path, stdio: [OwnedFd; 3]) -> Result<String, String> {
    use crate::spawn::above_moved_fds;
    let e = |e: rustix::io::Errno| format!("arranging the container's creator's fds: {e}");
    let (ready_r, ready_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(e)?;
    let ready_w = above_moved_fds(ready_w).map_err(e)?;
    let [i, o, er] = stdio;
    let (i, o, er) = (
        above_moved_fds(i).map_err(e)?,
        above_moved_fds(o).map_err(e)?,
        above_moved_fds(er).map_err(e)?,
    );
    let moves = [
        (i.as_raw_fd(), 0),
        (o.as_raw_fd(), 1),
        (er.as_raw_fd(), 2),
        (ready_w.as_raw_fd(), READY_FD),
    ];
    // SAFETY: this process is single-threaded (the monitor), so the child may run
    // anything; it leaves only through _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "forking the container's creator: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        // SAFETY: in the child, on fd numbers this process owns; dup2 leaves the copies
        // without close-on-exec, as an exec'd creator would find them.
        let code = unsafe {
            let moved = moves.iter().all(|&(from, to)| libc::dup2(from, to) == to);
            let closed = libc::syscall(libc::SYS_close_range, READY_FD + 1, u32::MAX, 0) == 0;
            if moved && closed {
                create(dir)
            } else {
                1
            }
        };
        // SAFETY: leaving the forked child without running the monitor's destructors.
        unsafe { libc::_exit(code) };
    }
    drop((i, o, er, ready_w));
    let res = crate::spawn::read_ready(&mut File::from(ready_r));
    let _ = rustix::process::waitpid(
        rustix::process::Pid::from_raw(pid),
        rustix::process::WaitOptions::empty(),
    );
    res
}

/// The network namespace path a container of shim `shim_pid` joins (see `NETNS_FD`).
pub fn netns_path(shim_pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{shim_pid}/fd/{NETNS_FD}"))
}

/// Puts a new private network namespace (`lo` up) at `NETNS_FD`, in place of the one
/// `held` there (the previous run's). Nothing else of the shim's is ever at that number:
/// the starter passes nothing above `GO_FD`, the first one is made before the shim opens
/// anything, and the number stays taken while one is held.
fn make_private_net(held: &mut Option<OwnedFd>) -> Result<(), String> {
    let ns = crate::net::private_namespace()
        .map_err(|e| format!("creating the container's network namespace: {e}"))?;
    if ns.as_raw_fd() == NETNS_FD {
        *held = Some(ns);
        return Ok(());
    }
    // SAFETY: dup3 onto the number this process reserves for the namespace; it closes the
    // one held there, whose owner is then forgotten rather than dropped.
    if unsafe { libc::dup3(ns.as_raw_fd(), NETNS_FD, libc::O_CLOEXEC) } < 0 {
        return Err(format!(
            "holding the container's network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    if let Some(old) = held.take() {
        let _ = std::os::fd::IntoRawFd::into_raw_fd(old);
    }
    // SAFETY: NETNS_FD was just made a copy of `ns`, owned by nothing else.
    *held = Some(unsafe { OwnedFd::from_raw_fd(NETNS_FD) });
    Ok(())
}

/// The go socket's message (see `SpawnOptions::gated`): the directory of the container to
/// run, which the starter may choose after starting the shim, ended by a NUL (a path has
/// none), so the shim need not wait for every copy of the starter's end to close.
pub fn go_message(dir: &Path) -> Vec<u8> {
    let mut m = std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()).to_vec();
    m.push(0);
    m
}

/// Reads a `go_message` from `go`: the directory, or None when it closed first.
fn read_go_message(go: &mut File) -> Option<PathBuf> {
    let mut named = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match go.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => named.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
        if let Some(end) = named.iter().position(|b| *b == 0) {
            named.truncate(end);
            let dir = <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(named);
            return Some(PathBuf::from(dir));
        }
    }
}

/// Rust's runtime ignores SIGPIPE, and an ignored signal stays ignored across exec: a
/// process that forks a container's processes restores the default first.
pub(crate) fn default_sigpipe() {
    // SAFETY: setting a signal disposition in a single-threaded process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `strata-shim create DIR`: the native runtime's create and start, run by
/// `create_sealed`.
pub fn create(dir: &Path) -> i32 {
    default_sigpipe();
    // SAFETY: fd 3 is the result pipe by contract with the monitor.
    let mut ready = Some(unsafe { File::from_raw_fd(READY_FD) });
    let cfg: ShimConfig = match state::read_json(&dir.join(state::SHIM_FILE)) {
        Ok(c) => c,
        Err(e) => {
            tell(&mut ready, &format!("reading the shim config: {e}"));
            return 1;
        }
    };
    let dup = |fd: i32| {
        // SAFETY: 0-2 are open: the monitor gave them.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_dupfd_cloexec(b, 10)
    };
    let stdio = match (dup(0), dup(1), dup(2)) {
        (Ok(i), Ok(o), Ok(e)) => [i, o, e],
        _ => {
            tell(&mut ready, "duplicating the container's stdio");
            return 1;
        }
    };
    let io = if cfg.tty {
        ProcessIo::Console {
            socket: cfg.console_socket.clone(),
            stdio,
        }
    } else {
        let [stdin, stdout, stderr] = stdio;
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        }
    };
    let rt = runtime::Native::new(&cfg.runtime_state);
    match rt.create_and_start(&cfg.id, dir, io) {
        Ok(pid) => {
            tell(&mut ready, &format!("ok {pid}"));
            0
        }
        Err(e) => {
            tell(&mut ready, &e.0);
            1
        }
    }
}

/// How long a container runs before its shim lets go of its start-up code's pages.
const RELEASE_STARTUP_CODE_AFTER: Duration = Duration::from_millis(200);

/// Drops this process's page table entries for read-only file mappings (machine code and
/// constants of the shim and its libraries) once the container runs: setup touched
/// megabytes that the monitor loop never uses again, and they would count in the RSS of
/// every shim. The pages stay in the page cache; what runs next faults its pages back in.
/// A mapping with copied-on-write pages (relocated data) is kept: dropping those would
/// revert them to the file's contents.
fn release_startup_code() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut candidate: Option<(usize, usize)> = None;
    let mut drop_now = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            candidate = match (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                (Ok(a), Ok(b))
                    if path.starts_with('/') && perms.ends_with('p') && !perms.contains('w') =>
                {
                    Some((a, b))
                }
                _ => None,
            };
        } else if first == "Anonymous:" {
            if let Some(range) = candidate.take() {
                if f.next() == Some("0") {
                    drop_now.push(range);
                }
            }
        }
    }
    for (a, b) in drop_now {
        // SAFETY: MADV_DONTNEED on a private, read-only file mapping with no private copies
        // only zaps page table entries; the next access refaults identical file pages.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
        }
    }
}

/// waitpid(-1) with __WALL: runtimes start a container's init with clone(), whose exit
/// signal need not be SIGCHLD, and such children are invisible to a plain waitpid (rustix
/// offers no __WALL). Returns the pid and its docker-style exit code (128+N if killed).
pub(crate) fn wait_any(block: bool) -> Option<(i32, i32)> {
    let mut status = 0;
    let flags = libc::__WALL | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        if pid < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if pid <= 0 {
            return None;
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            continue;
        };
        return Some((pid, code));
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

struct Shim {
    cfg: ShimConfig,
    dir: PathBuf,
    rt: Box<dyn Runtime>,
    state: RunState,
    listener: UnixListener,
    clients: Vec<Client>,
    log: File,
}

impl Shim {
    fn save(&self) {
        let _ = state::write_json(&self.dir, state::STATE_FILE, &self.state);
    }

    fn broadcast(&mut self, kind: u8, data: &[u8]) {
        for c in &mut self.clients {
            c.send(kind, data);
        }
    }

    /// Moves container output to the log and the clients; false at end of stream.
    fn pump_output(&mut self, io: &mut Io, err: bool) -> bool {
        let mut buf = [0u8; 32 << 10];
        let f = if err {
            io.stderr.as_mut()
        } else {
            io.stdout.as_mut()
        };
        let Some(f) = f else {
            return false;
        };
        match f.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                let (kind, name, lines) = if err {
                    (stream::STDERR, "stderr", &mut io.err_lines)
                } else {
                    (stream::STDOUT, "stdout", &mut io.out_lines)
                };
                let _ = lines.push(&mut io.log, name, &buf[..n]);
                self.broadcast(kind, &buf[..n]);
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                true
            }
            // EIO from a pty master: every slave end is closed.
            Err(_) => false,
        }
    }

    fn client_input(&mut self, idx: usize, io: &mut Io) {
        let mut buf = [0u8; 32 << 10];
        let c = &mut self.clients[idx];
        loop {
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    c.gone = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.gone = true;
                    break;
                }
            }
        }
        let frames = stream::take_frames(&mut c.inbuf);
        let stdin_once = c.stdin_once;
        for (kind, payload) in frames {
            match kind {
                stream::HELLO => {
                    let c = &mut self.clients[idx];
                    c.want = payload.first().copied().unwrap_or(0);
                    c.hello = true;
                }
                stream::STDIN => io.stdin_pending.extend_from_slice(&payload),
                stream::STDIN_CLOSE if stdin_once && !io.tty => {
                    io.close_stdin_when_drained = true;
                }
                stream::RESIZE if payload.len() == 4 => {
                    if let Some(f) = io.stdout.as_ref().filter(|_| io.tty) {
                        let ws = rustix::termios::Winsize {
                            ws_row: u16::from_be_bytes([payload[0], payload[1]]),
                            ws_col: u16::from_be_bytes([payload[2], payload[3]]),
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(f, ws);
                    }
                }
                _ => {}
            }
        }
    }

    fn pump_stdin(io: &mut Io) {
        if let Some(f) = io.stdin.as_mut() {
            while !io.stdin_pending.is_empty() {
                match f.write(&io.stdin_pending) {
                    Ok(n) => {
                        io.stdin_pending.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        io.stdin_pending.clear();
                        io.stdin = None;
                        return;
                    }
                }
            }
        }
        if io.close_stdin_when_drained && io.stdin_pending.is_empty() {
            io.stdin = None;
        }
    }

    /// Serves the container until its init exits and its output is drained; returns the
    /// exit code.
    fn serve(&mut self, pid: i32, io: &mut Option<Io>) -> i32 {
        let pidfd = rustix::process::pidfd_open(
            Pid::from_raw(pid).expect("pid"),
            rustix::process::PidfdFlags::empty(),
        )
        .ok();
        let mut code = None;
        let mut out_open = true;
        let mut err_open = io.as_ref().is_some_and(|io| io.stderr.is_some());
        // Not at once: a short-lived container's exit would wait for the smaps read.
        let mut release_at = Some(Instant::now() + RELEASE_STARTUP_CODE_AFTER);
        loop {
            self.clients.retain(|c| !c.gone);
            if code.is_none() {
                code = reap_pid(pid);
            }
            if code.is_some() && !out_open && !err_open {
                break;
            }
            let Some(cur) = io.as_mut() else { break };
            let mut fds = Vec::new();
            // Slots: 0 listener, 1 pidfd, 2 stdout, 3 stderr, 4 stdin, then clients.
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            let never = PollFlags::empty();
            match &pidfd {
                Some(p) if code.is_none() => fds.push(PollFd::new(p, PollFlags::IN)),
                _ => fds.push(PollFd::new(&self.listener, never)),
            }
            // A pipe at its end is left out: poll reports a hang-up whatever was asked,
            // and the loop would spin until the init can be reaped (its namespaces are
            // torn down after its fds are closed: milliseconds).
            fds.push(match &cur.stdout {
                Some(f) if out_open => PollFd::new(f, PollFlags::IN),
                _ => PollFd::new(&self.listener, never),
            });
            fds.push(match &cur.stderr {
                Some(f) if err_open => PollFd::new(f, PollFlags::IN),
                _ => PollFd::new(&self.listener, never),
            });
            // Likewise stdin with nothing to write: a pipe whose reader is gone reports an
            // error to every poll.
            fds.push(match &cur.stdin {
                Some(f) if !cur.stdin_pending.is_empty() => PollFd::new(f, PollFlags::OUT),
                _ => PollFd::new(&self.listener, never),
            });
            for c in &self.clients {
                let mut fl = PollFlags::IN;
                if !c.outbuf.is_empty() {
                    fl |= PollFlags::OUT;
                }
                fds.push(PollFd::new(&c.sock, fl));
            }
            // Once the init is gone, output still buffered in the pipes is drained, but
            // a process that kept them open (a host-pid container's orphan) is not waited on.
            let release_in = release_at.map(|t| t.saturating_duration_since(Instant::now()));
            if release_in == Some(Duration::ZERO) {
                release_startup_code();
                release_at = None;
            }
            let timeout = match (code, release_in) {
                (Some(_), _) => Some(Duration::from_millis(200)),
                (None, Some(d)) if !d.is_zero() => Some(d),
                _ => None,
            }
            .and_then(|d| rustix::time::Timespec::try_from(d).ok());
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) if code.is_some() => break,
                Ok(_) => {}
                Err(_) => continue,
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            let hup = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
            if ready[0].contains(PollFlags::IN) {
                while let Ok((s, _)) = self.listener.accept() {
                    self.clients.push(Client::new(s, false));
                }
            }
            let cur = io.as_mut().expect("io");
            if ready[2].intersects(hup) {
                out_open = self.pump_output(cur, false);
            }
            if ready[3].intersects(hup) {
                err_open = self.pump_output(cur, true);
            }
            for i in 0..self.clients.len() {
                if ready.get(5 + i).is_some_and(|r| r.intersects(hup)) {
                    self.client_input(i, cur);
                }
                if ready.get(5 + i).is_some_and(|r| r.contains(PollFlags::OUT)) {
                    self.clients[i].flush();
                }
            }
            Self::pump_stdin(cur);
        }
        if let Some(cur) = io.as_mut() {
            let _ = cur.out_lines.flush(&mut cur.log, "stdout");
            let _ = cur.err_lines.flush(&mut cur.log, "stderr");
        }
        code.unwrap_or(255)
    }
}

pub(crate) fn set_nonblocking_file(f: &File) {
    set_nonblocking(f.as_fd());
}

/// Reaps whatever children have exited; returns `pid`'s exit code once it has.
pub(crate) fn reap_pid(pid: i32) -> Option<i32> {
    let mut found = None;
    while let Some((p, code)) = wait_any(false) {
        if p == pid {
            found = Some(code);
        }
    }
    found
}

/// Writes the one-line answer on a ready pipe (newlines in an error become spaces).
pub(crate) fn tell(ready: &mut Option<File>, msg: &str) {
    if let Some(mut f) = ready.take() {
        let line = format!("{}\n", msg.trim_end().replace('\n', " "));
        let _ = f.write_all(line.as_bytes());
    }
}

/// `strata-shim start`: runs the container whose directory (holding shim.json) the go
/// socket names. `private_net` (`--private-net`): make a private network namespace before
/// the go, as the container will most likely want one (shim.json says for sure).
pub fn start(private_net: bool) -> i32 {
    // SAFETY: fd 3 is the ready pipe by contract with the starter; fd 4 is optional.
    let mut ready = Some(unsafe { File::from_raw_fd(READY_FD) });
    let first = (rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(CLIENT_FD) }).is_ok())
        .then(|| unsafe { UnixStream::from_raw_fd(CLIENT_FD) });
    for fd in [READY_FD, CLIENT_FD] {
        // SAFETY: both are owned by the objects above from now on.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = rustix::io::fcntl_setfd(b, rustix::io::FdFlags::CLOEXEC);
    }
    // Made while the starter still creates the container (see `net`).
    let mut netns = None;
    let mut first_net = private_net.then(|| make_private_net(&mut netns));
    if rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(GO_FD) }).is_err() {
        tell(&mut ready, "strata-shim start needs its go socket (fd 5)");
        return 2;
    }
    // SAFETY: fd 5, open, is the go socket by contract with the starter; owned here.
    let mut go = unsafe { File::from_raw_fd(GO_FD) };
    let Some(dir) = read_go_message(&mut go) else {
        // Given up before the go: nothing to do.
        return 0;
    };
    drop(go);
    crate::spawn::restore_cpus();
    let dir = dir.as_path();
    let cfg: ShimConfig = match state::read_json(&dir.join(state::SHIM_FILE)) {
        Ok(c) => c,
        Err(e) => {
            tell(
                &mut ready,
                &format!("reading {}: {e}", dir.join(state::SHIM_FILE).display()),
            );
            return 1;
        }
    };
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // Not dumpable: a container sharing the host's pid namespace cannot open
    // /proc/PID/exe of the monitor (that needs CAP_SYS_PTRACE then).
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let setup = (|| -> std::io::Result<(UnixListener, File)> {
        let sock = dir.join(state::ATTACH_SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = crate::attach::bind(&sock)?;
        listener.set_nonblocking(true)?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join(state::LOG_FILE))?;
        Ok((listener, log))
    })();
    let (listener, log) = match setup {
        Ok(x) => x,
        Err(e) => {
            tell(&mut ready, &format!("setting up the shim: {e}"));
            return 1;
        }
    };
    let rt = runtime::open(
        &cfg.runtime,
        cfg.runtime_path.as_deref(),
        &cfg.runtime_state,
    );
    let mut shim = Shim {
        dir: dir.to_path_buf(),
        rt,
        state: RunState {
            generation: cfg.generation,
            shim_pid: std::process::id() as i32,
            shim_start: state::process_start_time(std::process::id() as i32).unwrap_or(0),
            ..Default::default()
        },
        listener,
        clients: Vec::new(),
        log,
        cfg,
    };
    if let Some(mut s) = first {
        // Its HELLO is read before the container starts, so it misses no output.
        let mut c = match stream::read_frame(&mut s) {
            Ok(Some((stream::HELLO, want))) => {
                let mut c = Client::new(s, shim.cfg.stdin_once);
                c.want = want.first().copied().unwrap_or(0);
                c.hello = true;
                c
            }
            _ => Client::new(s, shim.cfg.stdin_once),
        };
        c.flush();
        shim.clients.push(c);
    }
    let mut io = None;
    let mut restarts = 0u32;
    loop {
        let log = shim.log.try_clone().expect("log fd");
        let net = match (shim.cfg.private_net, first_net.take()) {
            (true, Some(made)) => made,
            (true, None) => make_private_net(&mut netns),
            (false, _) => {
                netns = None;
                Ok(())
            }
        };
        let launched = net.and_then(|()| launch(&shim.cfg, shim.rt.as_ref(), dir, &mut io, &log));
        let pid = match launched {
            Ok(pid) => pid,
            Err(e) => {
                // A container that never ran stays "created", as docker shows it.
                shim.state.status = if ready.is_some() {
                    Status::Created
                } else {
                    Status::Exited
                };
                shim.state.error = e.clone();
                shim.state.exit_code = crate::start_error_code(&e);
                shim.state.finished_at = now();
                shim.save();
                if ready.is_some() {
                    tell(&mut ready, &e);
                    return 1;
                }
                break;
            }
        };
        shim.state.status = Status::Running;
        shim.state.pid = pid;
        shim.state.started_at = now();
        shim.state.restart_count = restarts;
        shim.state.error.clear();
        shim.save();
        tell(&mut ready, "ok");
        let code = shim.serve(pid, &mut io);
        shim.state.oom_killed = crate::cgroup::Cgroup::new(&shim.cfg.cgroups_path).oom_killed();
        io = None;
        shim.state.exit_code = code;
        shim.state.finished_at = now();
        let stopped = dir.join(STOPPED_MARK).exists();
        if !shim.cfg.restart.restarts(code, restarts, stopped) {
            break;
        }
        let _ = shim.rt.delete(&shim.cfg.id);
        restarts += 1;
        // docker's back-off: 100 ms, doubling, at most a minute.
        let delay = 100u64.saturating_mul(1 << restarts.min(10)).min(60_000);
        shim.state.status = Status::Restarting;
        shim.save();
        std::thread::sleep(Duration::from_millis(delay));
        if dir.join(STOPPED_MARK).exists() {
            break;
        }
    }
    shim.state.status = Status::Exited;
    shim.state.pid = 0;
    shim.save();
    let code = shim.state.exit_code.to_be_bytes();
    // A client that said it cleans up, and got the exit, takes the cleanup over (a
    // foreground `run` does it in-process, sparing a strata start).
    let mut taker = None;
    for mut c in shim.clients {
        c.hello = true;
        c.outbuf.extend_from_slice(&stream::header(stream::EXIT, 4));
        c.outbuf.extend_from_slice(&code);
        let _ = c.sock.set_nonblocking(false);
        let _ = c.sock.set_write_timeout(Some(Duration::from_secs(5)));
        c.flush();
        if taker.is_none() && c.want & stream::WANT_CLEANUP != 0 && !c.gone && c.outbuf.is_empty() {
            taker = Some(c);
        }
    }
    if taker.is_some() {
        shim.cfg.exit_command.clear();
    }
    drop(shim.listener);
    let _ = std::fs::remove_file(dir.join(state::ATTACH_SOCKET));
    // The runtime's state and the cgroups go once the exit is out, so the client's
    // cleanup (unmounting the root, `--rm`) overlaps with this: while this process lives,
    // the engine leaves the runtime state to it, and a new start waits for it
    // (`RunState::wait_for_shim`).
    let _ = shim.rt.delete(&shim.cfg.id);
    if let Some(c) = taker.filter(|c| c.want & stream::WANT_SWEEP != 0) {
        // The client waits for the answer (the runtime state is gone by now), and
        // returns; what it set aside goes after that.
        let retired = handed_over(c);
        crate::trash::sweep(&shim.cfg.trash, &retired);
    }
    for dir in &shim.cfg.spares {
        let _ = std::fs::create_dir(dir);
    }
    if let Some((prog, args)) = shim.cfg.exit_command.split_first() {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .exec();
        let _ = writeln!(shim.log, "{{\"log\":\"strata: running the exit command: {err}\\n\",\"stream\":\"stderr\",\"time\":\"{}\"}}", now());
        return 1;
    }
    0
}

/// Reads what the client that took the cleanup over hands back (`attach::hand_over`)
/// until it is done, says it took it, and waits (ten seconds at most) for the client to
/// close the connection: the client has its answer then and is on its way out, and the
/// deletions that follow would take the CPU and the disk from its last steps. A client
/// that sends nothing within ten minutes, or goes away, hands nothing.
fn handed_over(mut c: Client) -> Vec<PathBuf> {
    let _ = c.sock.set_read_timeout(Some(Duration::from_secs(600)));
    let mut buf = std::mem::take(&mut c.inbuf);
    let mut retired = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        for (kind, payload) in stream::take_frames(&mut buf) {
            if kind == stream::SWEEP {
                retired.extend(stream::sweep_paths(&payload));
            }
        }
        match c.sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Vec::new(),
        }
    }
    // A client that is gone must not take this process with it (no SIGPIPE).
    let _ = stream::send_frame(&c.sock, stream::SWEEP, &[]);
    // It shut its side for writing before: with no events asked, only its close reports
    // (as a hang-up).
    let mut fds = [PollFd::new(&c.sock, PollFlags::empty())];
    let limit = rustix::time::Timespec::try_from(Duration::from_secs(10)).ok();
    let _ = poll(&mut fds, limit.as_ref());
    retired
}

/// Makes sure nothing of the shim's own is inherited by what it starts.
pub fn close_inherited_fds() {
    let _ = std::fs::read_dir("/proc/self/fd").map(|rd| {
        let fds: Vec<i32> = rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .filter(|fd| *fd > CLIENT_FD)
            .collect();
        for fd in fds {
            // SAFETY: setting FD_CLOEXEC on an fd number we do not own touches no Rust
            // object; a stale number (the read_dir's own fd) just fails.
            let b = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = rustix::io::fcntl_setfd(b, rustix::io::FdFlags::CLOEXEC);
        }
    });
}
