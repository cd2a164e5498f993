//! `volume create|ls|inspect|rm|prune`, with docker's flags and output.

use crate::cmd_containers::parse_labels;
use crate::format::{Formatter, Row};
use crate::{CmdResult, Failure};
use clap::{Args, Subcommand};
use std::io::{self, Write};
use strata_engine::{Engine, Volume, VolumeOptions};

#[derive(Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked.
#[command(defer = true)]
pub enum VolumeCommand {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Volume name
    name: Option<String>,
    /// Specify volume name
    #[arg(long = "name")]
    name_flag: Option<String>,
    /// Specify volume driver name
    #[arg(short, long)]
    driver: Option<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Set metadata for a volume
    #[arg(long)]
    label: Vec<String>,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only display volume names
    #[arg(short, long)]
    quiet: bool,
    /// Provide filter values (dangling=true|false, name=, driver=, label=KEY[=VALUE])
    #[arg(short, long)]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes (a missing one is not an error)
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    volumes: Vec<String>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
}

fn usage(message: String) -> Failure {
    Failure { code: 125, message }
}

pub fn run(engine: &Engine, cmd: VolumeCommand) -> CmdResult {
    match cmd {
        VolumeCommand::Create(a) => create(engine, a),
        VolumeCommand::Ls(a) => ls(engine, a),
        VolumeCommand::Inspect(a) => inspect(engine, a),
        VolumeCommand::Rm(a) => crate::each_name(&a.volumes, |name| {
            engine.remove_volume(name, a.force)?;
            println!("{name}");
            Ok(())
        }),
        VolumeCommand::Prune(a) => {
            let what = if a.all {
                "all local volumes not used by at least one container"
            } else {
                "all anonymous local volumes not used by at least one container"
            };
            crate::prune_confirmed(a.force, what, "Deleted Volumes:", || {
                Ok(engine.prune_volumes(a.all)?)
            })
        }
    }
}

fn create(engine: &Engine, a: CreateArgs) -> CmdResult {
    let name = match (a.name, a.name_flag) {
        (Some(x), Some(y)) if x != y => {
            return Err(usage(format!(
                "conflicting options: either specify --name or provide positional arg, not both ({x} and {y})"
            )))
        }
        (x, y) => x.or(y),
    };
    let options = crate::key_values("-o", &a.opt, "type=tmpfs")?;
    let v = engine.create_volume(&VolumeOptions {
        name,
        driver: a.driver,
        labels: parse_labels(&a.label),
        options,
    })?;
    println!("{}", v.name);
    Ok(())
}

fn ls(engine: &Engine, a: LsArgs) -> CmdResult {
    let links = engine.volume_links()?;
    let mut list = engine.list_volumes()?;
    for f in &a.filter {
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        let keep: Box<dyn Fn(&Volume) -> bool> = match k {
            "dangling" => {
                let want = crate::units::parse_bool(v)
                    .ok_or_else(|| usage(format!("invalid filter 'dangling={v}'")))?;
                let links = &links;
                Box::new(move |x: &Volume| links.contains_key(&x.name) != want)
            }
            "name" => Box::new(move |x: &Volume| x.name.contains(v)),
            "driver" => Box::new(move |x: &Volume| x.driver == v),
            "label" => Box::new(move |x: &Volume| match v.split_once('=') {
                Some((lk, lv)) => x.labels.get(lk).is_some_and(|have| have == lv),
                None => x.labels.contains_key(v),
            }),
            _ => return Err(usage(format!("invalid filter '{f}'"))),
        };
        list.retain(|x| keep(x));
    }
    let mut out = io::stdout().lock();
    if a.quiet {
        for v in &list {
            writeln!(out, "{}", v.name)?;
        }
        return Ok(());
    }
    let fmt = Formatter::new(
        a.format
            .as_deref()
            .unwrap_or("table {{.Driver}}\t{{.Name}}"),
        &[
            ("Driver", "DRIVER"),
            ("Name", "VOLUME NAME"),
            ("Mountpoint", "MOUNTPOINT"),
            ("Scope", "SCOPE"),
            ("Labels", "LABELS"),
        ],
    )?;
    let rows: Vec<Row> = list
        .iter()
        .map(|v| {
            let mut r = Row::new();
            r.insert("Driver".into(), v.driver.clone().into());
            r.insert("Name".into(), v.name.clone().into());
            r.insert("Mountpoint".into(), v.mountpoint.clone().into());
            r.insert("Scope".into(), v.scope.clone().into());
            let labels: Vec<String> = v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
            r.insert("Labels".into(), labels.join(",").into());
            r
        })
        .collect();
    fmt.render(&rows, &mut out)?;
    Ok(())
}

fn inspect(engine: &Engine, a: InspectArgs) -> CmdResult {
    let mut items = Vec::new();
    let mut failed = None;
    for name in &a.volumes {
        match engine.volume(name) {
            Ok(v) => items.push(serde_json::to_value(v).expect("volume serialises")),
            Err(e) => {
                eprintln!("Error response from strata: {e}");
                failed = Some(Failure {
                    code: 1,
                    message: String::new(),
                });
            }
        }
    }
    crate::format::print_inspect(&items, a.format.as_deref(), &mut io::stdout().lock())?;
    failed.map_or(Ok(()), Err)
}
