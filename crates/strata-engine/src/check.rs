//! `system check`: re-verifies every blob and layer against its digest and finds what an
//! interrupted or buggy operation left behind; `--repair` removes the leftovers.

use crate::error::{EngineError, Result};
use crate::records;
use crate::Engine;
use serde::Serialize;
use std::collections::HashSet;
use std::io;
use strata_snapshot::Kind;
use strata_store::{Digest, DigestReader};

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub blobs_checked: usize,
    pub layers_checked: usize,
    pub images_checked: usize,
    /// Damage strata cannot undo by itself (a corrupt blob, a missing layer).
    pub errors: Vec<String>,
    /// Leftovers that can be removed safely (orphaned storage, unused blobs, half-done work).
    pub leftovers: Vec<String>,
    pub repaired: Vec<String>,
}

impl CheckReport {
    pub fn clean(&self) -> bool {
        self.errors.is_empty() && (self.leftovers.is_empty() || !self.repaired.is_empty())
    }
}

impl Engine {
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let _excl = self.exclusive()?;
        let mut r = CheckReport::default();
        let referenced = records::referenced_blobs(&self.db)?;
        // Blobs: each re-hashed.
        for d in self
            .content
            .list()
            .map_err(|e| EngineError::io("listing blobs", e))?
        {
            r.blobs_checked += 1;
            if let Err(e) = self.content.verify(&d) {
                r.errors.push(format!("blob {d}: {e}"));
            } else if !referenced.contains(&d) {
                r.leftovers
                    .push(format!("blob {d} is not used by any image or layer"));
            }
        }
        for d in &referenced {
            if !self.content.exists(d) {
                r.errors
                    .push(format!("blob {d} is missing from the content store"));
            }
        }
        // Layers: snapshot committed, and the blob's uncompressed content is the diff ID.
        let layers = records::all_layers(&self.db)?;
        let layer_ids: HashSet<String> = layers.iter().map(|l| l.chain_id.to_string()).collect();
        for l in &layers {
            r.layers_checked += 1;
            match self.snapshots.stat(&l.chain_id.to_string()) {
                Ok(info) if info.kind == Kind::Committed => {}
                Ok(_) => r.errors.push(format!(
                    "layer {}: its snapshot is not committed",
                    l.chain_id
                )),
                Err(_) => r
                    .errors
                    .push(format!("layer {}: its snapshot is missing", l.chain_id)),
            }
            if self.content.exists(&l.blob) {
                match self.uncompressed_digest(&l.blob) {
                    Ok(d) if d == l.diff_id => {}
                    Ok(d) => r.errors.push(format!(
                        "layer {}: blob {} uncompresses to {d}, not its diff ID {}",
                        l.chain_id, l.blob, l.diff_id
                    )),
                    Err(e) => r.errors.push(format!(
                        "layer {}: blob {} cannot be read: {e}",
                        l.chain_id, l.blob
                    )),
                }
            }
        }
        // Images: config readable, its layers are the chain recorded.
        for img in records::images(&self.db)? {
            r.images_checked += 1;
            match self.config_of(&img.id) {
                Ok(cfg) => {
                    let chain = strata_image::chain_ids(cfg.diff_ids());
                    if chain.last() != img.top_layer.as_ref() {
                        r.errors.push(format!(
                            "image {}: its top layer does not match its config",
                            img.id
                        ));
                    }
                    for c in &chain {
                        if !layer_ids.contains(&c.to_string()) {
                            r.errors.push(format!(
                                "image {}: layer {c} is missing (load or pull the image again)",
                                img.id
                            ));
                        }
                    }
                }
                Err(e) => r.errors.push(format!("image {}: {e}", img.id)),
            }
        }
        // Snapshots no layer owns, storage no snapshot owns, work a dead process left.
        for s in self.stray_snapshots()? {
            r.leftovers
                .push(format!("snapshot {s} belongs to no layer"));
        }
        for op in records::interrupted_operations(&self.db)? {
            r.leftovers.push(format!(
                "operation {op} was interrupted and is not recovered yet"
            ));
        }
        for id in self.snapshots.orphans()? {
            r.leftovers.push(format!(
                "storage #{id} of the {} driver belongs to no snapshot",
                self.driver
            ));
        }
        for p in self
            .content
            .abandoned_ingests()
            .map_err(|e| EngineError::io("listing ingests", e))?
        {
            r.leftovers
                .push(format!("unfinished ingest {}", p.display()));
        }
        for l in records::unused_layers(&self.db)? {
            r.leftovers.push(format!("layer {l} is used by no image"));
        }
        for d in self.orphan_container_dirs()? {
            r.leftovers.push(format!(
                "container directory {} belongs to no container",
                d.display()
            ));
        }
        for v in self.orphan_volume_dirs()? {
            r.leftovers
                .push(format!("volume directory {v} belongs to no volume"));
        }
        if repair && !r.leftovers.is_empty() {
            r.repaired.extend(self.clean_leftovers()?);
            records::clear_operations(&self.db)?;
            r.repaired.push("unused blobs".into());
        }
        Ok(r)
    }

    fn uncompressed_digest(&self, blob: &Digest) -> io::Result<Digest> {
        let f = self.content.open_blob(blob).map_err(io::Error::other)?;
        let (_, plain) = strata_archive::decompress(f)?;
        let r = DigestReader::new(plain);
        Ok(r.finish()?.0)
    }
}
