//! aufs: a branch union in userspace (the `strata-aufs` FUSE server). Each snapshot has a
//! `diff` dir that is one branch: its files and, as aufs stores them, `.wh.` whiteouts and
//! `.wh..wh..opq` markers. A layer applied from a tar keeps its whiteouts as they are, and
//! the native diff of a container is the tar of its writable branch. Needs no kernel union
//! filesystem, only FUSE.
//!
//! Every mount is one server process, started by the mount manager; it outlives the CLI and
//! ends when the mount is unmounted.

use crate::mount::Mount;
use crate::usage::{tree_usage, Usage};
use crate::{numeric_dirs, remove_tree, Driver, Kind, Layout, PrepareOpts};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use strata_archive::WhiteoutFormat;

pub struct Aufs {
    home: PathBuf,
}

impl Aufs {
    pub fn open(home: &Path, opts: &[(String, String)]) -> io::Result<Aufs> {
        crate::no_options("aufs", opts)?;
        if !Path::new("/dev/fuse").exists() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "aufs needs FUSE (/dev/fuse), which this machine does not offer: use --storage-driver vfs",
            ));
        }
        crate::mount::aufs_helper()?;
        fs::create_dir_all(home)?;
        Ok(Aufs {
            home: home.to_path_buf(),
        })
    }

    fn diff_dir(&self, id: i64) -> PathBuf {
        self.home.join(id.to_string()).join("diff")
    }

    fn branch(&self, id: i64, mode: &str) -> String {
        format!("{}={mode}", self.diff_dir(id).display())
    }
}

impl Driver for Aufs {
    fn name(&self) -> &'static str {
        "aufs"
    }

    fn status(&self) -> Vec<(String, String)> {
        let dirs = numeric_dirs(&self.home).map_or(0, |d| d.len());
        vec![
            ("Root Dir".into(), self.home.display().to_string()),
            (
                "Backing Filesystem".into(),
                crate::overlay::backing_fs(&self.home).into(),
            ),
            ("Dirs".into(), dirs.to_string()),
            ("Dirperm1 Supported".into(), "true".into()),
            ("Union Filesystem".into(), "strata-aufs (FUSE)".into()),
        ]
    }

    fn create(&self, s: &Layout, _opts: &PrepareOpts) -> io::Result<()> {
        fs::create_dir_all(self.diff_dir(s.id))
    }

    fn mounts(&self, s: &Layout) -> io::Result<Vec<Mount>> {
        let readonly = s.kind == Kind::View;
        if s.parents.is_empty() {
            return Ok(vec![Mount::bind(&self.diff_dir(s.id), readonly)]);
        }
        let mut branches = Vec::new();
        if !readonly {
            branches.push(self.branch(s.id, "rw"));
        }
        branches.extend(s.parents.iter().map(|p| self.branch(*p, "ro")));
        let mut options = vec![format!("br={}", branches.join(":"))];
        options.push(if readonly { "ro" } else { "rw" }.into());
        Ok(vec![Mount {
            kind: "aufs".into(),
            source: "none".into(),
            options,
        }])
    }

    fn commit(&self, _s: &Layout) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, id: i64) -> io::Result<()> {
        remove_tree(&self.home.join(id.to_string()))
    }

    fn usage(&self, s: &Layout) -> io::Result<Usage> {
        tree_usage(&self.diff_dir(s.id))
    }

    fn apply_dir(&self, s: &Layout) -> Option<(PathBuf, WhiteoutFormat)> {
        (s.kind == Kind::Active).then(|| (self.diff_dir(s.id), WhiteoutFormat::Aufs))
    }

    fn diff(&self, s: &Layout, w: &mut dyn Write) -> Option<io::Result<()>> {
        if s.kind == Kind::View {
            return None;
        }
        Some(strata_archive::write_tree(&self.diff_dir(s.id), w, WhiteoutFormat::Aufs).map(|_| ()))
    }

    fn stored_ids(&self) -> io::Result<Vec<i64>> {
        numeric_dirs(&self.home)
    }
}
