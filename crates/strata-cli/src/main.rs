//! `strata`: the command line. Commands, flags, output and exit codes follow docker's, so a
//! docker user's habits carry over; every command opens the store, does its work through
//! the engine and exits (there is no daemon).

mod cmd_containers;
mod cmd_images;
mod cmd_run;
mod cmd_system;
mod cmd_volumes;
mod format;
mod units;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use strata_engine::{Engine, EngineError, Options};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "A container engine built on layered image storage",
    disable_help_subcommand = true
)]
struct Cli {
    /// Root directory of the store
    #[arg(
        long,
        global = true,
        env = "STRATA_ROOT",
        default_value = "/var/lib/strata"
    )]
    root: PathBuf,
    /// Storage driver (overlay2, vfs, btrfs); recorded in the store at first use
    #[arg(long, global = true, env = "STRATA_STORAGE_DRIVER")]
    storage_driver: Option<String>,
    /// Storage driver options (KEY=VALUE, e.g. btrfs.loopsize=100G), as dockerd's
    #[arg(
        long = "storage-opt",
        env = "STRATA_STORAGE_OPT",
        value_delimiter = ','
    )]
    storage_opt: Vec<String>,
    /// Register an OCI runtime binary (NAME=PATH), as dockerd's --add-runtime
    #[arg(
        long = "add-runtime",
        global = true,
        env = "STRATA_ADD_RUNTIME",
        value_delimiter = ','
    )]
    add_runtime: Vec<String>,
    /// The runtime containers use unless --runtime says otherwise
    #[arg(long, global = true, env = "STRATA_DEFAULT_RUNTIME")]
    default_runtime: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked.
