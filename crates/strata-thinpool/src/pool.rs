//! The pool: superblock, devices, reads and writes, transactions.

use crate::block::{self, Kind, BLOCK_SECTORS, BLOCK_SIZE};
use crate::btree::{Counts, Tm, Values};
use crate::sm::{self, SmRoot, Which};
use crate::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;

const MAGIC: u64 = 27022010;
const VERSION: u32 = 2;
const DETAILS_SIZE: usize = 24;
/// Device ids are 24 bits wide in dm-thin.
const MAX_DEVICE: u64 = (1 << 24) - 1;

/// How a new pool is laid out.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Data block size in 512-byte sectors: 128 (64 KiB) to 2097152 (1 GiB), a multiple of
    /// 128.
    pub block_sectors: u32,
    pub data_blocks: u64,
    pub metadata_blocks: u64,
}

/// What the details tree says of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Details {
    pub mapped_blocks: u64,
    pub transaction_id: u64,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

impl Details {
    fn encode(&self) -> [u8; DETAILS_SIZE] {
        let mut b = [0u8; DETAILS_SIZE];
        block::put_u64(&mut b, 0, self.mapped_blocks);
        block::put_u64(&mut b, 8, self.transaction_id);
        block::put_u32(&mut b, 16, self.creation_time);
        block::put_u32(&mut b, 20, self.snapshotted_time);
        b
    }

    fn decode(b: &[u8]) -> Details {
        Details {
            mapped_blocks: block::u64_at(b, 0),
            transaction_id: block::u64_at(b, 8),
            creation_time: block::u32_at(b, 16),
            snapshotted_time: block::u32_at(b, 20),
        }
    }
}

/// Space used and total, in blocks of each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub data_used: u64,
    pub data_total: u64,
    pub metadata_used: u64,
    pub metadata_total: u64,
}

pub struct Pool {
    tm: Tm,
    data: File,
    block_sectors: u32,
    time: u32,
    trans_id: u64,
    mapping_root: u64,
    details_root: u64,
    /// Where the committed space maps are.
    meta_at: sm::Placement,
    data_at: sm::Placement,
    /// Percent of data blocks kept free: allocations stop there.
    min_free_percent: u64,
    /// Something was written or changed since the last commit.
    changed: bool,
    /// Data was written since the last commit (the data file needs a sync).
    data_written: bool,
    /// Grow the data file by `.1` percent once `.0` percent of it is used.
    autoextend: Option<(u64, u64)>,
}

impl Pool {
    /// Makes a new, empty pool on `meta` and `data` (files are sized to fit, sparse).
    pub fn format(meta: File, data: File, cfg: &PoolConfig) -> Result<Pool> {
        if cfg.block_sectors < 128
            || !cfg.block_sectors.is_multiple_of(128)
            || cfg.block_sectors > 2097152
        {
            return Err(Error::Invalid(format!(
                "block size of {} sectors: give 128 (64 KiB) to 2097152 (1 GiB) in steps of 128",
                cfg.block_sectors
            )));
        }
        let max_meta = (sm::MAX_METADATA_BITMAPS * sm::ENTRIES_PER_BITMAP) as u64;
        if cfg.metadata_blocks < 64 || cfg.metadata_blocks > max_meta {
            return Err(Error::Invalid(format!(
                "{} metadata blocks: give 64 to {max_meta} (256 KiB to about 16 GiB)",
                cfg.metadata_blocks
            )));
        }
        if cfg.data_blocks == 0 || cfg.data_blocks > 1 << 40 {
            return Err(Error::Invalid(format!(
                "{} data blocks is not a pool size",
                cfg.data_blocks
            )));
        }
        fit(&meta, cfg.metadata_blocks * BLOCK_SIZE as u64, "metadata")?;
        fit(
            &data,
            cfg.data_blocks * cfg.block_sectors as u64 * 512,
            "data",
        )?;
        let mut meta_rc = vec![0u32; cfg.metadata_blocks as usize];
        meta_rc[0] = 1; // the superblock
        let mut tm = Tm::new(
            meta,
            Counts::new(meta_rc),
            Counts::new(vec![0; cfg.data_blocks as usize]),
        );
        let mapping_root = tm.empty_tree(Values::Subtree)?;
        let details_root = tm.empty_tree(Values::Plain(DETAILS_SIZE))?;
        let mut pool = Pool {
            tm,
            data,
            block_sectors: cfg.block_sectors,
            time: 0,
            trans_id: 0,
            mapping_root,
            details_root,
            meta_at: sm::Placement::default(),
            data_at: sm::Placement::default(),
            min_free_percent: 10,
            changed: true,
            data_written: true,
            autoextend: None,
        };
        pool.commit()?;
        Ok(pool)
    }

