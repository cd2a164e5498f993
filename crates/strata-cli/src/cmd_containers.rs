//! Container commands: create, ps, rm, container prune, inspect, commit, diff, export,
//! mount, umount, rename.

use crate::format::{Formatter, Row};
use crate::units::{created_at, human_size, since};
use crate::{CmdResult, Failure};
use clap::Args;
use serde_json::json;
use std::io::{self, Write};
use std::path::PathBuf;
use strata_engine::{
    CommitOptions, Container, CreateOptions, Engine, EngineError, HostConfig, RestartPolicyConfig,
};

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 125,
        message: msg.into(),
    }
}

pub(crate) fn parse_labels(labels: &[String]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .unwrap_or((l.clone(), String::new()))
        })
        .collect()
}

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct CreateArgs {
    /// Print help (docker's `-h` is --hostname here)
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set meta data on a container
    #[arg(short, long = "label")]
    label: Vec<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Automatically remove the container when it exits (its writable layer is volatile)
    #[arg(long)]
    rm: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Signal to stop the container
    #[arg(long)]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long, allow_negative_numbers = true)]
    stop_timeout: Option<i64>,
    /// Restart policy to apply when a container exits (no, always, unless-stopped, on-failure[:N])
    #[arg(long, default_value = "no")]
    restart: String,
    /// Runtime to use for this container (native, runc, or one added with --add-runtime)
    #[arg(long)]
    runtime: Option<String>,
    /// Connect a container to a network (none, host, container:NAME)
    #[arg(long, alias = "net", default_value = "none")]
    network: String,
    /// PID namespace to use (host)
    #[arg(long)]
    pid: Option<String>,
    /// IPC mode to use (host, private, shareable)
    #[arg(long)]
    ipc: Option<String>,
    /// UTS namespace to use (host)
    #[arg(long)]
    uts: Option<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Memory limit
    #[arg(short, long)]
    memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long, allow_negative_numbers = true)]
    memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long)]
    cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    cpuset_cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long, allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable
    #[arg(long)]
    blkio_weight: Option<u16>,
    /// Limit read rate (bytes per second) from a device (DEVICE:RATE)
    #[arg(long = "device-read-bps")]
    device_read_bps: Vec<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    privileged: bool,
    /// Security Options (no-new-privileges, seccomp=unconfined|PROFILE.json)
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Mount a tmpfs directory (PATH[:OPTIONS])
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    init: bool,
    /// Size of /dev/shm
    #[arg(long)]
    shm_size: Option<String>,
    /// Storage driver options for the container (size=SIZE: btrfs)
    #[arg(long = "storage-opt")]
    storage_opt: Vec<String>,
    /// Bind mount a volume ([NAME|/HOST:]/PATH[:ro|rw][,nocopy])
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount (type=volume|bind|tmpfs,source=,target=,readonly,...)
    #[arg(long)]
    mount: Vec<String>,
    /// Mount volumes from the specified container(s) (CONTAINER[:ro|rw])
    #[arg(long = "volumes-from")]
    volumes_from: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn bytes_flag(flag: &str, v: &Option<String>) -> Result<i64, Failure> {
    match v.as_deref() {
        None => Ok(0),
        Some("-1") => Ok(-1),
        Some(s) => crate::units::parse_bytes(s).ok_or_else(|| {
            usage(format!(
                "invalid size for {flag}: {s:?}: use a number with an optional unit (b, k, m, g), e.g. 32m"
            ))
        }),
    }
}

impl CreateArgs {
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    pub fn tty(&self) -> bool {
        self.tty
    }

    pub fn auto_remove(&self) -> bool {
        self.rm
    }

