//! `strata-thinpool`: makes a pool and serves its thin devices as files.
//!
//! ```text
//! strata-thinpool format METADATA DATA BLOCK_BYTES DATA_BYTES METADATA_BYTES
//! strata-thinpool serve METADATA DATA MOUNTPOINT [MIN_FREE_PERCENT [THRESHOLD PERCENT]]
//! ```
//!
//! `serve` stays in the foreground until the mount is unmounted; whoever starts it detaches
//! it and waits for the mount to appear. Device sizes are kept in `METADATA.sizes`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use strata_thinpool::{Pool, PoolConfig};

fn open(p: &str) -> std::io::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
}

fn number(s: &str, what: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{what} must be a number of bytes, not {s:?}"))
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, meta, data, bs, data_bytes, meta_bytes] if cmd == "format" => {
            let bs = number(bs, "BLOCK_BYTES")?;
            let cfg = PoolConfig {
                block_sectors: u32::try_from(bs / 512).map_err(|_| "block size too large".to_string())?,
                data_blocks: number(data_bytes, "DATA_BYTES")? / bs.max(1),
                metadata_blocks: number(meta_bytes, "METADATA_BYTES")? / 4096,
            };
            let m = open(meta).map_err(|e| format!("{meta}: {e}"))?;
            let d = open(data).map_err(|e| format!("{data}: {e}"))?;
            Pool::format(m, d, &cfg).map_err(|e| e.to_string())?;
            Ok(())
        }
        [cmd, meta, data, mountpoint, rest @ ..] if cmd == "serve" && matches!(rest.len(), 0 | 1 | 3) => {
            let m = open(meta).map_err(|e| format!("{meta}: {e}"))?;
            let d = open(data).map_err(|e| format!("{data}: {e}"))?;
            let mut pool = Pool::open(m, d).map_err(|e| e.to_string())?;
            if let Some(p) = rest.first() {
                pool.set_min_free_percent(number(p, "MIN_FREE_PERCENT")?);
            }
            if let [_, threshold, percent] = rest {
                pool.set_autoextend(
                    number(threshold, "AUTOEXTEND_THRESHOLD")?,
                    number(percent, "AUTOEXTEND_PERCENT")?,
                );
            }
            let sizes = PathBuf::from(format!("{meta}.sizes"));
            strata_thinpool::serve(pool, sizes, Path::new(mountpoint))
                .map_err(|e| format!("serving on {mountpoint}: {e}"))
        }
        _ => Err("usage: strata-thinpool format METADATA DATA BLOCK_BYTES DATA_BYTES METADATA_BYTES\n       strata-thinpool serve METADATA DATA MOUNTPOINT [MIN_FREE_PERCENT [AUTOEXTEND_THRESHOLD AUTOEXTEND_PERCENT]]".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-thinpool: {e}");
            ExitCode::FAILURE
        }
    }
}
