use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        move_task(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}

/// Moves the process `pid` into the cgroup at `cgroup_path`.
///
/// strata's patch: a single-threaded process that moves itself writes "0" to `tasks`
/// instead of its pid to `cgroup.procs`. For that one case the kernel skips taking the
/// global threadgroup rwsem for write, whose first taking waits out an RCU grace period
/// (10-20 ms on these machines, on every container start). With one thread, moving the
/// thread moves the whole process, so the result is the same.
pub(super) fn move_task(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == Pid::this() && single_threaded() {
        return common::write_cgroup_file(cgroup_path.join(CGROUP_TASKS), 0);
    }
    common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
}

const CGROUP_TASKS: &str = "tasks";

/// Whether this process has one thread; it cannot gain another while this runs. procfs
/// counts a process's threads in the link count of its `task` directory (two plus one per
/// thread): one `statx`, where reading `/proc/self/stat` takes eight system calls, and a
/// container start asks once per hierarchy.
fn single_threaded() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/task").is_ok_and(|m| m.nlink() == 3)
}
