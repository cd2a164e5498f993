//! `load`: images from a docker-archive (docker save's tar, which since docker 25 also holds
//! an OCI layout) or a plain OCI image layout tar.
//!
//! The archive is read once, as a stream (it may be stdin): every blob goes straight into
//! the content store, verified against its name where the name is a digest; small metadata
//! files stay in memory. Then every image is checked (configs, layer lists, diff ID counts)
//! before any layer is applied, layers already in the store are skipped, and the images and
//! tags are recorded last. On any error what this load added is removed again.

use crate::error::{EngineError, Result};
use crate::records::{self, ImageRow};
use crate::Engine;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use strata_archive::root::clean_relative;
use strata_image::manifest::{
    ArchiveEntry, ImageIndex, ImageManifest, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
};
use strata_image::{chain_ids, ImageConfig, Reference};
use strata_store::content::Committed;
use strata_store::Digest;

const SMALL_FILE: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct LoadReport {
    /// Tags loaded, as docker prints them (`busybox:latest`), or image IDs of untagged images.
    pub loaded: Vec<String>,
    pub untagged_ids: Vec<Digest>,
    /// Tags that moved here from another image: (tag, the image it left).
    pub moved: Vec<(String, Digest)>,
}

struct ArchiveFiles {
    small: HashMap<PathBuf, Vec<u8>>,
    blobs: HashMap<PathBuf, Digest>,
    links: HashMap<PathBuf, PathBuf>,
    written: Vec<Digest>,
}

struct Plan {
    config_bytes: Vec<u8>,
    config: ImageConfig,
    layer_blobs: Vec<Digest>,
    tags: Vec<Reference>,
    source: String,
}

impl Engine {
    pub fn load(&self, input: &mut dyn Read) -> Result<LoadReport> {
        self.operation("load", || self.load_archive(input))
    }

    fn load_archive(&self, input: &mut dyn Read) -> Result<LoadReport> {
        let mut files = ArchiveFiles {
            small: HashMap::new(),
            blobs: HashMap::new(),
            links: HashMap::new(),
            written: Vec::new(),
        };
        let mut created_layers = Vec::new();
        let res = self
            .read_archive(input, &mut files)
            .and_then(|()| self.load_images(&mut files, &mut created_layers));
        if res.is_ok() {
            // Manifests, indexes and legacy metadata were only needed to read the archive.
            self.drop_unreferenced(&files.written)?;
        } else {
            self.roll_back(&files.written, &created_layers);
        }
        res
    }

