//! Looking images up and changing their names: list, inspect, history, tag, rmi, prune.

use crate::error::{EngineError, Result};
use crate::records::{self, ImageRow};
use crate::Engine;
use serde::Serialize;
use std::collections::HashMap;
use strata_image::{ImageConfig, Reference};
use strata_store::Digest;

/// One image as `images` lists it: one row per tag, or one `<none>` row when untagged.
#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub id: Digest,
    /// `None` for `<none>`.
    pub reference: Option<Reference>,
    pub created: String,
    pub size: u64,
    /// Bytes in layers other images use too.
    pub shared_size: u64,
    pub dangling: bool,
    pub layers: usize,
}

/// `image inspect`, in docker's JSON shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageDetails {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub docker_version: String,
    pub author: String,
    pub config: serde_json::Value,
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    pub os: String,
    pub size: u64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    pub data: serde_json::Value,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub last_tag_time: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    /// The image ID on the newest entry, `<missing>` below it, as docker shows.
    pub id: Option<Digest>,
    pub created: Option<String>,
    pub created_by: String,
    pub size: u64,
    pub comment: String,
    pub empty_layer: bool,
}

/// An image's layers, bottom first, as (chain ID, size).
type Chain = Vec<(Digest, u64)>;

#[derive(Debug, Default)]
pub struct RemoveReport {
    pub untagged: Vec<String>,
    pub deleted: Vec<Digest>,
}

impl Engine {
    /// Finds an image by reference, full or short ID, or `sha256:` ID.
    pub fn resolve_image(&self, name: &str) -> Result<Digest> {
        Ok(self.resolve_image_and_tag(name)?.0)
    }

    /// Like `resolve_image`, also giving the reference when `name` was one.
    pub fn resolve_image_and_tag(&self, name: &str) -> Result<(Digest, Option<Reference>)> {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        let is_hex = !hex.is_empty()
            && hex.len() <= 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if name.starts_with("sha256:") || (is_hex && hex.len() == 64) {
            if !is_hex {
                return Err(EngineError::Invalid(format!(
                    "invalid image ID {name:?}: an ID is up to 64 lowercase hex digits"
                )));
            }
            return self.by_prefix(name, hex).map(|d| (d, None));
        }
        if let Ok(r) = name.parse::<Reference>() {
            if let Some(d) = r.digest() {
                // name@sha256:... : strata keeps no registry manifests yet, so only the config digest matches.
                let dd: Digest = d
                    .parse()
                    .map_err(|_| EngineError::NoSuchImage(name.to_string()))?;
                if records::image(&self.db, &dd)?.is_some() {
                    return Ok((dd, None));
                }
                return Err(EngineError::NoSuchImage(name.to_string()));
            }
            if let Some(id) = records::tag_target(&self.db, &r.to_string())? {
                return Ok((id, Some(r)));
            }
        }
        if is_hex {
            if let Ok(d) = self.by_prefix(name, hex) {
                return Ok((d, None));
            }
        }
        // Say which reference was looked for, as docker does (`busybox:latest`).
        let shown = name
            .parse::<Reference>()
            .map(|r| r.familiar())
            .unwrap_or_else(|_| name.to_string());
        Err(EngineError::NoSuchImage(shown))
    }

    fn by_prefix(&self, name: &str, hex: &str) -> Result<Digest> {
        let found = records::images_by_prefix(&self.db, hex)?;
        match found.len() {
            1 => Ok(found.into_iter().next().expect("one")),
            0 => Err(EngineError::NoSuchImage(name.to_string())),
            _ => Err(EngineError::Invalid(format!(
                "image ID prefix {name:?} is ambiguous: give more digits"
            ))),
        }
    }

    fn layer_use_counts(
        &self,
        images: &[ImageRow],
    ) -> Result<(HashMap<Digest, u64>, HashMap<Digest, Chain>)> {
        let index = records::LayerIndex::load(&self.db)?;
        let mut uses: HashMap<Digest, u64> = HashMap::new();
        let mut chains = HashMap::new();
        for img in images {
            let chain: Chain = index
                .chain(img.top_layer.as_ref())
                .into_iter()
                .map(|l| (l.chain_id.clone(), l.size))
                .collect();
            for (c, _) in &chain {
                *uses.entry(c.clone()).or_default() += 1;
            }
            chains.insert(img.id.clone(), chain);
        }
        Ok((uses, chains))
    }

