//! From a container's record to what the exec driver runs: the host config checked and
//! completed at create time, the user resolved in the image, the files docker writes for
//! a container (/etc/hostname, /etc/hosts, /etc/resolv.conf), and the runtime spec.

use crate::containers::{Container, HostConfig};
use crate::error::{EngineError, Result};
use crate::Engine;
use std::io::Read;
use std::path::{Path, PathBuf};
use strata_archive::Root;
use strata_exec::spec::{self, ExtraMount, NsMode, ProcessSpec, RunSpec, Seccomp, User};
use strata_exec::state::RestartPolicy;

pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Engine {
    /// The runtimes this engine knows: `native`, `runc` when it is installed, and those
    /// added with `--add-runtime`.
    pub fn runtimes(&self) -> Vec<(String, Option<PathBuf>)> {
        let mut out = vec![(strata_exec::runtime::NATIVE.to_string(), None)];
        if let Some(p) = find_in_path("runc") {
            out.push(("runc".to_string(), Some(p)));
        }
        for (n, p) in &self.runtimes {
            out.retain(|(x, _)| x != n);
            out.push((n.clone(), Some(p.clone())));
        }
        out
    }

    pub fn default_runtime(&self) -> &str {
        &self.default_runtime
    }

    /// Checks what `create` was given and fills in what it left to defaults.
    pub(crate) fn complete_host_config(&self, given: &HostConfig) -> Result<HostConfig> {
        let mut h = given.clone();
        let name = if h.runtime.is_empty() {
            self.default_runtime.clone()
        } else {
            h.runtime.clone()
        };
        let Some((_, path)) = self.runtimes().into_iter().find(|(n, _)| *n == name) else {
            return Err(EngineError::Usage(format!(
                "unknown or invalid runtime name: {name}: use native, runc, or add one with --add-runtime NAME=PATH"
            )));
        };
        h.runtime = name;
        h.runtime_path = path;
        h.network_mode = match h.network_mode.as_str() {
            "" | "none" => "none".to_string(),
            "host" => "host".to_string(),
            m if m.starts_with("container:") => {
                let other = self.container(&m["container:".len()..])?;
                format!("container:{}", other.id)
            }
            m => {
                return Err(EngineError::Usage(format!(
                    "network {m} not found: strata has no networks yet; use --network none (private, loopback only), host, or container:NAME"
                )))
            }
        };
        for (flag, v) in [("--pid", &h.pid_mode), ("--uts", &h.uts_mode)] {
            if !matches!(v.as_str(), "" | "host") {
                return Err(EngineError::Usage(format!(
                    "invalid {flag} mode {v:?}: use host, or leave it out for a private namespace"
                )));
            }
        }
        if !matches!(h.ipc_mode.as_str(), "" | "host" | "private" | "shareable") {
            return Err(EngineError::Usage(format!(
                "invalid --ipc mode {:?}: use host, private or shareable",
                h.ipc_mode
            )));
        }
        for opt in &h.security_opt {
            let (k, v) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
            match (k, v) {
                ("no-new-privileges", "" | "true" | "false") => {}
                ("seccomp", "unconfined") => h.seccomp_profile = None,
                ("seccomp", file) if !file.is_empty() => {
                    let text = std::fs::read_to_string(file).map_err(|e| {
                        EngineError::Usage(format!(
                            "opening seccomp profile ({file}) failed: {e}: give the path of a JSON profile"
                        ))
                    })?;
                    // Checked now, so a bad profile fails at create, not at start.
                    strata_exec::spec::capabilities(false, &[], &[]).and_then(|caps| {
                        strata_exec::spec::build(&RunSpec {
                            seccomp: Seccomp::Profile(text.clone()),
                            process: ProcessSpec {
                                caps,
                                ..Default::default()
                            },
                            ..Default::default()
                        })
                    })
                    .map_err(|e| EngineError::Usage(e.to_string()))?;
                    h.seccomp_profile = Some(text);
                }
                ("apparmor" | "label", _) => {}
                _ => {
                    return Err(EngineError::Usage(format!(
                        "invalid --security-opt {opt:?}: strata takes no-new-privileges, seccomp=unconfined or seccomp=PROFILE.json"
                    )))
                }
            }
        }
        spec::capabilities(h.privileged, &h.cap_add, &h.cap_drop)
            .map_err(|e| EngineError::Usage(e.to_string()))?;
        if self.restart_policy(&h).is_none() {
            return Err(EngineError::Usage(format!(
                "invalid restart policy {:?}: use no, always, unless-stopped or on-failure[:N]",
                h.restart_policy.name
            )));
        }
        for dst in h.tmpfs.keys() {
            if !dst.starts_with('/') {
                return Err(EngineError::Usage(format!(
                    "invalid --tmpfs {dst}: the mount point must be an absolute path"
                )));
            }
        }
        for host in &h.extra_hosts {
            if host
                .split_once(':')
                .is_none_or(|(n, ip)| n.is_empty() || ip.is_empty())
            {
                return Err(EngineError::Usage(format!(
                    "invalid --add-host {host:?}: use HOST:IP"
                )));
            }
        }
        Ok(h)
    }

    pub(crate) fn restart_policy(&self, h: &HostConfig) -> Option<RestartPolicy> {
        match RestartPolicy::parse(&h.restart_policy.name)? {
            RestartPolicy::OnFailure(_) => Some(RestartPolicy::OnFailure(
                h.restart_policy.maximum_retry_count,
            )),
            p => Some(p),
        }
    }

    /// Writes the files docker gives every container, in its run directory.
    fn write_etc_files(&self, c: &Container, dir: &Path) -> Result<Vec<ExtraMount>> {
        let io = |what: &str, e: std::io::Error| EngineError::io(format!("writing {what}"), e);
        let host_net = c.host.network_mode == "host";
        let hostname = if host_net {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned()
        } else {
            c.config.hostname.clone()
        };
        let mut hosts = String::new();
        if host_net {
            hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        } else {
            hosts.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n");
        }
        for h in &c.host.extra_hosts {
            if let Some((name, ip)) = h.split_once(':') {
                let ip = if ip == "host-gateway" {
                    "127.0.0.1"
                } else {
                    ip
                };
                hosts.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        // The host's resolver config, without loopback nameservers (they would point at
        // the container itself) unless the container shares the host's network.
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv: String = host_resolv
            .lines()
            .filter(|l| {
                host_net
                    || !l.trim_start().starts_with("nameserver")
                    || !l
                        .split_whitespace()
                        .nth(1)
                        .is_some_and(|ip| ip.starts_with("127.") || ip == "::1")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let files = [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
            ("resolv.conf", resolv),
        ];
        let mut mounts = Vec::new();
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|e| io(name, e))?;
            mounts.push(ExtraMount {
                destination: format!("/etc/{name}"),
                kind: "bind".into(),
                source: path.display().to_string(),
                options: vec!["rbind".into(), "rprivate".into()],
            });
        }
        Ok(mounts)
    }

    /// The spec the runtime gets for `c`, whose root filesystem is mounted at `rootfs`.
    /// The container's process as its config describes it (user resolved in the image,
    /// working directory created, environment completed, capabilities): what `run` starts
    /// and what `exec` starts from.
    pub(crate) fn process_spec(&self, c: &Container, rootfs: &Path) -> Result<ProcessSpec> {
        let h = &c.host;
        let root = Root::open(rootfs)
            .map_err(|e| EngineError::io("opening the container's root filesystem", e))?;
        // Read once for the user and for HOME.
        let passwd = read_in_root(&root, "etc/passwd").unwrap_or_default();
        let (user, additional_gids) = resolve_user(&root, &passwd, &c.config.user)?;
        let cwd = if c.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            c.config.working_dir.clone()
        };
        check_workdir(&cwd)?;
        // docker creates a missing working directory.
        if cwd != "/" {
            let rel = strata_archive::root::clean_relative(Path::new(&cwd))
                .map_err(EngineError::Invalid)?;
            root.open_dir(&rel, true)
                .map_err(|e| EngineError::io(format!("creating working directory {cwd}"), e))?;
        }
        let mut env = c.config.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, DEFAULT_PATH.to_string());
        }
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.insert(1.min(env.len()), format!("HOSTNAME={}", c.config.hostname));
        }
        if c.config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", home_of(&passwd, user.uid)));
        }
        let caps = spec::capabilities(h.privileged, &h.cap_add, &h.cap_drop)
            .map_err(|e| EngineError::Usage(e.to_string()))?;
        let no_new_privileges = h.security_opt.iter().any(|o| {
            o == "no-new-privileges"
                || o == "no-new-privileges:true"
                || o == "no-new-privileges=true"
        });
        Ok(ProcessSpec {
            args: c.command(),
            env,
            cwd,
            user,
            additional_gids,
            terminal: c.config.tty,
            caps,
            no_new_privileges,
        })
    }

    /// The spec the runtime gets for `c`, whose root filesystem is mounted at `rootfs`;
    /// `netns` is the private network namespace its shim made (`--network none`).
    pub(crate) fn run_spec(
        &self,
        c: &Container,
        rootfs: &Path,
        dir: &Path,
        netns: Option<PathBuf>,
    ) -> Result<RunSpec> {
        let h = &c.host;
        let mut process = self.process_spec(c, rootfs)?;
        let init = if h.init {
            let bin = init_binary().ok_or_else(|| {
                EngineError::Usage(
                    "--init: no init binary found: install Debian's tini (tini-static), or put docker-init on PATH".into(),
                )
            })?;
            process
                .args
                .splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
            Some(bin)
        } else {
            None
        };
        let mut mounts = self.write_etc_files(c, dir)?;
        for (dst, opts) in &h.tmpfs {
            let mut options = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "noexec".to_string(),
            ];
            options.extend(
                opts.split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
            mounts.push(ExtraMount {
                destination: dst.clone(),
                kind: "tmpfs".into(),
                source: "tmpfs".into(),
                options,
            });
        }
        if let Some(bin) = init {
            // Read-only: the container's PID 1 runs it, and must not be able to write the
            // host's file through /proc/1/exe.
            mounts.push(ExtraMount {
                destination: INIT_PATH.into(),
                kind: "bind".into(),
                source: bin.display().to_string(),
                options: vec!["bind".into(), "ro".into(), "nosuid".into(), "nodev".into()],
            });
        }
        let ns = |mode: &str| {
            if mode == "host" {
                NsMode::Host
            } else {
                NsMode::Private
            }
        };
        let net = match h.network_mode.strip_prefix("container:") {
            Some(id) => {
                let other = self.container(id)?;
                let st = self.run_state(&other)?;
                if st.status != strata_exec::state::Status::Running {
                    return Err(EngineError::Conflict(format!(
                        "cannot join network of a non running container: {}",
                        other.name
                    )));
                }
                NsMode::Join(PathBuf::from(format!("/proc/{}/ns/net", st.pid)))
            }
            None => match netns {
                Some(path) => NsMode::Join(path),
                None => ns(&h.network_mode),
            },
        };
        Ok(RunSpec {
            process,
            hostname: c.config.hostname.clone(),
            rootfs: rootfs.to_path_buf(),
            read_only: h.readonly_rootfs,
            mounts,
            pid: ns(&h.pid_mode),
            ipc: ns(&h.ipc_mode),
            uts: ns(&h.uts_mode),
            net,
            privileged: h.privileged,
            seccomp: if h
                .security_opt
                .iter()
                .any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined")
            {
                Seccomp::Unconfined
            } else if let Some(p) = &h.seccomp_profile {
                Seccomp::Profile(p.clone())
            } else {
                Seccomp::Default
            },
            resources: h.resources.clone(),
            cgroups_path: strata_exec::cgroup::container_cgroups_path(&c.id),
            shm_size: h.shm_size,
        })
    }
}