    /// Whether `meta` holds a pool's superblock (checksum and magic).
    pub fn is_formatted(meta: &File) -> bool {
        block::read(meta, 0, Kind::Superblock).is_ok_and(|sb| block::u64_at(&sb[..], 32) == MAGIC)
    }

    /// Opens a pool as its last commit left it.
    pub fn open(meta: File, data: File) -> Result<Pool> {
        let sb = block::read(&meta, 0, Kind::Superblock)?;
        if block::u64_at(&sb[..], 32) != MAGIC {
            return Err(Error::Corrupt("no thin pool superblock (bad magic)".into()));
        }
        let version = block::u32_at(&sb[..], 40);
        if !(1..=VERSION).contains(&version) {
            return Err(Error::Corrupt(format!(
                "metadata version {version} is not supported"
            )));
        }
        let data_root = SmRoot::decode(&sb[64..96]);
        let meta_root = SmRoot::decode(&sb[192..224]);
        let block_sectors = block::u32_at(&sb[..], 336);
        let nr_meta = block::u64_at(&sb[..], 344);
        if meta_root.nr_blocks != nr_meta || size_of(&meta)? < nr_meta * BLOCK_SIZE as u64 {
            return Err(Error::Corrupt(
                "metadata size disagrees with the superblock".into(),
            ));
        }
        if size_of(&data)? < data_root.nr_blocks * block_sectors as u64 * 512 {
            return Err(Error::Corrupt(
                "the data file is smaller than the pool".into(),
            ));
        }
        let (meta_rc, meta_at) = sm::load(&meta, Which::Metadata, &meta_root)?;
        let (data_rc, data_at) = sm::load(&meta, Which::Data, &data_root)?;
        Ok(Pool {
            tm: Tm::new(meta, Counts::new(meta_rc), Counts::new(data_rc)),
            data,
            block_sectors,
            time: block::u32_at(&sb[..], 44),
            trans_id: block::u64_at(&sb[..], 48),
            mapping_root: block::u64_at(&sb[..], 320),
            details_root: block::u64_at(&sb[..], 328),
            meta_at,
            data_at,
            min_free_percent: 10,
            changed: false,
            data_written: false,
            autoextend: None,
        })
    }

    /// Data blocks kept free: allocations fail with a clear error before the pool is full
    /// (docker's `dm.min_free_space`, default 10).
    pub fn set_min_free_percent(&mut self, percent: u64) {
        self.min_free_percent = percent.min(99);
    }

    /// Grows the data file by `percent` of its size whenever `threshold` percent of it is in
    /// use (the LVM profile docker's direct-lvm setup used: 80 and 20).
    pub fn set_autoextend(&mut self, threshold: u64, percent: u64) {
        self.autoextend = (threshold > 0 && percent > 0).then_some((threshold.min(100), percent));
    }

    /// Grows the pool to `blocks` data blocks (the data file with it), committed.
    pub fn grow_data(&mut self, blocks: u64) -> Result<()> {
        if blocks <= self.tm.data.len() {
            return Ok(());
        }
        if blocks > 1 << 40 {
            return Err(Error::Invalid(format!(
                "{blocks} data blocks is not a pool size"
            )));
        }
        self.data.set_len(blocks * self.block_bytes() as u64)?;
        self.data_written = true;
        self.tm.data.grow(blocks);
        self.changed = true;
        self.commit()
    }

    /// Whether anything was written or changed since the last commit.
    pub fn has_changes(&self) -> bool {
        self.changed
    }

    pub fn block_bytes(&self) -> usize {
        self.block_sectors as usize * 512
    }

    pub fn transaction_id(&self) -> u64 {
        self.trans_id
    }

    pub fn usage(&self) -> Usage {
        Usage {
            data_used: self.tm.data.len() - self.tm.data.free(),
            data_total: self.tm.data.len(),
            metadata_used: self.tm.meta.len() - self.tm.meta.free(),
            metadata_total: self.tm.meta.len(),
        }
    }

