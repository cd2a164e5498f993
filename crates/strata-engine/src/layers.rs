//! Making layers: applying a layer tar into a new snapshot on its parent, checking its diff
//! ID, committing it under its chain ID; and removing the layers nothing uses.

use crate::error::{EngineError, Result};
use crate::records::{self, LayerRow};
use crate::{Engine, EXTRACT_PREFIX};
use std::cell::Cell;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;
use strata_archive::{ApplyOptions, Compression, WhiteoutFormat};
use strata_snapshot::mount::MountGuard;
use strata_snapshot::{PrepareOpts, SnapshotError};
use strata_store::{Digest, DigestReader};

/// Counts bytes read through it, so the apply can compare output with input.
struct CountingReader<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// A compressed layer may expand this many times over what was read of it, beyond a first
/// allowance; real layers stay far below (about 3-4x), decompression bombs do not.
const MAX_EXPANSION: u64 = 100;
const EXPANSION_ALLOWANCE: u64 = 256 << 20;
/// Applying stops while this much disk is still free.
const DISK_RESERVE: u64 = 512 << 20;

pub(crate) struct Applied {
    pub diff_id: Digest,
    pub size: u64,
    pub compression: Compression,
}

impl Engine {
    /// Applies the layer tar in `raw` (plain, gzip or zstd) on top of layer `parent` and
    /// records it under its chain ID, unless that layer exists already. `blob` gives the
    /// content-store blob the tar came from, once `raw` has been read to its end;
    /// `expected_diff` is the diff ID the image config promises (checked before anything is
    /// committed). `verified_raw` is the digest of `raw`'s bytes when it is already known
    /// and checked (a blob read back from the content store): an uncompressed layer's diff
    /// ID is then that digest, and the layer is not hashed a second time.
    pub(crate) fn create_layer(
        &self,
        parent: Option<&Digest>,
        raw: &mut dyn Read,
        expected_diff: Option<&Digest>,
        verified_raw: Option<&Digest>,
        blob: impl FnOnce() -> Result<Digest>,
    ) -> Result<LayerRow> {
        let key = format!("{EXTRACT_PREFIX}{:032x}", rand::random::<u128>());
        let parent_key = parent.map(|p| p.to_string());
        self.snapshots
            .prepare(&key, parent_key.as_deref(), &PrepareOpts::default())?;
        let applied = match self.apply_into(&key, raw, expected_diff, verified_raw) {
            Ok(a) => a,
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                return Err(e);
            }
        };
        // The whole input belongs to the blob, including padding after the tar's end.
        let blob = match io::copy(raw, &mut io::sink())
            .map_err(|e| EngineError::io("reading the layer", e))
            .and_then(|_| blob())
        {
            Ok(b) => b,
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                return Err(e);
            }
        };
        let chain_id = match parent {
            None => applied.diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {}", applied.diff_id).as_bytes()),
        };
        let row = LayerRow {
            chain_id: chain_id.clone(),
            diff_id: applied.diff_id,
            parent: parent.cloned(),
            blob,
            compression: applied.compression.name().to_string(),
            size: applied.size,
        };
        // The layer row is written in the commit's own transaction: a committed layer
        // snapshot never exists without its record.
        match self
            .snapshots
            .commit_with(&chain_id.to_string(), &key, |tx| {
                records::insert_layer(tx, &row)
            }) {
            Ok(()) => {}
            Err(SnapshotError::AlreadyExists(_)) => {
                // Another process made the same layer meanwhile: keep theirs (reviving its
                // record if an interrupted removal left it `removing`).
                self.snapshots.remove(&key)?;
                records::insert_layer(&self.db.conn(), &row)?;
            }
            Err(e) => {
                let _ = self.snapshots.remove(&key);
                return Err(e.into());
            }
        }
        Ok(records::layer(&self.db, &chain_id)?.unwrap_or(row))
    }

    fn apply_into(
        &self,
        key: &str,
        raw: &mut dyn Read,
        expected_diff: Option<&Digest>,
        verified_raw: Option<&Digest>,
    ) -> Result<Applied> {
        let read_in = Rc::new(Cell::new(0u64));
        let counted = CountingReader {
            inner: raw,
            count: read_in.clone(),
        };
        let (compression, plain) = strata_archive::decompress(counted)
            .map_err(|e| EngineError::Invalid(format!("layer archive: {e}")))?;
        let (dir, format, _guard) = match self.snapshots.apply_dir(key)? {
            Some((dir, format)) => (dir, format, None),
            None => {
                let mounts = self.snapshots.mounts(key)?;
                let guard = MountGuard::new(&mounts, &self.tmp_dir().join("mounts").join(key))
                    .map_err(|e| EngineError::io("mounting a layer to apply it", e))?;
                (
                    guard.path().to_path_buf(),
                    WhiteoutFormat::Apply,
                    Some(guard),
                )
            }
        };
        let check_dir = dir.clone();
        let mut budget = move |written: u64| -> io::Result<()> {
            if compression != Compression::None
                && written > EXPANSION_ALLOWANCE + MAX_EXPANSION * read_in.get()
            {
                return Err(io::Error::other(format!(
                    "layer archive expands more than {MAX_EXPANSION} times ({written} bytes from {} compressed): refusing it as a decompression bomb",
                    read_in.get()
                )));
            }
            if written % (64 << 20) < (1 << 20)
                && strata_store::fsutil::free_bytes(&check_dir).unwrap_or(u64::MAX) < DISK_RESERVE
            {
                return Err(io::Error::other("not enough disk space to apply the layer: free space on the store's filesystem and retry"));
            }
            Ok(())
        };
        let opts = ApplyOptions {
            whiteouts: format,
            budget: Some(&mut budget),
        };
        let corrupt = |e: io::Error| {
            EngineError::Invalid(format!("layer archive is truncated or corrupt: {e}"))
        };
        let (stats, diff_id) = match verified_raw.filter(|_| compression == Compression::None) {
            Some(known) => {
                let (stats, mut rest) = strata_archive::apply_layer(plain, &dir, opts)
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
                io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
                (stats, known.clone())
            }
            None => {
                let (stats, hashing) =
                    strata_archive::apply_layer(DigestReader::new(plain), &dir, opts)
                        .map_err(|e| EngineError::Invalid(e.to_string()))?;
                (stats, hashing.finish().map_err(corrupt)?.0)
            }
        };
        if let Some(exp) = expected_diff {
            if *exp != diff_id {
                return Err(EngineError::Invalid(format!(
                    "layer content does not match its diff ID: the config promises {exp}, the layer is {diff_id}"
                )));
            }
        }
        sync_dir(&dir).map_err(|e| EngineError::io("syncing the applied layer", e))?;
        Ok(Applied {
            diff_id,
            size: stats.size,
            compression,
        })
    }

    /// Removes every layer no image (and no other layer) uses, and blobs nothing points to.
    /// The caller holds the store exclusively.
    pub(crate) fn gc_layers(&self) -> Result<Vec<Digest>> {
        let mut removed = Vec::new();
        loop {
            let unused = records::unused_layers(&self.db)?;
            if unused.is_empty() {
                break;
            }
            for chain in unused {
                records::mark_layer_removing(&self.db, &chain)?;
                match self.snapshots.remove(&chain.to_string()) {
                    Ok(()) | Err(SnapshotError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                records::delete_layer(&self.db, &chain)?;
                removed.push(chain);
            }
        }
        self.gc_blobs()?;
        Ok(removed)
    }

    pub(crate) fn gc_blobs(&self) -> Result<u64> {
        let keep = records::referenced_blobs(&self.db)?;
        let mut freed = 0;
        for d in self
            .content
            .list()
            .map_err(|e| EngineError::io("listing blobs", e))?
        {
            if !keep.contains(&d) {
                freed += self.content.size(&d).unwrap_or(0);
                self.content
                    .delete(&d)
                    .map_err(|e| EngineError::io(format!("removing blob {d}"), e))?;
            }
        }
        Ok(freed)
    }
}

/// Flushes a freshly applied layer to disk before it is committed, so a committed layer
/// survives power loss as well as a killed process.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let f = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&f)?;
    Ok(())
}
