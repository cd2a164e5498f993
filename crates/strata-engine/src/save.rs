//! `save`: images out as a docker-archive, laid out as docker 25+ writes it: an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/`) plus the legacy `manifest.json` and
//! `repositories`, so both `docker load` and OCI tools read it. Entries are written in a
//! fixed order with zero mtimes, so saving the same images twice gives the same bytes.

use crate::error::{EngineError, Result};
use crate::records;
use crate::Engine;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use strata_image::manifest::{ArchiveEntry, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use strata_image::Reference;
use strata_store::Digest;

const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn layer_media_type(compression: &str) -> &'static str {
    match compression {
        "gzip" => "application/vnd.oci.image.layer.v1.tar+gzip",
        "zstd" => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

struct SaveWriter<W: Write> {
    tar: tar::Builder<W>,
    written: HashSet<String>,
}

impl<W: Write> SaveWriter<W> {
    fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, path: &str) -> io::Result<()> {
        if self.written.insert(path.to_string()) {
            let mut h = Self::header(0, 0o755, tar::EntryType::Directory);
            self.tar.append_data(&mut h, path, io::empty())?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, size: u64, data: impl io::Read) -> io::Result<()> {
        if self.written.insert(path.to_string()) {
            let mut h = Self::header(size, 0o644, tar::EntryType::Regular);
            self.tar.append_data(&mut h, path, data)?;
        }
        Ok(())
    }

    fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file(path, data.len() as u64, data)
    }
}

impl Engine {
    /// Writes the named images (references or IDs) to `out` as one archive.
    pub fn save(&self, names: &[String], out: &mut dyn Write) -> Result<()> {
        let mut images: Vec<(Digest, Vec<Reference>)> = Vec::new();
        for name in names {
            let (id, tag) = self.resolve_image_and_tag(name)?;
            match images.iter_mut().find(|(i, _)| *i == id) {
                Some((_, tags)) => tags.extend(tag),
                None => images.push((id, tag.into_iter().collect())),
            }
        }
        let io_err = |e: io::Error| EngineError::io("writing the image archive", e);
        let mut w = SaveWriter {
            tar: tar::Builder::new(out),
            written: HashSet::new(),
        };
        let mut manifest_json = Vec::new();
        let mut index_manifests = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        w.dir("blobs/").map_err(io_err)?;
        w.dir("blobs/sha256/").map_err(io_err)?;
        for (id, tags) in &images {
            let image = records::image(&self.db, id)?
                .ok_or_else(|| EngineError::NoSuchImage(id.to_string()))?;
            let config = self.content.read_blob(id)?;
            w.bytes(&format!("blobs/sha256/{}", id.hex()), &config)
                .map_err(io_err)?;
            let chain = match &image.top_layer {
                Some(top) => records::layer_chain(&self.db, top)?,
                None => Vec::new(),
            };
            let mut layer_paths = Vec::new();
            let mut layer_descs = Vec::new();
            for layer in &chain {
                let size = self.content.size(&layer.blob)?;
                let path = format!("blobs/sha256/{}", layer.blob.hex());
                if !w.written.contains(&path) {
                    let f = self.content.open_blob(&layer.blob)?;
                    w.file(&path, size, io::BufReader::with_capacity(1 << 20, f))
                        .map_err(io_err)?;
                }
                layer_paths.push(path);
                layer_descs.push(json!({"mediaType": layer_media_type(&layer.compression), "digest": layer.blob.to_string(), "size": size}));
            }
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": id.to_string(), "size": config.len()},
                "layers": layer_descs,
            }))
            .expect("manifest serialises");
            let mdigest = Digest::of(&manifest);
            w.bytes(&format!("blobs/sha256/{}", mdigest.hex()), &manifest)
                .map_err(io_err)?;
            let desc = |ann: serde_json::Value| json!({"mediaType": MEDIA_MANIFEST, "digest": mdigest.to_string(), "size": manifest.len(), "annotations": ann});
            if tags.is_empty() {
                index_manifests.push(json!({"mediaType": MEDIA_MANIFEST, "digest": mdigest.to_string(), "size": manifest.len()}));
            }
            for t in tags {
                index_manifests.push(desc(json!({ANNOTATION_CONTAINERD_NAME: t.to_string(), ANNOTATION_REF_NAME: t.tag().unwrap_or("latest")})));
                if let (Some(tag), Some(top)) = (t.tag(), chain.last()) {
                    repositories
                        .entry(t.familiar_name())
                        .or_default()
                        .insert(tag.to_string(), top.diff_id.hex().to_string());
                }
            }
            manifest_json.push(ArchiveEntry {
                config: format!("blobs/sha256/{}", id.hex()),
                repo_tags: tags.iter().map(|t| t.familiar()).collect(),
                layers: layer_paths,
            });
        }
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index_manifests});
        w.bytes(
            "index.json",
            &serde_json::to_vec(&index).expect("index serialises"),
        )
        .map_err(io_err)?;
        w.bytes(
            "manifest.json",
            &serde_json::to_vec(&manifest_json).expect("manifest serialises"),
        )
        .map_err(io_err)?;
        w.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_err)?;
        if !repositories.is_empty() {
            w.bytes(
                "repositories",
                &serde_json::to_vec(&repositories).expect("repositories serialise"),
            )
            .map_err(io_err)?;
        }
        w.tar
            .into_inner()
            .map_err(io_err)?
            .flush()
            .map_err(io_err)?;
        Ok(())
    }
}
