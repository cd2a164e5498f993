//! strata's exec driver: the OCI runtime spec of a container (with docker's default
//! hardening), the runtimes that run it (libcontainer in-process, or an OCI runtime
//! binary), and the per-container shim that owns a running container's stdio, log and
//! exit status. The engine decides *what* runs; this crate makes it run.

pub mod attach;
pub mod bpf;
pub mod cgroup;
pub mod exec;
pub mod logs;
pub mod mount_attr;
mod net;
pub mod runtime;
mod seccomp;
pub mod shim;
pub mod spawn;
pub mod spec;
pub mod state;
pub mod stream;
pub mod trash;

/// docker's exit code for a container that could not start: 127 when the command does
/// not exist, 126 when it cannot be executed, 125 for anything else.
pub fn start_error_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("no such file") || m.contains("not found") {
        127
    } else if m.contains("permission denied")
        || m.contains("correct permissions")
        || m.contains("is a directory")
        || m.contains("exec format error")
    {
        126
    } else {
        125
    }
}