    fn check_id(dev: u64) -> Result<()> {
        if dev > MAX_DEVICE {
            return Err(Error::Invalid(format!(
                "thin device id {dev} is over 2^24-1"
            )));
        }
        Ok(())
    }

    pub fn details(&mut self, dev: u64) -> Result<Details> {
        self.tm
            .lookup(self.details_root, dev)?
            .map(|v| Details::decode(&v))
            .ok_or(Error::NoDevice(dev))
    }

    fn set_details(&mut self, dev: u64, d: Details) -> Result<()> {
        self.details_root = self.tm.insert(
            self.details_root,
            dev,
            Values::Plain(DETAILS_SIZE),
            &d.encode(),
        )?;
        Ok(())
    }

    /// Every device and its details.
    pub fn devices(&mut self) -> Result<Vec<(u64, Details)>> {
        let mut out = Vec::new();
        self.tm.walk(self.details_root, &mut out)?;
        Ok(out
            .into_iter()
            .map(|(k, v)| (k, Details::decode(&v)))
            .collect())
    }

    pub fn create_thin(&mut self, dev: u64) -> Result<()> {
        Self::check_id(dev)?;
        self.ensure_metadata()?;
        self.changed = true;
        if self.tm.lookup(self.mapping_root, dev)?.is_some() {
            return Err(Error::DeviceExists(dev));
        }
        let root = self.tm.empty_tree(Values::Data)?;
        self.mapping_root =
            self.tm
                .insert(self.mapping_root, dev, Values::Subtree, &root.to_le_bytes())?;
        self.set_details(
            dev,
            Details {
                mapped_blocks: 0,
                transaction_id: self.trans_id,
                creation_time: self.time,
                snapshotted_time: self.time,
            },
        )
    }

    /// A new device `dev` sharing every block of `origin`: one more reference to the
    /// origin's mapping tree, whatever its size.
    pub fn create_snap(&mut self, dev: u64, origin: u64) -> Result<()> {
        Self::check_id(dev)?;
        self.ensure_metadata()?;
        self.changed = true;
        if self.tm.lookup(self.mapping_root, dev)?.is_some() {
            return Err(Error::DeviceExists(dev));
        }
        let root = self
            .tm
            .lookup(self.mapping_root, origin)?
            .map(|v| block::u64_at(&v, 0))
            .ok_or(Error::NoDevice(origin))?;
        let od = self.details(origin)?;
        self.tm.meta.inc(root);
        self.mapping_root =
            self.tm
                .insert(self.mapping_root, dev, Values::Subtree, &root.to_le_bytes())?;
        // Mappings written from now on are younger than the snapshot.
        self.time += 1;
        self.set_details(
            dev,
            Details {
                mapped_blocks: od.mapped_blocks,
                transaction_id: self.trans_id,
                creation_time: self.time,
                snapshotted_time: self.time,
            },
        )?;
        self.set_details(
            origin,
            Details {
                snapshotted_time: self.time,
                ..od
            },
        )
    }

    /// Removes device `dev`; blocks no other device shares go back to the pool.
    pub fn delete(&mut self, dev: u64) -> Result<()> {
        self.ensure_metadata()?;
        self.changed = true;
        let (root, found) = self.tm.remove(self.mapping_root, dev, Values::Subtree)?;
        if !found {
            return Err(Error::NoDevice(dev));
        }
        self.mapping_root = root;
        self.details_root = self
            .tm
            .remove(self.details_root, dev, Values::Plain(DETAILS_SIZE))?
            .0;
        Ok(())
    }

    /// The data block `vblock` of `dev` is mapped to, if any.
    pub fn mapping(&mut self, dev: u64, vblock: u64) -> Result<Option<u64>> {
        let root = self
            .tm
            .lookup(self.mapping_root, dev)?
            .map(|v| block::u64_at(&v, 0))
            .ok_or(Error::NoDevice(dev))?;
        Ok(self
            .tm
            .lookup(root, vblock)?
            .map(|v| block::u64_at(&v, 0) >> 24))
    }

    /// Blocks only `dev` refers to: what it wrote itself, not what it shares with the
    /// device it was snapshotted from or with snapshots of it.
    pub fn exclusive_blocks(&mut self, dev: u64) -> Result<u64> {
        let root = self.device_root(dev)?;
        let mut n = 0;
        self.tm.each_exclusive(root, false, &mut |tm, v| {
            if tm.data.rc[(block::u64_at(v, 0) >> 24) as usize] == 1 {
                n += 1;
            }
        })?;
        Ok(n)
    }

