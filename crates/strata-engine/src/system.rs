//! `info` and `system df`.

use crate::error::Result;
use crate::records;
use crate::Engine;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub images: usize,
    pub layers: usize,
    pub server_version: String,
    pub storage_driver: String,
    pub driver_status: Vec<(String, String)>,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// Bytes all images take together, shared layers counted once.
    pub images_size: u64,
    /// Of that, what no container uses (all of it, until containers exist).
    pub images_reclaimable: u64,
    pub images_active: usize,
}

impl Engine {
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
        Ok(SystemInfo {
            images: records::images(&self.db)?.len(),
            layers: records::all_layers(&self.db)?.len(),
            server_version: crate::VERSION.to_string(),
            storage_driver: self.driver.clone(),
            driver_status: self.snapshots.driver().status(),
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
        let list = self.list_images()?;
        let mut seen = std::collections::HashSet::new();
        let mut images = Vec::new();
        for s in list {
            seen.insert(s.id.clone());
            images.push(ImageUsage {
                unique_size: s.size - s.shared_size,
                summary: s,
            });
        }
        let images_size = records::all_layers(&self.db)?.iter().map(|l| l.size).sum();
        Ok(DiskUsage {
            images,
            images_size,
            images_reclaimable: images_size,
            images_active: 0,
        })
    }
}
