//! Running containers: start (through a detached shim), stop, kill, wait, restart, pause,
//! and the cleanup after an exit. The shim records a container's run state in its run
//! directory (`ROOT/containers/ID`); whoever reads it notices a shim that died and
//! finishes for it (marks the container exited, kills what is left, unmounts).

use crate::containers::Container;
use crate::error::{EngineError, Result};
use crate::Engine;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_exec::runtime::{self, Runtime};
use strata_exec::shim::STOPPED_MARK;
use strata_exec::spawn::{spawn_shim, ShimExe, SpawnOptions, Spawned};
use strata_exec::state::{self, RunState, ShimConfig, Status};
use strata_store::fsutil::SpareDirs;
use strata_store::{LockMode, StoreLock};

/// Marks that a run holds a mount reference on the container's root filesystem.
const RUN_MOUNT_MARK: &str = "rootfs-mounted";
/// How long a start waits for the previous run's shim to finish deleting the runtime
/// state (milliseconds, normally).
const SHIM_EXIT_WAIT: Duration = Duration::from_secs(10);

/// Whether a container of `network_mode` (as `create` takes it, or completed) runs in a
/// private network namespace, which its shim makes (see strata_exec::net).
fn private_network(network_mode: &str) -> bool {
    matches!(network_mode, "" | "none")
}

/// A shim started ahead of its container (`Engine::spawn_shim`).
pub struct PendingShim {
    spawned: Spawned,
}

impl PendingShim {
    /// Lets it go unused: it exits having done nothing, and is reaped.
    pub fn abandon(self) {
        self.spawned.abandon();
    }
}

/// A started container's shim, for a caller that stays attached.
pub struct Started {
    pub shim: Spawned,
    /// Identifies this start to `cleanup_container`.
    pub generation: u64,
}

/// Signal names and numbers, as `kill -s` and `--stop-signal` take them.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            let rt = name.strip_prefix("RTMIN+")?.parse::<i32>().ok()?;
            let n = libc::SIGRTMIN() + rt;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    })
}

