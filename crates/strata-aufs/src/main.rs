//! `strata-aufs`: mounts a branch union with aufs semantics.
//!
//! ```text
//! strata-aufs [-f] -o br=/upper=rw:/lower=ro[,OPTION...] SOURCE MOUNTPOINT
//! mount -t fuse.strata-aufs -o br=... none MOUNTPOINT      (through mount.fuse3)
//! ```
//!
//! Without `-f` it returns once the mount is in place and serves it from a detached
//! process (its own session, so it outlives the caller) until the filesystem is unmounted.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

const READY_FD: &str = "STRATA_AUFS_READY_FD";

fn usage() -> String {
    "usage: strata-aufs [-f] -o br=DIR=rw:DIR=ro[,OPTION...] SOURCE MOUNTPOINT".into()
}

fn parse(args: &[String]) -> Result<(strata_aufs::MountConfig, PathBuf, bool), String> {
    let mut config = strata_aufs::MountConfig::new(Vec::new());
    let mut positional = Vec::new();
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => foreground = true,
            "-o" => {
                let opts = it
                    .next()
                    .ok_or_else(|| format!("-o needs options\n{}", usage()))?;
                for o in opts.split(',') {
                    config.set_option(o)?;
                }
            }
            "-h" | "--help" => return Err(usage()),
            o if o.starts_with("-o") => {
                for o in o[2..].split(',') {
                    config.set_option(o)?;
                }
            }
            o if o.starts_with('-') => return Err(format!("unknown flag {o:?}\n{}", usage())),
            p => positional.push(p.to_string()),
        }
    }
    let mountpoint = match positional.as_slice() {
        [_source, mp] => PathBuf::from(mp),
        _ => return Err(usage()),
    };
    if config.branches.is_empty() {
        return Err(format!(
            "no branches: give -o br=DIR=rw:DIR=ro\n{}",
            usage()
        ));
    }
    Ok((config, mountpoint, foreground))
}

/// Mounts, tells whoever waits on `ready` how it went, and serves until unmounted.
fn serve(
    config: &strata_aufs::MountConfig,
    mountpoint: &std::path::Path,
    ready: Option<std::fs::File>,
) -> ExitCode {
    match strata_aufs::mount(config, mountpoint) {
        Ok(m) => {
            if let Some(mut r) = ready {
                let _ = r.write_all(b"ok");
            }
            match m.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("strata-aufs: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            let msg = format!("mounting on {}: {e}", mountpoint.display());
            match ready {
                Some(mut r) => {
                    let _ = r.write_all(msg.as_bytes());
                }
                None => eprintln!("strata-aufs: {msg}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, mountpoint, foreground) = match parse(&args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("strata-aufs: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        std::env::remove_var(READY_FD);
        // SAFETY: the parent passed this pipe end to us and nothing else owns it.
        let ready = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let _ = rustix::process::setsid();
        return serve(&config, &mountpoint, Some(ready));
    }
    if foreground {
        return serve(&config, &mountpoint, None);
    }
    // Detach: a child in its own session mounts and serves; this process waits until the
    // mount is in place (or failed) and exits with the outcome.
    let (mut r, w) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("strata-aufs: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The child inherits the write end only.
    let _ = rustix::io::fcntl_setfd(&w, rustix::io::FdFlags::empty());
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let child = Command::new(exe)
        .args(&args)
        .env(READY_FD, std::os::fd::AsRawFd::as_raw_fd(&w).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    drop(w);
    if let Err(e) = child {
        eprintln!("strata-aufs: starting the server: {e}");
        return ExitCode::FAILURE;
    }
    let mut msg = String::new();
    let _ = r.read_to_string(&mut msg);
    if msg == "ok" {
        ExitCode::SUCCESS
    } else {
        if msg.is_empty() {
            msg = "the server exited before mounting".into();
        }
        eprintln!("strata-aufs: {msg}");
        ExitCode::FAILURE
    }
}
