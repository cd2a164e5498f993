//! System commands: info, system df, system check.

use crate::cmd_images::image_row;
use crate::format::{Formatter, Row};
use crate::units::{binary_size, human_size};
use crate::{CmdResult, Failure};
use clap::Args;
use serde_json::json;
use std::io::{self, Write};
use strata_engine::Engine;

#[derive(Args)]
pub struct InfoArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
}

pub fn info(engine: &Engine, a: InfoArgs) -> CmdResult {
    let i = engine.info()?;
    let mut out = io::stdout().lock();
    if let Some(f) = a.format {
        let status: Vec<serde_json::Value> =
            i.driver_status.iter().map(|(k, v)| json!([k, v])).collect();
        let row = json!({
            "Containers": i.containers, "ContainersRunning": i.containers_running, "ContainersPaused": i.containers_paused, "ContainersStopped": i.containers_stopped,
            "Runtimes": i.runtimes.iter().map(|(n, p)| (n.clone(), json!({"path": p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(in-process libcontainer)".into())}))).collect::<serde_json::Map<_, _>>(),
            "DefaultRuntime": i.default_runtime, "CgroupDriver": "cgroupfs", "CgroupVersion": i.cgroup_version,
            "Images": i.images, "Layers": i.layers, "Driver": i.storage_driver, "DriverStatus": status,
            "DockerRootDir": i.root_dir, "ServerVersion": i.server_version, "KernelVersion": i.kernel_version,
            "OperatingSystem": i.operating_system, "OSType": "linux", "Architecture": i.architecture,
            "NCPU": i.cpus, "MemTotal": i.mem_total, "StoreFormat": i.store_format,
        });
        Formatter::new(&f, &[])?.render(&[row.as_object().cloned().expect("object")], &mut out)?;
        return Ok(());
    }
    let mut s = String::new();
    s += &format!(
        "Client:\n Version:    {}\n Context:    default\n Debug Mode: false\n\n",
        i.server_version
    );
    s += &format!(
        "Server:\n Containers: {}\n  Running: {}\n  Paused: {}\n  Stopped: {}\n",
        i.containers, i.containers_running, i.containers_paused, i.containers_stopped
    );
    s += &format!(
        " Images: {}\n Server Version: {}\n Storage Driver: {}\n",
        i.images, i.server_version, i.storage_driver
    );
    for (k, v) in &i.driver_status {
        s += &format!("  {k}: {v}\n");
    }
    s += &format!(" Layers: {}\n Store Format: {}\n", i.layers, i.store_format);
    s += &format!(
        " Cgroup Driver: cgroupfs\n Cgroup Version: {}\n",
        i.cgroup_version
    );
    let names: Vec<&str> = i.runtimes.iter().map(|(n, _)| n.as_str()).collect();
    s += &format!(
        " Runtimes: {}\n Default Runtime: {}\n",
        names.join(" "),
        i.default_runtime
    );
    s += " Network: none (each container gets a private network namespace with loopback only; host and container:NAME share one)\n";
    s += " Security Options:\n  seccomp\n   Profile: builtin\n";
    s += &format!(
        " Kernel Version: {}\n Operating System: {}\n OSType: linux\n Architecture: {}\n",
        i.kernel_version, i.operating_system, i.architecture
    );
    s += &format!(
        " CPUs: {}\n Total Memory: {}\n",
        i.cpus,
        binary_size(i.mem_total)
    );
    s += &format!(
        " Name: {}\n",
        rustix::system::uname().nodename().to_string_lossy()
    );
    s += &format!(" Strata Root Dir: {}\n", i.root_dir);
    out.write_all(s.as_bytes())?;
    for w in &i.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok(())
}

#[derive(Args)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    verbose: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

fn percent(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(pct) => format!("{} ({pct}%)", human_size(part)),
        None => "0B".into(),
    }
}

pub fn df(engine: &Engine, a: DfArgs) -> CmdResult {
    let du = engine.disk_usage()?;
    let mut out = io::stdout().lock();
    if a.verbose {
        writeln!(out, "Images space usage:\n")?;
        let rows: Vec<Row> = du
            .images
            .iter()
            .map(|u| {
                let mut r = image_row(&u.summary, false);
                r.insert("Containers".into(), u.containers.to_string().into());
                r
            })
            .collect();
        Formatter::new(
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}",
            &[("Repository", "REPOSITORY"), ("Tag", "TAG"), ("ID", "IMAGE ID"), ("CreatedSince", "CREATED"), ("Size", "SIZE"), ("SharedSize", "SHARED SIZE"), ("UniqueSize", "UNIQUE SIZE"), ("Containers", "CONTAINERS")],
        )?
        .render(&rows, &mut out)?;
        writeln!(out, "\nContainers space usage:\n")?;
        Formatter::new(
            "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}",
            &[("ID", "CONTAINER ID"), ("Image", "IMAGE"), ("Command", "COMMAND"), ("LocalVolumes", "LOCAL VOLUMES"), ("Size", "SIZE"), ("RunningFor", "CREATED"), ("Status", "STATUS"), ("Names", "NAMES")],
        )?
        .render(&crate::cmd_containers::df_rows(&du), &mut out)?;
        writeln!(out, "\nLocal Volumes space usage:\n")?;
        let rows: Vec<Row> = du
            .volumes
            .iter()
            .map(|v| {
                json!({"Name": v.volume.name, "Links": v.links.to_string(), "Size": human_size(v.size)})
                    .as_object()
                    .cloned()
                    .expect("object")
            })
            .collect();
        Formatter::new(
            "table {{.Name}}\t{{.Links}}\t{{.Size}}",
            &[
                ("Name", "VOLUME NAME"),
                ("Links", "LINKS"),
                ("Size", "SIZE"),
            ],
        )?
        .render(&rows, &mut out)?;
        writeln!(out, "\nBuild cache usage: 0B\n\nCACHE ID   CACHE TYPE   SIZE      CREATED   LAST USED   USAGE     SHARED")?;
        return Ok(());
    }
    let row = |t: &str, total: usize, active: usize, size: u64, reclaim: String| -> Row {
        json!({"Type": t, "TotalCount": total.to_string(), "Active": active.to_string(), "Size": human_size(size), "Reclaimable": reclaim})
            .as_object()
            .cloned()
            .expect("object")
    };
    let containers_size: u64 = du.containers.iter().map(|c| c.size.rw).sum();
    let mut ids = std::collections::HashSet::new();
    du.images.iter().for_each(|u| {
        ids.insert(u.summary.id.clone());
    });
    let rows = vec![
        row(
            "Images",
            ids.len(),
            du.images_active,
            du.images_size,
            percent(du.images_reclaimable, du.images_size),
        ),
        row(
            "Containers",
            du.containers.len(),
            0,
            containers_size,
            percent(containers_size, containers_size),
        ),
        {
            let size: u64 = du.volumes.iter().map(|v| v.size).sum();
            let unused: u64 = du
                .volumes
                .iter()
                .filter(|v| v.links == 0)
                .map(|v| v.size)
                .sum();
            let active = du.volumes.iter().filter(|v| v.links > 0).count();
            row(
                "Local Volumes",
                du.volumes.len(),
                active,
                size,
                percent(unused, size),
            )
        },
        row("Build Cache", 0, 0, 0, "0B".into()),
    ];
    Formatter::new(
        a.format.as_deref().unwrap_or(
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
        ),
        &[
            ("Type", "TYPE"),
            ("TotalCount", "TOTAL"),
            ("Active", "ACTIVE"),
            ("Size", "SIZE"),
            ("Reclaimable", "RECLAIMABLE"),
        ],
    )?
    .render(&rows, &mut out)?;
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    /// Remove leftovers found (orphaned storage, unused blobs and layers, half-done work)
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

pub fn check(engine: &Engine, a: CheckArgs) -> CmdResult {
    let r = engine.check(a.repair)?;
    let mut out = io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&r).expect("report serialises")
        )?;
    } else {
        writeln!(
            out,
            "Checked {} blobs, {} layers, {} images.",
            r.blobs_checked, r.layers_checked, r.images_checked
        )?;
        for e in &r.errors {
            writeln!(out, "ERROR: {e}")?;
        }
        for l in &r.leftovers {
            writeln!(out, "leftover: {l}")?;
        }
        for x in &r.repaired {
            writeln!(out, "repaired: {x}")?;
        }
        if r.errors.is_empty() && r.leftovers.is_empty() {
            writeln!(out, "No problems found.")?;
        } else if !r.leftovers.is_empty() && r.repaired.is_empty() {
            writeln!(
                out,
                "Run `strata system check --repair` to remove the leftovers."
            )?;
        }
    }
    if r.clean() {
        Ok(())
    } else {
        Err(Failure {
            code: 1,
            message: format!(
                "system check found {} errors and {} leftovers",
                r.errors.len(),
                r.leftovers.len()
            ),
        })
    }
}

#[derive(Args)]
pub struct ResetArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

pub fn reset(engine: Engine, a: ResetArgs) -> CmdResult {
    if !a.force
        && !crate::confirm(
            "all containers (running ones are killed), all images and all storage, and detach the storage driver's loop devices",
        )?
    {
        return Ok(());
    }
    engine.reset()?;
    Ok(())
}
