//! Compiled seccomp filters for the native runtime.
//!
//! libcontainer turns a container's seccomp profile into a BPF program with libseccomp
//! inside the container's init, on every start: 6-8 ms of CPU for docker's profile on two
//! architectures, the largest single cost of `strata run`. The native runtime instead
//! compiles each distinct profile once (here, with libseccomp), keeps the program in a
//! cache named by the profile's digest, and lets the container's process load it with one
//! `seccomp(2)` call. This module exists because libcontainer can only compile and load
//! in one step, from inside the process being confined.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use libseccomp::{ScmpSyscall, ScmpVersion};
use oci_spec::runtime::LinuxSeccompOperator;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// The file format: this magic, the `seccomp(2)` flags (u32, little endian), the
/// SHA-256 of the program, then the program (8-byte instructions, native byte order).
const MAGIC: &[u8; 8] = b"STBPF01\n";
const HEADER: usize = MAGIC.len() + 4 + 32;
const INSN: usize = std::mem::size_of::<libc::sock_filter>();

/// libseccomp's `SCMP_FLTATR_CTL_OPTIMIZE` level for a binary tree (libseccomp 2.5+).
const BINARY_TREE: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("compiling the seccomp profile: {0}")]
    Compile(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not a valid compiled seccomp filter ({1}); remove it and start again")]
    Corrupt(String, &'static str),
}

type Result<T> = std::result::Result<T, FilterError>;

/// A seccomp filter ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Clone, Debug)]
pub struct Filter {
    flags: u32,
    program: Vec<libc::sock_filter>,
}

impl Filter {
    /// Compiles `profile`, or returns None when the profile needs what a precompiled
    /// program cannot give: a notification fd (SCMP_ACT_NOTIFY), which only libcontainer's
    /// own loading hands on.
    pub fn compile(profile: &LinuxSeccomp) -> Result<Option<Filter>> {
        let notify = |a: LinuxSeccompAction| a == LinuxSeccompAction::ScmpActNotify;
        if notify(profile.default_action())
            || profile
                .syscalls()
                .iter()
                .flatten()
                .any(|s| notify(s.action()))
            || profile.listener_path().is_some()
        {
            return Ok(None);
        }
        let mut flags = 0;
        for flag in profile.flags().iter().flatten() {
            flags |= match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                    libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
                }
                // Only meaningful with a notification fd.
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return Ok(None),
            } as u32;
        }
        let err = |what: &str, e: libseccomp::error::SeccompError| {
            FilterError::Compile(format!("{what}: {e}"))
        };
        let default = action(profile.default_action(), profile.default_errno_ret());
        let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("the default action", e))?;
        // A binary tree by syscall number instead of a chain of comparisons: the kernel
        // emulates the program for every syscall number of every architecture when it
        // loads it (to cache which calls are always allowed), and over docker's profile's
        // chain that took 0.9 ms of each container's start.
        ctx.set_ctl_optimize(BINARY_TREE)
            .map_err(|e| err("choosing the binary tree layout", e))?;
        for arch in profile.architectures().iter().flatten() {
            let name = serde_json::to_value(arch).expect("an arch serializes");
            let name = name.as_str().unwrap_or_default();
            let scmp: ScmpArch = name.parse().map_err(|e| err(name, e))?;
            ctx.add_arch(scmp).map_err(|e| err(name, e))?;
        }
        for rule in profile.syscalls().iter().flatten() {
            let act = action(rule.action(), rule.errno_ret());
            // libseccomp refuses a rule that repeats the default action.
            if act == default {
                continue;
            }
            let compares: Vec<ScmpArgCompare> = rule.args().iter().flatten().map(compare).collect();
            let mut indexes = HashSet::new();
            // One rule may compare each argument once; a profile that compares one twice
            // means either comparison (runc's reading), so each becomes its own rule.
            let groups: Vec<&[ScmpArgCompare]> = if rule
                .args()
                .iter()
                .flatten()
                .all(|a| indexes.insert(a.index()))
            {
                vec![&compares[..]]
            } else {
                compares.chunks(1).collect()
            };
            for name in rule.names() {
                // A name this libseccomp does not know is a call this kernel cannot have.
                let Ok(syscall) = ScmpSyscall::from_name(name) else {
                    continue;
                };
                for group in &groups {
                    ctx.add_rule_conditional(act, syscall, group)
                        .map_err(|e| err(&format!("the rule for {name}"), e))?;
                }
            }
        }
        let mut out = tempfile_in_memory()?;
        ctx.export_bpf(&out)
            .map_err(|e| err("exporting the program", e))?;
        let mut bytes = Vec::new();
        out.rewind()
            .and_then(|_| out.read_to_end(&mut bytes))
            .map_err(|e| FilterError::Io("reading the exported program".into(), e))?;
        let program = instructions(&bytes)
            .ok_or_else(|| FilterError::Compile("libseccomp exported a partial program".into()))?;
        Ok(Some(Filter { flags, program }))
    }

    /// The compiled form of `profile` from the cache in `dir`, compiling and storing it
    /// when it is not there (or does not verify).
    pub fn cached(dir: &Path, profile: &LinuxSeccomp) -> Result<Option<Filter>> {
        Ok(Self::cache_entry(dir, profile)?.map(|(filter, _)| filter))
    }

    /// Puts `profile`'s compiled form from the cache in `dir` at `to_dir/name` as a hard
    /// link to the cache entry (entries are only ever replaced whole, by
    /// `state::replace`), so no copy is written; a copy only where a link cannot be made.
    /// False: the profile is one only libcontainer can load (see `compile`).
    pub fn place_cached(
        dir: &Path,
        profile: &LinuxSeccomp,
        to_dir: &Path,
        name: &str,
    ) -> Result<bool> {
        let Some((filter, entry)) = Self::cache_entry(dir, profile)? else {
            return Ok(false);
        };
        let tmp = to_dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let linked = std::fs::hard_link(&entry, &tmp)
            .and_then(|()| std::fs::rename(&tmp, to_dir.join(name)));
        if linked.is_err() {
            let _ = std::fs::remove_file(&tmp);
            filter.write(to_dir, name)?;
        }
        Ok(true)
    }

    /// The verified cache entry for `profile` and its path, compiled and stored first when
    /// it is not there (or does not verify); None for a profile `compile` leaves alone.
    fn cache_entry(dir: &Path, profile: &LinuxSeccomp) -> Result<Option<(Filter, PathBuf)>> {
        let mut key = Sha256::new();
        key.update(serde_json::to_vec(profile).expect("a profile serializes"));
        if let Ok(v) = ScmpVersion::current() {
            key.update(format!("libseccomp {}.{}.{}", v.major, v.minor, v.micro));
        }
        key.update(format!("{:?} optimize {BINARY_TREE}", ScmpArch::native()));
        let name = format!("{}.bpf", hex::encode(key.finalize()));
        let entry = dir.join(&name);
        if let Ok(filter) = Filter::read(&entry) {
            return Ok(Some((filter, entry)));
        }
        let Some(filter) = Filter::compile(profile)? else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| FilterError::Io(format!("creating {}", dir.display()), e))?;
        filter.write(dir, &name)?;
        Ok(Some((filter, entry)))
    }

    /// Writes the filter to `dir/name` atomically (`state::replace`). Readers verify the
    /// digest, so a stale or damaged file is recompiled, never loaded.
    pub fn write(&self, dir: &Path, name: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(HEADER + self.program.len() * INSN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.flags.to_le_bytes());
        let body = self.body();
        bytes.extend_from_slice(&Sha256::digest(&body));
        bytes.extend_from_slice(&body);
        crate::state::replace(dir, name, &bytes)
            .map_err(|e| FilterError::Io(format!("writing {}", dir.join(name).display()), e))
    }

    /// Reads a filter written by [`Filter::write`], checking its digest.
    pub fn read(path: &Path) -> Result<Filter> {
        let bytes = std::fs::read(path)
            .map_err(|e| FilterError::Io(format!("reading {}", path.display()), e))?;
        let corrupt = |why| FilterError::Corrupt(path.display().to_string(), why);
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("no header"));
        }
        let flags = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let (digest, body) = bytes[12..].split_at(32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(corrupt("digest mismatch"));
        }
        let program = instructions(body).ok_or_else(|| corrupt("partial instruction"))?;
        if program.is_empty() || program.len() > libc::BPF_MAXINSNS as usize {
            return Err(corrupt("bad length"));
        }
        Ok(Filter { flags, program })
    }

    /// Confines the calling thread (or, with TSYNC, process). Needs CAP_SYS_ADMIN or
    /// no_new_privs, as any seccomp filter does.
    pub fn load(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `len` initialised instructions that outlive the call;
        // the kernel copies them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.program.len() * INSN);
        for i in &self.program {
            body.extend_from_slice(&i.code.to_ne_bytes());
            body.push(i.jt);
            body.push(i.jf);
            body.extend_from_slice(&i.k.to_ne_bytes());
        }
        body
    }
}