    /// What the flags ask of `create`.
    pub fn options(&self) -> Result<CreateOptions, Failure> {
        let env = collect_env(self)?;
        let (policy, retries) = match self.restart.split_once(':') {
            Some((p, n)) => (
                p.to_string(),
                n.parse().map_err(|_| {
                    usage(format!(
                        "invalid restart policy {:?}: on-failure[:N] takes a number",
                        self.restart
                    ))
                })?,
            ),
            None => (self.restart.clone(), 0),
        };
        if self.rm && policy != "no" {
            return Err(usage("Conflicting options: --restart and --rm"));
        }
        let mut read_bps = Vec::new();
        for d in &self.device_read_bps {
            let (path, rate) = d.rsplit_once(':').ok_or_else(|| {
                usage(format!(
                    "invalid --device-read-bps {d:?}: use DEVICE:RATE, e.g. /dev/sda:1mb"
                ))
            })?;
            let rate = crate::units::parse_bytes(rate).ok_or_else(|| {
                usage(format!("invalid rate in --device-read-bps {d:?}: e.g. 1mb"))
            })?;
            read_bps.push(strata_exec::spec::ThrottleDevice {
                path: path.to_string(),
                rate: rate as u64,
            });
        }
        let host = HostConfig {
            runtime: self.runtime.clone().unwrap_or_default(),
            network_mode: self.network.clone(),
            pid_mode: self.pid.clone().unwrap_or_default(),
            ipc_mode: self.ipc.clone().unwrap_or_default(),
            uts_mode: self.uts.clone().unwrap_or_default(),
            privileged: self.privileged,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            security_opt: self.security_opt.clone(),
            readonly_rootfs: self.read_only,
            tmpfs: self
                .tmpfs
                .iter()
                .map(|t| match t.split_once(':') {
                    Some((p, o)) => (p.to_string(), o.to_string()),
                    None => (t.clone(), String::new()),
                })
                .collect(),
            extra_hosts: self.add_host.clone(),
            restart_policy: RestartPolicyConfig {
                name: policy,
                maximum_retry_count: retries,
            },
            shm_size: bytes_flag("--shm-size", &self.shm_size)?.max(0) as u64,
            init: self.init,
            binds: self.volume.clone(),
            volumes_from: self.volumes_from.clone(),
            storage_opt: crate::key_values("--storage-opt", &self.storage_opt, "size=10G")?
                .into_iter()
                .collect(),
            resources: strata_exec::spec::Resources {
                memory: bytes_flag("--memory", &self.memory)?,
                memory_swap: bytes_flag("--memory-swap", &self.memory_swap)?,
                memory_reservation: bytes_flag("--memory-reservation", &self.memory_reservation)?,
                nano_cpus: self.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
                cpu_shares: self.cpu_shares.unwrap_or(0),
                cpuset_cpus: self.cpuset_cpus.clone().unwrap_or_default(),
                pids_limit: self.pids_limit,
                blkio_weight: self.blkio_weight.unwrap_or(0),
                blkio_device_read_bps: read_bps,
            },
            ..Default::default()
        };
        if let Some(s) = &self.stop_signal {
            strata_engine::parse_signal(s).ok_or_else(|| usage(format!("invalid signal: {s}")))?;
        }
        Ok(CreateOptions {
            name: self.name.clone(),
            image: self.image.clone(),
            cmd: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env,
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
            labels: parse_labels(&self.label),
            hostname: self.hostname.clone(),
            auto_remove: self.rm,
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            tty: self.tty,
            open_stdin: self.interactive,
            stdin_once: false,
            host,
            mounts: self.mount.clone(),
        })
    }
}

/// `-e NAME` takes NAME's value from the environment, as docker does; env files hold one
/// `NAME=value` or `NAME` per line, `#` comments.
fn collect_env(a: &CreateArgs) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    let resolve = |e: &str| -> Option<String> {
        if e.contains('=') {
            Some(e.to_string())
        } else {
            std::env::var(e).ok().map(|v| format!("{e}={v}"))
        }
    };
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| usage(format!("open {}: {e}", f.display())))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(resolve),
        );
    }
    out.extend(a.env.iter().filter_map(|e| resolve(e)));
    Ok(out)
}

pub fn create(engine: &Engine, a: CreateArgs) -> CmdResult {
    let c = engine.create_container(&a.options()?)?;
    println!("{}", c.id);
    Ok(())
}

