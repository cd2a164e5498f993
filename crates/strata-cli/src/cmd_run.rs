//! Commands that run containers: run, start, stop, restart, kill, wait, logs, exec,
//! attach, top, pause, unpause, stats, port, and the shim's `container cleanup`.

use crate::format::{Formatter, Row};
use crate::units::{binary_size, human_size};
use crate::{CmdResult, Failure};
use clap::Args;
use serde_json::json;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;
use strata_engine::{Engine, EngineError, ExecOptions};
use strata_exec::attach;

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 125,
        message: msg.into(),
    }
}

/// Puts the terminal on stdin into raw mode while it lives (`-t`).
struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    fn enter(on: bool) -> RawMode {
        let stdin = io::stdin();
        if !on || !rustix::termios::isatty(&stdin) {
            return RawMode { saved: None };
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ =
                rustix::termios::tcsetattr(io::stdin(), rustix::termios::OptionalActions::Now, t);
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(io::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(io::stdin()))
        .ok()?;
    (ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// A client connection prepared before the container starts: HELLO (and the terminal
/// size) are already queued in it.
fn prepared_client(stdin: bool, tty: bool) -> io::Result<(UnixStream, OwnedFd)> {
    let (mut mine, theirs) = UnixStream::pair()?;
    let mut want = strata_exec::stream::WANT_CLEANUP;
    if hands_over(stdin, tty) {
        want |= strata_exec::stream::WANT_SWEEP;
    }
    attach::hello_with(&mut mine, stdin, true, true, want)?;
    if tty {
        if let Some((r, c)) = terminal_size() {
            attach::resize(&mut mine, r, c)?;
        }
    }
    Ok((mine, theirs.into()))
}

/// Whether a foreground run leaves deleting its removed container's files to the shim
/// (strata-engine's `trash`): only with no stdin or terminal to forward, when nothing but
/// the cleanup writes to the shim after the exit.
fn hands_over(stdin: bool, tty: bool) -> bool {
    !stdin && !tty
}

/// Streams the container's output (and our stdin with `stdin`) until it exits; its code.
fn stay_attached(sock: &mut UnixStream, stdin: bool, tty: bool) -> io::Result<Option<i32>> {
    let _raw = RawMode::enter(tty);
    if stdin {
        attach::forward_stdin(sock.try_clone()?, io::stdin());
    }
    let mut out = io::stdout();
    let mut err = io::stderr();
    attach::copy_output(sock, &mut out, &mut err)
}

#[derive(Args)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    create: crate::cmd_containers::CreateArgs,
}

/// What `run` does before the store is open: its flags checked, and its shim started, so
/// that the shim's exec and start-up overlap the opening too.
pub struct RunStart {
    opts: strata_engine::CreateOptions,
    interactive: bool,
    tty: bool,
    auto_remove: bool,
    client: Option<UnixStream>,
    shim: strata_engine::PendingShim,
}

impl RunStart {
    /// Gives the shim up (it exits having done nothing): the store could not be opened.
    pub fn abandon(self) {
        self.shim.abandon();
    }
}

pub fn prepare(a: &RunArgs) -> Result<RunStart, Failure> {
    let interactive = a.create.interactive();
    let tty = a.create.tty();
    let auto_remove = a.create.auto_remove();
    let mut opts = a.create.options()?;
    opts.stdin_once = interactive && !a.detach;
    let (client, theirs) = if a.detach {
        (None, None)
    } else {
        let (sock, theirs) = prepared_client(interactive, tty)?;
        (Some(sock), Some(theirs))
    };
    let shim = Engine::spawn_shim(theirs, &opts.host.network_mode).map_err(engine_error)?;
    Ok(RunStart {
        opts,
        interactive,
        tty,
        auto_remove,
        client,
        shim,
    })
}

pub fn run(engine: &Engine, s: RunStart) -> CmdResult {
    let c = match engine
        .hold_checkpoints()
        .and_then(|()| engine.create_container(&s.opts))
    {
        Ok(c) => c,
        Err(e) => {
            s.shim.abandon();
            return Err(engine_error(e));
        }
    };
    let mut started = match engine.start_container_with(&c.id, s.shim) {
        Ok(s) => s,
        Err(e) => return Err(start_failed(engine, &c.id, s.auto_remove, e)),
    };
    let Some(mut sock) = s.client else {
        println!("{}", c.id);
        return Ok(());
    };
    exit_with(attached_until_exit(
        engine,
        &c.id,
        &mut started,
        &mut sock,
        s.interactive,
        s.tty,
    )?)
}

/// Stays attached to a container this CLI started until it exits, then cleans up after it
/// (as the shim was told) and waits for the shim to finish; the exit code.
fn attached_until_exit(
    engine: &Engine,
    id: &str,
    started: &mut strata_engine::Started,
    sock: &mut UnixStream,
    stdin: bool,
    tty: bool,
) -> Result<i32, Failure> {
    if !tty {
        // With a terminal, ^C reaches the container through it.
        proxy_signals(engine.run_dir(id));
    }
    let code = engine.idle(|| stay_attached(sock, stdin, tty))??;
    // Whether the shim said it is done with the container (it then only deletes files).
    let mut shim_done = false;
    if code.is_some() {
        let hand_over = hands_over(stdin, tty);
        if hand_over {
            engine.defer_deletions();
        }
        let cleaned = engine.cleanup_container(id, started.generation);
        let retired = engine.take_retired();
        if hand_over {
            shim_done = engine.idle(|| attach::hand_over(sock, &retired))?.is_ok();
            if !shim_done {
                strata_exec::trash::sweep(&engine.trash_dir(), &retired);
            }
        }
        cleaned?;
    }
    if !shim_done {
        engine.idle(|| started.shim.child.wait())??;
    }
    Ok(match code {
        Some(code) => code,
        // The shim died: reading the state finishes for it.
        None => match engine.container(id) {
            Ok(c) => engine.run_state(&c)?.exit_code,
            Err(_) => 0,
        },
    })
}

/// docker's `--sig-proxy`: signals the attached CLI receives go to the container's
/// process (a thread waits for them; they are blocked in every other thread).
fn proxy_signals(run_dir: std::path::PathBuf) {
    const PROXIED: [i32; 6] = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    // SAFETY: sigset manipulation on a local set; pthread_sigmask affects this thread and
    // the threads it starts later (the stdin forwarder), none of which exist yet.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in PROXIED {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: sigwait on the set blocked above.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        let st: Result<strata_exec::state::RunState, _> =
            strata_exec::state::read_json(&run_dir.join(strata_exec::state::STATE_FILE));
        if let Ok(st) = st {
            let _ = st.signal(sig);
        }
    });
}