fn instructions(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if !bytes.len().is_multiple_of(INSN) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// An anonymous file for libseccomp to export into (it writes to an fd).
fn tempfile_in_memory() -> Result<std::fs::File> {
    rustix::fs::memfd_create("seccomp-bpf", rustix::fs::MemfdFlags::CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| FilterError::Io("creating a memfd".into(), e.into()))
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno as u16),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    }
}

/// Rewrites a profile (OCI JSON) into the operand order libcontainer 0.7 reads, for the
/// profiles it loads itself (those that hand on a notification fd): it takes
/// SCMP_CMP_MASKED_EQ's mask from `valueTwo` and the datum from `value`, the other way
/// round from runc and from [`compare`], so the two are swapped. Loading docker's profile
/// unswapped would let a container clone new namespaces.
pub fn swap_masked_eq_for_libcontainer(profile: &mut serde_json::Value) {
    let Some(syscalls) = profile.get_mut("syscalls").and_then(|s| s.as_array_mut()) else {
        return;
    };
    let args = syscalls
        .iter_mut()
        .filter_map(|s| s.get_mut("args").and_then(|a| a.as_array_mut()))
        .flatten();
    for arg in args.filter(|a| a["op"] == "SCMP_CMP_MASKED_EQ") {
        let value = arg.get("value").cloned().unwrap_or(0.into());
        let value_two = arg.get("valueTwo").cloned().unwrap_or(0.into());
        arg["value"] = value_two;
        arg["valueTwo"] = value;
    }
}

