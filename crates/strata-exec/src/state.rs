//! A container's run state as its shim records it (`state.json` in the container's run
//! directory), and the shim's instructions (`shim.json`), written before it starts. The run
//! directory is also the OCI bundle (`config.json`).

use rustix::fs::RenameFlags;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
pub const SHIM_FILE: &str = "shim.json";
pub const LOG_FILE: &str = "container.log";
pub const ATTACH_SOCKET: &str = "attach.sock";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    /// Exited, and waiting out the restart policy's back-off before running again.
    Restarting,
    Exited,
}

/// When a container is started again after its process exits (`--restart`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    OnFailure(u32),
}

impl RestartPolicy {
    pub fn parse(s: &str) -> Option<RestartPolicy> {
        Some(match s {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure(0),
            _ => RestartPolicy::OnFailure(s.strip_prefix("on-failure:")?.parse().ok()?),
        })
    }

    /// docker's `HostConfig.RestartPolicy.Name`.
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure(_) => "on-failure",
        }
    }

    /// Whether a process that exited with `code`, after `restarts` restarts, runs again.
    pub fn restarts(&self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(max) => code != 0 && (*max == 0 || restarts < *max),
        }
    }
}

/// What the shim writes, atomically, at each change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub status: Status,
    pub shim_pid: i32,
    /// The shim's start time (clock ticks since boot) guards against pid reuse.
    pub shim_start: u64,
    pub pid: i32,
    pub started_at: String,
    pub finished_at: String,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub restart_count: u32,
    pub error: String,
    /// The start this state belongs to (see `ShimConfig::generation`).
    pub generation: u64,
}

impl RunState {
    /// Running, or about to run again (restart back-off): the shim still owns it.
    pub fn active(&self) -> bool {
        matches!(self.status, Status::Running | Status::Restarting)
    }

    /// Whether the shim that wrote this state still runs.
    pub fn shim_alive(&self) -> bool {
        alive(self.shim_pid, self.shim_start)
    }

    /// Waits, at most `limit`, for the shim that wrote this state to exit: after reporting
    /// the exit it still deletes the container's runtime state and cgroups.
    pub fn wait_for_shim(&self, limit: std::time::Duration) {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        use rustix::process::{pidfd_open, Pid, PidfdFlags};
        let Some(pid) = Pid::from_raw(self.shim_pid) else {
            return;
        };
        let Ok(fd) = pidfd_open(pid, PidfdFlags::empty()) else {
            return;
        };
        // Checked after opening: the pidfd then names the shim, not a reused pid.
        if !self.shim_alive() {
            return;
        }
        let limit = Timespec::try_from(limit).ok();
        let _ = poll(&mut [PollFd::new(&fd, PollFlags::IN)], limit.as_ref());
    }

    /// Sends `signal` to the container's init through a pidfd; a process already gone is
    /// no error.
    pub fn signal(&self, signal: i32) -> std::io::Result<()> {
        use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
        let Some(pid) = Pid::from_raw(self.pid) else {
            return Ok(());
        };
        let fd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // The pid could have been reused between reading the state and opening the
        // pidfd: the shim's record names the running init only while the shim lives.
        if !alive(self.shim_pid, self.shim_start) {
            return Ok(());
        }
        if !(1..=64).contains(&signal) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid signal {signal}"),
            ));
        }
        // SAFETY: 1..=64 are signal numbers; real-time ones have no named constant.
        let sig = Signal::from_named_raw(signal)
            .unwrap_or_else(|| unsafe { Signal::from_raw_unchecked(signal) });
        match pidfd_send_signal(&fd, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What the shim is to run and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    /// Distinguishes one start of the container from the next, so a late cleanup of an
    /// earlier run leaves a newer one alone.
    pub generation: u64,
    /// Runtime name and binary (`None`: native).
    pub runtime: String,
    pub runtime_path: Option<PathBuf>,
    pub runtime_state: PathBuf,
    pub tty: bool,
    pub open_stdin: bool,
    /// `--attach`-style: close the container's stdin when the first attached client's ends.
    pub stdin_once: bool,
    pub restart: RestartPolicy,
    /// Run it in a private network namespace the shim makes (`lo` up); the spec joins it
    /// at `shim::netns_path`.
    #[serde(default)]
    pub private_net: bool,
    /// Where the container's console socket lives (kept short: unix socket paths are
    /// limited to 107 bytes).
    pub console_socket: PathBuf,
    /// The cgroup (relative to each hierarchy) for OOM accounting.
    pub cgroups_path: String,
    /// Run when the container has exited for good (strata's cleanup), replacing the shim.
    pub exit_command: Vec<String>,
    /// The store's trash: a client that took the cleanup over hands the shim what it set
    /// aside there, to delete once the client has returned (`trash::sweep`).
    #[serde(default)]
    pub trash: PathBuf,
    /// Empty directories to make as the shim's last act, where nothing waits for them:
    /// the store's spare directories (strata-store's `SpareDirs`) that runs take.
    #[serde(default)]
    pub spares: Vec<PathBuf>,
}

/// Writes `value` as JSON to `dir/name` by temp file and rename (readers never see half a
/// file; run state is rewritten on each transition, so no fsync: after a crash the shim
/// is gone and the state is reconciled anyway).
pub fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    replace(dir, name, &serde_json::to_vec(value).expect("serialises"))
}

/// Replaces `dir/name` with `bytes` by temp file and rename: readers see the old content
/// or the new, never half a file; a failed write leaves no temp file behind.
///
/// An existing file is exchanged with the temp file (`RENAME_EXCHANGE`), and the old one
/// is then unlinked, rather than renamed over: ext4 (`auto_da_alloc`) allocates the blocks
/// of a file renamed over another at once, and freeing them later costs a discard where
/// the filesystem discards synchronously. Exchanged, a short-lived state file usually never
/// gets blocks at all.
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let target = dir.join(name);
    let res = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|_| {
            let cwd = rustix::fs::CWD;
            match rustix::fs::renameat_with(cwd, &tmp, cwd, &target, RenameFlags::EXCHANGE) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&tmp);
                    Ok(())
                }
                // No file to exchange with yet, or a filesystem without exchange.
                Err(_) => std::fs::rename(&tmp, &target),
            }
        });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    let data = std::fs::read(path)?;
    serde_json::from_slice(&data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A process's state letter and start time (clock ticks since boot: fields 3 and 22 of
/// /proc/PID/stat), or `None` if it is gone.
fn stat(pid: i32) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let mut fields = text[text.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.to_string();
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// A process's start time, or `None` if it is gone.
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, start)| start)
}

/// Whether the process recorded as (`pid`, `start`) still runs (and is not a zombie).
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && stat(pid).is_some_and(|(state, s)| state != "Z" && s == start)
}
