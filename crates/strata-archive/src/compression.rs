//! Layer compression, detected by magic bytes and decoded in-process (never by running an
//! external program: a decompressor found on a PATH is a code-execution hole).

use std::io::{self, BufRead, BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Wraps `r` in the decoder its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf()?.to_vec();
    let starts = |m: &[u8]| head.len() >= m.len() && &head[..m.len()] == m;
    if starts(&[0x1f, 0x8b]) {
        Ok((
            Compression::Gzip,
            Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        ))
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok((
            Compression::Zstd,
            Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        ))
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "xz-compressed layers are not supported: recompress with gzip or zstd",
        ))
    } else if starts(b"BZh") {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bzip2-compressed layers are not supported: recompress with gzip or zstd",
        ))
    } else {
        Ok((Compression::None, Box::new(br)))
    }
}
