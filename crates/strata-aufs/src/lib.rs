//! A branch union filesystem with aufs semantics, served in userspace over FUSE.
//!
//! Several directories (branches) appear as one tree. Branch order is priority: where a
//! name exists in several branches the leftmost wins. Changes land on the leftmost writable
//! branch: a file from a lower branch is copied up on its first modification (data or
//! metadata), a deletion leaves a whiteout `.wh.NAME`, a directory whose lower contents
//! must stay hidden holds `.wh..wh..opq`, and other `.wh..wh.*` names are the filesystem's
//! own (the hard-link store `.wh..wh.plnk`, copy-up temporaries). A branch therefore holds
//! exactly what an aufs branch holds, and a layer tar of it is its diff.
//!
//! aufs itself never entered mainline Linux, and the kernel's overlayfs stores whiteouts
//! differently, so this is written here; `fuser` speaks the FUSE protocol. Lower branches
//! are immutable while mounted, so the kernel may cache their entries, attributes and
//! pages; file data goes through FUSE passthrough (the kernel reads and writes the branch
//! file itself) where the kernel offers it.

mod copyup;
mod fs;
mod lazy;
mod view;

pub use fs::Union;
pub use lazy::finish_copy_ups;

use std::io;
use std::path::{Path, PathBuf};

/// How a branch may be used, as aufs spells it after `=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchMode {
    /// `rw`: takes copy-ups, new files and whiteouts.
    ReadWrite,
    /// `ro`, `ro+wh`, `rr` or `rr+wh`: never written.
    ReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub path: PathBuf,
    pub mode: BranchMode,
    /// Its whiteouts and opaque markers are in effect (`rw`, `ro+wh`, `rr+wh`). As in aufs,
    /// a plain `ro` or `rr` branch is taken to hold none: its `.wh.` names are hidden but
    /// hide nothing, and lookups never look for them there (half the lookups a name
    /// costs in such a branch).
    pub whiteouts: bool,
}

/// Parses aufs's `br=` value: `DIR[=MODE]` joined by `:` (leftmost first). A branch without
/// a mode is `rw` when it is the first and `ro` otherwise, as aufs defaults.
pub fn parse_branches(spec: &str) -> Result<Vec<Branch>, String> {
    let mut out = Vec::new();
    for (i, part) in spec.split(':').enumerate() {
        if part.is_empty() {
            return Err(format!("empty branch in br={spec:?}"));
        }
        let (path, mode) = match part.rsplit_once('=') {
            Some((p, m)) => (p, Some(m)),
            None => (part, None),
        };
        let (mode, whiteouts) = match mode {
            None if i == 0 => (BranchMode::ReadWrite, true),
            None => (BranchMode::ReadOnly, false),
            Some("rw") => (BranchMode::ReadWrite, true),
            Some("ro" | "rr") => (BranchMode::ReadOnly, false),
            Some("ro+wh" | "rr+wh") => (BranchMode::ReadOnly, true),
            Some(m) => {
                return Err(format!(
                    "branch {path:?}: unknown mode {m:?} (use rw, ro, ro+wh or rr)"
                ))
            }
        };
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(format!("branch {path:?} is not an absolute path"));
        }
        out.push(Branch {
            path,
            mode,
            whiteouts,
        });
    }
    if out.len() > u16::MAX as usize {
        return Err(format!("{} branches is too many", out.len()));
    }
    Ok(out)
}

/// Everything a mount takes.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub branches: Vec<Branch>,
    /// Mount read-only whatever the branches allow.
    pub readonly: bool,
    /// Let users other than the mounting one in (FUSE's `allow_other`).
    pub allow_other: bool,
    /// Device files and set-user-ID bits take effect (as for a container's root).
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    /// Threads reading `/dev/fuse` (one when io_uring queues serve the requests).
    pub threads: usize,
    /// Hand file data to the kernel (FUSE passthrough) where it is offered.
    pub passthrough: bool,
    /// Take requests over io_uring, a queue per CPU, where the kernel offers it.
    pub uring: bool,
    /// Copies made by copy-up need not survive a crash (`volatile`, for a container that
    /// is removed when it exits): they are not synced before they replace the lower file.
    pub volatile: bool,
    /// The source shown in the mount table.
    pub fsname: String,
}

impl MountConfig {
    pub fn new(branches: Vec<Branch>) -> MountConfig {
        MountConfig {
            branches,
            readonly: false,
            allow_other: false,
            dev: false,
            suid: false,
            exec: true,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
            passthrough: true,
            uring: true,
            volatile: false,
            fsname: "strata-aufs".into(),
        }
    }