/// docker removes an `--rm` container whose start failed; the error keeps its exit code.
fn start_failed(engine: &Engine, id: &str, auto_remove: bool, e: EngineError) -> Failure {
    if auto_remove {
        let _ = engine.remove_container(id, true, true);
    }
    engine_error(e)
}

/// `run` exits 125 when the engine refuses (docker: "the error is with the daemon"), and
/// 126/127 when the command cannot be run.
fn engine_error(e: EngineError) -> Failure {
    let code = match &e {
        EngineError::StartFailed { code, .. } => *code as u8,
        _ => 125,
    };
    Failure {
        code,
        message: e.to_string(),
    }
}

fn exit_with(code: i32) -> CmdResult {
    if code == 0 {
        Ok(())
    } else {
        Err(Failure {
            code: code.clamp(0, 255) as u8,
            message: String::new(),
        })
    }
}

#[derive(Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn start(engine: &Engine, a: StartArgs) -> CmdResult {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(usage(
                "you cannot start and attach multiple containers at once",
            ));
        }
        let c = engine.container(&a.containers[0])?;
        let tty = c.config.tty;
        let (mut sock, theirs) = prepared_client(a.interactive, tty)?;
        let mut started = engine.start_container(&c.id, Some(theirs))?;
        let code = attached_until_exit(engine, &c.id, &mut started, &mut sock, a.interactive, tty)?;
        return exit_with(code);
    }
    crate::each_name(&a.containers, |name| {
        let c = engine.container(name)?;
        if engine.run_state(&c)?.status != strata_exec::state::Status::Running {
            engine.start_container(name, None)?;
        }
        println!("{name}");
        Ok(())
    })
}

