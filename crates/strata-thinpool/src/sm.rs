//! Space maps on disk: 2-bit reference counts in bitmap blocks (0, 1, 2, or 3 meaning "look
//! in the overflow tree", a btree of 32-bit counts), indexed by one index block (metadata)
//! or a btree of index entries (data). In memory a space map is a plain vector of counts;
//! every commit writes it out afresh into blocks the committed state does not use.

use crate::block::{self, Kind, BLOCK_SIZE};
use crate::btree::{self, Counts, Node};
use crate::{Error, Result};
use std::fs::File;

const BITMAP_HEADER: usize = 16;
pub const ENTRIES_PER_BITMAP: usize = (BLOCK_SIZE - BITMAP_HEADER) * 4;
/// One index block holds this many bitmaps: the metadata device's size limit.
pub const MAX_METADATA_BITMAPS: usize = 255;
const INDEX_ENTRY: usize = 16;
const COUNT_SIZE: usize = 4;

/// A space map's root as the superblock keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmRoot {
    pub nr_blocks: u64,
    pub nr_allocated: u64,
    pub bitmap_root: u64,
    pub ref_count_root: u64,
}

impl SmRoot {
    pub fn encode(&self, out: &mut [u8]) {
        block::put_u64(out, 0, self.nr_blocks);
        block::put_u64(out, 8, self.nr_allocated);
        block::put_u64(out, 16, self.bitmap_root);
        block::put_u64(out, 24, self.ref_count_root);
    }

    pub fn decode(b: &[u8]) -> SmRoot {
        SmRoot {
            nr_blocks: block::u64_at(b, 0),
            nr_allocated: block::u64_at(b, 8),
            bitmap_root: block::u64_at(b, 16),
            ref_count_root: block::u64_at(b, 24),
        }
    }
}

pub fn bitmaps(nr_blocks: u64) -> usize {
    (nr_blocks as usize).div_ceil(ENTRIES_PER_BITMAP)
}

/// Which space map: they differ only in how the bitmaps are indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Metadata,
    Data,
}

/// Where a space map is on disk: one block per bitmap (in order), and the blocks of its
/// index and overflow tree, which every commit writes anew.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub bitmaps: Vec<u64>,
    pub others: Vec<u64>,
    /// Per bitmap, its index entry's free count and first free entry (recounted only for
    /// bitmaps that changed).
    pub stats: Vec<(u32, u32)>,
}

/// Blocks the index and overflow tree of a space map of these counts take.
pub fn others_needed(which: Which, counts: &Counts) -> usize {
    let nbm = bitmaps(counts.len());
    let overflow = counts.overflow.len();
    let index = match which {
        Which::Metadata => 1,
        Which::Data => btree::built_nodes(nbm, INDEX_ENTRY),
    };
    index + btree::built_nodes(overflow, COUNT_SIZE)
}

fn raw_tree(
    file: &File,
    root: u64,
    entries: &mut Vec<(u64, Vec<u8>)>,
    nodes: &mut Vec<u64>,
) -> Result<()> {
    let raw = block::read(file, root, Kind::Node)?;
    let n = Node::decode(&raw, root)?;
    nodes.push(root);
    for i in 0..n.len() {
        if n.internal {
            raw_tree(file, n.value_u64(i), entries, nodes)?;
        } else {
            entries.push((n.keys[i], n.value(i).to_vec()));
        }
    }
    Ok(())
}