    /// Reads `buf.len()` bytes at `offset` within virtual block `vblock` of `dev` (zeros
    /// where unmapped).
    pub fn read(&mut self, dev: u64, vblock: u64, offset: usize, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_bytes();
        if offset + buf.len() > bs {
            return Err(Error::Invalid("a read must stay within one block".into()));
        }
        match self.mapping(dev, vblock)? {
            Some(db) => self
                .data
                .read_exact_at(buf, db * bs as u64 + offset as u64)?,
            None => buf.fill(0),
        }
        Ok(())
    }

    /// Reads virtual block `vblock` of `dev` into `buf` (one block; zeros where unmapped).
    pub fn read_block(&mut self, dev: u64, vblock: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_bytes();
        assert_eq!(buf.len(), bs, "whole blocks only");
        match self.mapping(dev, vblock)? {
            Some(db) => self.data.read_exact_at(buf, db * bs as u64)?,
            None => buf.fill(0),
        }
        Ok(())
    }

    /// Makes sure an operation cannot run out of metadata blocks halfway: below a margin,
    /// commits (blocks freed since the last commit become reusable), and refuses if that
    /// is not enough.
    fn ensure_metadata(&mut self) -> Result<()> {
        const MARGIN: u64 = 256;
        if self.tm.meta.available() < MARGIN {
            self.commit()?;
            if self.tm.meta.available() < MARGIN {
                return Err(Error::MetadataFull);
            }
        }
        Ok(())
    }

    /// A data block for a write, within the free-space policy (growing the pool first when
    /// it autoextends).
    fn alloc_data(&mut self) -> Result<u64> {
        if let Some((threshold, percent)) = self.autoextend {
            let total = self.tm.data.len();
            let used = total - self.tm.data.free();
            if (used + 1) * 100 >= total * threshold {
                self.grow_data(total + (total * percent / 100).max(1))?;
            }
        }
        let total = self.tm.data.len();
        let free = self.tm.data.free();
        if free == 0 || free <= total * self.min_free_percent / 100 {
            return Err(Error::NoSpace(format!(
                "thin pool data space is exhausted: {free} of {total} blocks free, and {}% are kept free (dm.min_free_space): delete devices or grow the pool",
                self.min_free_percent
            )));
        }
        if self.tm.data.available() == 0 {
            self.commit()?;
        }
        self.tm
            .data
            .alloc()
            .ok_or_else(|| Error::NoSpace("thin pool data space is exhausted".into()))
    }

    fn device_root(&mut self, dev: u64) -> Result<u64> {
        self.tm
            .lookup(self.mapping_root, dev)?
            .map(|v| block::u64_at(&v, 0))
            .ok_or(Error::NoDevice(dev))
    }

    /// Writes `bytes` at `offset` within virtual block `vblock` of `dev`. A block this
    /// device alone maps is written in place (no metadata changes); a block first written
    /// is allocated (the rest of it zeroed); a block shared with another device is copied
    /// first. Nothing changes when the pool has no room.
    pub fn write(&mut self, dev: u64, vblock: u64, offset: usize, bytes: &[u8]) -> Result<()> {
        let bs = self.block_bytes();
        if offset + bytes.len() > bs {
            return Err(Error::Invalid("a write must stay within one block".into()));
        }
        let root = self.device_root(dev)?;
        self.changed = true;
        self.data_written = true;
        // A block may be written in place only if no committed state shares it either: a
        // crash must find every other device's committed data as it was. Sharing comes only
        // from snapshots, so a mapping made since the device's last snapshot is its own
        // (dm-thin's rule); older ones are copied, even if the sharer is gone since.
        let details = self.details(dev)?;
        let snapped = details.snapshotted_time;
        if let Some((db, t)) = self.tm.exclusive_mapping(root, vblock)? {
            if t >= snapped {
                self.data
                    .write_all_at(bytes, db * bs as u64 + offset as u64)?;
                return Ok(());
            }
        }
        self.ensure_metadata()?;
        let nb = self.alloc_data()?;
        let time = self.time;
        let data = &self.data;
        let mut used = false;
        let mut new_mapping = false;
        let mut inner = |tm: &mut Tm, old: Option<&[u8]>| -> Result<Vec<u8>> {
            let old_time = old.map(|v| (block::u64_at(v, 0) & 0xff_ffff) as u32);
            match old.map(|v| block::u64_at(v, 0) >> 24) {
                Some(db) if tm.data.rc[db as usize] == 1 && old_time >= Some(snapped) => {
                    data.write_all_at(bytes, db * bs as u64 + offset as u64)?;
                    return Ok(old.expect("mapped").to_vec());
                }
                Some(shared) => {
                    let mut buf = vec![0u8; bs];
                    data.read_exact_at(&mut buf, shared * bs as u64)?;
                    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
                    data.write_all_at(&buf, nb * bs as u64)?;
                }
                None => {
                    if bytes.len() == bs {
                        data.write_all_at(bytes, nb * bs as u64)?;
                    } else {
                        let mut buf = vec![0u8; bs];
                        buf[offset..offset + bytes.len()].copy_from_slice(bytes);
                        data.write_all_at(&buf, nb * bs as u64)?;
                    }
                    new_mapping = true;
                }
            }
            used = true;
            Ok(((nb << 24) | time as u64).to_le_bytes().to_vec())
        };
        Self::update_device(
            &mut self.tm,
            &mut self.mapping_root,
            dev,
            &mut |tm, root| tm.upsert(root, vblock, Values::Data, true, &mut inner),
        )?;
        if !used {
            self.tm.data.dec(nb);
        }
        if new_mapping {
            let d = Details {
                mapped_blocks: details.mapped_blocks + 1,
                ..details
            };
            self.set_details(dev, d)?;
        }
        Ok(())
    }