/// One argument comparison, as OCI runtimes read it: for SCMP_CMP_MASKED_EQ, `value` is
/// the mask and `valueTwo` what the masked argument must equal (docker's profile allows
/// `clone` when `flags & CLONE_NEW* == 0` this way). libcontainer 0.7 swaps the two,
/// which makes docker's rule match any flags.
fn compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let index = arg.index() as u32;
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let mask = ScmpCompareOp::MaskedEqual(arg.value());
            return ScmpArgCompare::new(index, mask, arg.value_two().unwrap_or(0));
        }
    };
    ScmpArgCompare::new(index, op, arg.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_default() -> LinuxSeccomp {
        let caps: Vec<String> = crate::spec::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect();
        serde_json::from_value(crate::seccomp::default_profile(&caps)).expect("an OCI profile")
    }

    /// Runs `f` in a forked child confined by `filter`; returns its exit code.
    fn confined(filter: &Filter, f: fn() -> i32) -> i32 {
        in_child(|| filter.load().is_ok(), f)
    }

    /// Runs `f` in a forked child after `load` confined it; returns its exit code.
    fn in_child(load: impl FnOnce() -> bool, f: fn() -> i32) -> i32 {
        // SAFETY: the child loads the filter (glibc's malloc stays usable after fork) and
        // then makes only raw system calls before _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let code = if load() { f() } else { 100 };
                libc::_exit(code);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "child died: {status:#x}");
            libc::WEXITSTATUS(status)
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    #[test]
    fn the_compiled_default_profile_allows_fork_and_denies_namespaces() {
        let filter = Filter::compile(&docker_default())
            .unwrap()
            .expect("compilable");
        // A plain fork (clone without namespace flags) works.
        assert_eq!(confined(&filter, fork), 0, "fork under the filter");
        assert_eq!(
            confined(&filter, clone_newuts),
            0,
            "clone(CLONE_NEWUTS) must fail with EPERM"
        );
        let unshare = confined(&filter, || unsafe {
            let rc = libc::unshare(libc::CLONE_NEWNET);
            if rc < 0 && errno() == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(unshare, 0, "unshare must fail with EPERM");
        let clone3 = confined(&filter, || unsafe {
            let rc = libc::syscall(libc::SYS_clone3, 0, 0);
            if rc < 0 && errno() == libc::ENOSYS {
                0
            } else {
                1
            }
        });
        assert_eq!(
            clone3, 0,
            "clone3 must fail with ENOSYS so libc falls back to clone"
        );
    }

    /// 0 when a plain fork (clone without namespace flags) works, 1 when it fails.
    fn fork() -> i32 {
        // SAFETY: a raw clone whose child exits at once.
        unsafe {
            let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
            if pid == 0 {
                libc::_exit(0);
            }
            if pid < 0 {
                return 1;
            }
            libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            0
        }
    }

    /// 0 when `clone(CLONE_NEWUTS)` fails with EPERM, 1 when it succeeds or fails otherwise.
    fn clone_newuts() -> i32 {
        // SAFETY: a raw clone whose child exits at once.
        unsafe {
            let pid = libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUTS | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            );
            if pid == 0 {
                libc::_exit(0);
            }
            if pid < 0 && errno() == libc::EPERM {
                0
            } else {
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
                1
            }
        }
    }

    #[test]
    fn libcontainer_loads_docker_rules_as_meant_only_with_masked_eq_swapped() {
        let docker = docker_default();
        let mut swapped = serde_json::to_value(&docker).unwrap();
        swap_masked_eq_for_libcontainer(&mut swapped);
        let swapped: LinuxSeccomp = serde_json::from_value(swapped).unwrap();
        let by_libcontainer = |p: &LinuxSeccomp| {
            let p = p.clone();
            move || libcontainer::seccomp::initialize_seccomp(&p).is_ok()
        };
        assert_eq!(
            in_child(by_libcontainer(&swapped), clone_newuts),
            0,
            "libcontainer with the swapped profile must refuse clone(CLONE_NEWUTS)"
        );
        assert_eq!(
            in_child(by_libcontainer(&swapped), fork),
            0,
            "fork still works"
        );
        // The reason for the swap. Should this start failing, libcontainer reads the
        // operands as runc does and the swap must go.
        assert_eq!(
            in_child(by_libcontainer(&docker), clone_newuts),
            1,
            "libcontainer 0.7 lets docker's profile, as written, clone new namespaces"
        );
    }

    #[test]
    fn cached_filters_are_verified_and_recompiled_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let profile = docker_default();
        let first = Filter::cached(dir.path(), &profile).unwrap().unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "one cache entry, no temp file left");
        let path = files[0].path();
        let again = Filter::read(&path).unwrap();
        assert_eq!(again.body(), first.body());
        assert_eq!(again.flags, first.flags);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = Filter::read(&path).unwrap_err().to_string();
        assert!(err.contains("digest mismatch"), "{err}");
        let healed = Filter::cached(dir.path(), &profile).unwrap().unwrap();
        assert_eq!(healed.body(), first.body());
        assert!(
            Filter::read(&path).is_ok(),
            "the damaged entry was rewritten"
        );
    }

    #[test]
    fn a_profile_that_needs_a_notification_fd_is_left_to_libcontainer() {
        let mut profile = serde_json::to_value(docker_default()).unwrap();
        profile["syscalls"][0]["action"] = "SCMP_ACT_NOTIFY".into();
        let profile: LinuxSeccomp = serde_json::from_value(profile).unwrap();
        assert!(Filter::compile(&profile).unwrap().is_none());
    }
}