    pub fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let images = records::images(&self.db)?;
        let (uses, chains) = self.layer_use_counts(&images)?;
        let mut tags: HashMap<Digest, Vec<Reference>> = HashMap::new();
        for (name, id) in records::all_tags(&self.db)? {
            if let Ok(r) = name.parse() {
                tags.entry(id).or_default().push(r);
            }
        }
        let mut out = Vec::new();
        for img in images {
            let chain = &chains[&img.id];
            let shared_size = chain
                .iter()
                .filter(|(c, _)| uses[c] > 1)
                .map(|(_, s)| s)
                .sum();
            let base = ImageSummary {
                id: img.id.clone(),
                reference: None,
                created: img.created.clone(),
                size: img.size,
                shared_size,
                dangling: true,
                layers: chain.len(),
            };
            match tags.remove(&img.id) {
                Some(refs) => out.extend(refs.into_iter().map(|r| ImageSummary {
                    reference: Some(r),
                    dangling: false,
                    ..base.clone()
                })),
                None => out.push(base),
            }
        }
        Ok(out)
    }

    pub(crate) fn config_of(&self, id: &Digest) -> Result<ImageConfig> {
        let bytes = self.content.read_blob(id)?;
        ImageConfig::parse(&bytes).map_err(|e| {
            EngineError::Store(format!(
                "image {id} has an unreadable config: {e}; run `strata system check`"
            ))
        })
    }

    pub fn inspect_image(&self, name: &str) -> Result<ImageDetails> {
        let id = self.resolve_image(name)?;
        let img = records::image(&self.db, &id)?
            .ok_or_else(|| EngineError::NoSuchImage(name.to_string()))?;
        let cfg = self.config_of(&id)?;
        let tags: Vec<String> = records::tags_of(&self.db, &id)?
            .iter()
            .filter_map(|t| t.parse::<Reference>().ok())
            .map(|r| r.familiar())
            .collect();
        let last_tag: Option<String> = self.db.conn().query_row(
            "SELECT max(tagged) FROM tags WHERE image = ?1",
            [id.to_string()],
            |r| r.get(0),
        )?;
        let data = match &img.top_layer {
            Some(top) => self.graph_driver_data(top)?,
            None => serde_json::Value::Null,
        };
        Ok(ImageDetails {
            id: id.to_string(),
            repo_tags: tags,
            repo_digests: Vec::new(),
            parent: String::new(),
            comment: cfg.raw_str("comment").to_string(),
            created: img.created.clone(),
            docker_version: cfg.raw_str("docker_version").to_string(),
            author: cfg.raw_str("author").to_string(),
            config: cfg
                .raw
                .get("config")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            architecture: cfg.raw_str("architecture").to_string(),
            variant: cfg.raw_str("variant").to_string(),
            os: cfg.raw_str("os").to_string(),
            size: img.size,
            graph_driver: GraphDriver {
                data,
                name: self.driver.clone(),
            },
            root_fs: RootFs {
                kind: "layers".into(),
                layers: cfg.diff_ids().iter().map(|d| d.to_string()).collect(),
            },
            metadata: Metadata {
                last_tag_time: last_tag.unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            },
        })
    }

    /// Where the top layer's files live, as docker's GraphDriver.Data shows them.
    fn graph_driver_data(&self, top: &Digest) -> Result<serde_json::Value> {
        let view = format!("inspect-{:016x}", rand::random::<u64>());
        let mounts = self.snapshots.view(&view, Some(&top.to_string()));
        let _ = self.snapshots.remove(&view);
        let mounts = mounts?;
        let mut data = serde_json::Map::new();
        for m in &mounts {
            if m.kind == "overlay" {
                let lowers: Vec<&str> = m
                    .options
                    .iter()
                    .filter_map(|o| o.strip_prefix("lowerdir+="))
                    .collect();
                data.insert("LowerDir".into(), lowers.join(":").into());
            } else {
                data.insert("MergedDir".into(), m.source.clone().into());
            }
        }
        Ok(serde_json::Value::Object(data))
    }

    pub fn history(&self, name: &str) -> Result<Vec<HistoryRow>> {
        let id = self.resolve_image(name)?;
        let img = records::image(&self.db, &id)?
            .ok_or_else(|| EngineError::NoSuchImage(name.to_string()))?;
        let cfg = self.config_of(&id)?;
        let sizes: Vec<u64> = match &img.top_layer {
            Some(top) => records::layer_chain(&self.db, top)?
                .iter()
                .map(|l| l.size)
                .collect(),
            None => Vec::new(),
        };
        let mut rows = Vec::new();
        let mut layer = 0;
        let history = cfg.history();
        if history.is_empty() {
            // Configs without history: one row per layer, as docker synthesises.
            for s in &sizes {
                rows.push(HistoryRow {
                    id: None,
                    created: cfg.created().map(str::to_string),
                    created_by: String::new(),
                    size: *s,
                    comment: String::new(),
                    empty_layer: false,
                });
            }
        }
        for h in history {
            let size = if h.empty_layer {
                0
            } else {
                layer += 1;
                sizes.get(layer - 1).copied().unwrap_or(0)
            };
            rows.push(HistoryRow {
                id: None,
                created: h.created,
                created_by: h.created_by,
                size,
                comment: h.comment,
                empty_layer: h.empty_layer,
            });
        }
        rows.reverse();
        if let Some(first) = rows.first_mut() {
            first.id = Some(id);
        }
        Ok(rows)
    }

    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let id = self.resolve_image(source)?;
        let r: Reference = target.parse()?;
        if r.digest().is_some() {
            return Err(EngineError::Invalid(format!(
                "refusing to create a tag with a digest reference: {target:?}"
            )));
        }
        let img = records::image(&self.db, &id)?
            .ok_or_else(|| EngineError::NoSuchImage(source.to_string()))?;
        records::insert_image(&self.db, &img, &[r.to_string()])?;
        Ok(())
    }

    /// `rmi`: untags `name` when it is one of several tags, else removes the image and the
    /// layers no other image uses. An image named by ID with several tags needs `force`.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<RemoveReport> {
        let _excl = self.exclusive()?;
        self.operation("rmi", || self.remove_image_locked(name, force))
    }

    fn remove_image_locked(&self, name: &str, force: bool) -> Result<RemoveReport> {
        let (id, tag) = self.resolve_image_and_tag(name)?;
        let tags = records::tags_of(&self.db, &id)?;
        let mut report = RemoveReport::default();
        let last_name = tag.is_none() || tags.len() <= 1;
        if last_name && self.is_image_mounted(&id)? {
            return Err(EngineError::Conflict(format!(
                "conflict: unable to remove image {} because it is mounted: run `strata image umount {name}` first",
                id.short()
            )));
        }
        if let Some(t) = &tag {
            if tags.len() > 1 {
                records::remove_tag(&self.db, &t.to_string())?;
                report.untagged.push(t.familiar());
                return Ok(report);
            }
        } else if tags.len() > 1 && !force {
            return Err(EngineError::Conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                id.short()
            )));
        }
        report.untagged = tags
            .iter()
            .filter_map(|t| t.parse::<Reference>().ok())
            .map(|r| r.familiar())
            .collect();
        let users = crate::containers::using_image(&self.db, &id)?;
        if let Some(user) = users.first() {
            if !force {
                return Err(EngineError::Conflict(match &tag {
                    Some(t) => format!(
                        "conflict: unable to remove repository reference \"{}\" (must force) - container {} is using its referenced image {}",
                        t.familiar(), &user[..12], id.short()
                    ),
                    None => format!("conflict: unable to delete {} (must be forced) - image is being used by stopped container {}", id.short(), &user[..12]),
                }));
            }
            // Forced, as docker: the names go, the image stays for its containers.
            for t in &tags {
                records::remove_tag(&self.db, t)?;
            }
            return Ok(report);
        }
        records::delete_image(&self.db, &id)?;
        report.deleted.push(id);
        report.deleted.extend(self.gc_layers()?);
        Ok(report)
    }

    /// `image prune`: removes untagged images (all unused images with `all`). Returns the
    /// removed image IDs and the bytes freed.
    pub fn prune_images(&self, all: bool) -> Result<(Vec<Digest>, u64)> {
        let _excl = self.exclusive()?;
        self.operation("image prune", || self.prune_images_locked(all))
    }

    fn prune_images_locked(&self, all: bool) -> Result<(Vec<Digest>, u64)> {
        let before = self.store_bytes()?;
        let mut removed = Vec::new();
        for img in records::images(&self.db)? {
            let tagged = !records::tags_of(&self.db, &img.id)?.is_empty();
            let in_use = self.is_image_mounted(&img.id)?
                || !crate::containers::using_image(&self.db, &img.id)?.is_empty();
            if (!tagged || all) && !in_use {
                records::delete_image(&self.db, &img.id)?;
                removed.push(img.id);
            }
        }
        self.gc_layers()?;
        let after = self.store_bytes()?;
        Ok((removed, before.saturating_sub(after)))
    }

    /// Bytes of layer content plus blobs, for "reclaimed space".
    fn store_bytes(&self) -> Result<u64> {
        let layers: u64 = records::all_layers(&self.db)?.iter().map(|l| l.size).sum();
        let blobs: u64 = self
            .content
            .list()
            .map_err(|e| EngineError::io("listing blobs", e))?
            .iter()
            .map(|d| self.content.size(d).unwrap_or(0))
            .sum();
        Ok(layers + blobs)
    }
}
