//! The attach protocol between a shim and its clients, over a unix stream socket: frames
//! of docker's multiplexed-stream shape (one byte kind, three zero bytes, a big-endian u32
//! length, the payload), in both directions.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Frame kinds. Output from the shim uses docker's stream numbers.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Shim to client: the process exited; payload is the exit code (i32, big-endian).
pub const EXIT: u8 = 3;
/// Client to shim: no more stdin.
pub const STDIN_CLOSE: u8 = 4;
/// Client to shim: the terminal's size (rows, cols as u16 big-endian).
pub const RESIZE: u8 = 5;
/// Client to shim, first frame: which streams it wants (`want_*` bits).
pub const HELLO: u8 = 6;
/// Client to shim, after EXIT, from the client that took the cleanup over: paths it set
/// aside in the store's trash (NUL-terminated), for the shim to delete. The shim answers
/// with an empty one when it has taken them.
pub const SWEEP: u8 = 7;

pub const WANT_STDIN: u8 = 1;
pub const WANT_STDOUT: u8 = 2;
pub const WANT_STDERR: u8 = 4;
/// The client cleans up after the exit itself (the shim skips its exit command).
pub const WANT_CLEANUP: u8 = 8;
/// With `WANT_CLEANUP`: the client then hands over what it set aside (`SWEEP`), closes
/// its side, and waits for the shim to close the connection.
pub const WANT_SWEEP: u8 = 16;

pub const HEADER: usize = 8;

pub fn header(kind: u8, len: usize) -> [u8; HEADER] {
    let n = (len as u32).to_be_bytes();
    [kind, 0, 0, 0, n[0], n[1], n[2], n[3]]
}

/// One frame: its header and `payload`.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&header(kind, payload.len()));
    buf.extend_from_slice(payload);
    buf
}

pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&frame(kind, payload))
}

/// `write_frame` on a socket through [`send_all`]: a peer that is gone is an error.
pub fn send_frame(sock: impl std::os::fd::AsFd, kind: u8, payload: &[u8]) -> io::Result<()> {
    send_all(sock, &frame(kind, payload))
}

/// A `SWEEP` frame's payload: each path NUL-terminated (a path has no NUL).
pub fn sweep_payload(paths: &[PathBuf]) -> Vec<u8> {
    let mut payload = Vec::new();
    for p in paths {
        payload.extend_from_slice(p.as_os_str().as_bytes());
        payload.push(0);
    }
    payload
}

/// The paths of a `SWEEP` frame's payload.
pub fn sweep_paths(payload: &[u8]) -> impl Iterator<Item = PathBuf> + '_ {
    payload
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
}

/// Sends all of `bytes` on a socket with `MSG_NOSIGNAL`: a peer that is gone is an error
/// here, not a SIGPIPE (strata's processes restore SIGPIPE's default action).
pub fn send_all(sock: impl std::os::fd::AsFd, bytes: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        sent += rustix::net::send(&sock, &bytes[sent..], rustix::net::SendFlags::NOSIGNAL)?;
    }
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut h[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], payload)))
}

/// Splits buffered bytes into complete frames, leaving a partial one in `buf`.
pub fn take_frames(buf: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let h = &buf[at..at + HEADER];
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if buf.len() - at - HEADER < len {
            break;
        }
        out.push((h[0], buf[at + HEADER..at + HEADER + len].to_vec()));
        at += HEADER + len;
    }
    buf.drain(..at);
    out
}
