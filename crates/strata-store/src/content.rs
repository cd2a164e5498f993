//! Blobs addressed by sha256, as containerd's local content store keeps them.
//!
//! A blob is written through an ingest file under `ingest/`, hashed while written, checked
//! against the expected size and digest, fsynced and renamed into `blobs/sha256/<hex>`; the
//! directory is fsynced and the blob made read-only. A blob that is visible is therefore
//! complete and verified. Each ingest file is flock'ed by its writer, so two processes never
//! share one, and two processes committing the same blob simply rename identical verified
//! content over each other.

use crate::digest::{Digest, DigestWriter};
use crate::fsutil::fsync_dir;
use rustix::fs::{flock, FlockOperation};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("blob {0} not found in the content store")]
    NotFound(Digest),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Clone)]
pub struct ContentStore {
    root: PathBuf,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Written(Digest, u64),
    AlreadyExists(Digest, u64),
}

impl Committed {
    pub fn digest(&self) -> &Digest {
        match self {
            Committed::Written(d, _) | Committed::AlreadyExists(d, _) => d,
        }
    }
    pub fn size(&self) -> u64 {
        match self {
            Committed::Written(_, s) | Committed::AlreadyExists(_, s) => *s,
        }
    }
}

impl ContentStore {
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::create_dir_all(root.join("ingest"))?;
        Ok(ContentStore {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    pub fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, ContentError> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(ContentError::NotFound(digest.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let mut buf = Vec::new();
        self.open_blob(digest)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Writes a small blob in one call.
    pub fn write_blob(
        &self,
        bytes: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Committed, ContentError> {
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.commit(expected, Some(bytes.len() as u64))
    }

    /// Opens a new ingest. The ingest file is locked until the writer commits or drops.
    pub fn writer(&self) -> Result<BlobWriter, ContentError> {
        let dir = self.root.join("ingest");
        loop {
            let path = dir.join(format!("{:032x}", rand::random::<u128>()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    flock(&file, FlockOperation::LockExclusive).map_err(io::Error::from)?;
                    let lock = file.try_clone()?;
                    return Ok(BlobWriter {
                        store: self.clone(),
                        path,
                        inner: Some(DigestWriter::new(BufWriter::with_capacity(1 << 20, file))),
                        _lock: lock,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Recomputes a blob's digest from its bytes.
    pub fn verify(&self, digest: &Digest) -> Result<(), ContentError> {
        let mut r = crate::DigestReader::new(io::BufReader::with_capacity(
            1 << 20,
            self.open_blob(digest)?,
        ));
        io::copy(&mut r, &mut io::sink())?;
        let (actual, _) = r.finish()?;
        if &actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    pub fn delete(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every blob on disk (including ones no record points to).
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("blobs/sha256"))? {
            let name = e?.file_name();
            if let Some(d) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Ingests that no live process holds: what a killed writer left behind.
    pub fn abandoned_ingests(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("ingest"))? {
            let path = e?.path();
            let Ok(f) = File::open(&path) else { continue };
            if flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok() {
                out.push(path);
            }
        }
        Ok(out)
    }
}

/// An open ingest. Dropped without `commit`, it removes its file.
pub struct BlobWriter {
    store: ContentStore,
    path: PathBuf,
    inner: Option<DigestWriter<BufWriter<File>>>,
    _lock: File,
}

impl BlobWriter {
    /// Verifies and publishes the blob. Always consumes the ingest, even on error.
    pub fn commit(
        mut self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Committed, ContentError> {
        let w = self.inner.take().expect("writer present until commit");
        let (buf, digest, size) = w.finish();
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        if let Some(exp) = expected_size {
            if exp != size {
                return Err(ContentError::SizeMismatch {
                    expected: exp,
                    actual: size,
                });
            }
        }
        if let Some(exp) = expected {
            if *exp != digest {
                return Err(ContentError::DigestMismatch {
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        let target = self.store.blob_path(&digest);
        if target.exists() {
            return Ok(Committed::AlreadyExists(digest, size));
        }
        file.sync_all()?;
        file.set_permissions(fs::Permissions::from_mode(0o444))?;
        fs::rename(&self.path, &target)?;
        fsync_dir(target.parent().expect("blob dir"))?;
        Ok(Committed::Written(digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.as_mut().expect("open ingest").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.as_mut().expect("open ingest").flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the file was renamed away and this is a no-op.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_verifies_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        assert!(matches!(
            cs.write_blob(b"hello", Some(&d)).unwrap(),
            Committed::Written(..)
        ));
        assert!(matches!(
            cs.write_blob(b"hello", Some(&d)).unwrap(),
            Committed::AlreadyExists(..)
        ));
        assert!(matches!(
            cs.write_blob(b"hellO", Some(&d)),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(matches!(
            cs.write_blob(b"hello", None).map(|c| c.size()),
            Ok(5)
        ));
        let mut w = cs.writer().unwrap();
        w.write_all(b"abc").unwrap();
        assert!(matches!(
            w.commit(None, Some(4)),
            Err(ContentError::SizeMismatch { .. })
        ));
        assert_eq!(cs.read_blob(&d).unwrap(), b"hello");
        cs.verify(&d).unwrap();
        assert_eq!(
            fs::read_dir(dir.path().join("ingest")).unwrap().count(),
            0,
            "ingests cleaned"
        );
        assert_eq!(cs.list().unwrap(), vec![d]);
    }
}
