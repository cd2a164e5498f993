//! `exec`, `top` and `stats`: work on a running container's processes and cgroup.

use crate::containers::Container;
use crate::error::{EngineError, Result};
use crate::Engine;
use strata_exec::cgroup::{container_cgroups_path, Cgroup};
use strata_exec::exec::ExecConfig;
use strata_exec::spawn::{spawn_shim, ShimExe, SpawnOptions, Spawned};
use strata_exec::spec::{self, ProcessSpec};
use strata_exec::state;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub detach: bool,
    pub privileged: bool,
}

/// A started exec: wait on the shim for the process's exit code (unless detached).
pub struct ExecHandle {
    pub shim: Spawned,
    files: Vec<std::path::PathBuf>,
}

impl Drop for ExecHandle {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

impl Engine {
    /// `exec`: starts `opts.cmd` in the running container through an exec shim.
    pub fn exec_container(&self, name_or_id: &str, opts: &ExecOptions) -> Result<ExecHandle> {
        let c = self.container(name_or_id)?;
        let st = self.run_state(&c)?;
        if st.status != state::Status::Running {
            return Err(EngineError::Conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        if self.is_paused(&c) {
            return Err(EngineError::Conflict(format!(
                "container {} is paused, unpause the container before exec",
                c.id
            )));
        }
        if opts.cmd.is_empty() {
            return Err(EngineError::Usage("exec needs a command to run".into()));
        }
        let rootfs = self.container_mount_point(&c.id);
        let mut probe = c.clone();
        if let Some(u) = &opts.user {
            probe.config.user = u.clone();
        }
        if let Some(w) = &opts.workdir {
            probe.config.working_dir = w.clone();
        }
        let dir = self.run_dir(&c.id);
        let base = self.process_spec(&probe, &rootfs)?;
        let mut env = base.env.clone();
        for e in &opts.env {
            let key = e.split('=').next().unwrap_or(e);
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        let caps = if opts.privileged {
            spec::capabilities(true, &[], &[]).map_err(|e| EngineError::Usage(e.to_string()))?
        } else {
            base.caps.clone()
        };
        let process = ProcessSpec {
            args: opts.cmd.clone(),
            env,
            terminal: opts.tty,
            caps,
            ..base
        };
        let tag = format!("{:016x}", rand::random::<u64>());
        let process_file = dir.join(format!("exec-{tag}.process.json"));
        let config_file = dir.join(format!("exec-{tag}.json"));
        let io = |what: &str, e: std::io::Error| EngineError::io(what.to_string(), e);
        std::fs::write(
            &process_file,
            serde_json::to_vec(&spec::process_json(&process)).expect("json"),
        )
        .map_err(|e| io("writing the exec process", e))?;
        let cfg = ExecConfig {
            id: c.id.clone(),
            runtime: c.host.runtime.clone(),
            runtime_path: c.host.runtime_path.clone(),
            runtime_state: self.root.join("runtime"),
            process: process_file.clone(),
            tty: opts.tty,
            console_socket: self.root.join("run").join(format!("{}.console", &tag)),
        };
        state::write_json(
            &dir,
            config_file
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name"),
            &cfg,
        )
        .map_err(|e| io("writing the exec config", e))?;
        let files = vec![process_file, config_file.clone()];
        let spawn = SpawnOptions {
            detach: opts.detach,
            exe: ShimExe::Sealed,
            ..Default::default()
        };
        let mut shim = spawn_shim(&["exec".as_ref(), config_file.as_os_str()], spawn)
            .map_err(|e| io("starting the exec shim", e))?;
        match shim.wait_ready() {
            Ok(_) => Ok(ExecHandle { shim, files }),
            Err(msg) => {
                let _ = shim.child.wait();
                for f in &files {
                    let _ = std::fs::remove_file(f);
                }
                Err(EngineError::StartFailed {
                    code: strata_exec::start_error_code(&msg),
                    message: msg,
                })
            }
        }
    }

    /// The container's cgroup.
    pub fn cgroup(&self, c: &Container) -> Cgroup {
        Cgroup::new(&container_cgroups_path(&c.id))
    }
}
