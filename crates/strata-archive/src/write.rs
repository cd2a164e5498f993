//! Writing trees as tar: the diff of an upper dir or branch, or a whole filesystem.

use crate::walk::{file_type, list_dir, lstat_at, open_dir_at, open_file_at, readlink_at, xattrs};
use crate::whiteout::{self, WhiteoutFormat};
use rustix::fs::{FileType, Stat};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub struct TreeWriter<W: Write> {
    builder: tar::Builder<W>,
    format: WhiteoutFormat,
    /// (dev, ino) of files with several links -> the first path written, so later ones
    /// become hard link entries.
    links: HashMap<(u64, u64), PathBuf>,
    /// Owner written for every entry instead of the file's own (`cp` without `-a`).
    owner: Option<(u64, u64)>,
}

/// Writes everything below `dir` (not `dir` itself) to `w` as a tar.
pub fn write_tree<W: Write>(dir: &Path, w: W, format: WhiteoutFormat) -> io::Result<W> {
    let dfd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut tw = TreeWriter::new(w, format);
    for name in list_dir(&dfd)? {
        tw.append(&dfd, &name, Path::new(&name), true)?;
    }
    tw.finish()
}

fn base_header(st: &Stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> TreeWriter<W> {
    pub fn new(w: W, format: WhiteoutFormat) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.follow_symlinks(false);
        TreeWriter {
            builder,
            format,
            links: HashMap::new(),
            owner: None,
        }
    }

    /// Writes every entry as owned by `uid:gid` instead of its owner on disk.
    pub fn with_owner(mut self, uid: u64, gid: u64) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    fn header(&self, st: &Stat, kind: tar::EntryType) -> tar::Header {
        let mut h = base_header(st, kind);
        if let Some((uid, gid)) = self.owner {
            h.set_uid(uid);
            h.set_gid(gid);
        }
        h
    }

    pub fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }

    /// Writes a whiteout entry for `rel` (whose last component is the deleted name).
    pub fn append_whiteout(&mut self, rel: &Path, like: &Stat) -> io::Result<()> {
        let name = rel.file_name().expect("whiteout of a named path");
        let mut wh = std::ffi::OsString::from(whiteout::PREFIX);
        wh.push(name);
        let path = rel.with_file_name(wh);
        let mut h = self.header(like, tar::EntryType::Regular);
        h.set_mode(like.st_mode & 0o777);
        self.builder.append_data(&mut h, path, io::empty())
    }

    /// Writes the entry `name` in `dfd` at archive path `rel`, and its subtree if it is a
    /// directory and `recursive` is set.
    pub fn append(
        &mut self,
        dfd: &impl AsFd,
        name: &OsStr,
        rel: &Path,
        recursive: bool,
    ) -> io::Result<()> {
        let nb = name.as_bytes();
        if self.format == WhiteoutFormat::Aufs
            && nb.starts_with(whiteout::META_PREFIX.as_bytes())
            && nb != whiteout::OPAQUE.as_bytes()
        {
            return Ok(()); // aufs metadata never leaves its branch
        }
        let st = lstat_at(dfd, name)?;
        let ft = file_type(&st);
        match ft {
            FileType::Directory => {
                let sub = open_dir_at(dfd, name)?;
                let file = File::from(sub);
                let attrs = xattrs(&file)?;
                let opaque = self.format == WhiteoutFormat::Overlay
                    && attrs
                        .iter()
                        .any(|(k, v)| k == whiteout::OVERLAY_OPAQUE_XATTR && v == b"y");
                self.pax(&attrs)?;
                let mut h = self.header(&st, tar::EntryType::Directory);
                let mut dir_path = rel.as_os_str().to_os_string();
                dir_path.push("/");
                self.builder.append_data(&mut h, &dir_path, io::empty())?;
                if opaque {
                    let mut oh = self.header(&st, tar::EntryType::Regular);
                    oh.set_mode(st.st_mode & 0o777);
                    self.builder
                        .append_data(&mut oh, rel.join(whiteout::OPAQUE), io::empty())?;
                }
                if recursive {
                    for child in list_dir(&file)? {
                        self.append(&file, &child, &rel.join(&child), true)?;
                    }
                }
            }
            FileType::RegularFile => {
                let key = (st.st_dev, st.st_ino);
                if st.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        let first = first.clone();
                        let mut h = self.header(&st, tar::EntryType::Link);
                        return self.builder.append_link(&mut h, rel, first);
                    }
                    self.links.insert(key, rel.to_path_buf());
                }
                let file = open_file_at(dfd, name)?;
                let attrs = xattrs(&file)?;
                self.pax(&attrs)?;
                let mut h = self.header(&st, tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                self.builder.append_data(
                    &mut h,
                    rel,
                    io::Read::take(
                        io::BufReader::with_capacity(1 << 20, file),
                        st.st_size as u64,
                    ),
                )?;
            }
            FileType::Symlink => {
                let target = readlink_at(dfd, name)?;
                let mut h = self.header(&st, tar::EntryType::Symlink);
                self.builder.append_link(&mut h, rel, target)?;
            }
            FileType::CharacterDevice
                if self.format == WhiteoutFormat::Overlay && st.st_rdev == 0 =>
            {
                self.append_whiteout(rel, &st)?;
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let kind = match ft {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = self.header(&st, kind);
                h.set_device_major(rustix::fs::major(st.st_rdev))?;
                h.set_device_minor(rustix::fs::minor(st.st_rdev))?;
                self.builder.append_data(&mut h, rel, io::empty())?;
            }
            _ => {} // sockets are not archived, as tar and docker skip them
        }
        Ok(())
    }

    fn pax(&mut self, attrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        let keep: Vec<(String, &[u8])> = attrs
            .iter()
            .filter(|(k, _)| !k.starts_with(whiteout::OVERLAY_XATTR_PREFIX))
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        self.builder
            .append_pax_extensions(keep.iter().map(|(k, v)| (k.as_str(), *v)))
    }
}