#[command(defer = true)]
enum Command {
    /// Import the contents from a tarball to create a filesystem image
    Import(cmd_images::ImportArgs),
    /// Load an image from a tar archive or STDIN
    Load(cmd_images::LoadArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(cmd_images::SaveArgs),
    /// List images
    Images(cmd_images::ImagesArgs),
    /// Show the history of an image
    History(cmd_images::HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(cmd_images::TagArgs),
    /// Remove one or more images
    Rmi(cmd_images::RmiArgs),
    /// Return low-level information on objects
    Inspect(cmd_images::InspectArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    #[command(flatten)]
    Verb(Box<ContainerVerb>),
    /// List containers
    Ps(cmd_containers::PsArgs),
    /// Remove one or more containers
    Rm(cmd_containers::RmArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Display system-wide information
    Info(cmd_system::InfoArgs),
    /// Manage strata
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(cmd_volumes::VolumeCommand),
    /// Show the strata version information
    Version,
}

#[derive(Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked.
#[command(defer = true)]
enum ImageCommand {
    /// Import the contents from a tarball to create a filesystem image
    Import(cmd_images::ImportArgs),
    /// Load an image from a tar archive or STDIN
    Load(cmd_images::LoadArgs),
    /// Save one or more images to a tar archive
    Save(cmd_images::SaveArgs),
    /// List images
    #[command(visible_alias = "list")]
    Ls(cmd_images::ImagesArgs),
    /// Show the history of an image
    History(cmd_images::HistoryArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(cmd_images::TagArgs),
    /// Remove one or more images
    #[command(visible_alias = "remove")]
    Rm(cmd_images::RmiArgs),
    /// Display detailed information on one or more images
    Inspect(cmd_images::ImageInspectArgs),
    /// Remove unused images
    Prune(cmd_images::PruneArgs),
    /// Mount an image's root filesystem read-only and print where
    Mount(cmd_images::MountArgs),
    /// Unmount an image's root filesystem
    #[command(visible_alias = "unmount")]
    Umount(cmd_images::MountArgs),
}

/// Container commands that exist both at the top level and under `container`.
#[derive(Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked.
#[command(defer = true)]
enum ContainerVerb {
    /// Create and run a new container from an image
    Run(cmd_run::RunArgs),
    /// Execute a command in a running container
    Exec(cmd_run::ExecArgs),
    /// Create a new container
    Create(cmd_containers::CreateArgs),
    /// Start one or more stopped containers
    Start(cmd_run::StartArgs),
    /// Stop one or more running containers
    Stop(cmd_run::StopArgs),
    /// Restart one or more containers
    Restart(cmd_run::StopArgs),
    /// Kill one or more running containers
    Kill(cmd_run::KillArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(cmd_run::NamesArgs),
    /// Fetch the logs of a container
    Logs(cmd_run::LogsArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(cmd_run::AttachArgs),
    /// Display the running processes of a container
    Top(cmd_run::TopArgs),
    /// Pause all processes within one or more containers
    Pause(cmd_run::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(cmd_run::NamesArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(cmd_run::StatsArgs),
    /// List port mappings or a specific mapping for the container
    Port(cmd_run::PortArgs),
    /// Create a new image from a container's changes
    Commit(cmd_containers::CommitArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(cmd_containers::ContainerArg),
    /// Export a container's filesystem as a tar archive
    Export(cmd_containers::ExportArgs),
    /// Mount a container's root filesystem and print where (as podman's)
    Mount(cmd_containers::MountArgs),
    /// Unmount a container's root filesystem
    #[command(visible_alias = "unmount")]
    Umount(cmd_containers::UmountArgs),
    /// Rename a container
    Rename(cmd_containers::RenameArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(cmd_containers::CpArgs),
}

#[derive(Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked.
#[command(defer = true)]
enum ContainerCommand {
    #[command(flatten)]
    Verb(Box<ContainerVerb>),
    /// Finish after a container exits (run by its shim)
    #[command(hide = true)]
    Cleanup(cmd_run::CleanupArgs),
    /// List containers
    #[command(visible_aliases = ["list", "ps"])]
    Ls(cmd_containers::PsArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(cmd_containers::RmArgs),
    /// Remove all stopped containers
    Prune(cmd_containers::PruneArgs),
    /// Display detailed information on one or more containers
    Inspect(ContainerInspectArgs),
}

#[derive(clap::Args)]
struct ContainerInspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    format: Option<String>,
    /// Display total file sizes
    #[arg(short, long)]
    size: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Subcommand)]
// Each subcommand's arguments are built only when it is the one invoked.
#[command(defer = true)]
enum SystemCommand {
    /// Show strata disk usage
    Df(cmd_system::DfArgs),
    /// Display system-wide information
    Info(cmd_system::InfoArgs),
    /// Verify every blob and layer against its digest and find leftovers
    Check(cmd_system::CheckArgs),
    /// Remove all containers, images and storage: the store back to empty
    Reset(cmd_system::ResetArgs),
}

/// A failed command: the message and docker's exit code for it.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Failure {
        Failure {
            code: e.exit_code() as u8,
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure {
            code: 1,
            message: format!("{e:#}"),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure {
            code: 1,
            message: e.to_string(),
        }
    }
}

pub type CmdResult = Result<(), Failure>;

/// Runs `f` for every name, as docker's multi-name commands do: an error is printed for its
/// name and the others still run; the command fails at the end if any did.
pub fn each_name(
    names: &[String],
    mut f: impl FnMut(&str) -> Result<(), EngineError>,
) -> CmdResult {
    let mut failed = None;
    for name in names {
        if let Err(e) = f(name) {
            eprintln!("Error response from strata: {e}");
            failed = Some(Failure {
                code: e.exit_code() as u8,
                message: String::new(),
            });
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Writes a tar made by `write` to `output` or, without one, to stdout (never a terminal),
/// as `save` and `export` do. A file is written beside its target, synced and renamed, so a
/// failure never leaves half an archive under the name asked for.
pub fn write_archive(
    output: Option<&std::path::Path>,
    write: impl FnOnce(&mut dyn std::io::Write) -> CmdResult,
) -> CmdResult {
    use std::io::{IsTerminal, Write};
    let Some(path) = output else {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(Failure {
                code: 1,
                message: "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                    .into(),
            });
        }
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        write(&mut w)?;
        return Ok(w.flush()?);
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.strata-tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("archive")
    ));
    let res = (|| -> CmdResult {
        let f = std::fs::File::create(&tmp).map_err(|e| Failure {
            code: 1,
            message: format!("{}: {e}", path.display()),
        })?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| Failure::from(e.into_error()))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A repeated `KEY=VALUE` flag as pairs; one without `=` is a usage error naming `flag`
/// and an `example`.
pub fn key_values(
    flag: &str,
    items: &[String],
    example: &str,
) -> Result<Vec<(String, String)>, Failure> {
    items
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure {
                    code: 125,
                    message: format!("invalid {flag} {o:?}: use KEY=VALUE, e.g. {example}"),
                })
        })
        .collect()
}

/// docker's prune flow: ask about `what` unless forced, prune, then report what went
/// under `heading` and the space reclaimed.
pub fn prune_confirmed(
    force: bool,
    what: &str,
    heading: &str,
    prune: impl FnOnce() -> Result<(Vec<String>, u64), Failure>,
) -> CmdResult {
    if !force && !confirm(what)? {
        return Ok(());
    }
    let (removed, freed) = prune()?;
    print_prune_report(heading, removed, freed);
    Ok(())
}

/// docker's prune report: the heading, one line per removed object, the space reclaimed.
fn print_prune_report(heading: &str, lines: impl IntoIterator<Item = String>, freed: u64) {
    let lines: Vec<String> = lines.into_iter().collect();
    if !lines.is_empty() {
        println!("{heading}");
        for l in &lines {
            println!("{l}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", units::human_size(freed));
}

/// docker's prune question, on stderr; true when the answer is yes.
pub fn confirm(what: &str) -> std::io::Result<bool> {
    eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => 125,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Rust ignores SIGPIPE; restore the default so `strata images | head` ends quietly.
    // SAFETY: setting a signal disposition before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("Error: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn open(cli: &Cli) -> Result<Engine, Failure> {
    Ok(Engine::open(&Options {
        root: cli.root.clone(),
        storage_driver: cli.storage_driver.clone(),
        storage_opts: key_values("--storage-opt", &cli.storage_opt, "btrfs.loopsize=100G")?,
        runtimes: cli
            .add_runtime
            .iter()
            .map(|r| {
                r.split_once('=')
                    .filter(|(n, p)| !n.is_empty() && !p.is_empty())
                    .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
                    .ok_or_else(|| Failure {
                        code: 125,
                        message: format!("invalid --add-runtime {r:?}: use NAME=PATH"),
                    })
            })
            .collect::<Result<_, _>>()?,
        default_runtime: cli.default_runtime.clone(),
    })?)
}

fn run(cli: Cli) -> CmdResult {
    if let Command::Version = cli.command {
        println!("Client:\n Version:           {}\n OS/Arch:           linux/{}\n\nServer: strata (daemonless)\n Engine:\n  Version:          {}\n  Store format:     {}",
            strata_engine::VERSION, std::env::consts::ARCH, strata_engine::VERSION, strata_engine::FORMAT_VERSION);
        return Ok(());
    }
    // `run` starts its shim before the store opens (`cmd_run::prepare`).
    let mut run_start = match &cli.command {
        Command::Verb(v) | Command::Container(ContainerCommand::Verb(v)) => match &**v {
            ContainerVerb::Run(a) => Some(cmd_run::prepare(a)?),
            _ => None,
        },
        _ => None,
    };
    let engine = match open(&cli) {
        Ok(e) => e,
        Err(f) => {
            if let Some(s) = run_start {
                s.abandon();
            }
            return Err(f);
        }
    };
    match cli.command {
        Command::Import(a) | Command::Image(ImageCommand::Import(a)) => {
            cmd_images::import(&engine, a)
        }
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => cmd_images::load(&engine, a),
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => cmd_images::save(&engine, a),
        Command::Images(a) | Command::Image(ImageCommand::Ls(a)) => cmd_images::images(&engine, a),
        Command::History(a) | Command::Image(ImageCommand::History(a)) => {
            cmd_images::history(&engine, a)
        }
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => cmd_images::tag(&engine, a),
        Command::Rmi(a) | Command::Image(ImageCommand::Rm(a)) => cmd_images::rmi(&engine, a),
        Command::Inspect(a) => cmd_images::inspect(&engine, a),
        Command::Verb(v) | Command::Container(ContainerCommand::Verb(v)) => {
            container_verb(&engine, *v, run_start.take())
        }
        Command::Container(ContainerCommand::Cleanup(a)) => cmd_run::cleanup(&engine, a),
        Command::Ps(a) | Command::Container(ContainerCommand::Ls(a)) => {
            cmd_containers::ps(&engine, a)
        }
        Command::Rm(a) | Command::Container(ContainerCommand::Rm(a)) => {
            cmd_containers::rm(&engine, a)
        }
        Command::Container(ContainerCommand::Prune(a)) => cmd_containers::prune(&engine, a),
        Command::Container(ContainerCommand::Inspect(a)) => cmd_containers::inspect_any(
            &engine,
            &a.containers,
            Some("container"),
            a.size,
            a.format.as_deref(),
        ),
        Command::Image(ImageCommand::Inspect(a)) => cmd_images::image_inspect(&engine, a),
        Command::Image(ImageCommand::Prune(a)) => cmd_images::prune(&engine, a),
        Command::Image(ImageCommand::Mount(a)) => cmd_images::mount(&engine, a),
        Command::Image(ImageCommand::Umount(a)) => cmd_images::umount(&engine, a),
        Command::Info(a) | Command::System(SystemCommand::Info(a)) => cmd_system::info(&engine, a),
        Command::System(SystemCommand::Df(a)) => cmd_system::df(&engine, a),
        Command::System(SystemCommand::Check(a)) => cmd_system::check(&engine, a),
        Command::System(SystemCommand::Reset(a)) => cmd_system::reset(engine, a),
        Command::Volume(v) => cmd_volumes::run(&engine, v),
        Command::Version => unreachable!("handled before opening the store"),
    }
}

fn container_verb(engine: &Engine, v: ContainerVerb, run: Option<cmd_run::RunStart>) -> CmdResult {
    match v {
        ContainerVerb::Run(_) => {
            cmd_run::run(engine, run.expect("prepared before the store opened"))
        }
        ContainerVerb::Exec(a) => cmd_run::exec(engine, a),
        ContainerVerb::Create(a) => cmd_containers::create(engine, a),
        ContainerVerb::Start(a) => cmd_run::start(engine, a),
        ContainerVerb::Stop(a) => cmd_run::stop(engine, a),
        ContainerVerb::Restart(a) => cmd_run::restart(engine, a),
        ContainerVerb::Kill(a) => cmd_run::kill(engine, a),
        ContainerVerb::Wait(a) => cmd_run::wait(engine, a),
        ContainerVerb::Logs(a) => cmd_run::logs(engine, a),
        ContainerVerb::Attach(a) => cmd_run::attach_cmd(engine, a),
        ContainerVerb::Top(a) => cmd_run::top(engine, a),
        ContainerVerb::Pause(a) => cmd_run::pause(engine, a),
        ContainerVerb::Unpause(a) => cmd_run::unpause(engine, a),
        ContainerVerb::Stats(a) => cmd_run::stats(engine, a),
        ContainerVerb::Port(a) => cmd_run::port(engine, a),
        ContainerVerb::Commit(a) => cmd_containers::commit(engine, a),
        ContainerVerb::Diff(a) => cmd_containers::diff(engine, a),
        ContainerVerb::Export(a) => cmd_containers::export(engine, a),
        ContainerVerb::Mount(a) => cmd_containers::mount(engine, a),
        ContainerVerb::Umount(a) => cmd_containers::umount(engine, a),
        ContainerVerb::Rename(a) => cmd_containers::rename(engine, a),
        ContainerVerb::Cp(a) => cmd_containers::cp(engine, a),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_tree_is_consistent() {
        // Catches clashing flags and bad defaults in every subcommand, not only those run.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
