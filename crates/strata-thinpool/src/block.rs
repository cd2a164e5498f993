//! Metadata blocks: 4 KiB, little endian, each kind checksummed (crc32c, seeded with all
//! ones and not inverted, xor a per-kind constant) over everything after the checksum.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub const BLOCK_SIZE: usize = 4096;
/// Metadata block size in 512-byte sectors, as the superblock records it.
pub const BLOCK_SECTORS: u32 = (BLOCK_SIZE / 512) as u32;

pub type Block = [u8; BLOCK_SIZE];

/// What a block holds, for its checksum salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Superblock,
    Node,
    Bitmap,
    Index,
}

impl Kind {
    fn salt(self) -> u32 {
        match self {
            Kind::Superblock => 160774,
            Kind::Node => 121107,
            Kind::Bitmap => 240779,
            Kind::Index => 160478,
        }
    }
}

pub fn checksum(b: &Block, kind: Kind) -> u32 {
    !crc32c::crc32c(&b[4..]) ^ kind.salt()
}

pub fn seal(b: &mut Block, kind: Kind) {
    let c = checksum(b, kind);
    b[..4].copy_from_slice(&c.to_le_bytes());
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads block `nr` and checks its checksum and its own location (bytes 8..16 hold it in
/// every kind).
pub fn read(f: &File, nr: u64, kind: Kind) -> io::Result<Box<Block>> {
    let mut b = Box::new([0u8; BLOCK_SIZE]);
    f.read_exact_at(&mut b[..], nr * BLOCK_SIZE as u64)?;
    let want = checksum(&b, kind);
    if u32_at(&b[..], 0) != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("metadata block {nr} ({kind:?}) fails its checksum"),
        ));
    }
    if u64_at(&b[..], 8) != nr {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "metadata block {nr} ({kind:?}) says it is block {}",
                u64_at(&b[..], 8)
            ),
        ));
    }
    Ok(b)
}

pub fn write(f: &File, nr: u64, b: &mut Block, kind: Kind) -> io::Result<()> {
    put_u64(&mut b[..], 8, nr);
    seal(b, kind);
    f.write_all_at(&b[..], nr * BLOCK_SIZE as u64)
}
