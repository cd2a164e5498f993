//! Container commands: create, ps, rm, container prune, inspect, commit, diff, export,
//! mount, umount, rename.

use crate::format::{Formatter, Row};
use crate::units::{created_at, human_size, since};
use crate::{CmdResult, Failure};
use clap::Args;
use serde_json::json;
use std::io::{self, Write};
use std::path::PathBuf;
use strata_engine::{CommitOptions, Container, CreateOptions, Engine, EngineError};

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 125,
        message: msg.into(),
    }
}

fn parse_labels(labels: &[String]) -> Vec<(String, String)> {
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
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
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
    let env = collect_env(&a)?;
    let opts = CreateOptions {
        name: a.name.clone(),
        image: a.image.clone(),
        cmd: a.command.clone(),
        entrypoint: a.entrypoint.clone(),
        env,
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        labels: parse_labels(&a.label),
        hostname: a.hostname.clone(),
        auto_remove: a.rm,
    };
    let c = engine.create_container(&opts)?;
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
            v == "created"
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
    let mut list = engine.list_containers()?;
    let explicit_all = a.all || a.latest || a.last >= 0;
    // Every container is stopped until the exec driver runs them: `ps` alone lists the
    // running ones, as docker's.
    if !explicit_all && !a.filter.iter().any(|f| f.starts_with("status=")) {
        list.clear();
    }
    let mut kept = Vec::new();
    for c in list {
        let mut ok = true;
        for f in &a.filter {
            ok &= matches_filter(engine, &c, f)?;
        }
        if ok {
            kept.push(c);
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
            "Status": "Created",
            "State": "created",
            "Ports": "",
            "Names": c.name,
            "Size": size,
            "Labels": labels.join(","),
            "Mounts": "",
            "Networks": "",
            "LocalVolumes": "0",
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
    let _ = (a.force, a.volumes); // no running containers or volumes exist yet to act on
    crate::each_name(&a.containers, |name| {
        engine.remove_container(name)?;
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
    if !a.force && !crate::confirm("all stopped containers")? {
        return Ok(());
    }
    let mut removed = Vec::new();
    let mut freed = 0;
    for c in engine.list_containers()? {
        let mut ok = true;
        for f in &a.filter {
            ok &= matches_filter(engine, &c, f)?;
        }
        if ok {
            freed += engine.container_size(&c)?.rw;
            removed.push(engine.remove_container(&c.id)?.id);
        }
    }
    crate::print_prune_report("Deleted Containers:", removed, freed);
    Ok(())
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
pub(crate) fn df_rows(engine: &Engine) -> Result<Vec<Row>, Failure> {
    Ok(engine
        .disk_usage()?
        .containers
        .iter()
        .map(|u| {
            json!({
                "ID": u.container.short_id(),
                "Image": u.container.image_name,
                "Command": format!("\"{}\"", u.container.command().join(" ")),
                "LocalVolumes": "0",
                "Size": human_size(u.size.rw),
                "RunningFor": since(Some(&u.container.created)),
                "Status": "Created",
                "Names": u.container.name,
            })
            .as_object()
            .cloned()
            .expect("object")
        })
        .collect())
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