#[derive(Args)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_negative_numbers = true
    )]
    time: Option<i64>,
    /// Signal to send to the container
    #[arg(short, long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn stop(engine: &Engine, a: StopArgs) -> CmdResult {
    if let Some(s) = &a.signal {
        strata_engine::parse_signal(s).ok_or_else(|| usage(format!("invalid signal: {s}")))?;
    }
    crate::each_name(&a.containers, |name| {
        engine.stop_container(name, a.time)?;
        println!("{name}");
        Ok(())
    })
}

pub fn restart(engine: &Engine, a: StopArgs) -> CmdResult {
    crate::each_name(&a.containers, |name| {
        engine.stop_container(name, a.time)?;
        engine.start_container(name, None)?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long)]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn kill(engine: &Engine, a: KillArgs) -> CmdResult {
    crate::each_name(&a.containers, |name| {
        engine.kill_container(name, a.signal.as_deref())?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn wait(engine: &Engine, a: NamesArgs) -> CmdResult {
    crate::each_name(&a.containers, |name| {
        println!("{}", engine.wait_container(name)?);
        Ok(())
    })
}

pub fn pause(engine: &Engine, a: NamesArgs) -> CmdResult {
    crate::each_name(&a.containers, |name| {
        engine.pause_container(name)?;
        println!("{name}");
        Ok(())
    })
}

pub fn unpause(engine: &Engine, a: NamesArgs) -> CmdResult {
    crate::each_name(&a.containers, |name| {
        engine.unpause_container(name)?;
        println!("{name}");
        Ok(())
    })
}

#[derive(Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or relative time
    #[arg(long)]
    until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

/// docker's `--since`/`--until`: an RFC 3339 time, a Unix time, or a duration ago.
fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return chrono::DateTime::from_timestamp(secs as i64, ((secs.fract()) * 1e9) as u32)
            .ok_or_else(|| usage(format!("invalid time {s:?}")));
    }
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| {
        usage(format!(
            "invalid time {s:?}: use RFC 3339, a Unix time, or a duration such as 10m"
        ))
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "ms" => n / 1000.0,
        _ => {
            return Err(usage(format!(
                "invalid duration unit in {s:?}: use ms, s, m or h"
            )))
        }
    };
    Ok(chrono::Utc::now() - chrono::Duration::milliseconds((secs * 1000.0) as i64))
}

pub fn logs(engine: &Engine, a: LogsArgs) -> CmdResult {
    use std::io::{BufRead, Seek};
    use strata_exec::logs::LogLine;
    let c = engine.container(&a.container)?;
    let since = a.since.as_deref().map(parse_time).transpose()?;
    let until = a.until.as_deref().map(parse_time).transpose()?;
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .map_err(|_| usage(format!("invalid --tail {n:?}: a number of lines, or all")))?,
        ),
    };
    let path = engine.log_path(&c);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let show = |line: &str, out: &mut dyn Write, err: &mut dyn Write| -> io::Result<bool> {
        let Ok(l) = serde_json::from_str::<LogLine>(line) else {
            return Ok(true);
        };
        let t = chrono::DateTime::parse_from_rfc3339(&l.time)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc));
        if let (Some(s), Some(t)) = (since, t) {
            if t < s {
                return Ok(true);
            }
        }
        if let (Some(u), Some(t)) = (until, t) {
            if t > u {
                return Ok(false);
            }
        }
        let w: &mut dyn Write = if l.stream == "stderr" { err } else { out };
        if a.timestamps {
            write!(w, "{} ", l.time)?;
        }
        w.write_all(l.log.as_bytes())?;
        Ok(true)
    };
    let mut pos = 0u64;
    if let Some(f) = file.as_mut() {
        let mut lines: Vec<String> = io::BufReader::new(&*f).lines().collect::<io::Result<_>>()?;
        pos = f.stream_position()?;
        if let Some(n) = tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        for l in &lines {
            if !show(l, &mut out, &mut err)? {
                return Ok(());
            }
        }
        out.flush()?;
    }
    if !a.follow {
        return Ok(());
    }
    engine.idle(|| -> Result<(), Failure> {
        let mut partial = String::new();
        loop {
            let running = engine
                .container(&c.id)
                .and_then(|c| engine.run_state(&c))
                .map(|s| s.status == strata_exec::state::Status::Running)
                .unwrap_or(false);
            if file.is_none() {
                file = std::fs::File::open(&path).ok();
            }
            if let Some(f) = file.as_mut() {
                f.seek(io::SeekFrom::Start(pos))?;
                let mut chunk = String::new();
                let n = io::Read::read_to_string(f, &mut chunk)?;
                pos += n as u64;
                partial.push_str(&chunk);
                while let Some(nl) = partial.find('\n') {
                    let line: String = partial.drain(..=nl).collect();
                    if !show(line.trim_end(), &mut out, &mut err)? {
                        return Ok(());
                    }
                }
                out.flush()?;
            }
            if !running {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })?
}

#[derive(Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn exec(engine: &Engine, a: ExecArgs) -> CmdResult {
    let opts = ExecOptions {
        cmd: a.command,
        env: a.env,
        user: a.user,
        workdir: a.workdir,
        tty: a.tty,
        detach: a.detach,
        privileged: a.privileged,
    };
    // Without -i the process gets no stdin, as docker's.
    let _raw = RawMode::enter(a.tty && !a.detach);
    let mut handle = if a.interactive || a.detach {
        engine.exec_container(&a.container, &opts)?
    } else {
        with_null_stdin(|| engine.exec_container(&a.container, &opts))??
    };
    if a.detach {
        return Ok(());
    }
    let status = engine.idle(|| handle.shim.child.wait())??;
    exit_with(status.code().unwrap_or(255))
}

