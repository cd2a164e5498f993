//! `info` and `system df`.

use crate::container_fs::unmount_below;
use crate::error::{EngineError, Result};
use crate::records;
use crate::Engine;
use serde::Serialize;
use std::path::Path;
use strata_store::Digest;

#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    /// Runtime names and binaries (`None`: in-process).
    pub runtimes: Vec<(String, Option<std::path::PathBuf>)>,
    pub default_runtime: String,
    /// "v1" (possibly hybrid) or "v2".
    pub cgroup_version: String,
    pub images: usize,
    pub layers: usize,
    pub server_version: String,
    pub storage_driver: String,
    pub driver_status: Vec<(String, String)>,
    /// What `info` warns about the driver's setup (docker prints these as WARNING lines).
    pub warnings: Vec<String>,
    pub root_dir: String,
    pub kernel_version: String,
    pub operating_system: String,
    pub architecture: String,
    pub cpus: usize,
    pub mem_total: u64,
    pub store_format: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageUsage {
    pub summary: crate::ImageSummary,
    pub unique_size: u64,
    /// Containers made from the image.
    pub containers: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerUsage {
    pub container: crate::Container,
    pub size: crate::ContainerSize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// Bytes all images take together, shared layers counted once.
    pub images_size: u64,
    /// Of that, the layers no container's image uses.
    pub images_reclaimable: u64,
    /// Images with at least one container.
    pub images_active: usize,
    pub containers: Vec<ContainerUsage>,
    pub volumes: Vec<VolumeUsage>,
}

/// A volume, how many containers use it, and the bytes its data holds.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeUsage {
    pub volume: crate::volumes::Volume,
    pub links: usize,
    pub size: u64,
}

impl Engine {
    /// Takes the store back to empty, as podman's `system reset`: every container
    /// (running ones killed), mount, image, layer and blob goes, and so does what the
    /// storage driver set up outside the store's files (btrfs: its loop-backed pool is
    /// unmounted and its loop device detached). Only the lock files stay.
    pub fn reset(self) -> Result<()> {
        for c in self.list_containers()? {
            self.remove_container(&c.id, true, true)?;
        }
        let _alone = self.exclusive()?;
        // Container and image mounts first: the driver cannot remove storage under them.
        unmount_below(&self.root.join("mounts"))?;
        unmount_below(&self.tmp_dir())?;
        let driver = self.snapshots.driver();
        for id in driver
            .stored_ids()
            .map_err(|e| EngineError::io("listing the driver's storage", e))?
        {
            driver
                .remove(id)
                .map_err(|e| EngineError::io(format!("removing snapshot {id}"), e))?;
        }
        self.snapshots.close()?;
        unmount_below(&self.root)?;
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| EngineError::io(format!("reading {}", self.root.display()), e))?;
        for e in entries {
            let e = e.map_err(|e| EngineError::io("reading the store root", e))?;
            let name = e.file_name();
            if name == "strata.lock" || name == "strata.init.lock" {
                continue;
            }
            let p = e.path();
            let removed = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                // A shim may be deleting trash in there at the same time: what it took
                // first is gone between listing and removing, which is no failure.
                let mut removed = std::fs::remove_dir_all(&p);
                for _ in 0..3 {
                    match &removed {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            removed = match p.exists() {
                                true => std::fs::remove_dir_all(&p),
                                false => Ok(()),
                            }
                        }
                        _ => break,
                    }
                }
                removed
            } else {
                std::fs::remove_file(&p)
            };
            removed.map_err(|e| EngineError::io(format!("removing {}", p.display()), e))?;
        }
        Ok(())
    }

    pub fn info(&self) -> Result<SystemInfo> {
        let uts = rustix::system::uname();
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        let all = crate::containers::all(&self.db)?;
        let (mut running, mut paused) = (0, 0);
        for c in &all {
            if self.run_state(c)?.active() {
                if self.is_paused(c) {
                    paused += 1;
                } else {
                    running += 1;
                }
            }
        }
        let cgroup_version = match rustix::fs::statfs("/sys/fs/cgroup") {
            Ok(st) if st.f_type == libc::CGROUP2_SUPER_MAGIC => "2",
            _ => "1",
        };
        Ok(SystemInfo {
            containers: all.len(),
            containers_running: running,
            containers_paused: paused,
            containers_stopped: all.len() - running - paused,
            runtimes: self.runtimes(),
            default_runtime: self.default_runtime().to_string(),
            cgroup_version: cgroup_version.to_string(),
            images: records::images(&self.db)?.len(),
            layers: records::all_layers(&self.db)?.len(),
            server_version: crate::VERSION.to_string(),
            storage_driver: self.driver.clone(),
            driver_status: self.snapshots.driver().status(),
            warnings: self.snapshots.driver().warnings(),
            root_dir: self.root.display().to_string(),
            kernel_version: uts.release().to_string_lossy().into_owned(),
            operating_system: os,
            architecture: uts.machine().to_string_lossy().into_owned(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            mem_total,
            store_format: crate::FORMAT_VERSION,
        })
    }

    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let containers = crate::containers::all(&self.db)?;
        let mut per_image: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
        for c in &containers {
            *per_image.entry(c.image.clone()).or_default() += 1;
        }
        let index = records::LayerIndex::load(&self.db)?;
        let image_tops: std::collections::HashMap<_, _> = records::images(&self.db)?
            .into_iter()
            .map(|i| (i.id, i.top_layer))
            .collect();
        let used_layers: std::collections::HashSet<&Digest> = per_image
            .keys()
            .filter_map(|id| image_tops.get(id))
            .flat_map(|top| index.chain(top.as_ref()))
            .map(|l| &l.chain_id)
            .collect();
        let images = self
            .list_images()?
            .into_iter()
            .map(|s| ImageUsage {
                unique_size: s.size - s.shared_size,
                containers: per_image.get(&s.id).copied().unwrap_or(0),
                summary: s,
            })
            .collect();
        let images_size = index.all().map(|l| l.size).sum();
        let images_reclaimable = index
            .all()
            .filter(|l| !used_layers.contains(&l.chain_id))
            .map(|l| l.size)
            .sum();
        let sizes = self.container_sizes(&containers)?;
        let containers = containers
            .into_iter()
            .zip(sizes)
            .map(|(container, size)| ContainerUsage { container, size })
            .collect();
        let links = self.volume_links()?;
        let volumes = self
            .list_volumes()?
            .into_iter()
            .map(|volume| VolumeUsage {
                links: links.get(&volume.name).copied().unwrap_or(0),
                size: strata_snapshot::usage::tree_usage(Path::new(&volume.mountpoint))
                    .map(|u| u.size)
                    .unwrap_or(0),
                volume,
            })
            .collect();
        Ok(DiskUsage {
            images,
            images_size,
            images_reclaimable,
            images_active: per_image.len(),
            containers,
            volumes,
        })
    }
}
