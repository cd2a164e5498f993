//! vfs: every snapshot a full copy of its parent. Works on any filesystem and needs no
//! kernel support; costs a copy per layer and per container, as docker's vfs does.

use crate::mount::Mount;
use crate::usage::{tree_usage, Usage};
use crate::{
    numeric_dirs, remove_tree, retire_tree, tree_mounts, Driver, Kind, Layout, PrepareOpts,
};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use strata_archive::WhiteoutFormat;

pub struct Vfs {
    home: PathBuf,
}

impl Vfs {
    pub fn open(home: &Path, opts: &[(String, String)]) -> io::Result<Vfs> {
        crate::no_options("vfs", opts)?;
        strata_store::fsutil::create_tree_parent(home)?;
        Ok(Vfs {
            home: home.to_path_buf(),
        })
    }

    fn fs_dir(&self, id: i64) -> PathBuf {
        self.home.join(id.to_string()).join("fs")
    }
}

impl Driver for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![(
            "Backing Filesystem".into(),
            crate::overlay::backing_fs(&self.home).into(),
        )]
    }

    fn tree_top(&self, id: i64) -> Option<PathBuf> {
        Some(self.home.join(id.to_string()))
    }

    fn create(&self, s: &Layout, _opts: &PrepareOpts) -> io::Result<()> {
        let dir = self.fs_dir(s.id);
        fs::create_dir_all(&dir)?;
        // A view of a committed snapshot reads the parent's own copy (mounted read-only).
        if s.kind == Kind::Active {
            if let Some(parent) = s.parents.first() {
                strata_archive::copy_tree(&self.fs_dir(*parent), &dir)?;
            }
        }
        Ok(())
    }

    fn mounts(&self, s: &Layout) -> io::Result<Vec<Mount>> {
        Ok(tree_mounts(s, |id| self.fs_dir(id)))
    }

    fn commit(&self, _s: &Layout) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, id: i64) -> io::Result<()> {
        remove_tree(&self.home.join(id.to_string()))
    }

    fn retire(&self, id: i64, to: &Path) -> io::Result<bool> {
        retire_tree(&self.home.join(id.to_string()), to)
    }

    fn mount_goes_with_retired_storage(&self) -> bool {
        true
    }

    fn holds(&self, id: i64) -> io::Result<bool> {
        self.home.join(id.to_string()).try_exists()
    }

    fn usage(&self, s: &Layout) -> io::Result<Usage> {
        tree_usage(&self.fs_dir(s.id))
    }

    /// A vfs snapshot is a full copy: its changes are found by comparing it with its parent.
    fn changes_size(&self, s: &Layout) -> io::Result<u64> {
        match s.parents.first() {
            Some(p) => strata_archive::changes_size(&self.fs_dir(*p), &self.fs_dir(s.id)),
            None => Ok(self.usage(s)?.size),
        }
    }

    fn apply_dir(&self, s: &Layout) -> Option<(PathBuf, WhiteoutFormat)> {
        (s.kind == Kind::Active).then(|| (self.fs_dir(s.id), WhiteoutFormat::Apply))
    }

    fn diff(&self, s: &Layout, w: &mut dyn Write) -> Option<io::Result<()>> {
        if s.kind == Kind::View {
            return None;
        }
        let upper = self.fs_dir(s.id);
        Some(match s.parents.first() {
            Some(p) => strata_archive::diff_trees(&self.fs_dir(*p), &upper, w).map(|_| ()),
            None => strata_archive::write_tree(&upper, w, WhiteoutFormat::Apply).map(|_| ()),
        })
    }

    fn stored_ids(&self) -> io::Result<Vec<i64>> {
        numeric_dirs(&self.home)
    }
}