    fn read_archive(&self, input: &mut dyn Read, files: &mut ArchiveFiles) -> Result<()> {
        let (_, plain) = strata_archive::decompress(input)
            .map_err(|e| EngineError::Invalid(format!("image archive: {e}")))?;
        let mut archive = tar::Archive::new(plain);
        let bad = |e: io::Error| {
            EngineError::Invalid(format!(
                "image archive is not a valid tar (truncated or corrupt): {e}"
            ))
        };
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path().map_err(bad)?.into_owned();
            let path = clean_relative(&raw)
                .map_err(|r| EngineError::Invalid(format!("image archive entry: {r}")))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let expected = blob_name(&path);
                    if expected.is_none() && entry.size() <= SMALL_FILE {
                        let mut buf = Vec::with_capacity(entry.size() as usize);
                        entry.read_to_end(&mut buf).map_err(bad)?;
                        files.small.insert(path, buf);
                        continue;
                    }
                    let mut w = self.content.writer()?;
                    io::copy(&mut entry, &mut w).map_err(bad)?;
                    let committed = w.commit(expected.as_ref(), None).map_err(|e| match e {
                        strata_store::content::ContentError::DigestMismatch { .. } => {
                            EngineError::Invalid(format!(
                                "image archive entry {}: {e}",
                                path.display()
                            ))
                        }
                        other => other.into(),
                    })?;
                    if let Committed::Written(d, _) = &committed {
                        files.written.push(d.clone());
                    }
                    files.blobs.insert(path, committed.digest().clone());
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(target) = entry.link_name().map_err(bad)? {
                        let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                            path.parent().unwrap_or(Path::new("")).join(&target)
                        } else {
                            target.into_owned()
                        };
                        if let Ok(t) = clean_relative(&base) {
                            files.links.insert(path, t);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn load_images(
        &self,
        files: &mut ArchiveFiles,
        created_layers: &mut Vec<Digest>,
    ) -> Result<LoadReport> {
        let plans = if let Some(m) = files.bytes(self, Path::new("manifest.json"))? {
            self.plan_docker_archive(files, &m)?
        } else if let Some(ix) = files.bytes(self, Path::new("index.json"))? {
            self.plan_oci_layout(files, &ix)?
        } else {
            return Err(EngineError::Invalid(
                "image archive has neither manifest.json nor index.json: it is not a docker-archive or OCI layout (use `import` for a filesystem tarball)".into(),
            ));
        };
        // Apply layers only once every image has been checked.
        let mut report = LoadReport::default();
        let mut rows = Vec::new();
        for plan in &plans {
            let chains = chain_ids(plan.config.diff_ids());
            let mut size = 0;
            for (i, chain) in chains.iter().enumerate() {
                let layer = match records::layer(&self.db, chain)? {
                    Some(l) => l,
                    None => {
                        let blob = &plan.layer_blobs[i];
                        let mut f = self.content.open_blob(blob)?;
                        let l = self
                            .create_layer(
                                i.checked_sub(1).map(|p| &chains[p]),
                                &mut f,
                                Some(&plan.config.diff_ids()[i]),
                                Some(blob),
                                || Ok(blob.clone()),
                            )
                            .map_err(|e| match e {
                                EngineError::Invalid(m) => EngineError::Invalid(format!(
                                    "{}, layer {}: {m}",
                                    plan.source,
                                    i + 1
                                )),
                                other => other,
                            })?;
                        created_layers.push(l.chain_id.clone());
                        l
                    }
                };
                size += layer.size;
            }
            let committed = self.content.write_blob(&plan.config_bytes, None)?;
            if let Committed::Written(d, _) = &committed {
                files.written.push(d.clone());
            }
            let id = committed.digest().clone();
            let now = records::now();
            let row = ImageRow {
                id,
                top_layer: chains.last().cloned(),
                created: plan.config.created().unwrap_or(&now).to_string(),
                added: now.clone(),
                size,
            };
            rows.push((row, plan.tags.clone()));
        }
        for (row, tags) in rows {
            let names: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            report
                .moved
                .extend(records::insert_image(&self.db, &row, &names)?);
            if tags.is_empty() {
                report.untagged_ids.push(row.id.clone());
            }
            report.loaded.extend(tags.iter().map(|t| t.familiar()));
        }
        Ok(report)
    }

    fn plan_docker_archive(&self, files: &mut ArchiveFiles, manifest: &[u8]) -> Result<Vec<Plan>> {
        let entries: Vec<ArchiveEntry> = serde_json::from_slice(manifest).map_err(|e| {
            EngineError::Invalid(format!("image archive manifest.json is not valid: {e}"))
        })?;
        if entries.is_empty() {
            return Err(EngineError::Invalid(
                "image archive manifest.json lists no images".into(),
            ));
        }
        let mut plans = Vec::new();
        for e in entries {
            let config_bytes = files.bytes(self, Path::new(&e.config))?.ok_or_else(|| {
                EngineError::Invalid(format!(
                    "image archive manifest.json names config {:?}, which is not in the archive",
                    e.config
                ))
            })?;
            let config = ImageConfig::parse(&config_bytes).map_err(|err| {
                EngineError::Invalid(format!("image archive config {}: {err}", e.config))
            })?;
            let mut layer_blobs = Vec::new();
            for l in &e.layers {
                let d = files
                    .blob(self, Path::new(l))?
                    .ok_or_else(|| EngineError::Invalid(format!("image archive manifest.json names layer {l:?}, which is not in the archive")))?;
                layer_blobs.push(d);
            }
            check_counts(&config, &layer_blobs, &e.config)?;
            let tags = e
                .repo_tags
                .iter()
                .map(|t| {
                    t.parse::<Reference>().map_err(|err| {
                        EngineError::Invalid(format!("image archive manifest.json tag: {err}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            plans.push(Plan {
                config_bytes,
                config,
                layer_blobs,
                tags,
                source: format!("image {}", e.config),
            });
        }
        Ok(plans)
    }

    fn plan_oci_layout(&self, files: &mut ArchiveFiles, index: &[u8]) -> Result<Vec<Plan>> {
        let index: ImageIndex = serde_json::from_slice(index).map_err(|e| {
            EngineError::Invalid(format!("image archive index.json is not valid: {e}"))
        })?;
        let mut plans: Vec<Plan> = Vec::new();
        let mut seen = HashSet::new();
        let mut queue: Vec<(oci_spec::image::Descriptor, Option<Reference>)> = index
            .manifests()
            .iter()
            .map(|d| (d.clone(), descriptor_name(d)))
            .collect();
        while let Some((desc, name)) = queue.pop() {
            let digest: Digest = desc.digest().to_string().parse().map_err(|_| {
                EngineError::Invalid(format!(
                    "image archive index names an invalid digest {}",
                    desc.digest()
                ))
            })?;
            let path = PathBuf::from(format!("blobs/sha256/{}", digest.hex()));
            let bytes = files.bytes(self, &path)?.ok_or_else(|| {
                EngineError::Invalid(format!(
                    "image archive index points to {digest}, which is not in the archive"
                ))
            })?;
            let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::Invalid(format!("image archive manifest {digest} is not JSON: {e}"))
            })?;
            if value.get("manifests").is_some() {
                let nested: ImageIndex = serde_json::from_value(value).map_err(|e| {
                    EngineError::Invalid(format!("image archive index {digest}: {e}"))
                })?;
                for d in nested.manifests() {
                    let platform_ok = d.platform().as_ref().is_none_or(|p| {
                        p.os().to_string() == "linux"
                            && p.architecture() == &strata_image::config::host_arch()
                    });
                    if platform_ok {
                        queue.push((d.clone(), name.clone()));
                    }
                }
                continue;
            }
            let m: ImageManifest = serde_json::from_value(value).map_err(|e| {
                EngineError::Invalid(format!(
                    "image archive manifest {digest} is not an image manifest: {e}"
                ))
            })?;
            let cdig: Digest = m.config().digest().to_string().parse().map_err(|_| {
                EngineError::Invalid(format!("manifest {digest} names an invalid config digest"))
            })?;
            if let Some(existing) = plans
                .iter_mut()
                .find(|p| Digest::of(&p.config_bytes) == cdig)
            {
                existing.tags.extend(name);
                continue;
            }
            if !seen.insert(cdig.clone()) {
                continue;
            }
            let cpath = PathBuf::from(format!("blobs/sha256/{}", cdig.hex()));
            let config_bytes = files.bytes(self, &cpath)?.ok_or_else(|| {
                EngineError::Invalid(format!(
                    "manifest {digest} points to config {cdig}, which is not in the archive"
                ))
            })?;
            let config = ImageConfig::parse(&config_bytes)
                .map_err(|e| EngineError::Invalid(format!("image archive config {cdig}: {e}")))?;
            let mut layer_blobs = Vec::new();
            for l in m.layers() {
                let ld: Digest = l.digest().to_string().parse().map_err(|_| {
                    EngineError::Invalid(format!("manifest {digest} names an invalid layer digest"))
                })?;
                let lpath = PathBuf::from(format!("blobs/sha256/{}", ld.hex()));
                let d = files.blob(self, &lpath)?.ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "manifest {digest} points to layer {ld}, which is not in the archive"
                    ))
                })?;
                layer_blobs.push(d);
            }
            check_counts(&config, &layer_blobs, &cdig.to_string())?;
            plans.push(Plan {
                config_bytes,
                config,
                layer_blobs,
                tags: name.into_iter().collect(),
                source: format!("image {cdig}"),
            });
        }
        if plans.is_empty() {
            return Err(EngineError::Invalid(
                "image archive index.json lists no image for this platform".into(),
            ));
        }
        Ok(plans)
    }

