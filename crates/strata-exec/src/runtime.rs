//! Runtimes: what creates, starts, pauses and deletes a container from a bundle. `native`
//! is youki's libcontainer in-process (only ever called from a single-threaded shim); an
//! OCI runtime binary (runc, crun, youki...) is driven by its command line, as docker's
//! `--runtime`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bpf::{self, Filter};

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
    /// Whether the runtime keeps state for container `id` (until `delete`).
    fn has_state(&self, id: &str) -> bool;
}

/// A runtime by name: `native`, or an OCI runtime binary at `path`. `state` is the
/// directory under which it keeps its per-container state.
pub fn open(name: &str, path: Option<&Path>, state: &Path) -> Box<dyn Runtime> {
    match path {
        None => Box::new(Native::new(state)),
        Some(p) => Box::new(OciBinary {
            name: name.to_string(),
            path: p.to_path_buf(),
            root: state.join(name),
        }),
    }
}

/// Drops the runtime state of every container kept under `state` (a directory per
/// runtime, in it one per container named by its 64-digit id) without signalling any
/// process: for the first look after a reboot, when nothing of the last boot runs and
/// the pids that state records may name other processes now.
pub fn forget_all(state: &Path) -> std::io::Result<()> {
    let Ok(runtimes) = std::fs::read_dir(state) else {
        return Ok(());
    };
    for runtime in runtimes {
        let Ok(containers) = std::fs::read_dir(runtime?.path()) else {
            continue;
        };
        for c in containers {
            let c = c?;
            let named_by_id = c.file_name().to_str().is_some_and(|n| {
                n.len() == 64
                    && n.bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            });
            if named_by_id {
                match std::fs::remove_dir_all(c.path()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// libcontainer, in this process.
pub struct Native {
    root: PathBuf,
}

fn lc_err(what: &str, e: libcontainer::error::LibcontainerError) -> RuntimeError {
    RuntimeError(format!("{what}: {e}"))
}

impl Native {
    /// The native runtime keeping its per-container state under `state`.
    pub fn new(state: &Path) -> Native {
        Native {
            root: state.join(NATIVE),
        }
    }

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

    /// `create`, then `start`, in this process (the shim's creator); on an error the
    /// container is deleted again. The start notice goes as the container is built, so
    /// its init runs the command as soon as it is ready rather than waiting for this
    /// process to reload the state and connect to it.
    pub fn create_and_start(&self, id: &str, bundle: &Path, io: ProcessIo) -> Result<i32> {
        let mut c = self.build(id, bundle, io, true)?;
        let started = init_pid(&c).and_then(|pid| {
            c.started_at_once().map_err(|e| lc_err("starting", e))?;
            Ok(pid)
        });
        if started.is_err() {
            let _ = c.delete(true);
        }
        started
    }

    /// Creates the container from `bundle`, its process waiting to be started, or
    /// (`start_at_once`) already told to start.
    fn build(
        &self,
        id: &str,
        bundle: &Path,
        io: ProcessIo,
        start_at_once: bool,
    ) -> Result<libcontainer::container::Container> {
        let executor = Self::init_executor(bundle)?;
        self.builder(id, io)?
            .with_executor(executor)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .with_start_at_once(start_at_once)
            .build()
            .map_err(|e| RuntimeError(e.to_string()))
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
        self.build(id, bundle, io, false).and_then(|c| init_pid(&c))
    }

    fn start(&self, id: &str) -> Result<()> {
        self.load(id)?.start().map_err(|e| lc_err("starting", e))
    }

    fn exec(&self, id: &str, process: &Path, io: ProcessIo) -> Result<i32> {
        // libcontainer builds an exec's spec without the container's seccomp filter; the
        // executor loads it, as for the container's own process.
        let bundle = self.load(id)?.bundle().clone();
        let compiled = bundle.join(FILTER_FILE);
        let seccomp = if compiled.exists() {
            Seccomp::Compiled(Filter::read(&compiled).map_err(|e| RuntimeError(e.to_string()))?)
        } else {
            let spec = read_json(&bundle.join("config.json"))?;
            match spec.pointer("/linux/seccomp") {
                Some(profile) => {
                    let profile = serde_json::from_value(profile.clone())
                        .map_err(|e| RuntimeError(format!("reading the seccomp profile: {e}")))?;
                    self.compiled_or_profile(profile)?
                }
                None => Seccomp::None,
            }
        };
        let mut process_file = process.to_path_buf();
        let mut lent = Lent::new();
        if !matches!(seccomp, Seccomp::None) {
            let mut p = read_json(process)?;
            lent = lend(&mut p);
            if !lent.is_empty() {
                process_file = process.with_extension("native.json");
                write_json(&process_file, &p)?;
            }
        }
        let lent_any = !lent.is_empty();
        let built = self
            .builder(id, io)?
            .with_executor(SeccompExecutor {
                seccomp,
                lent: LentCaps::Given(lent),
            })
            .as_tenant()
            .with_process(Some(&process_file))
            .with_detach(true)
            .build();
        if lent_any {
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

    fn has_state(&self, id: &str) -> bool {
        self.root.join(id).exists()
    }

    fn delete(&self, id: &str) -> Result<()> {
        if !self.has_state(id) {
            return Ok(());
        }
        self.load(id)?
            .delete(true)
            .map_err(|e| lc_err("deleting", e))
    }
}

/// The native runtime's compiled copy of a container's seccomp filter, beside its
/// config.json (which then carries no profile, so libcontainer compiles nothing).
const FILTER_FILE: &str = "seccomp.bpf";

fn init_pid(c: &libcontainer::container::Container) -> Result<i32> {
    c.pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| RuntimeError("the runtime reported no pid".into()))
}

impl Native {
    /// Writes `spec` into `bundle` as config.json for this runtime. Its seccomp profile is
    /// compiled (once per distinct profile, then from the cache) into [`FILTER_FILE`] and
    /// taken out of the spec, so libcontainer compiles nothing; the capabilities loading
    /// it late needs are lent to the process and named in [`LENT_ANNOTATION`] for the
    /// executor to take back. A profile only libcontainer can load (it hands on a
    /// notification fd) stays, in the operand order libcontainer reads. Called by the
    /// starter before the shim goes: the container's creator, on the start's path, then
    /// neither parses nor rewrites config.json (that took it 0.57 ms here).
    pub fn write_bundle(&self, bundle: &Path, mut spec: oci_spec::runtime::Spec) -> Result<()> {
        let compiled = bundle.join(FILTER_FILE);
        let profile = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.seccomp_mut().take());
        let placed = match &profile {
            Some(p) => Filter::place_cached(&self.filter_cache(), p, bundle, FILTER_FILE)
                .map_err(|e| RuntimeError(e.to_string()))?,
            None => false,
        };
        if !placed {
            let _ = std::fs::remove_file(&compiled);
        }
        if let Some(profile) = profile.filter(|_| !placed) {
            // Left with libcontainer, in the operand order it reads.
            let mut v = serde_json::to_value(&profile).expect("a profile serialises");
            bpf::swap_masked_eq_for_libcontainer(&mut v);
            let swapped = serde_json::from_value(v)
                .map_err(|e| RuntimeError(format!("reading the seccomp profile: {e}")))?;
            if let Some(linux) = spec.linux_mut().as_mut() {
                linux.set_seccomp(Some(swapped));
            }
        }
        if let Some(process) = spec.process_mut().as_mut().filter(|_| placed) {
            let mut p = serde_json::to_value(&*process).expect("a process serialises");
            let lent = lend(&mut p);
            if !lent.is_empty() {
                *process = serde_json::from_value(p)
                    .map_err(|e| RuntimeError(format!("lending capabilities: {e}")))?;
                spec.annotations_mut()
                    .get_or_insert_with(Default::default)
                    .insert(LENT_ANNOTATION.to_string(), lent_text(&lent));
            }
        }
        let config = bundle.join("config.json");
        std::fs::write(
            &config,
            serde_json::to_vec(&spec).expect("a spec serialises"),
        )
        .map_err(|e| RuntimeError(format!("writing {}: {e}", config.display())))
    }

    /// The executor of a container's own process: the filter [`Native::write_bundle`]
    /// compiled, if any; what was lent is read back from the spec when it runs.
    fn init_executor(bundle: &Path) -> Result<SeccompExecutor> {
        let compiled = bundle.join(FILTER_FILE);
        let seccomp = match Filter::read(&compiled) {
            Ok(filter) => Seccomp::Compiled(filter),
            Err(bpf::FilterError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Seccomp::None
            }
            Err(e) => return Err(RuntimeError(e.to_string())),
        };
        Ok(SeccompExecutor {
            seccomp,
            lent: LentCaps::FromSpec,
        })
    }

    /// Where compiled filters are cached, by their profile's digest.
    fn filter_cache(&self) -> PathBuf {
        self.root.join("seccomp")
    }

    fn compiled_or_profile(&self, profile: oci_spec::runtime::LinuxSeccomp) -> Result<Seccomp> {
        Ok(
            match Filter::cached(&self.filter_cache(), &profile)
                .map_err(|e| RuntimeError(e.to_string()))?
            {
                Some(filter) => Seccomp::Compiled(filter),
                None => Seccomp::Profile(profile),
            },
        )
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    crate::state::read_json(path)
        .map_err(|e| RuntimeError(format!("reading {}: {e}", path.display())))
}

/// Replaces `path` atomically: a reader sees the old spec or the new one.
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(RuntimeError(format!(
            "{} is not a file path",
            path.display()
        )));
    };
    crate::state::write_json(dir, name, value)
        .map_err(|e| RuntimeError(format!("writing {}: {e}", path.display())))
}

/// A capability lent to a process and the sets to take it back from, in order.
type Lent = Vec<(caps::Capability, Vec<caps::CapSet>)>;

/// The annotation of a container's spec naming what [`lend`] lent its process, as
/// `CAP_SYS_ADMIN=bounding,effective,permitted CAP_SETPCAP=...`, in lending order.
pub const LENT_ANNOTATION: &str = "io.strata.seccomp.lent";

/// The set names `lent_text` writes and `lent_in` reads.
const CAP_SETS: [(&str, caps::CapSet); 3] = [
    ("bounding", caps::CapSet::Bounding),
    ("effective", caps::CapSet::Effective),
    ("permitted", caps::CapSet::Permitted),
];

fn lent_text(lent: &Lent) -> String {
    let set_name = |set: &caps::CapSet| {
        CAP_SETS
            .iter()
            .find(|(_, s)| std::mem::discriminant(s) == std::mem::discriminant(set))
            .map_or("", |(n, _)| n)
    };
    lent.iter()
        .map(|(cap, sets)| {
            let sets: Vec<&str> = sets.iter().map(set_name).collect();
            format!("{cap}={}", sets.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `spec`'s [`LENT_ANNOTATION`] names; an entry that does not parse is an error
/// (a capability must never be left lent).
fn lent_in(spec: &oci_spec::runtime::Spec) -> std::result::Result<Lent, String> {
    let Some(text) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(LENT_ANNOTATION))
    else {
        return Ok(Lent::new());
    };
    text.split_whitespace()
        .map(|entry| {
            let bad = || format!("annotation {LENT_ANNOTATION}: cannot read {entry:?}");
            let (cap, sets) = entry.split_once('=').ok_or_else(bad)?;
            let cap: caps::Capability = cap.parse().map_err(|_| bad())?;
            let sets = sets
                .split(',')
                .map(|n| {
                    CAP_SETS
                        .iter()
                        .find(|(name, _)| *name == n)
                        .map(|(_, s)| *s)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?;
            Ok((cap, sets))
        })
        .collect()
}

/// Loading a seccomp filter needs CAP_SYS_ADMIN unless no_new_privs is set, and the
/// executor loads it after libcontainer has applied the process's capabilities. So
/// CAP_SYS_ADMIN is added where the spec's `process` lacks it, with CAP_SETPCAP, which
/// dropping it from the bounding set again takes; the executor drops both before exec.
fn lend(process: &mut serde_json::Value) -> Lent {
    use caps::Capability;
    let mut lent = Lent::new();
    if process["noNewPrivileges"] == true {
        return lent;
    }
    for cap in [Capability::CAP_SYS_ADMIN, Capability::CAP_SETPCAP] {
        if cap == Capability::CAP_SETPCAP && lent.is_empty() {
            break;
        }
        let name = cap.to_string();
        let mut sets = Vec::new();
        // A set the spec leaves out is not restricted by it.
        for (key, set) in CAP_SETS {
            if let Some(list) = process["capabilities"][key].as_array_mut() {
                if !list.iter().any(|c| *c == name.as_str()) {
                    list.push(name.clone().into());
                    sets.push(set);
                }
            }
        }
        if !sets.is_empty() {
            lent.push((cap, sets));
        }
    }
    lent
}

/// A container process's seccomp filter, as the executor loads it.
#[derive(Clone, Default)]
enum Seccomp {
    #[default]
    None,
    Compiled(Filter),
    /// A profile only libcontainer can load (it hands on a notification fd), in the
    /// operand order it reads (`bpf::swap_masked_eq_for_libcontainer`).
    Profile(oci_spec::runtime::LinuxSeccomp),
}

/// What an executor takes back after loading the filter (see [`lend`]).
#[derive(Clone)]
enum LentCaps {
    /// What the spec's [`LENT_ANNOTATION`] names (the container's own process).
    FromSpec,
    /// Lent for this process (an exec, whose spec is the container's).
    Given(Lent),
}

/// Runs a container's process as libcontainer's default executor does, after loading its
/// seccomp filter and taking back what was only lent for that (see [`lend`]).
#[derive(Clone)]
struct SeccompExecutor {
    seccomp: Seccomp,
    lent: LentCaps,
}

impl libcontainer::workload::Executor for SeccompExecutor {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        let failed = |e: String| ExecutorError::Other(format!("loading the seccomp filter: {e}"));
        let lent = match &self.lent {
            LentCaps::FromSpec => lent_in(spec).map_err(ExecutorError::Other)?,
            LentCaps::Given(lent) => lent.clone(),
        };
        match &self.seccomp {
            Seccomp::None => {}
            Seccomp::Compiled(filter) => filter.load().map_err(|e| failed(e.to_string()))?,
            Seccomp::Profile(profile) => {
                libcontainer::seccomp::initialize_seccomp(profile)
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        // In `lend`'s order: CAP_SETPCAP, needed to shrink the bounding set, goes last.
        for (cap, sets) in &lent {
            for set in sets {
                caps::drop(None, *set, *cap)
                    .map_err(|e| ExecutorError::Other(format!("dropping the lent {cap}: {e}")))?;
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

    /// runc's command line keeps a container's state in `ROOT/ID`.
    fn has_state(&self, id: &str) -> bool {
        self.root.join(id).exists()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(annotation: Option<&str>) -> oci_spec::runtime::Spec {
        let mut spec = oci_spec::runtime::Spec::default();
        if let Some(a) = annotation {
            spec.set_annotations(Some([(LENT_ANNOTATION.to_string(), a.to_string())].into()));
        }
        spec
    }

    /// What `lend` lends is read back from the annotation exactly, in order; a spec
    /// without one lent nothing; an annotation that does not parse is an error, never
    /// a capability silently left with the process.
    #[test]
    fn lent_capabilities_survive_the_spec_annotation() {
        let mut process = serde_json::json!({
            "capabilities": {
                "bounding": ["CAP_CHOWN"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
            }
        });
        let lent = lend(&mut process);
        let text = lent_text(&lent);
        assert_eq!(
            text,
            "CAP_SYS_ADMIN=bounding,effective CAP_SETPCAP=bounding,effective,permitted"
        );
        let back = lent_in(&spec_with(Some(&text))).unwrap();
        assert_eq!(lent_text(&back), text);
        assert!(lent_in(&spec_with(None)).unwrap().is_empty());
        for bad in [
            "CAP_SYS_ADMIN",
            "CAP_NOPE=bounding",
            "CAP_SYS_ADMIN=inheritable",
        ] {
            assert!(lent_in(&spec_with(Some(bad))).is_err(), "{bad}");
        }
    }
}
