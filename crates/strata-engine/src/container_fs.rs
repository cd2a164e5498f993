//! A container's filesystem: mount/umount (refcounted, as podman's), diff, export, commit.

use crate::containers::Container;
use crate::error::{EngineError, Result};
use crate::records::{self, now, ImageRow};
use crate::Engine;
use std::io::{self, Seek, Write};
use std::path::{Path, PathBuf};
use strata_image::changes::apply_change;
use strata_image::config::RunConfig;
use strata_image::Reference;
use strata_snapshot::mount::MountGuard;
use strata_store::{Digest, LockMode, StoreLock};

/// One line of `diff`: `A`dded, `C`hanged or `D`eleted, and the path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub kind: char,
    pub path: String,
}

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub reference: Option<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub changes: Vec<String>,
}

impl Engine {
    /// Serialises mount and umount of one container across processes.
    fn container_lock(&self, id: &str) -> Result<StoreLock> {
        let mount_point = self.container_mount_point(id);
        self.lock_in(mount_point.parent().expect("mount point parent"))
    }

    /// Takes `dir` itself exclusively (making it, from a spare when there is one):
    /// per-container locks between processes.
    pub(crate) fn lock_in(&self, dir: &Path) -> Result<StoreLock> {
        let lock = match StoreLock::open_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.spares.as_ref().is_some_and(|s| s.take(dir)) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| EngineError::io(format!("creating {}", dir.display()), e))?;
                }
                StoreLock::open_dir(dir)
            }
            opened => opened,
        }
        .map_err(|e| EngineError::io("locking the container", e))?;
        lock.lock(LockMode::Exclusive)
            .map_err(|e| EngineError::io("locking the container", e))?;
        Ok(lock)
    }

    /// Mounts the container's root filesystem (once, however often it is asked) and
    /// returns where.
    pub fn mount_container(&self, name_or_id: &str) -> Result<PathBuf> {
        let c = self.container(name_or_id)?;
        let _lock = self.container_lock(&c.id)?;
        let target = self.container_mount_point(&c.id);
        if strata_snapshot::mount::dead_fuse(&target) {
            // Its union server died (killed, OOM): the mount is left as a dead end that
            // only answers errors (see `dead_fuse`). Replace it (detached: processes of the
            // container may still hold it); the branches on disk are intact.
            unmount_below(&target)?;
            rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
                EngineError::io(format!("unmounting {}", target.display()), e.into())
            })?;
            self.set_mount_count(&c.id, 0)?;
        }
        if !is_mount_point(&target) {
            std::fs::create_dir_all(&target)
                .map_err(|e| EngineError::io(format!("creating {}", target.display()), e))?;
            let mounts = self.snapshots.mounts(&c.id)?;
            strata_snapshot::mount::mount_all(&mounts, &target)
                .map_err(|e| EngineError::io(format!("mounting container {}", c.name), e))?;
            self.set_mount_count(&c.id, 1)?;
        } else {
            let n = self.container(&c.id)?.mount_count;
            self.set_mount_count(&c.id, n + 1)?;
        }
        Ok(target)
    }

    /// Mount references are runtime state (a reboot drops the mounts anyway): their
    /// updates are not synced on their own, sparing two fsyncs per container run.
    fn set_mount_count(&self, id: &str, n: u32) -> Result<()> {
        self.db.unsynced(|conn| {
            conn.prepare_cached("UPDATE containers SET mount_count = ?1 WHERE id = ?2")?
                .execute(rusqlite::params![n, id])
        })?;
        Ok(())
    }

    /// Drops one mount reference (all with `force`); unmounts when none is left.
    pub fn unmount_container(&self, name_or_id: &str, force: bool) -> Result<()> {
        let id = self.container(name_or_id)?.id;
        let _lock = self.container_lock(&id)?;
        // Read under the lock: another process may have changed the count meanwhile.
        let c = self.container(&id)?;
        let left = if force {
            0
        } else {
            c.mount_count.saturating_sub(1)
        };
        self.set_mount_count(&c.id, left)?;
        if left == 0 {
            self.unmount_tree(&self.container_mount_point(&c.id))?;
        }
        Ok(())
    }

    /// Containers mounted with `mount`, with where.
    pub fn mounted_containers(&self) -> Result<Vec<(Container, PathBuf)>> {
        Ok(self
            .list_containers()?
            .into_iter()
            .filter(|c| c.mount_count > 0 && is_mount_point(&self.container_mount_point(&c.id)))
            .map(|c| {
                let p = self.container_mount_point(&c.id);
                (c, p)
            })
            .collect())
    }

    /// Writes the container's changes against its image as a layer tar.
    fn write_container_diff(&self, c: &Container, out: &mut dyn Write) -> Result<()> {
        Ok(self.snapshots.diff(&c.id, out)?)
    }

    /// `diff`: what changed in the container's filesystem, sorted by path.
    pub fn container_changes(&self, name_or_id: &str) -> Result<Vec<Change>> {
        let c = self.container(name_or_id)?;
        let mut tmp = tempfile::tempfile_in(self.tmp_dir())
            .map_err(|e| EngineError::io("creating a temporary file", e))?;
        self.write_container_diff(&c, &mut tmp)?;
        tmp.rewind()
            .map_err(|e| EngineError::io("reading the diff", e))?;
        // Whether a path is new or changed depends on the image below.
        let image = records::image(&self.db, &c.image)?
            .ok_or_else(|| EngineError::NoSuchImage(c.image.to_string()))?;
        let view_key = format!("diff-{}", c.id);
        let _ = self.snapshots.remove(&view_key);
        let lower = match &image.top_layer {
            Some(top) => {
                let m = self.snapshots.view(&view_key, Some(&top.to_string()))?;
                Some(
                    MountGuard::new(&m, &self.tmp_dir().join("mounts").join(&view_key))
                        .map_err(|e| EngineError::io("mounting the image", e)),
                )
            }
            None => None,
        };
        let result = (|| -> Result<Vec<Change>> {
            let lower = lower.transpose()?;
            let mut out = Vec::new();
            let mut a = tar::Archive::new(io::BufReader::new(&mut tmp));
            let bad = |e: io::Error| EngineError::io("reading the diff", e);
            for e in a.entries().map_err(bad)? {
                let e = e.map_err(bad)?;
                let p = e.path().map_err(bad)?.into_owned();
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let parent = p.parent().map(|x| x.to_path_buf()).unwrap_or_default();
                if name == strata_archive::whiteout::OPAQUE {
                    continue;
                }
                if let Some(gone) = name.strip_prefix(strata_archive::whiteout::PREFIX) {
                    out.push(Change {
                        kind: 'D',
                        path: format!("/{}", parent.join(gone).display()),
                    });
                    continue;
                }
                let existed = lower
                    .as_ref()
                    .is_some_and(|l| std::fs::symlink_metadata(l.path().join(&p)).is_ok());
                out.push(Change {
                    kind: if existed { 'C' } else { 'A' },
                    path: format!("/{}", p.display().to_string().trim_end_matches('/')),
                });
            }
            out.sort_by(|x, y| x.path.cmp(&y.path));
            out.dedup();
            Ok(out)
        })();
        let _ = self.snapshots.remove(&view_key);
        result
    }

    /// `export`: the container's whole filesystem as one tar.
    pub fn export_container(&self, name_or_id: &str, out: &mut dyn Write) -> Result<()> {
        let c = self.container(name_or_id)?;
        let mounts = self.snapshots.mounts(&c.id)?;
        let target = self
            .tmp_dir()
            .join("mounts")
            .join(format!("export-{:016x}", rand::random::<u64>()));
        let guard = MountGuard::new(&mounts, &target)
            .map_err(|e| EngineError::io("mounting the container", e))?;
        strata_archive::write_tree(guard.path(), out, strata_archive::WhiteoutFormat::Apply)
            .map_err(|e| EngineError::io("writing the export", e))?;
        Ok(())
    }

    /// `commit`: a new image made of the container's image plus its writable layer as one
    /// new layer. Costs what the changes cost: the diff is the container's own layer.
    pub fn commit_container(&self, name_or_id: &str, opts: &CommitOptions) -> Result<Digest> {
        let c = self.container(name_or_id)?;
        let reference = opts
            .reference
            .as_deref()
            .map(str::parse::<Reference>)
            .transpose()?;
        self.operation("commit", || self.commit_inner(&c, reference.as_ref(), opts))
    }

    fn commit_inner(
        &self,
        c: &Container,
        reference: Option<&Reference>,
        opts: &CommitOptions,
    ) -> Result<Digest> {
        let image = records::image(&self.db, &c.image)?
            .ok_or_else(|| EngineError::NoSuchImage(c.image.to_string()))?;
        let mut run = RunConfig {
            user: Some(c.config.user.clone()).filter(|u| !u.is_empty()),
            env: c.config.env.clone(),
            entrypoint: Some(c.config.entrypoint.clone()).filter(|e| !e.is_empty()),
            cmd: Some(c.config.cmd.clone()).filter(|e| !e.is_empty()),
            working_dir: Some(c.config.working_dir.clone()).filter(|w| !w.is_empty()),
            labels: c.config.labels.clone().into_iter().collect(),
            stop_signal: c.config.stop_signal.clone(),
            ..Default::default()
        };
        for ch in &opts.changes {
            apply_change(&mut run, ch).map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        // The layer: the container's diff, stored as an uncompressed tar blob.
        let mut w = self.content.writer()?;
        self.write_container_diff(c, &mut w)?;
        let blob = w.commit(None, None)?.digest().clone();
        let parent = image.top_layer.clone();
        // The diff is uncompressed, so its digest is its diff ID and the layer's chain ID is
        // known before applying it: the same changes committed again reuse the layer.
        let chain = match &parent {
            Some(p) => Digest::of(format!("{p} {blob}").as_bytes()),
            None => blob.clone(),
        };
        let layer = match records::layer(&self.db, &chain)? {
            Some(l) => l,
            None => {
                let mut f = self.content.open_blob(&blob)?;
                self.create_layer(parent.as_ref(), &mut f, None, Some(&blob), || {
                    Ok(blob.clone())
                })?
            }
        };
        // The config: the image's, with the container's settings, the new layer and history.
        let base = self.config_of(&c.image)?;
        let mut cfg = base.raw.clone();
        let created = now();
        let mut conf = serde_json::json!({});
        let set = |v: &mut serde_json::Value, k: &str, x: serde_json::Value| {
            v[k] = x;
        };
        set(&mut conf, "Hostname", c.config.hostname.clone().into());
        if let Some(u) = &run.user {
            set(&mut conf, "User", u.clone().into());
        }
        if !run.env.is_empty() {
            set(&mut conf, "Env", serde_json::json!(run.env));
        }
        if let Some(e) = &run.entrypoint {
            set(&mut conf, "Entrypoint", serde_json::json!(e));
        }
        if let Some(x) = &run.cmd {
            set(&mut conf, "Cmd", serde_json::json!(x));
        }
        if let Some(wd) = &run.working_dir {
            set(&mut conf, "WorkingDir", wd.clone().into());
        }
        if !run.labels.is_empty() {
            set(
                &mut conf,
                "Labels",
                serde_json::json!(run
                    .labels
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()),
            );
        }
        if !run.exposed_ports.is_empty() {
            set(
                &mut conf,
                "ExposedPorts",
                run.exposed_ports
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
        }
        if !run.volumes.is_empty() {
            set(
                &mut conf,
                "Volumes",
                run.volumes
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
        }
        if let Some(s) = &run.stop_signal {
            set(&mut conf, "StopSignal", s.clone().into());
        }
        if !run.onbuild.is_empty() {
            set(&mut conf, "OnBuild", serde_json::json!(run.onbuild));
        }
        cfg["config"] = conf;
        cfg["created"] = created.clone().into();
        cfg["container"] = c.id.clone().into();
        if let Some(a) = &opts.author {
            cfg["author"] = a.clone().into();
        }
        if !cfg["rootfs"]["diff_ids"].is_array() {
            cfg["rootfs"]["diff_ids"] = serde_json::json!([]);
        }
        cfg["rootfs"]["diff_ids"]
            .as_array_mut()
            .expect("array")
            .push(layer.diff_id.to_string().into());
        if !cfg["history"].is_array() {
            cfg["history"] = serde_json::json!([]);
        }
        let mut entry =
            serde_json::json!({"created": created, "created_by": c.command().join(" ")});
        if let Some(m) = &opts.message {
            entry["comment"] = m.clone().into();
        }
        if let Some(a) = &opts.author {
            entry["author"] = a.clone().into();
        }
        cfg["history"].as_array_mut().expect("array").push(entry);
        let bytes = serde_json::to_vec(&cfg).expect("config serialises");
        strata_image::ImageConfig::parse(&bytes)
            .map_err(|e| EngineError::Store(format!("commit made an invalid config: {e}")))?;
        let id = self.content.write_blob(&bytes, None)?.digest().clone();
        let row = ImageRow {
            id: id.clone(),
            top_layer: Some(layer.chain_id.clone()),
            created: created.clone(),
            added: created,
            size: image.size + layer.size,
        };
        let tags: Vec<String> = reference.iter().map(|r| r.to_string()).collect();
        records::insert_image(&self.db, &row, &tags)?;
        Ok(id)
    }
}

/// Whether something is mounted at `path`. The kernel says so (statx's mount-root
/// attribute), which also catches a bind mount from the same filesystem; kernels without
/// it are asked by device and inode against the parent.
pub(crate) fn is_mount_point(path: &std::path::Path) -> bool {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, CWD};
    use std::os::unix::fs::MetadataExt;
    if let Ok(st) = rustix::fs::statx(
        CWD,
        path,
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::empty(),
    ) {
        if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
            return st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
        }
    }
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev() || m.ino() == p.ino(),
        _ => false,
    }
}

/// Unmounts everything below `dir`, deepest first (a running container's volumes).
pub(crate) fn unmount_below(dir: &Path) -> Result<()> {
    strata_snapshot::mount::unmount_below(dir)
        .map_err(|e| EngineError::io(format!("unmounting what is below {}", dir.display()), e))
}

impl Engine {
    /// Unmounts what is mounted below a container's `target`, then `target` itself;
    /// a busy `target` is detached if the driver defers removal.
    pub(crate) fn unmount_tree(&self, target: &Path) -> Result<()> {
        // With nothing mounted below it (the usual case), a plain unmount succeeds, and the
        // mount table is not read; a mount with others below it is busy.
        if rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).is_ok() {
            return Ok(());
        }
        unmount_below(target)?;
        if self.snapshots.driver().deferred_removal() {
            strata_snapshot::mount::unmount_or_detach(target)
        } else {
            strata_snapshot::mount::unmount(target)
        }
        .map_err(|e| EngineError::io(format!("unmounting {}", target.display()), e))
    }
}
