//! `cp` between a container and the host (or a tar stream), as docker's.
//!
//! Every path on the container's side is resolved inside the container's root by the
//! kernel (openat2 `RESOLVE_IN_ROOT`): a symlink in the container pointing at `/`, `/etc`
//! or `../..`, or one swapped in while copying, leads to the container's own files, never
//! to the host's. Copying in is an apply at the container root with every entry named by
//! its destination path, so each entry is resolved inside the root on its own.

use crate::error::{EngineError, Result};
use crate::Engine;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use strata_archive::root::{clean_relative, Root};
use strata_archive::walk::{file_type, lstat_at, readlink_at};
use strata_archive::{ApplyOptions, TreeWriter, WhiteoutFormat};
use strata_snapshot::mount::MountGuard;

#[derive(Debug, Clone, Copy, Default)]
pub struct CopyOptions {
    /// Keep owners (`-a`); otherwise copies belong to root.
    pub archive: bool,
    /// Follow a symlink named as the source (`-L`).
    pub follow_link: bool,
}

/// A path the user gave, split as docker reads it: `dir/.` means "the contents of dir".
struct Spec {
    rel: PathBuf,
    contents_only: bool,
}

fn spec(raw: &str) -> Result<Spec> {
    let contents_only = raw.ends_with("/.") || raw == ".";
    let rel = clean_relative(Path::new(raw)).map_err(EngineError::Invalid)?;
    Ok(Spec { rel, contents_only })
}

/// Copies a tar from `input` to `out` entry by entry: owners become root unless `keep_owners`
/// (`-a`), every entry path (and hard link target) is put under `under`, xattrs are kept.
fn retar(input: &mut dyn Read, out: &mut dyn Write, keep_owners: bool, under: &Path) -> Result<()> {
    let bad = |e: io::Error| EngineError::Invalid(format!("copy is not a valid tar: {e}"));
    let mut a = tar::Archive::new(input);
    let mut b = tar::Builder::new(out);
    for e in a.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let mut h = e.header().clone();
        if !keep_owners {
            h.set_uid(0);
            h.set_gid(0);
        }
        let path =
            under.join(clean_relative(&e.path().map_err(bad)?).map_err(EngineError::Invalid)?);
        if let Some(exts) = e.pax_extensions().map_err(bad)? {
            let kept: Vec<(String, Vec<u8>)> = exts
                .filter_map(|x| x.ok())
                .filter_map(|x| Some((x.key().ok()?.to_string(), x.value_bytes().to_vec())))
                .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
                .collect();
            if !kept.is_empty() {
                b.append_pax_extensions(kept.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .map_err(bad)?;
            }
        }
        let link = e
            .link_name()
            .map_err(bad)?
            .map(|t| t.into_owned())
            .unwrap_or_default();
        match h.entry_type() {
            tar::EntryType::Symlink => b.append_link(&mut h, &path, link).map_err(bad)?,
            tar::EntryType::Link => {
                let target = under.join(clean_relative(&link).map_err(EngineError::Invalid)?);
                b.append_link(&mut h, &path, target).map_err(bad)?
            }
            _ => b.append_data(&mut h, &path, &mut e).map_err(bad)?,
        }
    }
    b.finish().map_err(bad)
}

impl Engine {
    fn with_container_root<T>(
        &self,
        name_or_id: &str,
        f: impl FnOnce(&Path) -> Result<T>,
    ) -> Result<T> {
        let c = self.container(name_or_id)?;
        let mounts = self.snapshots.mounts(&c.id)?;
        let target = self
            .tmp_dir()
            .join("mounts")
            .join(format!("cp-{:016x}", rand::random::<u64>()));
        let guard = MountGuard::new(&mounts, &target)
            .map_err(|e| EngineError::io("mounting the container", e))?;
        // Paths in its volumes and binds reach them, as docker's cp does.
        let out = self
            .mount_volumes(&c.id, &c.host.mount_points, guard.path(), false)
            .and_then(|()| f(guard.path()));
        // The volumes come off first: the root cannot be unmounted under them.
        crate::container_fs::unmount_below(guard.path())?;
        out
    }

