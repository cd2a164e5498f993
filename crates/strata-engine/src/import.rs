//! `import`: a filesystem tarball becomes a one-layer image.

use crate::error::{EngineError, Result};
use crate::records::{self, ImageRow};
use crate::Engine;
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use strata_image::changes::apply_change;
use strata_image::config::{imported_config, RunConfig};
use strata_image::Reference;
use strata_store::{BlobWriter, Committed, Digest};

#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// What the history comment names as the source (`-` for stdin, or the path).
    pub source_name: String,
    pub reference: Option<String>,
    pub changes: Vec<String>,
    pub message: Option<String>,
}

/// Copies what is read into the content store as it goes. The copy and its hashing run on
/// a second thread, so they overlap with applying the layer instead of adding to it.
struct Tee<R> {
    inner: R,
    copy: Rc<RefCell<BlobCopy>>,
}

struct BlobCopy {
    chunks: Option<mpsc::SyncSender<Chunk>>,
    writer: Option<thread::JoinHandle<Result<Option<Committed>>>>,
}

enum Chunk {
    Data(Vec<u8>),
    /// Everything was sent: verify and publish the blob.
    Commit,
}

impl BlobCopy {
    fn start(mut ingest: BlobWriter) -> BlobCopy {
        let (tx, rx) = mpsc::sync_channel::<Chunk>(16);
        let writer = thread::spawn(move || -> Result<Option<Committed>> {
            for chunk in rx {
                match chunk {
                    Chunk::Data(d) => ingest
                        .write_all(&d)
                        .map_err(|e| EngineError::io("writing the layer blob", e))?,
                    Chunk::Commit => return Ok(Some(ingest.commit(None, None)?)),
                }
            }
            Ok(None) // aborted: dropping the ingest removes it
        });
        BlobCopy {
            chunks: Some(tx),
            writer: Some(writer),
        }
    }

    fn send(&self, chunk: Chunk) -> io::Result<()> {
        let tx = self
            .chunks
            .as_ref()
            .ok_or_else(|| io::Error::other("the layer blob is already complete"))?;
        tx.send(chunk)
            .map_err(|_| io::Error::other("the layer blob writer stopped"))
    }

    fn join(&mut self) -> Result<Option<Committed>> {
        self.chunks.take();
        match self.writer.take().map(thread::JoinHandle::join) {
            Some(Ok(res)) => res,
            _ => Err(EngineError::Store("the layer blob writer stopped".into())),
        }
    }

    /// Waits until everything sent is written and the blob committed.
    fn commit(&mut self) -> Result<Committed> {
        let sent = self.send(Chunk::Commit);
        match (self.join()?, sent) {
            (Some(c), _) => Ok(c),
            (None, Err(e)) => Err(EngineError::io("writing the layer blob", e)),
            (None, Ok(())) => Err(EngineError::Store("the layer blob writer stopped".into())),
        }
    }

    /// Drops what was copied.
    fn abort(&mut self) {
        let _ = self.join();
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.copy.borrow().send(Chunk::Data(buf[..n].to_vec()))?;
        }
        Ok(n)
    }
}

impl Engine {
    /// Imports the tarball read from `input`; returns the new image's ID.
    pub fn import(&self, input: &mut dyn Read, opts: &ImportOptions) -> Result<Digest> {
        self.operation("import", || self.import_tarball(input, opts))
    }

    fn import_tarball(&self, input: &mut dyn Read, opts: &ImportOptions) -> Result<Digest> {
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
        let copy = Rc::new(RefCell::new(BlobCopy::start(self.content.writer()?)));
        let mut tee = Tee {
            inner: input,
            copy: copy.clone(),
        };
        let layer = self.create_layer(None, &mut tee, None, None, || {
            Ok(copy.borrow_mut().commit()?.digest().clone())
        });
        let layer = match layer {
            Ok(l) => l,
            Err(e) => {
                copy.borrow_mut().abort();
                return Err(e);
            }
        };
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