#[derive(Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_negative_numbers = true)]
    last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    latest: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
    ("Size", "SIZE"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

/// docker's State ("running", "exited", ...) and Status ("Up 2 minutes") of a container.
pub(crate) fn container_state(
    engine: &Engine,
    c: &Container,
) -> Result<(&'static str, String), Failure> {
    use strata_exec::state::Status;
    let st = engine.run_state(c)?;
    let ago = |t: &str| since(Some(t));
    Ok(match st.status {
        Status::Running if engine.is_paused(c) => {
            ("paused", format!("Up {} (Paused)", up_for(&st.started_at)))
        }
        Status::Running => ("running", format!("Up {}", up_for(&st.started_at))),
        Status::Restarting => (
            "restarting",
            format!("Restarting ({}) {}", st.exit_code, ago(&st.finished_at)),
        ),
        Status::Exited => (
            "exited",
            format!("Exited ({}) {}", st.exit_code, ago(&st.finished_at)),
        ),
        Status::Created => ("created", "Created".to_string()),
    })
}

fn up_for(started: &str) -> String {
    let secs = chrono::DateTime::parse_from_rfc3339(started)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(0);
    crate::units::human_duration(secs)
}

fn matches_filter(engine: &Engine, c: &Container, spec: &str) -> Result<bool, Failure> {
    let (k, v) = spec.split_once('=').ok_or_else(|| {
        usage(format!(
            "bad format of filter (expected name=value): {spec}"
        ))
    })?;
    Ok(match k {
        "status" => {
            if ![
                "created",
                "restarting",
                "running",
                "removing",
                "paused",
                "exited",
                "dead",
            ]
            .contains(&v)
            {
                return Err(usage(format!("invalid filter 'status={v}'")));
            }
            container_state(engine, c)?.0 == v
        }
        "name" => c.name.contains(v),
        "id" => c.id.starts_with(v),
        "ancestor" => {
            engine
                .resolve_image(v)
                .map(|d| d == c.image)
                .unwrap_or(false)
                || c.image_name == v
        }
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
            None => c.config.labels.contains_key(v),
        },
        _ => {
            return Err(usage(format!(
                "invalid filter '{k}': ps accepts status, name, id, ancestor and label"
            )))
        }
    })
}