    /// Writes `src` (a path in the container) as a tar, its top entry named `as_name`
    /// (or its children at the top, for `dir/.`).
    pub fn copy_from_container(
        &self,
        container: &str,
        src: &str,
        opts: CopyOptions,
        as_name: Option<&OsString>,
        out: &mut dyn Write,
    ) -> Result<()> {
        self.with_container_root(container, |root_path| {
            let root = Root::open(root_path)
                .map_err(|e| EngineError::io("opening the container root", e))?;
            let sp = spec(src)?;
            let (parent_fd, name) = resolve_source(&root, &sp.rel, opts.follow_link, src)?;
            let mut tw = TreeWriter::new(out, WhiteoutFormat::Literal);
            if !opts.archive {
                tw = tw.with_owner(0, 0);
            }
            let io_err = |e: io::Error| EngineError::io(format!("copying {src}"), e);
            if sp.contents_only {
                let dir = strata_archive::walk::open_dir_at(&parent_fd, &name).map_err(io_err)?;
                for child in strata_archive::walk::list_dir(&dir).map_err(io_err)? {
                    tw.append(&dir, &child, Path::new(&child), true)
                        .map_err(io_err)?;
                }
            } else {
                let shown = as_name.cloned().unwrap_or_else(|| name.clone());
                tw.append(&parent_fd, &name, Path::new(&shown), true)
                    .map_err(io_err)?;
            }
            tw.finish().map_err(io_err)?;
            Ok(())
        })
    }

    /// Applies the tar in `input` under `dest_dir` (a directory in the container).
    pub fn copy_tar_into_container(
        &self,
        container: &str,
        dest_dir: &str,
        input: &mut dyn Read,
        opts: CopyOptions,
    ) -> Result<()> {
        let dest = clean_relative(Path::new(dest_dir)).map_err(EngineError::Invalid)?;
        self.with_container_root(container, |root_path| {
            let root = Root::open(root_path).map_err(|e| EngineError::io("opening the container root", e))?;
            match root.open_at(&dest, rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY) {
                Ok(_) => {}
                Err(_) => return Err(EngineError::Invalid(format!("Could not find the file {dest_dir} in container {container}: the destination must be an existing directory"))),
            }
            // Entries are renamed to their full path from the root, so each one is resolved
            // inside the root by itself.
            let mut renamed = Vec::new();
            retar(input, &mut renamed, opts.archive, &dest)?;
            apply_in_root(root_path, &renamed)
        })
    }