    /// Removes what a failed load added: its new layers (if no image took them meanwhile)
    /// and the blobs it wrote that nothing points to.
    fn roll_back(&self, written: &[Digest], layers: &[Digest]) {
        let Ok(_excl) = self.exclusive() else { return };
        for chain in layers.iter().rev() {
            if records::unused_layers(&self.db).is_ok_and(|u| u.contains(chain)) {
                let _ = records::mark_layer_removing(&self.db, chain);
                let _ = self.snapshots.remove(&chain.to_string());
                let _ = records::delete_layer(&self.db, chain);
            }
        }
        let _ = self.drop_unreferenced(written);
    }

    /// Deletes the blobs among `written` (blobs this load created) that no record uses.
    /// Another process cannot be relying on one of them: any blob it shares with this load
    /// is a layer or config, which this load recorded too.
    fn drop_unreferenced(&self, written: &[Digest]) -> Result<()> {
        let keep = records::referenced_blobs(&self.db)?;
        for d in written.iter().filter(|d| !keep.contains(d)) {
            self.content
                .delete(d)
                .map_err(|e| EngineError::io(format!("removing blob {d}"), e))?;
        }
        Ok(())
    }
}

fn check_counts(config: &ImageConfig, layers: &[Digest], what: &str) -> Result<()> {
    if config.diff_ids().len() != layers.len() {
        return Err(EngineError::Invalid(format!(
            "image archive: {what} has {} diff IDs but the manifest lists {} layers",
            config.diff_ids().len(),
            layers.len()
        )));
    }
    Ok(())
}

