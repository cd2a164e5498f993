//! Runtimes: what creates, starts, pauses and deletes a container from a bundle. `native`
//! is youki's libcontainer in-process (only ever called from a single-threaded shim); an
//! OCI runtime binary (runc, crun, youki...) is driven by its command line, as docker's
//! `--runtime`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const NATIVE: &str = "native";

/// Where a container process's stdio goes.
pub enum ProcessIo {
    /// The three ends to hand the process as fds 0, 1, 2.
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A pseudo-terminal: the runtime sends its master over this unix socket.
    Console {
        socket: PathBuf,
        stdio: [OwnedFd; 3],
    },
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

pub type Result<T> = std::result::Result<T, RuntimeError>;

pub trait Runtime {
    fn name(&self) -> &str;
    /// Creates the container from `bundle` up to the point where its process is about to
    /// run; returns the init's pid (a child, or a grandchild reparented to the subreaper).
    fn create(&self, id: &str, bundle: &Path, io: ProcessIo) -> Result<i32>;
    /// Lets the created container's process run.
    fn start(&self, id: &str) -> Result<()>;
    /// Starts another process (`process` is a spec's process object as a file) in it.
    fn exec(&self, id: &str, process: &Path, io: ProcessIo) -> Result<i32>;
    fn pause(&self, id: &str) -> Result<()>;
    fn resume(&self, id: &str) -> Result<()>;
    /// Kills whatever is left and removes the container's runtime state and cgroup.
    fn delete(&self, id: &str) -> Result<()>;
}

/// A runtime by name: `native`, or an OCI runtime binary at `path`. `state` is the
/// directory under which it keeps its per-container state.
pub fn open(name: &str, path: Option<&Path>, state: &Path) -> Box<dyn Runtime> {
    match path {
        None => Box::new(Native {
            root: state.join(NATIVE),
        }),
        Some(p) => Box::new(OciBinary {
            name: name.to_string(),
            path: p.to_path_buf(),
            root: state.join(name),
        }),
    }
}

/// libcontainer, in this process.
pub struct Native {
    root: PathBuf,
}

fn lc_err(what: &str, e: libcontainer::error::LibcontainerError) -> RuntimeError {
    RuntimeError(format!("{what}: {e}"))
}

impl Native {
    fn builder(
        &self,
        id: &str,
        io: ProcessIo,
    ) -> Result<libcontainer::container::builder::ContainerBuilder> {
        use libcontainer::container::builder::ContainerBuilder;
        use libcontainer::syscall::syscall::SyscallType;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| RuntimeError(format!("creating {}: {e}", self.root.display())))?;
        let b = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.root)
            .map_err(|e| lc_err("runtime root", e))?;
        Ok(match io {
            ProcessIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => b.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr),
            ProcessIo::Console { socket, stdio } => {
                let [i, o, e] = stdio;
                b.with_console_socket(Some(socket))
                    .with_stdin(i)
                    .with_stdout(o)
                    .with_stderr(e)
            }
        })
    }

    fn load(&self, id: &str) -> Result<libcontainer::container::Container> {
        libcontainer::container::Container::load(self.root.join(id))
            .map_err(|e| lc_err(&format!("loading container {id}"), e))
    }
}

impl Runtime for Native {
    fn name(&self) -> &str {
        NATIVE
    }

    fn create(&self, id: &str, bundle: &Path, io: ProcessIo) -> Result<i32> {
        let c = self
            .builder(id, io)?
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| RuntimeError(e.to_string()))?;
        c.pid()
            .map(|p| p.as_raw())
            .ok_or_else(|| RuntimeError("the runtime reported no pid".into()))
    }

    fn start(&self, id: &str) -> Result<()> {
        self.load(id)?.start().map_err(|e| lc_err("starting", e))
    }

    fn exec(&self, id: &str, process: &Path, io: ProcessIo) -> Result<i32> {
        // libcontainer builds an exec's spec without the container's seccomp filter; the
        // executor loads it (see `SeccompExecutor`), which needs CAP_SYS_ADMIN at that
        // point: lent to the process through its capability sets, taken back before exec.
        let bundle = self.load(id)?.bundle().clone();
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
            .map_err(|e| RuntimeError(format!("reading the container's spec: {e}")))?;
        let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let mut process_file = process.to_path_buf();
        let mut lent = false;
        if seccomp.is_some() {
            let text = std::fs::read(process)
                .map_err(|e| RuntimeError(format!("reading {}: {e}", process.display())))?;
            let mut p: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| RuntimeError(format!("reading {}: {e}", process.display())))?;
            for set in ["bounding", "effective", "permitted"] {
                if let Some(list) = p["capabilities"][set].as_array_mut() {
                    if !list.iter().any(|c| c == SYS_ADMIN) {
                        list.push(SYS_ADMIN.into());
                        lent = true;
                    }
                }
            }
            if lent {
                process_file = process.with_extension("native.json");
                std::fs::write(&process_file, serde_json::to_vec(&p).expect("json")).map_err(
                    |e| RuntimeError(format!("writing {}: {e}", process_file.display())),
                )?;
            }
        }
        let built = self
            .builder(id, io)?
            .with_executor(SeccompExecutor { seccomp, lent })
            .as_tenant()
            .with_process(Some(&process_file))
            .with_detach(true)
            .build();
        if lent {
            let _ = std::fs::remove_file(&process_file);
        }
        Ok(built.map_err(|e| RuntimeError(e.to_string()))?.as_raw())
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.load(id)?.pause().map_err(|e| lc_err("pausing", e))
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.load(id)?.resume().map_err(|e| lc_err("unpausing", e))
    }

    fn delete(&self, id: &str) -> Result<()> {
        if !self.root.join(id).exists() {
            return Ok(());
        }
        self.load(id)?
            .delete(true)
            .map_err(|e| lc_err("deleting", e))
    }
}