/// Where `--init` puts the init in a container (docker's path).
const INIT_PATH: &str = "/sbin/docker-init";

/// The init for `--init`: docker's `docker-init`, else Debian's tini; a static build
/// first, since the image may have no libc.
fn init_binary() -> Option<PathBuf> {
    ["docker-init", "tini-static", "tini"]
        .into_iter()
        .find_map(find_in_path)
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A working directory under /proc could hand the process one of the runtime's fds
/// (CVE-2024-21626: `WORKDIR /proc/self/fd/N`): refused outright.
fn check_workdir(cwd: &str) -> Result<()> {
    if !cwd.starts_with('/') {
        return Err(EngineError::Invalid(format!(
            "the working directory {cwd:?} is invalid: it needs to be an absolute path"
        )));
    }
    let clean =
        strata_archive::root::clean_relative(Path::new(cwd)).map_err(EngineError::Invalid)?;
    if clean.starts_with("proc") {
        return Err(EngineError::Invalid(format!(
            "the working directory {cwd:?} is under /proc, which could reach the host's files: use a directory of the image"
        )));
    }
    Ok(())
}

fn read_in_root(root: &Root, rel: &str) -> Option<String> {
    let fd = root
        .open_at(Path::new(rel), rustix::fs::OFlags::RDONLY)
        .ok()?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// The entries of an /etc/passwd or /etc/group text, split into their fields.
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().map(|l| l.split(':').collect())
}

/// The home directory `uid` has in the image's /etc/passwd (`passwd`), else `/`: what runc
/// gives a process whose environment names none (docker shows `HOME=/` for a user passwd
/// lacks).
fn home_of(passwd: &str, uid: u32) -> String {
    entries(passwd)
        .find(|f| f.len() >= 6 && f[2].parse::<u32>() == Ok(uid))
        .map(|f| f[5].to_string())
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

/// Resolves `user[:group]` (names or numbers) against the image's /etc/passwd (`passwd`)
/// and /etc/group, read inside the container root; returns the user and its extra groups.
fn resolve_user(root: &Root, passwd: &str, spec: &str) -> Result<(User, Vec<u32>)> {
    if spec.is_empty() {
        return Ok((User::default(), Vec::new()));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = entries(passwd)
        .find(|f| f.len() >= 4 && (f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u)));
    let (uid, name, mut gid) = match (&entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[0].to_string(),
            f[3].parse().unwrap_or(0),
        ),
        (None, Ok(n)) => (n, String::new(), 0),
        (None, Err(_)) => {
            return Err(EngineError::Invalid(format!(
                "unable to find user {u}: no matching entries in passwd file"
            )))
        }
    };
    let group = read_in_root(root, "etc/group").unwrap_or_default();
    let groups: Vec<Vec<&str>> = entries(&group).filter(|f| f.len() >= 4).collect();
    if let Some(g) = g {
        gid = match (groups.iter().find(|f| f[0] == g), g.parse::<u32>()) {
            (_, Ok(n)) => n,
            (Some(f), _) => f[2].parse().unwrap_or(0),
            (None, Err(_)) => {
                return Err(EngineError::Invalid(format!(
                    "unable to find group {g}: no matching entries in group file"
                )))
            }
        };
    }
    let extra = if name.is_empty() || g.is_some() {
        Vec::new()
    } else {
        groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|x| *x != gid)
            .collect()
    };
    Ok((User { uid, gid }, extra))
}