/// The image name a descriptor in index.json carries, as docker and containerd write it.
fn descriptor_name(d: &oci_spec::image::Descriptor) -> Option<Reference> {
    let ann = d.annotations().as_ref()?;
    if let Some(n) = ann.get(ANNOTATION_CONTAINERD_NAME) {
        return n.parse().ok();
    }
    // A bare ref.name is only a tag; it names an image only when it is a full reference.
    ann.get(ANNOTATION_REF_NAME)
        .filter(|n| n.contains('/') || n.contains(':'))
        .and_then(|n| n.parse().ok())
}

/// `blobs/sha256/<hex>` names its own digest.
fn blob_name(path: &Path) -> Option<Digest> {
    let s = path.to_str()?;
    Digest::from_hex(s.strip_prefix("blobs/sha256/")?).ok()
}

impl ArchiveFiles {
    fn resolve(&self, path: &Path) -> PathBuf {
        let mut p = path.to_path_buf();
        for _ in 0..16 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        p
    }

    fn bytes(&self, engine: &Engine, path: &Path) -> Result<Option<Vec<u8>>> {
        let p = self.resolve(&clean_relative(path).map_err(EngineError::Invalid)?);
        if let Some(b) = self.small.get(&p) {
            return Ok(Some(b.clone()));
        }
        match self.blobs.get(&p) {
            Some(d) => Ok(Some(engine.content.read_blob(d)?)),
            None => Ok(None),
        }
    }

    /// The content-store blob holding `path`, storing it first if it was kept in memory.
    fn blob(&mut self, engine: &Engine, path: &Path) -> Result<Option<Digest>> {
        let p = self.resolve(&clean_relative(path).map_err(EngineError::Invalid)?);
        if let Some(d) = self.blobs.get(&p) {
            return Ok(Some(d.clone()));
        }
        let Some(bytes) = self.small.get(&p) else {
            return Ok(None);
        };
        let c = engine.content.write_blob(bytes, blob_name(&p).as_ref())?;
        if let Committed::Written(d, _) = &c {
            self.written.push(d.clone());
        }
        self.blobs.insert(p, c.digest().clone());
        Ok(Some(c.digest().clone()))
    }
}
