//! The OCI runtime spec strata hands to a runtime: the container's process, namespaces,
//! cgroup limits and docker's default hardening (capabilities, masked and read-only paths,
//! devices, seccomp). Written as JSON and checked by parsing it into oci-spec's `Spec`.

use crate::seccomp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// docker's default capabilities (CapEff 00000000a80425fb).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability this kernel knows (for `--privileged` and `--cap-add ALL`).
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// How a container shares one namespace kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsMode {
    /// A namespace of its own.
    #[default]
    Private,
    /// The host's (no new namespace).
    Host,
    /// Join an existing one (e.g. `/proc/PID/ns/net` of another container).
    Join(PathBuf),
}

/// cgroup limits, named as docker's HostConfig names them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Resources {
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpuset_cpus: String,
    pub pids_limit: Option<i64>,
    pub blkio_weight: u16,
    pub blkio_device_read_bps: Vec<ThrottleDevice>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ThrottleDevice {
    pub path: String,
    pub rate: u64,
}

/// `--security-opt seccomp=...`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Seccomp {
    #[default]
    Default,
    Unconfined,
    /// A profile in docker's JSON format, already read.
    Profile(String),
}

/// A mount beyond the defaults: a bind of a host file or dir, or a tmpfs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtraMount {
    pub destination: String,
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The user a process runs as, resolved against the container's /etc/passwd and group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

/// One process in a container: the init, or an `exec`.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub additional_gids: Vec<u32>,
    pub terminal: bool,
    pub caps: Vec<String>,
    pub no_new_privileges: bool,
}

/// Everything the exec driver needs to run a container.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub process: ProcessSpec,
    pub hostname: String,
    pub rootfs: PathBuf,
    pub read_only: bool,
    pub mounts: Vec<ExtraMount>,
    pub pid: NsMode,
    pub ipc: NsMode,
    pub uts: NsMode,
    pub net: NsMode,
    pub privileged: bool,
    pub seccomp: Seccomp,
    pub resources: Resources,
    pub cgroups_path: String,
    /// Size of /dev/shm in bytes (0: docker's 64 MiB).
    pub shm_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
}