    /// Copies host path `src` into the container at `dest`, with docker's rules for
    /// whether `dest` names the copy or the directory it goes into.
    pub fn copy_into_container(
        &self,
        src: &Path,
        container: &str,
        dest: &str,
        opts: CopyOptions,
    ) -> Result<()> {
        let contents_only = src.to_str().is_some_and(|s| s.ends_with("/."));
        let src_clean: PathBuf = src
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        let md = std::fs::symlink_metadata(&src_clean).map_err(|e| {
            EngineError::Invalid(format!("could not find the file {}: {e}", src.display()))
        })?;
        let parent = src_clean
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = src_clean
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        self.with_container_root(container, |root_path| {
            let root = Root::open(root_path)
                .map_err(|e| EngineError::io("opening the container root", e))?;
            // docker's rule: an existing directory (or a path ending in /) receives the copy
            // under the source's name; anything else is the copy's new name.
            let d = clean_relative(Path::new(dest)).map_err(EngineError::Invalid)?;
            let is_dir = root
                .open_at(
                    &d,
                    rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
                )
                .is_ok();
            let top = if is_dir || dest.ends_with('/') {
                d.join(&base)
            } else {
                d
            };
            // Every entry carries its full path from the container root, so each one is
            // resolved inside the root by itself.
            let mut tar_bytes = Vec::new();
            {
                let pfd: OwnedFd = rustix::fs::open(
                    parent,
                    rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| EngineError::io(format!("opening {}", parent.display()), e.into()))?;
                let mut tw = TreeWriter::new(&mut tar_bytes, WhiteoutFormat::Literal);
                if !opts.archive {
                    tw = tw.with_owner(0, 0);
                }
                let io_err =
                    |e: io::Error| EngineError::io(format!("reading {}", src.display()), e);
                if contents_only && md.is_dir() {
                    // `dir/.` into an existing directory puts dir's children there; into a
                    // new name, it makes that directory with them.
                    let into = if is_dir {
                        top.parent().map(Path::to_path_buf).unwrap_or_default()
                    } else {
                        top.clone()
                    };
                    let dir = strata_archive::walk::open_dir_at(&pfd, &base).map_err(io_err)?;
                    for child in strata_archive::walk::list_dir(&dir).map_err(io_err)? {
                        tw.append(&dir, &child, &into.join(&child), true)
                            .map_err(io_err)?;
                    }
                } else {
                    tw.append(&pfd, &base, &top, true).map_err(io_err)?;
                }
                tw.finish().map_err(io_err)?;
            }
            apply_in_root(root_path, &tar_bytes)
        })
    }
}

/// Applies a tar whose entries carry their paths from the container root.
fn apply_in_root(root_path: &Path, tar_bytes: &[u8]) -> Result<()> {
    strata_archive::apply_layer(
        tar_bytes,
        root_path,
        ApplyOptions {
            whiteouts: WhiteoutFormat::Literal,
            budget: None,
        },
    )
    .map_err(|e| EngineError::Invalid(format!("copying into the container: {e}")))?;
    Ok(())
}

/// The parent directory fd and final name of `rel` inside `root`; with `follow`, a symlink
/// named as the source is followed (inside the root) to what it points at.
fn resolve_source(
    root: &Root,
    rel: &Path,
    follow: bool,
    shown: &str,
) -> Result<(OwnedFd, OsString)> {
    let mut rel = rel.to_path_buf();
    for _ in 0..40 {
        let name = match rel.file_name() {
            Some(n) => n.to_os_string(),
            None => {
                // The root itself: its parent is itself, inside the container.
                let fd = root
                    .open_dir(Path::new(""), false)
                    .map_err(|e| EngineError::io("opening the container root", e))?;
                return Ok((fd, OsString::from(".")));
            }
        };
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let pfd = root.open_dir(&parent, false).map_err(|_| {
            EngineError::Invalid(format!("Could not find the file {shown} in the container"))
        })?;
        let st = lstat_at(&pfd, &name).map_err(|_| {
            EngineError::Invalid(format!("Could not find the file {shown} in the container"))
        })?;
        if follow && file_type(&st) == rustix::fs::FileType::Symlink {
            let target =
                readlink_at(&pfd, &name).map_err(|e| EngineError::io("reading a link", e))?;
            let next = if Path::new(&target).is_absolute() {
                PathBuf::from(&target)
            } else {
                parent.join(&target)
            };
            rel = clean_relative(&next).unwrap_or_default();
            continue;
        }
        return Ok((pfd, name));
    }
    Err(EngineError::Invalid(format!(
        "too many levels of symbolic links in {shown}"
    )))
}

/// Writes a tar read from a container onto the host at `dest` (a directory or a new name).
pub fn extract_on_host(tar_bytes: &mut dyn Read, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)
        .map_err(|e| EngineError::io(format!("creating {}", dest.display()), e))?;
    strata_archive::apply_layer(
        tar_bytes,
        dest,
        ApplyOptions {
            whiteouts: WhiteoutFormat::Literal,
            budget: None,
        },
    )
    .map_err(|e| EngineError::Invalid(format!("copying to {}: {e}", dest.display())))?;
    Ok(())
}
