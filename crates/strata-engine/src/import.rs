//! `import`: a filesystem tarball becomes a one-layer image.

use crate::error::{EngineError, Result};
use crate::records::{self, ImageRow};
use crate::Engine;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use strata_image::changes::apply_change;
use strata_image::config::{imported_config, RunConfig};
use strata_image::Reference;
use strata_store::{BlobWriter, Digest};

#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// What the history comment names as the source (`-` for stdin, or the path).
    pub source_name: String,
    pub reference: Option<String>,
    pub changes: Vec<String>,
    pub message: Option<String>,
}

/// Copies what is read into the content store ingest as it goes.
struct Tee<R> {
    inner: R,
    out: Rc<RefCell<Option<BlobWriter>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = self.out.borrow_mut().as_mut() {
            w.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

impl Engine {
    /// Imports the tarball read from `input`; returns the new image's ID.
    pub fn import(&self, input: &mut dyn Read, opts: &ImportOptions) -> Result<Digest> {
        let reference = opts
            .reference
            .as_deref()
            .map(str::parse::<Reference>)
            .transpose()?;
        if reference.as_ref().is_some_and(|r| r.digest().is_some()) {
            return Err(EngineError::Invalid(
                "import: the new image's name cannot carry a digest; give a tag instead".into(),
            ));
        }
        let mut run = RunConfig::default();
        for c in &opts.changes {
            apply_change(&mut run, c).map_err(|e| EngineError::Invalid(e.to_string()))?;
        }
        let ingest = Rc::new(RefCell::new(Some(self.content.writer()?)));
        let mut tee = Tee {
            inner: input,
            out: ingest.clone(),
        };
        let layer = self.create_layer(None, &mut tee, None, || {
            let writer = ingest.borrow_mut().take().expect("ingest committed once");
            Ok(writer.commit(None, None)?.digest().clone())
        })?;
        let created = records::now();
        let comment = opts
            .message
            .clone()
            .unwrap_or_else(|| format!("Imported from {}", opts.source_name));
        let config = imported_config(&layer.diff_id, &run, &created, &comment);
        let config_blob = self.content.write_blob(&config, None)?;
        let id = config_blob.digest().clone();
        let row = ImageRow {
            id: id.clone(),
            top_layer: Some(layer.chain_id.clone()),
            created: created.clone(),
            added: created,
            size: layer.size,
        };
        let tags: Vec<String> = reference.iter().map(|r| r.to_string()).collect();
        records::insert_image(&self.db, &row, &tags)?;
        Ok(id)
    }
}