const SYS_ADMIN: &str = "CAP_SYS_ADMIN";

/// Runs an exec's process as libcontainer's default executor does, after loading the
/// container's seccomp filter and, when CAP_SYS_ADMIN was only lent for that, dropping it
/// from every capability set.
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    lent: bool,
}

impl libcontainer::workload::Executor for SeccompExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        if let Some(filter) = &self.seccomp {
            libcontainer::seccomp::initialize_seccomp(filter)
                .map_err(|e| ExecutorError::Other(format!("loading the seccomp filter: {e}")))?;
        }
        if self.lent {
            use caps::{CapSet, Capability};
            // The bounding set first (that needs CAP_SETPCAP, still effective), so no
            // setuid binary can bring the capability back.
            let cap = Capability::CAP_SYS_ADMIN;
            for set in [
                CapSet::Bounding,
                CapSet::Ambient,
                CapSet::Inheritable,
                CapSet::Effective,
                CapSet::Permitted,
            ] {
                caps::drop(None, set, cap).map_err(|e| {
                    ExecutorError::Other(format!("dropping the lent CAP_SYS_ADMIN: {e}"))
                })?;
            }
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// An OCI runtime binary (runc's command line).
pub struct OciBinary {
    name: String,
    path: PathBuf,
    root: PathBuf,
}

impl OciBinary {
    /// A file name for one call's scratch output: calls from several processes at once
    /// (shim, exec, CLI) must not share one.
    fn scratch(&self, id: &str, what: &str) -> PathBuf {
        self.root
            .join(format!("{id}.{}.{what}", std::process::id()))
    }

    fn command(&self, id: &str) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(self.scratch(id, "log"))
            .arg("--log-format")
            .arg("json");
        c
    }

    /// Runs a subcommand with its stdio as given; on failure returns what the runtime
    /// logged last as an error.
    fn run(&self, id: &str, mut c: Command, what: &str) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| RuntimeError(format!("creating {}: {e}", self.root.display())))?;
        let log = self.scratch(id, "log");
        let _ = std::fs::remove_file(&log);
        let status = c.status().map_err(|e| {
            RuntimeError(format!(
                "running runtime {} ({}): {e}",
                self.name,
                self.path.display()
            ))
        })?;
        if status.success() {
            let _ = std::fs::remove_file(&log);
            return Ok(());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let msg = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "error" || v["level"] == "fatal")
            .filter_map(|v| v["msg"].as_str().map(str::to_string))
            .next_back()
            .unwrap_or_else(|| format!("{} {what} failed ({status})", self.name));
        Err(RuntimeError(msg))
    }

    fn with_io(c: &mut Command, io: ProcessIo) {
        match io {
            ProcessIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                c.stdin(Stdio::from(stdin))
                    .stdout(Stdio::from(stdout))
                    .stderr(Stdio::from(stderr));
            }
            ProcessIo::Console { socket, stdio } => {
                let [i, o, e] = stdio;
                c.arg("--console-socket")
                    .arg(socket)
                    .stdin(Stdio::from(i))
                    .stdout(Stdio::from(o))
                    .stderr(Stdio::from(e));
            }
        }
    }

    fn read_pid(&self, file: &Path) -> Result<i32> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| RuntimeError(format!("reading {}: {e}", file.display())))?;
        let _ = std::fs::remove_file(file);
        text.trim()
            .parse()
            .map_err(|_| RuntimeError(format!("{} wrote no pid", self.name)))
    }

    fn simple(&self, id: &str, verb: &str, extra: &[&str]) -> Result<()> {
        let mut c = self.command(id);
        c.arg(verb)
            .args(extra)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        self.run(id, c, verb)
    }
}

impl Runtime for OciBinary {
    fn name(&self) -> &str {
        &self.name
    }

    fn create(&self, id: &str, bundle: &Path, io: ProcessIo) -> Result<i32> {
        let pid_file = self.scratch(id, "pid");
        let mut c = self.command(id);
        c.arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        Self::with_io(&mut c, io);
        c.arg(id);
        self.run(id, c, "create")?;
        self.read_pid(&pid_file)
    }

    fn start(&self, id: &str) -> Result<()> {
        self.simple(id, "start", &[])
    }

    fn exec(&self, id: &str, process: &Path, io: ProcessIo) -> Result<i32> {
        let pid_file = self.scratch(id, "exec-pid");
        let mut c = self.command(id);
        c.arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(process)
            .arg("--pid-file")
            .arg(&pid_file);
        Self::with_io(&mut c, io);
        c.arg(id);
        self.run(id, c, "exec")?;
        self.read_pid(&pid_file)
    }

    fn pause(&self, id: &str) -> Result<()> {
        self.simple(id, "pause", &[])
    }

    fn resume(&self, id: &str) -> Result<()> {
        self.simple(id, "resume", &[])
    }

    fn delete(&self, id: &str) -> Result<()> {
        if !self.root.join(id).exists() {
            return Ok(());
        }
        self.simple(id, "delete", &["--force"])
    }
}