pub fn ps(engine: &Engine, a: PsArgs) -> CmdResult {
    let list = engine.list_containers()?;
    let explicit_all = a.all || a.latest || a.last >= 0;
    // `ps` alone lists the running containers, as docker's.
    let only_running = !explicit_all && !a.filter.iter().any(|f| f.starts_with("status="));
    let mut kept = Vec::new();
    let mut states = Vec::new();
    for c in list {
        let state = container_state(engine, &c)?;
        if only_running && !matches!(state.0, "running" | "paused" | "restarting") {
            continue;
        }
        let mut ok = true;
        for f in &a.filter {
            ok &= matches_filter(engine, &c, f)?;
        }
        if ok {
            kept.push(c);
            states.push(state);
        }
    }
    if a.latest {
        kept.truncate(1);
    } else if a.last >= 0 {
        kept.truncate(a.last as usize);
    }
    let mut out = io::stdout().lock();
    if a.quiet {
        for c in &kept {
            writeln!(out, "{}", if a.no_trunc { &c.id } else { c.short_id() })?;
        }
        return Ok(());
    }
    let want_size = a.size || a.format.as_deref().is_some_and(|f| f.contains(".Size"));
    let sizes = if want_size {
        engine.container_sizes(&kept)?
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for (i, c) in kept.iter().enumerate() {
        let command = c.command().join(" ");
        let quoted = format!("\"{command}\"");
        let shown = if a.no_trunc || quoted.chars().count() <= 20 {
            quoted
        } else {
            format!("{}…\"", quoted.chars().take(19).collect::<String>())
        };
        let size = match sizes.get(i) {
            Some(s) => format!("{} (virtual {})", human_size(s.rw), human_size(s.root_fs)),
            None => String::new(),
        };
        let labels: Vec<String> = c
            .config
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let row = json!({
            "ID": if a.no_trunc { c.id.clone() } else { c.short_id().to_string() },
            "Image": c.image_name,
            "Command": shown,
            "CreatedAt": created_at(Some(&c.created)),
            "RunningFor": since(Some(&c.created)),
            "Status": states[i].1,
            "State": states[i].0,
            "Ports": "",
            "Names": c.name,
            "Size": size,
            "Labels": labels.join(","),
            "Mounts": volume_names(c),
            "Networks": "",
            "LocalVolumes": local_volumes(c),
        });
        rows.push(row.as_object().cloned().expect("object"));
    }
    let default = if a.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    Formatter::new(a.format.as_deref().unwrap_or(default), PS_HEADERS)?.render(&rows, &mut out)?;
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn rm(engine: &Engine, a: RmArgs) -> CmdResult {
    crate::each_name(&a.containers, |name| {
        engine.remove_container(name, a.force, a.volumes)?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// Provide filter values (e.g. 'label=<key>=<value>')
    #[arg(long = "filter")]
    filter: Vec<String>,
}

pub fn prune(engine: &Engine, a: PruneArgs) -> CmdResult {
    crate::prune_confirmed(
        a.force,
        "all stopped containers",
        "Deleted Containers:",
        || {
            let mut removed = Vec::new();
            let mut freed = 0;
            for c in engine.list_containers()? {
                let mut ok = true;
                for f in &a.filter {
                    ok &= matches_filter(engine, &c, f)?;
                }
                if ok
                    && !matches!(
                        container_state(engine, &c)?.0,
                        "running" | "paused" | "restarting"
                    )
                {
                    freed += engine.container_size(&c)?.rw;
                    removed.push(engine.remove_container(&c.id, false, false)?.id);
                }
            }
            Ok((removed, freed))
        },
    )
}

#[derive(Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG]
    reference: Option<String>,
}

pub fn commit(engine: &Engine, a: CommitArgs) -> CmdResult {
    let _ = a.pause; // nothing runs in a container yet, so there is nothing to pause
    let id = engine.commit_container(
        &a.container,
        &CommitOptions {
            reference: a.reference,
            message: a.message,
            author: a.author,
            changes: a.change,
        },
    )?;
    println!("{id}");
    Ok(())
}

#[derive(Args)]
pub struct ContainerArg {
    container: String,
}

pub fn diff(engine: &Engine, a: ContainerArg) -> CmdResult {
    let mut out = io::stdout().lock();
    for ch in engine.container_changes(&a.container)? {
        writeln!(out, "{} {}", ch.kind, ch.path)?;
    }
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    output: Option<PathBuf>,
    container: String,
}

pub fn export(engine: &Engine, a: ExportArgs) -> CmdResult {
    crate::write_archive(a.output.as_deref(), |w| {
        Ok(engine.export_container(&a.container, w)?)
    })
}

#[derive(Args)]
pub struct MountArgs {
    /// Containers to mount; none lists the mounted ones
    containers: Vec<String>,
    /// Print the listing as JSON
    #[arg(long)]
    format: Option<String>,
}

pub fn mount(engine: &Engine, a: MountArgs) -> CmdResult {
    if a.containers.is_empty() {
        for (c, p) in engine.mounted_containers()? {
            println!("{} {}", c.short_id(), p.display());
        }
        return Ok(());
    }
    for c in &a.containers {
        println!("{}", engine.mount_container(c)?.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct UmountArgs {
    /// Unmount whatever the mount count
    #[arg(short, long)]
    force: bool,
    /// Unmount all mounted containers
    #[arg(short, long)]
    all: bool,
    containers: Vec<String>,
}

pub fn umount(engine: &Engine, a: UmountArgs) -> CmdResult {
    let names: Vec<String> = if a.all {
        engine
            .mounted_containers()?
            .into_iter()
            .map(|(c, _)| c.id)
            .collect()
    } else {
        a.containers.clone()
    };
    if names.is_empty() && !a.all {
        return Err(usage("umount needs a container, or --all"));
    }
    for n in &names {
        engine.unmount_container(n, a.force || a.all)?;
        println!("{n}");
    }
    Ok(())
}

#[derive(Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub fn rename(engine: &Engine, a: RenameArgs) -> CmdResult {
    Ok(engine.rename_container(&a.container, &a.new_name)?)
}

/// `inspect` of containers, images or both (docker looks for a container first).
pub fn inspect_any(
    engine: &Engine,
    names: &[String],
    kind: Option<&str>,
    size: bool,
    format: Option<&str>,
) -> CmdResult {
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        let container = if kind != Some("image") {
            engine.inspect_container(n, size).ok()
        } else {
            None
        };
        match container {
            Some(v) => items.push(v),
            None if kind == Some("container") => missing.push(format!("No such container: {n}")),
            None => match engine.inspect_image(n) {
                Ok(d) => items.push(serde_json::to_value(d).expect("details serialise")),
                Err(EngineError::NoSuchImage(_)) => missing.push(format!("No such object: {n}")),
                Err(e) => return Err(e.into()),
            },
        }
    }
    crate::format::print_inspect(&items, format, &mut io::stdout().lock())?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: missing.join("\nError: "),
        })
    }
}

/// Rows for `system df -v`'s container section.
pub(crate) fn df_rows(du: &strata_engine::DiskUsage) -> Vec<Row> {
    du.containers
        .iter()
        .map(|u| {
            json!({
                "ID": u.container.short_id(),
                "Image": u.container.image_name,
                "Command": format!("\"{}\"", u.container.command().join(" ")),
                "LocalVolumes": local_volumes(&u.container),
                "Size": human_size(u.size.rw),
                "RunningFor": since(Some(&u.container.created)),
                "Status": "Created",
                "Names": u.container.name,
            })
            .as_object()
            .cloned()
            .expect("object")
        })
        .collect()
}

#[derive(Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long)]
    follow_link: bool,
    /// CONTAINER:SRC_PATH, or a host path, or - for a tar stream on stdin
    src: String,
    /// CONTAINER:DEST_PATH, or a host path, or - for a tar stream on stdout
    dest: String,
}