    /// Applies one mount option as `mount -o` spells it.
    pub fn set_option(&mut self, opt: &str) -> Result<(), String> {
        match opt {
            ""
            | "rw"
            | "default_permissions"
            | "async"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "_netdev"
            | "nofail" => {}
            o if o.starts_with("x-") => {}
            "ro" => self.readonly = true,
            "allow_other" => self.allow_other = true,
            "dev" => self.dev = true,
            "nodev" => self.dev = false,
            "suid" => self.suid = true,
            "nosuid" => self.suid = false,
            "exec" => self.exec = true,
            "noexec" => self.exec = false,
            "nopassthrough" => self.passthrough = false,
            "uring" => self.uring = true,
            "nouring" => self.uring = false,
            "volatile" => self.volatile = true,
            o => match o.split_once('=') {
                Some(("br" | "dirs", v)) => self.branches = parse_branches(v)?,
                Some(("fsname", v)) => self.fsname = v.to_string(),
                Some(("threads", v)) => {
                    self.threads = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| format!("threads={v}: give a number from 1 to 64"))?
                }
                _ => return Err(format!("unknown mount option {o:?}")),
            },
        }
        Ok(())
    }

    fn fuser_config(&self) -> fuser::Config {
        use fuser::MountOption as O;
        let mut c = fuser::Config::default();
        c.mount_options = vec![
            O::FSName(self.fsname.clone()),
            O::Subtype("strata-aufs".into()),
            O::DefaultPermissions,
            if self.readonly { O::RO } else { O::RW },
            if self.dev { O::Dev } else { O::NoDev },
            if self.suid { O::Suid } else { O::NoSuid },
            if self.exec { O::Exec } else { O::NoExec },
        ];
        if self.allow_other {
            c.acl = fuser::SessionACL::All;
        }
        // Over io_uring, /dev/fuse carries little more than FORGET and INTERRUPT.
        c.n_threads = Some(if self.uring { 1 } else { self.threads });
        c.clone_fd = true;
        c
    }
}

/// Whether FUSE over io_uring can be used: the kernel has it and allows it. Servers must
/// ask for it, so allowing it (root may) changes nothing for the others.
fn uring_allowed() -> bool {
    const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";
    match std::fs::read_to_string(PARAM) {
        Ok(v) if v.trim() == "Y" => true,
        Ok(_) => std::fs::write(PARAM, "Y").is_ok(),
        Err(_) => false,
    }
}

/// A mounted union, served by the caller's thread until it is unmounted.
pub struct Mounted(fuser::Session<Union>);

impl Mounted {
    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        self.0.run()
    }
}

/// Runs the CPU feature detection that the first request with a name would otherwise run
/// (fuser finds the name's end with `memchr`, which picks its AVX2 or SSE2 code once per
/// process): it executes `cpuid` about ten times, and in a VM each one traps to the
/// hypervisor (3.6 µs here), which made the first lookup of a fresh mount 40 µs slower.
fn detect_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    std::hint::black_box(std::arch::is_x86_feature_detected!("avx2"));
}

/// File table slots made at mount (see [`make_room_for_files`]).
const FD_TABLE: u32 = 1024;

/// Raises this process's open-files limit to its hard limit (never above: that needs
/// CAP_SYS_RESOURCE), as fuse-overlayfs does: the server holds a file for every file the
/// union's users have open. Then grows its file table to [`FD_TABLE`] slots (within that
/// limit) before the request threads start: the kernel grows a table that several threads
/// share only after an RCU grace period, 15 ms here, which a request that opened the
/// 64th, 128th, ... file waited for (kept branch directories, a container's open files).
fn make_room_for_files() {
    use rustix::fs::{Mode, OFlags};
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut nofile = getrlimit(Resource::Nofile);
    if let (Some(current), Some(hard)) = (nofile.current, nofile.maximum) {
        if current < hard {
            nofile.current = Some(hard);
            let _ = setrlimit(Resource::Nofile, nofile);
        }
    }
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    // A file at slot FD_TABLE - 1 makes a table of exactly FD_TABLE slots.
    let top = (FD_TABLE as u64 - 1).min(limit.saturating_sub(1)) as i32;
    if let Ok(fd) = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()) {
        // Dropped at once: the table keeps its size.
        let _ = rustix::io::fcntl_dupfd_cloexec(&fd, top);
    }
}

/// Mounts the union on `mountpoint`. The mount exists when this returns; requests are
/// served once [`Mounted::run`] is called.
///
/// Sets the process's umask to 0: the caller's umask comes with each request and is applied
/// to the modes of new files, which the server's own must not mask again.
pub fn mount(config: &MountConfig, mountpoint: &Path) -> io::Result<Mounted> {
    rustix::process::umask(rustix::fs::Mode::empty());
    make_room_for_files();
    detect_cpu_features();
    let mut config = config.clone();
    config.uring = config.uring && uring_allowed();
    let fs = Union::new(&config)?;
    let session = fuser::Session::new(fs, mountpoint, &config.fuser_config())?;
    Ok(Mounted(session))
}