    /// Unmaps virtual block `vblock` of `dev`; its data block returns to the pool when no
    /// other device shares it.
    pub fn discard(&mut self, dev: u64, vblock: u64) -> Result<()> {
        if self.mapping(dev, vblock)?.is_none() {
            return Ok(());
        }
        self.ensure_metadata()?;
        self.changed = true;
        let mut found = false;
        Self::update_device(
            &mut self.tm,
            &mut self.mapping_root,
            dev,
            &mut |tm, root| {
                let (r, f) = tm.remove(root, vblock, Values::Data)?;
                found = f;
                Ok(r)
            },
        )?;
        if found {
            let mut d = self.details(dev)?;
            d.mapped_blocks -= 1;
            self.set_details(dev, d)?;
        }
        Ok(())
    }

    /// Applies `f` to `dev`'s mapping tree, through the top-level tree (both shadowed as
    /// needed).
    fn update_device(
        tm: &mut Tm,
        mapping_root: &mut u64,
        dev: u64,
        f: &mut dyn FnMut(&mut Tm, u64) -> Result<u64>,
    ) -> Result<()> {
        if tm.lookup(*mapping_root, dev)?.is_none() {
            return Err(Error::NoDevice(dev));
        }
        *mapping_root = tm.upsert(
            *mapping_root,
            dev,
            Values::Subtree,
            false,
            &mut |tm, old| {
                let root = block::u64_at(old.expect("device present"), 0);
                Ok(f(tm, root)?.to_le_bytes().to_vec())
            },
        )?;
        Ok(())
    }

    /// Makes everything done since the last commit durable: new metadata blocks and the
    /// space maps are written and synced (with the data), then the superblock.
    pub fn commit(&mut self) -> Result<()> {
        self.changed = false;
        self.tm.flush()?;
        let (data_root, meta_root) = self.save_space_maps()?;
        // Data first: committed mappings must find their data on disk.
        if std::mem::take(&mut self.data_written) {
            self.data.sync_data()?;
        }
        self.tm.file.sync_data()?;
        self.trans_id += 1;
        let mut sb = Box::new([0u8; BLOCK_SIZE]);
        block::put_u64(&mut sb[..], 32, MAGIC);
        block::put_u32(&mut sb[..], 40, VERSION);
        block::put_u32(&mut sb[..], 44, self.time);
        block::put_u64(&mut sb[..], 48, self.trans_id);
        data_root.encode(&mut sb[64..96]);
        meta_root.encode(&mut sb[192..224]);
        block::put_u64(&mut sb[..], 320, self.mapping_root);
        block::put_u64(&mut sb[..], 328, self.details_root);
        block::put_u32(&mut sb[..], 336, self.block_sectors);
        block::put_u32(&mut sb[..], 340, BLOCK_SECTORS);
        block::put_u64(&mut sb[..], 344, self.tm.meta.len());
        block::write(&self.tm.file, 0, &mut sb, Kind::Superblock)?;
        self.tm.file.sync_data()?;
        self.tm.meta.committed_now(true);
        self.tm.data.committed_now(false);
        self.punch_freed();
        Ok(())
    }