/// Runs `f` with fd 0 on /dev/null (what the exec shim inherits), then restores it.
fn with_null_stdin<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let null = std::fs::File::open("/dev/null")?;
    let saved = rustix::io::fcntl_dupfd_cloexec(io::stdin(), 3)?;
    rustix::stdio::dup2_stdin(&null)?;
    let out = f();
    rustix::stdio::dup2_stdin(&saved)?;
    Ok(out)
}

#[derive(Args)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long)]
    no_stdin: bool,
    container: String,
}

pub fn attach_cmd(engine: &Engine, a: AttachArgs) -> CmdResult {
    let c = engine.container(&a.container)?;
    if engine.run_state(&c)?.status != strata_exec::state::Status::Running {
        return Err(usage(
            "You cannot attach to a stopped container, start it first",
        ));
    }
    let stdin = !a.no_stdin && c.config.open_stdin;
    let mut sock = attach::connect(&engine.attach_socket(&c))?;
    attach::hello(&mut sock, stdin, true, true)?;
    if c.config.tty {
        if let Some((r, col)) = terminal_size() {
            attach::resize(&mut sock, r, col)?;
        }
    }
    let code = engine.idle(|| stay_attached(&mut sock, stdin, c.config.tty))??;
    let code = match code {
        Some(c) => c,
        None => engine.run_state(&c)?.exit_code,
    };
    exit_with(code)
}

