//! Device sizes: the one thing dm-thin's metadata does not keep (device-mapper tables did).
//!
//! The sizes file is a magic number followed by one little-endian u64 per possible device
//! id (24 bits), device `id` at byte `8 * (id + 1)`. A change is one aligned 8-byte write
//! in place and one `fdatasync`: a sector is written whole or not at all, the assumption
//! dm-thin's superblock rests on too. The file is made at its full length, sparse (128 MiB
//! apparent, a few blocks on disk), so a write never changes its size and the sync writes
//! the block without a journal commit for the inode. Rewriting the whole file through a
//! temporary copy cost two fsyncs and a rename per snapshot, most of a snapshot's time.
//!
//! A record is trusted only for a device the pool has: one left by a device deleted before
//! a crash is ignored, and every way of making a device writes its record first.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"STSIZES1";
const LEN: u64 = 8 * ((1 << 24) + 1);

pub struct Sizes {
    file: File,
    known: BTreeMap<u64, u64>,
}

impl Sizes {
    /// Opens (or makes) the sizes file at `path`, keeping the sizes of `devices`.
    pub fn open(path: &Path, devices: &[u64]) -> io::Result<Sizes> {
        let file = match File::options().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Self::make(path, &BTreeMap::new())?,
            Err(e) => return Err(e),
        };
        let mut magic = [0u8; 8];
        let file = if file.read_at(&mut magic, 0)? == 8 && &magic == MAGIC {
            file
        } else {
            // The text format of earlier versions: `ID SIZE` lines.
            let text = std::fs::read_to_string(path)?;
            let old = text
                .lines()
                .filter_map(|l| {
                    let (id, size) = l.split_once(' ')?;
                    Some((id.parse().ok()?, size.trim().parse().ok()?))
                })
                .collect();
            Self::make(path, &old)?
        };
        let mut known = BTreeMap::new();
        for &id in devices {
            let mut b = [0u8; 8];
            file.read_exact_at(&mut b, 8 * (id + 1))?;
            known.insert(id, u64::from_le_bytes(b));
        }
        Ok(Sizes { file, known })
    }

    /// Writes a new sizes file holding `sizes` atomically (temp file, fsync, rename, fsync
    /// of the directory).
    fn make(path: &Path, sizes: &BTreeMap<u64, u64>) -> io::Result<File> {
        let tmp = path.with_extension("tmp");
        let f = File::create(&tmp)?;
        f.set_len(LEN)?;
        f.write_all_at(MAGIC, 0)?;
        for (id, size) in sizes {
            f.write_all_at(&size.to_le_bytes(), 8 * (id + 1))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        File::options().read(true).write(true).open(path)
    }

    pub fn get(&self, id: u64) -> u64 {
        self.known.get(&id).copied().unwrap_or(0)
    }

    /// Records `size` for device `id` durably.
    pub fn set(&mut self, id: u64, size: u64) -> io::Result<()> {
        self.file.write_all_at(&size.to_le_bytes(), 8 * (id + 1))?;
        self.file.sync_data()?;
        self.known.insert(id, size);
        Ok(())
    }

    /// Forgets device `id` (its record stays until the id is used again).
    pub fn remove(&mut self, id: u64) {
        self.known.remove(&id);
    }

    /// The devices with a size, in id order.
    pub fn devices(&self) -> impl Iterator<Item = u64> + '_ {
        self.known.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_survive_reopening_and_the_text_format_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sizes");
        std::fs::write(&path, "1 4096\n7 65536\n").unwrap();
        let mut s = Sizes::open(&path, &[1, 7]).unwrap();
        assert_eq!((s.get(1), s.get(7)), (4096, 65536));
        s.set(9, 1 << 40).unwrap();
        s.remove(1);
        assert_eq!(s.devices().collect::<Vec<_>>(), [7, 9]);
        drop(s);
        // Only devices the pool has are known: 1's record is stale.
        let s = Sizes::open(&path, &[7, 9]).unwrap();
        assert_eq!((s.get(1), s.get(7), s.get(9)), (0, 65536, 1 << 40));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), LEN);
        assert!(!path.with_extension("tmp").exists());
    }
}