/// The effective capability set: docker's defaults (all with `--privileged`), then
/// `--cap-add`, then `--cap-drop`; `ALL` works in both, as docker's.
pub fn capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
) -> Result<Vec<String>, SpecError> {
    let norm = |c: &str| -> Result<String, SpecError> {
        let up = c.to_ascii_uppercase();
        if up == "ALL" {
            return Ok(up);
        }
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if ALL_CAPS.contains(&full.as_str()) {
            Ok(full)
        } else {
            Err(SpecError::Invalid(format!(
                "unknown capability {c:?}: use a name such as NET_ADMIN or SYS_PTRACE (see capabilities(7))"
            )))
        }
    };
    let drop_all = drop.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    // As docker: `--cap-drop ALL` empties the set before the additions.
    let mut caps: Vec<String> = if drop_all {
        Vec::new()
    } else if privileged {
        host_caps()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for c in add {
        let c = norm(c)?;
        if c == "ALL" {
            caps = host_caps();
        } else if !caps.contains(&c) {
            caps.push(c);
        }
    }
    for c in drop {
        let c = norm(c)?;
        if c != "ALL" {
            caps.retain(|x| *x != c);
        }
    }
    Ok(caps)
}

/// "All capabilities" as docker means it: those in this process's bounding set (a
/// sandbox may lack some, such as CAP_SYS_RESOURCE here; asking for one fails).
fn host_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    // ALL_CAPS is in capability-number order.
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(n, _)| bounding & (1 << n) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

fn namespace(kind: &str, mode: &NsMode) -> Option<Value> {
    match mode {
        NsMode::Host => None,
        NsMode::Private => Some(json!({ "type": kind })),
        NsMode::Join(p) => Some(json!({ "type": kind, "path": p })),
    }
}

/// The `process` object of a spec (also what an OCI runtime's `exec --process` takes).
pub fn process_json(p: &ProcessSpec) -> Value {
    let mut v = json!({
        "terminal": p.terminal,
        "user": { "uid": p.user.uid, "gid": p.user.gid },
        "args": p.args,
        "env": p.env,
        "cwd": if p.cwd.is_empty() { "/" } else { p.cwd.as_str() },
        "capabilities": {
            "bounding": p.caps, "effective": p.caps, "permitted": p.caps,
        },
    });
    // Only when set: libcontainer orders the seccomp load by whether the field is present
    // (present means "load after dropping capabilities", which needs no_new_privs).
    if p.no_new_privileges {
        v["noNewPrivileges"] = json!(true);
    }
    if !p.additional_gids.is_empty() {
        v["user"]["additionalGids"] = json!(p.additional_gids);
    }
    v
}

fn device_rules(privileged: bool) -> Value {
    if privileged {
        return json!([{ "allow": true, "access": "rwm" }]);
    }
    // docker's default allow list: the nodes a container's /dev has, plus mknod of any.
    let allow = |t: &str, major: Option<i64>, minor: Option<i64>, access: &str| json!({ "allow": true, "type": t, "major": major, "minor": minor, "access": access });
    json!([
        { "allow": false, "access": "rwm" },
        allow("c", None, None, "m"),
        allow("b", None, None, "m"),
        allow("c", Some(1), Some(3), "rwm"),
        allow("c", Some(1), Some(5), "rwm"),
        allow("c", Some(1), Some(7), "rwm"),
        allow("c", Some(1), Some(8), "rwm"),
        allow("c", Some(1), Some(9), "rwm"),
        allow("c", Some(5), Some(0), "rwm"),
        allow("c", Some(5), Some(1), "rwm"),
        allow("c", Some(5), Some(2), "rwm"),
        allow("c", Some(136), None, "rwm"),
        allow("c", Some(10), Some(200), "rwm"),
    ])
}

fn resources_json(r: &Resources, privileged: bool) -> Result<Value, SpecError> {
    let mut v = json!({ "devices": device_rules(privileged) });
    let mut memory = serde_json::Map::new();
    if r.memory > 0 {
        memory.insert("limit".into(), json!(r.memory));
        // docker: without --memory-swap, swap may be as large as memory (limit doubled).
        let swap = match r.memory_swap {
            0 => r.memory * 2,
            s => s,
        };
        memory.insert("swap".into(), json!(swap));
    } else if r.memory_swap > 0 {
        return Err(SpecError::Invalid(
            "--memory-swap needs --memory: set both, with --memory-swap at least --memory".into(),
        ));
    }
    if r.memory_swap > 0 && r.memory_swap < r.memory {
        return Err(SpecError::Invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        ));
    }
    if r.memory_reservation > 0 {
        memory.insert("reservation".into(), json!(r.memory_reservation));
    }
    if !memory.is_empty() {
        v["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if r.nano_cpus > 0 {
        let period: i64 = 100_000;
        cpu.insert("period".into(), json!(period));
        cpu.insert("quota".into(), json!(r.nano_cpus * period / 1_000_000_000));
    }
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !cpu.is_empty() {
        v["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = r.pids_limit.filter(|p| *p > 0) {
        v["pids"] = json!({ "limit": p });
    }
    let mut blkio = serde_json::Map::new();
    if r.blkio_weight > 0 {
        if !(10..=1000).contains(&r.blkio_weight) {
            return Err(SpecError::Invalid(format!(
                "--blkio-weight {}: the range is from 10 to 1000",
                r.blkio_weight
            )));
        }
        blkio.insert("weight".into(), json!(r.blkio_weight));
    }
    if !r.blkio_device_read_bps.is_empty() {
        let mut devs = Vec::new();
        for d in &r.blkio_device_read_bps {
            let (major, minor) = block_device_numbers(&d.path)?;
            devs.push(json!({ "major": major, "minor": minor, "rate": d.rate }));
        }
        blkio.insert("throttleReadBpsDevice".into(), json!(devs));
    }
    if !blkio.is_empty() {
        v["blockIO"] = Value::Object(blkio);
    }
    Ok(v)
}

fn block_device_numbers(path: &str) -> Result<(u32, u32), SpecError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(path).map_err(|e| {
        SpecError::Invalid(format!(
            "--device-read-bps: {path}: {e}: name a block device such as /dev/sda"
        ))
    })?;
    if !md.file_type().is_block_device() {
        return Err(SpecError::Invalid(format!(
            "--device-read-bps: {path} is not a block device: name one such as /dev/sda"
        )));
    }
    let rdev = md.rdev();
    Ok((rustix::fs::major(rdev), rustix::fs::minor(rdev)))
}

fn default_mounts(s: &RunSpec) -> Vec<Value> {
    // Read-only unless privileged, as docker's: a container that could write its own
    // cgroups' files could raise its own limits.
    let sys_opts = if s.privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let shm = if s.shm_size > 0 { s.shm_size } else { 64 << 20 };
    vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts }),
        json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": sys_opts }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm}")] }),
    ]
}