#[derive(Args)]
pub struct TopArgs {
    container: String,
    /// ps options (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

pub fn top(engine: &Engine, a: TopArgs) -> CmdResult {
    let c = engine.container(&a.container)?;
    if engine.run_state(&c)?.status != strata_exec::state::Status::Running {
        return Err(Failure {
            code: 1,
            message: format!("Container {} is not running", c.id),
        });
    }
    let pids: std::collections::HashSet<String> = engine
        .cgroup(&c)
        .pids()
        .iter()
        .map(|p| p.to_string())
        .collect();
    let args = if a.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        a.ps_args
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Failure {
            code: 1,
            message: format!("running ps: {e}: install procps"),
        })?;
    if !output.status.success() {
        return Err(Failure {
            code: 1,
            message: format!(
                "ps {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Failure {
            code: 1,
            message: "Couldn't find PID field in ps output".into(),
        })?;
    let mut rows = vec![header
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>()];
    let ncols = rows[0].len();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(pid_col).is_some_and(|p| pids.contains(*p)) {
            // The last column (the command) keeps its spaces.
            let mut row: Vec<String> = f.iter().take(ncols - 1).map(|s| s.to_string()).collect();
            row.push(
                f.iter()
                    .skip(ncols - 1)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            rows.push(row);
        }
    }
    let mut tw = tabwriter::TabWriter::new(io::stdout())
        .minwidth(7)
        .padding(3);
    for r in rows {
        writeln!(tw, "{}", r.join("\t"))?;
    }
    tw.flush()?;
    Ok(())
}

#[derive(Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    containers: Vec<String>,
}

const STATS_HEADERS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

pub fn stats(engine: &Engine, a: StatsArgs) -> CmdResult {
    let format = a.format.as_deref().unwrap_or(
        "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}",
    );
    let fmt = Formatter::new(format, STATS_HEADERS)?;
    loop {
        let mut list = Vec::new();
        if a.containers.is_empty() {
            for c in engine.list_containers()? {
                let running = engine.run_state(&c)?.status == strata_exec::state::Status::Running;
                if running || a.all {
                    list.push(c);
                }
            }
        } else {
            for n in &a.containers {
                list.push(engine.container(n)?);
            }
        }
        // CPU % is the share of one interval's CPU time, as docker computes it.
        let interval = Duration::from_millis(if a.no_stream { 200 } else { 1000 });
        let first: Vec<_> = list.iter().map(|c| engine.cgroup(c).sample()).collect();
        std::thread::sleep(interval);
        let mut rows: Vec<Row> = Vec::new();
        for (c, before) in list.iter().zip(first) {
            let s = engine.cgroup(c).sample();
            let cpu = (s.cpu_usage_ns.saturating_sub(before.cpu_usage_ns)) as f64
                / interval.as_nanos() as f64
                * 100.0;
            let mem_perc = if s.memory_limit > 0 {
                s.memory_usage as f64 / s.memory_limit as f64 * 100.0
            } else {
                0.0
            };
            let id = if a.no_trunc {
                c.id.clone()
            } else {
                c.short_id().to_string()
            };
            let row = json!({
                "Container": id, "ID": id, "Name": c.name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", binary_size(s.memory_usage), binary_size(s.memory_limit)),
                "MemPerc": format!("{mem_perc:.2}%"),
                "NetIO": "0B / 0B",
                "BlockIO": format!("{} / {}", human_size(s.blkio_read), human_size(s.blkio_write)),
                "PIDs": s.pids.to_string(),
            });
            rows.push(row.as_object().cloned().expect("object"));
        }
        let mut out = io::stdout().lock();
        if !a.no_stream {
            // Clear the screen and home the cursor, as docker's live view does.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        fmt.render(&rows, &mut out)?;
        out.flush()?;
        if a.no_stream {
            return Ok(());
        }
    }
}

#[derive(Args)]
pub struct PortArgs {
    container: String,
    private_port: Option<String>,
}

/// No container publishes ports until networks exist: docker's answer for one that has none.
pub fn port(engine: &Engine, a: PortArgs) -> CmdResult {
    let c = engine.container(&a.container)?;
    match a.private_port {
        Some(p) => Err(Failure {
            code: 1,
            message: format!("No public port '{p}' published for {}", c.name),
        }),
        None => Ok(()),
    }
}

#[derive(Args)]
pub struct CleanupArgs {
    id: String,
    generation: u64,
}

pub fn cleanup(engine: &Engine, a: CleanupArgs) -> CmdResult {
    Ok(engine.cleanup_container(&a.id, a.generation)?)
}
