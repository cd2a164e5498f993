//! Client side of the attach protocol, and unix socket paths longer than `sun_path` allows.

use crate::stream;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A socket path as short as it can be made: through `/proc/self/fd/N` of an open parent
/// directory when the full path would not fit in a `sockaddr_un` (107 bytes).
fn with_short_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    if path.as_os_str().len() < 100 {
        return f(path);
    }
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new("/")))?;
    let name = path.file_name().unwrap_or_default();
    use std::os::fd::AsRawFd;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    f(&short)
}

pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    with_short_path(path, |p| UnixListener::bind(p))
}

pub fn connect(path: &Path) -> std::io::Result<UnixStream> {
    with_short_path(path, |p| UnixStream::connect(p))
}

/// Says which streams a freshly connected client wants.
pub fn hello(
    sock: &mut UnixStream,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> std::io::Result<()> {
    hello_with(sock, stdin, stdout, stderr, 0)
}

/// `hello`, with extra `stream::WANT_*` bits.
pub fn hello_with(
    sock: &mut UnixStream,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    extra: u8,
) -> std::io::Result<()> {
    let mut want = extra;
    if stdin {
        want |= stream::WANT_STDIN;
    }
    if stdout {
        want |= stream::WANT_STDOUT;
    }
    if stderr {
        want |= stream::WANT_STDERR;
    }
    stream::write_frame(sock, stream::HELLO, &[want])
}

/// Copies `input` to the container's stdin until it ends (then says so), on a thread of
/// the caller's; returns at once.
pub fn forward_stdin(mut sock: UnixStream, mut input: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream::write_frame(&mut sock, stream::STDIN, &buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stream::write_frame(&mut sock, stream::STDIN_CLOSE, &[]);
    });
}

/// Tells the shim the client's terminal size.
pub fn resize(sock: &mut UnixStream, rows: u16, cols: u16) -> std::io::Result<()> {
    let mut p = [0u8; 4];
    p[..2].copy_from_slice(&rows.to_be_bytes());
    p[2..].copy_from_slice(&cols.to_be_bytes());
    stream::write_frame(sock, stream::RESIZE, &p)
}

/// For the client that took the cleanup over, once it is done: hands the shim the trees
/// it set aside in the store's trash, then waits until the shim has deleted the
/// container's runtime state (it then says it took them). The shim deletes them once
/// this client has closed the connection, so as not to compete with its last steps. An
/// error means it did not take them.
pub fn hand_over(sock: &mut UnixStream, retired: &[PathBuf]) -> std::io::Result<()> {
    stream::send_frame(&*sock, stream::SWEEP, &stream::sweep_payload(retired))?;
    sock.shutdown(std::net::Shutdown::Write)?;
    while let Some((kind, _)) = stream::read_frame(sock)? {
        if kind == stream::SWEEP {
            return Ok(());
        }
    }
    Err(std::io::ErrorKind::ConnectionAborted.into())
}

/// Copies output frames to `out`/`err` until the shim reports the exit (its code) or the
/// connection ends (`None`: detached, or the shim died).
pub fn copy_output(
    sock: &mut UnixStream,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<Option<i32>> {
    while let Some((kind, payload)) = stream::read_frame(sock)? {
        match kind {
            stream::STDOUT => {
                out.write_all(&payload)?;
                out.flush()?;
            }
            stream::STDERR => {
                err.write_all(&payload)?;
                err.flush()?;
            }
            stream::EXIT if payload.len() == 4 => {
                return Ok(Some(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ])));
            }
            _ => {}
        }
    }
    Ok(None)
}