impl Engine {
    /// Where a container's run state, bundle, log and sockets live.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn log_path(&self, c: &Container) -> PathBuf {
        self.run_dir(&c.id).join(state::LOG_FILE)
    }

    pub fn attach_socket(&self, c: &Container) -> PathBuf {
        self.run_dir(&c.id).join(state::ATTACH_SOCKET)
    }

    pub(crate) fn runtime_state_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }

    pub(crate) fn runtime_for(&self, c: &Container) -> Box<dyn Runtime> {
        let name = if c.host.runtime.is_empty() {
            runtime::NATIVE
        } else {
            &c.host.runtime
        };
        runtime::open(
            name,
            c.host.runtime_path.as_deref(),
            &self.runtime_state_dir(),
        )
    }

    /// Serialises run-state changes of one container across processes.
    fn run_lock(&self, id: &str) -> Result<StoreLock> {
        self.lock_in(&self.run_dir(id))
    }

    fn read_state(&self, id: &str) -> RunState {
        state::read_json(&self.run_dir(id).join(state::STATE_FILE)).unwrap_or_default()
    }

    /// The container's run state; a container whose shim died is finished here (marked
    /// exited with 137, its processes killed, its root filesystem released).
    pub fn run_state(&self, c: &Container) -> Result<RunState> {
        let st = self.read_state(&c.id);
        if state::alive(st.shim_pid, st.shim_start) {
            return Ok(st);
        }
        if !st.active() {
            if self.runtime_for(c).has_state(&c.id) {
                let lock = self.run_lock(&c.id)?;
                self.delete_leftover_runtime_state(c);
                drop(lock);
            }
            // The run ended but nobody cleaned up after it (the attached client that
            // took the cleanup over died first): finish now.
            if self.run_dir(&c.id).join(RUN_MOUNT_MARK).exists() {
                let lock = self.run_lock(&c.id)?;
                self.release_run_mount(c)?;
                drop(lock);
                if c.auto_remove {
                    self.remove_container(&c.id, true, true)?;
                }
            }
            return Ok(st);
        }
        let _lock = self.run_lock(&c.id)?;
        let mut st = self.read_state(&c.id);
        if !st.active() || state::alive(st.shim_pid, st.shim_start) {
            return Ok(st);
        }
        let _ = self.runtime_for(c).delete(&c.id);
        st.status = Status::Exited;
        st.pid = 0;
        st.exit_code = 137;
        st.error = "the container's shim was killed; its processes were stopped".into();
        st.finished_at = crate::records::now();
        let dir = self.run_dir(&c.id);
        state::write_json(&dir, state::STATE_FILE, &st)
            .map_err(|e| EngineError::io("recording the container's exit", e))?;
        self.release_run_mount(c)?;
        drop(_lock);
        if c.auto_remove {
            self.remove_container(&c.id, true, true)?;
        }
        Ok(st)
    }

    /// Deletes the runtime state and cgroups a shim left when it was killed between
    /// reporting its container's exit and deleting them. Under the run lock (a start
    /// holds it until its shim has recorded the new run).
    fn delete_leftover_runtime_state(&self, c: &Container) {
        let st = self.read_state(&c.id);
        let rt = self.runtime_for(c);
        if !st.active() && !st.shim_alive() && rt.has_state(&c.id) {
            let _ = rt.delete(&c.id);
        }
    }

    /// Whether a running container's processes are frozen (`pause`).
    pub fn is_paused(&self, c: &Container) -> bool {
        self.cgroup(c).frozen()
    }

    fn release_run_mount(&self, c: &Container) -> Result<()> {
        let mark = self.run_dir(&c.id).join(RUN_MOUNT_MARK);
        if mark.exists() {
            self.unmount_container(&c.id, false)?;
            let _ = std::fs::remove_file(mark);
            self.unmount_plugin_volumes(&c.id, &c.host.mount_points)?;
        }
        Ok(())
    }

    /// `start`: runs the container's process under a new shim. `client` is an attach
    /// connection handed to the shim before the process starts (so no output is lost).
    pub fn start_container(&self, name_or_id: &str, client: Option<OwnedFd>) -> Result<Started> {
        let c = self.container(name_or_id)?;
        let shim = Self::spawn_shim(client, &c.host.network_mode)?;
        self.start_container_with(&c.id, shim)
    }

    /// Starts a shim for a container to be named later (`start_container_with`): it
    /// execs, starts up and, for the `network_mode` given (as `create` takes it), makes
    /// the container's network namespace while the caller creates the container and
    /// mounts its root. `client` is an attach connection handed to it. Needs no store:
    /// `run` starts it before opening one.
    pub fn spawn_shim(client: Option<OwnedFd>, network_mode: &str) -> Result<PendingShim> {
        let mut args: Vec<&std::ffi::OsStr> = vec!["start".as_ref()];
        if private_network(network_mode) {
            args.push("--private-net".as_ref());
        }
        let spawn = SpawnOptions {
            client,
            detach: true,
            exe: ShimExe::ViewOrDisk,
            gated: true,
            ..Default::default()
        };
        let spawned = spawn_shim(&args, spawn)
            .map_err(|e| EngineError::io("starting the shim".to_string(), e))?;
        Ok(PendingShim { spawned })
    }

    /// `start` with a shim from `spawn_shim`; it is given up (and exits having done
    /// nothing) if the container cannot start.
    pub fn start_container_with(&self, name_or_id: &str, shim: PendingShim) -> Result<Started> {
        let checked = (|| {
            let c = self.container(name_or_id)?;
            let st = self.run_state(&c)?;
            if st.active() {
                return Err(EngineError::Conflict(format!(
                    "container {} is already running",
                    c.name
                )));
            }
            st.wait_for_shim(SHIM_EXIT_WAIT);
            let lock = self.run_lock(&c.id)?;
            Ok((c, lock))
        })();
        let (c, lock) = match checked {
            Ok(x) => x,
            Err(e) => {
                shim.abandon();
                return Err(e);
            }
        };
        let dir = self.run_dir(&c.id);
        self.delete_leftover_runtime_state(&c);
        let shim_error = |e| EngineError::io("starting the shim".to_string(), e);
        let mut spawned = shim.spawned;
        // shim.json says for sure; the shim's early namespace was a guess (`spawn_shim`).
        let netns = private_network(&c.host.network_mode)
            .then(|| strata_exec::shim::netns_path(spawned.child.id()));
        let started = match self.prepare_run(&c, &dir, netns) {
            Err(e) => {
                // Its go socket closes: the shim exits having done nothing.
                spawned.abandon();
                Err(e)
            }
            Ok(generation) => match spawned.go(&strata_exec::shim::go_message(&dir)) {
                Err(e) => {
                    // Gone before its go: what it said (it could not execute) tells why.
                    let said = spawned.wait_ready().err();
                    spawned.abandon();
                    Err(match said {
                        Some(message) if !message.is_empty() => {
                            EngineError::StartFailed { code: 125, message }
                        }
                        _ => shim_error(e),
                    })
                }
                Ok(()) => {
                    // While the shim creates the container: a failed checkpoint is retried
                    // by a later commit, and nothing is lost meanwhile.
                    let _ = self.db.checkpoint_if_due();
                    match spawned.wait_ready() {
                        Ok(_) => Ok(Started {
                            shim: spawned,
                            generation,
                        }),
                        Err(msg) => {
                            let _ = spawned.child.wait();
                            Err(EngineError::StartFailed {
                                code: strata_exec::start_error_code(&msg),
                                message: msg,
                            })
                        }
                    }
                }
            },
        };
        if started.is_err() {
            let _ = self.release_run_mount(&c);
        }
        drop(lock);
        started
    }

    /// What a run needs before its shim goes: the root mounted (unless it still is), the
    /// bundle and the shim's config written. Returns the run's generation. The caller
    /// releases the mount on an error.
    fn prepare_run(&self, c: &Container, dir: &Path, netns: Option<PathBuf>) -> Result<u64> {
        let netns_given = netns.is_some();
        let io = |what: &str, e: std::io::Error| EngineError::io(what.to_string(), e);
        let mark = dir.join(RUN_MOUNT_MARK);
        let rootfs = if mark.exists() {
            self.container_mount_point(&c.id)
        } else {
            let p = self.mount_container(&c.id)?;
            std::fs::write(&mark, b"").map_err(|e| io("marking the mount", e))?;
            // A root mounted before (`strata mount`) may still hold an earlier run's
            // volumes; a container without any never reads the mount table.
            if !c.host.mount_points.is_empty()
                && strata_snapshot::mount::mounts_under(&p)
                    .map_err(|e| io("reading the mount table", e))?
                    .is_empty()
            {
                self.mount_volumes(&c.id, &c.host.mount_points, &p, true)?;
            }
            p
        };
        let spec = self.run_spec(c, &rootfs, dir, netns)?;
        // The run directory is the bundle: a directory of its own would be one more to
        // make and remove on every run.
        let typed =
            strata_exec::spec::generate(&spec).map_err(|e| EngineError::Usage(e.to_string()))?;
        if c.host.runtime_path.is_none() {
            runtime::Native::new(&self.runtime_state_dir())
                .write_bundle(dir, typed)
                .map_err(|e| EngineError::StartFailed {
                    code: 125,
                    message: e.0,
                })?;
        } else {
            let json = serde_json::to_vec(&typed).expect("a spec serialises");
            std::fs::write(dir.join("config.json"), json)
                .map_err(|e| io("writing config.json", e))?;
        }
        let _ = std::fs::remove_file(dir.join(STOPPED_MARK));
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let exe = std::env::current_exe().map_err(|e| io("finding the strata binary", e))?;
        let cfg = ShimConfig {
            id: c.id.clone(),
            generation,
            runtime: c.host.runtime.clone(),
            runtime_path: c.host.runtime_path.clone(),
            runtime_state: self.runtime_state_dir(),
            tty: c.config.tty,
            open_stdin: c.config.open_stdin,
            stdin_once: c.config.stdin_once,
            restart: self.restart_policy(&c.host).unwrap_or_default(),
            private_net: netns_given,
            console_socket: self
                .root
                .join("run")
                .join(format!("{}.console", &c.id[..16])),
            cgroups_path: spec.cgroups_path.clone(),
            exit_command: vec![
                exe.display().to_string(),
                "--root".into(),
                self.root.display().to_string(),
                "container".into(),
                "cleanup".into(),
                c.id.clone(),
                generation.to_string(),
            ],
            trash: self.trash_dir(),
            spares: self
                .spares
                .as_ref()
                .map(SpareDirs::wanted)
                .unwrap_or_default(),
        };
        std::fs::create_dir_all(self.root.join("run"))
            .map_err(|e| io("creating the run directory", e))?;
        state::write_json(dir, state::SHIM_FILE, &cfg)
            .map_err(|e| io("writing the shim config", e))?;
        Ok(generation)
    }

    /// Run by a shim as its last act: releases what the run held and removes an
    /// `--rm` container. A cleanup for an earlier run than the current one does nothing.
    pub fn cleanup_container(&self, id: &str, generation: u64) -> Result<()> {
        let Ok(c) = self.container(id) else {
            return Ok(());
        };
        let lock = self.run_lock(&c.id)?;
        let cfg: ShimConfig = state::read_json(&self.run_dir(&c.id).join(state::SHIM_FILE))
            .map_err(|e| EngineError::io("reading the shim config", e))?;
        if cfg.generation != generation || self.read_state(&c.id).active() {
            return Ok(());
        }
        // A container about to be removed may leave its root mounted for the removal to
        // set aside (`Engine::root_goes_mounted`).
        if !(c.auto_remove && self.root_goes_mounted(&c)) {
            self.release_run_mount(&c)?;
        }
        drop(lock);
        if c.auto_remove {
            self.remove_container(&c.id, false, true)?;
        }
        Ok(())
    }

    /// Sends `signal` to the container's init (through a pidfd: no pid reuse races).
    fn signal_init(&self, st: &RunState, signal: i32) -> Result<()> {
        st.signal(signal)
            .map_err(|e| EngineError::io("signalling the container", e))
    }

    fn running(&self, c: &Container) -> Result<RunState> {
        let st = self.run_state(c)?;
        if st.status != Status::Running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        Ok(st)
    }

    /// `kill`: sends a signal (default KILL). The container is not restarted after.
    pub fn kill_container(&self, name_or_id: &str, signal: Option<&str>) -> Result<()> {
        let c = self.container(name_or_id)?;
        let st = self.running(&c)?;
        let sig = match signal {
            None => libc::SIGKILL,
            Some(s) => {
                parse_signal(s).ok_or_else(|| EngineError::Usage(format!("invalid signal: {s}")))?
            }
        };
        if sig == libc::SIGKILL || sig == libc::SIGTERM {
            let _ = std::fs::write(self.run_dir(&c.id).join(STOPPED_MARK), b"");
        }
        if self.is_paused(&c) && sig == libc::SIGKILL {
            let _ = self.runtime_for(&c).resume(&c.id);
        }
        self.signal_init(&st, sig)
    }

    /// Waits until the container is no longer running (or `timeout` passes: `None`).
    fn wait_exit(&self, c: &Container, timeout: Option<Duration>) -> Result<Option<RunState>> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let st = self.run_state(c)?;
            // Done when the shim has also finished its cleanup (the root filesystem is
            // unmounted by then), or has been gone for long.
            if !st.active()
                && (!state::alive(st.shim_pid, st.shim_start)
                    || start.elapsed() > Duration::from_secs(10))
            {
                return Ok(Some(st));
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// `stop`: the stop signal, then SIGKILL after `timeout` seconds (default: the
    /// container's StopTimeout, else 10). A stopped container is not restarted.
    pub fn stop_container(&self, name_or_id: &str, timeout: Option<i64>) -> Result<()> {
        let c = self.container(name_or_id)?;
        let st = self.run_state(&c)?;
        if !st.active() {
            return Ok(());
        }
        let _ = std::fs::write(self.run_dir(&c.id).join(STOPPED_MARK), b"");
        if st.status == Status::Restarting {
            // The shim sees the mark when its back-off ends and exits.
            self.idle(|| self.wait_exit(&c, None))??;
            return Ok(());
        }
        let sig = c
            .config
            .stop_signal
            .as_deref()
            .and_then(parse_signal)
            .unwrap_or(libc::SIGTERM);
        if self.is_paused(&c) {
            let _ = self.runtime_for(&c).resume(&c.id);
        }
        let secs = timeout.or(c.config.stop_timeout).unwrap_or(10);
        if secs != 0 {
            self.signal_init(&st, sig)?;
            let wait = (secs > 0).then(|| Duration::from_secs(secs as u64));
            if self.idle(|| self.wait_exit(&c, wait))??.is_some() {
                return Ok(());
            }
        }
        self.signal_init(&st, libc::SIGKILL)?;
        self.idle(|| self.wait_exit(&c, None))??;
        Ok(())
    }

    /// `wait`: blocks until the container stops; its exit code.
    pub fn wait_container(&self, name_or_id: &str) -> Result<i32> {
        let c = self.container(name_or_id)?;
        let st = self
            .idle(|| self.wait_exit(&c, None))??
            .expect("no timeout");
        Ok(st.exit_code)
    }

    pub fn pause_container(&self, name_or_id: &str) -> Result<()> {
        let c = self.container(name_or_id)?;
        self.running(&c)?;
        if self.is_paused(&c) {
            return Err(EngineError::Conflict(format!(
                "Container {} is already paused",
                c.id
            )));
        }
        self.runtime_for(&c)
            .pause(&c.id)
            .map_err(|e| EngineError::Store(format!("pausing {}: {e}", c.name)))
    }

    pub fn unpause_container(&self, name_or_id: &str) -> Result<()> {
        let c = self.container(name_or_id)?;
        self.running(&c)?;
        if !self.is_paused(&c) {
            return Err(EngineError::Conflict(format!(
                "Container {} is not paused",
                c.id
            )));
        }
        self.runtime_for(&c)
            .resume(&c.id)
            .map_err(|e| EngineError::Store(format!("unpausing {}: {e}", c.name)))
    }

    /// Removes what a run left in the run directory and the runtime's state.
    pub(crate) fn remove_run_state(&self, c: &Container) {
        // A shim still running after its container's exit is deleting the runtime state
        // itself (see `shim::start`); the run directory is not what it touches.
        if !self.read_state(&c.id).shim_alive() {
            let _ = self.runtime_for(c).delete(&c.id);
        }
        let _ = self.delete_tree(&self.run_dir(&c.id));
    }

    /// This process's commits leave due checkpoints to the wait while a container starts
    /// (`start_container_with`): `run` then syncs nothing but its own commits before its
    /// container runs.
    pub fn hold_checkpoints(&self) -> Result<()> {
        Ok(self.db.hold_checkpoints()?)
    }

    /// Runs `f` without holding the store lock: long waits (a foreground container, `wait`,
    /// `logs -f`) must not hold back other processes' deletions.
    pub fn idle<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.lock
            .unlock()
            .map_err(|e| EngineError::io("unlocking the store", e))?;
        let out = f();
        self.lock
            .lock(LockMode::Shared)
            .map_err(|e| EngineError::io("locking the store", e))?;
        Ok(out)
    }
}