/// `CONTAINER:PATH` as docker reads it: a colon before any slash, not a local path.
fn container_part(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':')
        .filter(|(c, _)| !c.is_empty() && !c.contains('/'))
}

pub fn cp(engine: &Engine, a: CpArgs) -> CmdResult {
    let opts = strata_engine::CopyOptions {
        archive: a.archive,
        follow_link: a.follow_link,
    };
    match (container_part(&a.src), container_part(&a.dest)) {
        (Some((c, path)), None) => {
            if a.dest == "-" {
                let mut w = io::BufWriter::new(io::stdout().lock());
                engine.copy_from_container(c, path, opts, None, &mut w)?;
                w.flush()?;
                return Ok(());
            }
            let dest = PathBuf::from(&a.dest);
            let contents_only = path.ends_with("/.");
            let mut tar_bytes = Vec::new();
            if dest.is_dir() {
                engine.copy_from_container(c, path, opts, None, &mut tar_bytes)?;
                strata_engine::extract_on_host(&mut tar_bytes.as_slice(), &dest)?;
            } else if contents_only {
                std::fs::create_dir_all(&dest)
                    .map_err(|e| usage(format!("{}: {e}", dest.display())))?;
                engine.copy_from_container(c, path, opts, None, &mut tar_bytes)?;
                strata_engine::extract_on_host(&mut tar_bytes.as_slice(), &dest)?;
            } else {
                let parent = dest
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf();
                if !parent.is_dir() {
                    return Err(Failure {
                        code: 1,
                        message: format!(
                            "destination directory {} does not exist",
                            parent.display()
                        ),
                    });
                }
                let name = dest.file_name().map(|n| n.to_os_string());
                engine.copy_from_container(c, path, opts, name.as_ref(), &mut tar_bytes)?;
                strata_engine::extract_on_host(&mut tar_bytes.as_slice(), &parent)?;
            }
            Ok(())
        }
        (None, Some((c, path))) => {
            if a.src == "-" {
                engine.copy_tar_into_container(c, path, &mut io::stdin().lock(), opts)?;
            } else {
                engine.copy_into_container(std::path::Path::new(&a.src), c, path, opts)?;
            }
            Ok(())
        }
        (Some(_), Some(_)) => Err(usage("copying between containers is not supported")),
        (None, None) => Err(usage("must specify at least one container source")),
    }
}

/// The names of a container's volumes, as `ps`'s Mounts column shows them.
fn volume_names(c: &strata_engine::Container) -> String {
    let names: Vec<&str> = c
        .host
        .mount_points
        .iter()
        .filter(|m| m.kind == "volume")
        .map(|m| m.name.get(..15).unwrap_or(&m.name))
        .collect();
    names.join(",")
}

fn local_volumes(c: &strata_engine::Container) -> String {
    c.host
        .mount_points
        .iter()
        .filter(|m| m.kind == "volume")
        .count()
        .to_string()
}