/// Builds the runtime spec (config.json) for a container.
pub fn build(s: &RunSpec) -> Result<Vec<u8>, SpecError> {
    Ok(serde_json::to_vec(&generate(s)?).expect("spec serialises"))
}

/// The runtime spec for a container, checked against the spec's types.
pub fn generate(s: &RunSpec) -> Result<oci_spec::runtime::Spec, SpecError> {
    let mut namespaces: Vec<Value> = [
        ("pid", &s.pid),
        ("network", &s.net),
        ("ipc", &s.ipc),
        ("uts", &s.uts),
    ]
    .into_iter()
    .filter_map(|(k, m)| namespace(k, m))
    .collect();
    namespaces.push(json!({ "type": "mount" }));
    namespaces.push(json!({ "type": "cgroup" }));
    let mut mounts = default_mounts(s);
    mounts.extend(s.mounts.iter().map(|m| {
        json!({ "destination": m.destination, "type": m.kind, "source": m.source, "options": m.options })
    }));
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": s.cgroups_path,
        "resources": resources_json(&s.resources, s.privileged)?,
    });
    if !s.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        match &s.seccomp {
            Seccomp::Default => linux["seccomp"] = seccomp::default_profile(&s.process.caps),
            Seccomp::Unconfined => {}
            Seccomp::Profile(text) => {
                linux["seccomp"] = seccomp::from_docker_profile(text, &s.process.caps)?
            }
        }
    } else {
        linux["devices"] = host_devices();
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process_json(&s.process),
        "root": { "path": s.rootfs, "readonly": s.read_only },
        "mounts": mounts,
        "linux": linux,
    });
    if s.uts != NsMode::Host && !s.hostname.is_empty() {
        spec["hostname"] = json!(s.hostname);
    }
    // Parsing checks the document against the spec's types before a runtime sees it.
    serde_json::from_value(spec)
        .map_err(|e| SpecError::Invalid(format!("generated runtime spec is invalid: {e}")))
}

/// `--privileged`: every device node of the host's /dev (not its subdirectories), as docker.
fn host_devices() -> Value {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/dev") else {
        return json!(out);
    };
    for e in rd.flatten() {
        let Ok(md) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        let ft = md.file_type();
        let kind = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "console" | "ptmx" | "tty") {
            continue;
        }
        out.push(json!({
            "path": format!("/dev/{name}"), "type": kind,
            "major": rustix::fs::major(md.rdev()), "minor": rustix::fs::minor(md.rdev()),
            "fileMode": md.permissions().mode() & 0o7777, "uid": md.uid(), "gid": md.gid(),
        }));
    }
    json!(out)
}