    /// Writes both space maps: a bitmap whose counts changed goes to a fresh block (the
    /// committed one stays as it is until the superblock moves on), an unchanged one stays
    /// where it is; indexes and overflow trees are written anew. Placing blocks changes
    /// counts of metadata blocks in turn, so this repeats until every changed bitmap has a
    /// place.
    fn save_space_maps(&mut self) -> Result<(SmRoot, SmRoot)> {
        let meta = &mut self.tm.meta;
        let data = &mut self.tm.data;
        for b in self
            .meta_at
            .others
            .drain(..)
            .chain(self.data_at.others.drain(..))
        {
            meta.dec(b);
        }
        let nbm_meta = sm::bitmaps(meta.len());
        let nbm_data = sm::bitmaps(data.len());
        self.meta_at.bitmaps.resize(nbm_meta, u64::MAX);
        self.data_at.bitmaps.resize(nbm_data, u64::MAX);
        let mut write_meta = vec![false; nbm_meta];
        let mut write_data = vec![false; nbm_data];
        let mut others_done = false;
        loop {
            let moved = place_bitmaps(meta, Some(&data.dirty), &mut self.data_at, &mut write_data)?
                | place_bitmaps(meta, None, &mut self.meta_at, &mut write_meta)?;
            if !moved && !others_done {
                // Counts above 2 do not change from here on: placing blocks sets counts
                // of 1 and releases counts of 1.
                for _ in 0..sm::others_needed(Which::Data, data) {
                    let b = meta.alloc().ok_or(Error::MetadataFull)?;
                    self.data_at.others.push(b);
                }
                for _ in 0..sm::others_needed(Which::Metadata, meta) {
                    let b = meta.alloc().ok_or(Error::MetadataFull)?;
                    self.meta_at.others.push(b);
                }
                others_done = true;
                continue;
            }
            if !moved {
                break;
            }
        }
        let data_root = sm::save(
            &self.tm.file,
            Which::Data,
            data,
            &mut self.data_at,
            &write_data,
        )?;
        let meta_root = sm::save(
            &self.tm.file,
            Which::Metadata,
            meta,
            &mut self.meta_at,
            &write_meta,
        )?;
        meta.dirty.fill(false);
        data.dirty.fill(false);
        Ok((data_root, meta_root))
    }

    /// Gives the space of data blocks freed by the last transaction back to the file
    /// system (now that no commit refers to them).
    fn punch_freed(&mut self) {
        let bs = self.block_bytes() as u64;
        for db in self.tm.take_freed_data() {
            if self.tm.data.rc[db as usize] == 0 {
                let _ = rustix::fs::fallocate(
                    &self.data,
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                    db * bs,
                    bs,
                );
            }
        }
    }
}

/// Gives each bitmap of a space map whose counts changed (per `dirty`, the metadata space
/// map's own flags when `None`) a fresh metadata block, once; true if any moved.
fn place_bitmaps(
    meta: &mut Counts,
    dirty: Option<&[bool]>,
    at: &mut sm::Placement,
    written: &mut [bool],
) -> Result<bool> {
    let mut moved = false;
    for (i, w) in written.iter_mut().enumerate() {
        let changed = match dirty {
            Some(d) => d[i],
            None => meta.dirty[i],
        };
        let unplaced = at.bitmaps[i] == u64::MAX;
        if (changed || unplaced) && !*w {
            if !unplaced {
                meta.dec(at.bitmaps[i]);
            }
            at.bitmaps[i] = meta.alloc().ok_or(Error::MetadataFull)?;
            *w = true;
            moved = true;
        }
    }
    Ok(moved)
}

/// Bytes in a file or block device.
pub fn size_of(f: &File) -> Result<u64> {
    use std::io::Seek;
    let mut f = f;
    Ok(f.seek(std::io::SeekFrom::End(0))?)
}

/// Makes a file `bytes` long (sparse); a block device must be that large already.
fn fit(f: &File, bytes: u64, what: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if f.metadata()?.file_type().is_block_device() {
        let have = size_of(f)?;
        if have < bytes {
            return Err(Error::Invalid(format!(
                "the {what} device holds {have} bytes, {bytes} are needed"
            )));
        }
        return Ok(());
    }
    Ok(f.set_len(bytes)?)
}