/// Reads a space map; returns its counts and where it is.
pub fn load(file: &File, which: Which, root: &SmRoot) -> Result<(Vec<u32>, Placement)> {
    let mut own = Vec::new();
    let nbm = bitmaps(root.nr_blocks);
    let entries: Vec<[u8; INDEX_ENTRY]> = match which {
        Which::Metadata => {
            let idx = block::read(file, root.bitmap_root, Kind::Index)?;
            own.push(root.bitmap_root);
            if nbm > MAX_METADATA_BITMAPS {
                return Err(Error::Corrupt(format!(
                    "{nbm} metadata bitmaps is more than one index holds"
                )));
            }
            (0..nbm)
                .map(|i| {
                    let at = 16 + INDEX_ENTRY * i;
                    idx[at..at + INDEX_ENTRY].try_into().expect("entry")
                })
                .collect()
        }
        Which::Data => {
            let mut entries = Vec::new();
            raw_tree(file, root.bitmap_root, &mut entries, &mut own)?;
            if entries.len() != nbm {
                return Err(Error::Corrupt(format!(
                    "data space map has {} bitmaps, {nbm} expected",
                    entries.len()
                )));
            }
            entries
                .iter()
                .map(|(_, v)| {
                    v.as_slice().try_into().map_err(|_| {
                        Error::Corrupt("a data space map index entry has the wrong size".into())
                    })
                })
                .collect::<Result<_>>()?
        }
    };
    let bitmap_blocks: Vec<u64> = entries.iter().map(|e| block::u64_at(e, 0)).collect();
    let stats = entries
        .iter()
        .map(|e| (block::u32_at(e, 8), block::u32_at(e, 12)))
        .collect();
    let mut rc = vec![0u32; root.nr_blocks as usize];
    for (i, b) in bitmap_blocks.iter().enumerate() {
        let bm = block::read(file, *b, Kind::Bitmap)?;
        let start = i * ENTRIES_PER_BITMAP;
        let end = (start + ENTRIES_PER_BITMAP).min(rc.len());
        for (j, c) in rc[start..end].iter_mut().enumerate() {
            let byte = bm[BITMAP_HEADER + j / 4];
            let shift = 2 * (j % 4);
            *c = ((byte >> shift) & 1) as u32 * 2 + ((byte >> (shift + 1)) & 1) as u32;
        }
    }
    let mut overflow = Vec::new();
    raw_tree(file, root.ref_count_root, &mut overflow, &mut own)?;
    for (k, v) in overflow {
        let c = rc.get_mut(k as usize).ok_or_else(|| {
            Error::Corrupt(format!("overflow count for block {k} beyond the space map"))
        })?;
        *c = block::u32_at(&v, 0);
    }
    Ok((
        rc,
        Placement {
            bitmaps: bitmap_blocks,
            others: own,
            stats,
        },
    ))
}

/// Writes a space map of counts `rc`: the bitmaps marked in `write` to their blocks in
/// `at.bitmaps` (the others are on disk as they are), the index and the overflow tree into
/// `at.others` (exactly [`others_needed`] blocks).
pub fn save(
    file: &File,
    which: Which,
    counts: &Counts,
    at: &mut Placement,
    write: &[bool],
) -> Result<SmRoot> {
    let rc = &counts.rc;
    let nbm = bitmaps(rc.len() as u64);
    at.stats.resize(nbm, (0, 0));
    let mut next = at.others.iter().copied();
    let mut index = Vec::with_capacity(nbm);
    for (i, written) in write.iter().enumerate().take(nbm) {
        let b = at.bitmaps[i];
        let start = i * ENTRIES_PER_BITMAP;
        let end = (start + ENTRIES_PER_BITMAP).min(rc.len());
        let range = &rc[start..end];
        if *written {
            let free = range.iter().filter(|c| **c == 0).count() as u32;
            let first_free = range.iter().position(|c| *c == 0).unwrap_or(end - start) as u32;
            at.stats[i] = (free, first_free);
            let mut bm = Box::new([0u8; BLOCK_SIZE]);
            for (j, c) in range.iter().enumerate() {
                let v = (*c).min(3) as u8;
                let shift = 2 * (j % 4);
                bm[BITMAP_HEADER + j / 4] |= ((v >> 1) << shift) | ((v & 1) << (shift + 1));
            }
            block::write(file, b, &mut bm, Kind::Bitmap)?;
        }
        let (free, first_free) = at.stats[i];
        index.push((b, free, first_free));
    }
    let entry = |(b, free, first): (u64, u32, u32)| {
        let mut e = [0u8; INDEX_ENTRY];
        block::put_u64(&mut e, 0, b);
        block::put_u32(&mut e, 8, free);
        block::put_u32(&mut e, 12, first);
        e
    };
    let bitmap_root = match which {
        Which::Metadata => {
            let b = next.next().expect("index block");
            let mut idx = Box::new([0u8; BLOCK_SIZE]);
            for (i, e) in index.iter().enumerate() {
                idx[16 + INDEX_ENTRY * i..16 + INDEX_ENTRY * (i + 1)].copy_from_slice(&entry(*e));
            }
            block::write(file, b, &mut idx, Kind::Index)?;
            b
        }
        Which::Data => {
            let entries: Vec<(u64, Vec<u8>)> = index
                .iter()
                .enumerate()
                .map(|(i, e)| (i as u64, entry(*e).to_vec()))
                .collect();
            btree::build(file, &entries, INDEX_ENTRY, &mut next)?
        }
    };
    let overflow: Vec<(u64, Vec<u8>)> = counts
        .overflow
        .iter()
        .map(|b| (*b, rc[*b as usize].to_le_bytes().to_vec()))
        .collect();
    let ref_count_root = btree::build(file, &overflow, COUNT_SIZE, &mut next)?;
    assert!(next.next().is_none(), "space map blocks counted wrong");
    Ok(SmRoot {
        nr_blocks: rc.len() as u64,
        nr_allocated: counts.len() - counts.free(),
        bitmap_root,
        ref_count_root,
    })
}
