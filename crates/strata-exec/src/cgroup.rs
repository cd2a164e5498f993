//! Reading a container's cgroup: one place that knows where its files are, in a v1
//! hierarchy per controller (this machine: hybrid) or in the unified v2 tree.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup strata gives container `id` (its spec's `linux.cgroupsPath`).
pub fn container_cgroups_path(id: &str) -> String {
    format!("/strata/{id}")
}

/// One sample of a container's counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Sample {
    pub cpu_usage_ns: u64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub pids: u64,
    pub blkio_read: u64,
    pub blkio_write: u64,
}

pub struct Cgroup {
    rel: String,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn number(text: Option<String>) -> Option<u64> {
    text?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file ("key value" lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

impl Cgroup {
    /// The cgroup at `cgroups_path` (as a spec's `linux.cgroupsPath`).
    pub fn new(cgroups_path: &str) -> Cgroup {
        Cgroup {
            rel: cgroups_path.trim_start_matches('/').to_string(),
        }
    }

    fn v1(&self, controller: &str, file: &str) -> PathBuf {
        Path::new(ROOT).join(controller).join(&self.rel).join(file)
    }

    fn v2(&self, file: &str) -> PathBuf {
        Path::new(ROOT).join(&self.rel).join(file)
    }

    /// Whether the container's cgroup is in v1 hierarchies (its memory controller has one).
    fn is_v1(&self) -> bool {
        self.v1("memory", "").exists()
    }

    /// The v1 file of `controller`, else the unified tree's `v2` file.
    fn read_either(&self, v1: (&str, &str), v2: &str) -> Option<String> {
        read(&self.v1(v1.0, v1.1)).or_else(|| read(&self.v2(v2)))
    }

    /// Whether the OOM killer killed one of its processes.
    pub fn oom_killed(&self) -> bool {
        self.read_either(("memory", "memory.oom_control"), "memory.events")
            .and_then(|t| keyed(&t, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    /// Whether its processes are frozen (`pause`).
    pub fn frozen(&self) -> bool {
        match read(&self.v1("freezer", "freezer.state")) {
            Some(s) => s.trim() == "FROZEN",
            None => read(&self.v2("cgroup.freeze")).is_some_and(|s| s.trim() == "1"),
        }
    }

    /// The pids in it.
    pub fn pids(&self) -> Vec<i32> {
        self.read_either(("pids", "cgroup.procs"), "cgroup.procs")
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Its counters now; a memory limit is at most the host's memory, as docker shows it.
    pub fn sample(&self) -> Sample {
        let mut s = Sample::default();
        if self.is_v1() {
            s.cpu_usage_ns = number(read(&self.v1("cpuacct", "cpuacct.usage"))).unwrap_or(0);
            // docker subtracts the page cache's inactive files from usage.
            let usage = number(read(&self.v1("memory", "memory.usage_in_bytes"))).unwrap_or(0);
            let stat = read(&self.v1("memory", "memory.stat")).unwrap_or_default();
            s.memory_usage = usage.saturating_sub(keyed(&stat, "total_inactive_file").unwrap_or(0));
            s.memory_limit = number(read(&self.v1("memory", "memory.limit_in_bytes"))).unwrap_or(0);
            s.pids = number(read(&self.v1("pids", "pids.current"))).unwrap_or(0);
            let io = read(&self.v1("blkio", "blkio.throttle.io_service_bytes")).unwrap_or_default();
            for l in io.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if let [_, op, n] = f[..] {
                    let n: u64 = n.parse().unwrap_or(0);
                    match op {
                        "Read" => s.blkio_read += n,
                        "Write" => s.blkio_write += n,
                        _ => {}
                    }
                }
            }
        } else {
            let cpu = read(&self.v2("cpu.stat")).unwrap_or_default();
            s.cpu_usage_ns = keyed(&cpu, "usage_usec").unwrap_or(0) * 1000;
            s.memory_usage = number(read(&self.v2("memory.current"))).unwrap_or(0);
            s.memory_limit = number(read(&self.v2("memory.max"))).unwrap_or(0);
            s.pids = number(read(&self.v2("pids.current"))).unwrap_or(0);
        }
        let host_mem = rustix::system::sysinfo().totalram;
        if s.memory_limit == 0 || s.memory_limit > host_mem {
            s.memory_limit = host_mem;
        }
        s
    }
}
