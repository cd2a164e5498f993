//! `strata-thinpool`: makes a pool and serves its thin devices as files.
//!
//! ```text
//! strata-thinpool format METADATA DATA BLOCK_BYTES DATA_BYTES METADATA_BYTES
//! strata-thinpool serve --metadata M --data D --sizes FILE [--min-free PERCENT]
//!                       [--autoextend THRESHOLD,PERCENT] MOUNTPOINT
//! ```
//!
//! METADATA and DATA are files or block devices. `serve` stays in the foreground until the
//! mount is unmounted; whoever starts it detaches it and waits for the mount to appear.
//! Device sizes are kept in the sizes file.

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
        [cmd, rest @ ..] if cmd == "serve" => serve(rest),
        _ => Err("usage: strata-thinpool format METADATA DATA BLOCK_BYTES DATA_BYTES METADATA_BYTES\n       strata-thinpool serve --metadata M --data D --sizes FILE [--min-free PERCENT] [--autoextend THRESHOLD,PERCENT] MOUNTPOINT".into()),
    }
}

fn serve(args: &[String]) -> Result<(), String> {
    let (mut meta, mut data, mut sizes, mut mountpoint) = (None, None, None, None);
    let (mut min_free, mut autoextend) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--metadata" => meta = Some(value(a)?),
            "--data" => data = Some(value(a)?),
            "--sizes" => sizes = Some(value(a)?),
            "--min-free" => min_free = Some(number(&value(a)?, "--min-free")?),
            "--autoextend" => {
                let v = value(a)?;
                let (t, p) = v
                    .split_once(',')
                    .ok_or("--autoextend takes THRESHOLD,PERCENT")?;
                autoextend = Some((number(t, "THRESHOLD")?, number(p, "PERCENT")?));
            }
            m if !m.starts_with('-') && mountpoint.is_none() => mountpoint = Some(m.to_string()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let (Some(meta), Some(data), Some(sizes), Some(mountpoint)) = (meta, data, sizes, mountpoint)
    else {
        return Err("serve needs --metadata, --data, --sizes and a mount point".into());
    };
    let m = open(&meta).map_err(|e| format!("{meta}: {e}"))?;
    let d = open(&data).map_err(|e| format!("{data}: {e}"))?;
    let mut pool = Pool::open(m, d).map_err(|e| e.to_string())?;
    if let Some(p) = min_free {
        pool.set_min_free_percent(p);
    }
    if let Some((t, p)) = autoextend {
        pool.set_autoextend(t, p);
    }
    strata_thinpool::serve(pool, PathBuf::from(sizes), Path::new(&mountpoint))
        .map_err(|e| format!("serving on {mountpoint}: {e}"))
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
