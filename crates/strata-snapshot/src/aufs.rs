//! aufs: a branch union in userspace (the `strata-aufs` FUSE server). Each snapshot has a
//! `diff` dir that is one branch: its files and, as aufs stores them, `.wh.` whiteouts and
//! `.wh..wh..opq` markers. A layer applied from a tar keeps its whiteouts as they are, and
//! the native diff of a container is the tar of its writable branch. Needs no kernel union
//! filesystem, only FUSE.
//!
//! Every mount is one server process, started by the mount manager; it outlives the CLI and
//! ends when the mount is unmounted. A large file's copy-up is filled behind the write
//! that made it (see `strata_aufs::finish_copy_ups`): a diff or commit finishes such copies
//! before it reads the branch.
//!
//! A committed layer without whiteouts gets a [`NO_WHITEOUTS`] mark beside its branch and
//! is mounted `ro` rather than `ro+wh`: as in aufs, the union then never looks for
//! whiteouts in it, which halves what a lookup costs there.

use crate::mount::Mount;
use crate::usage::{tree_usage, Usage};
use crate::{numeric_dirs, remove_tree, Driver, Kind, Layout, PrepareOpts};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use strata_archive::walk::open_dir_at;
use strata_archive::whiteout::{META_PREFIX, OPAQUE, PREFIX};
use strata_archive::WhiteoutFormat;

/// Beside a committed layer's `diff`: the branch holds no whiteout and no opaque marker.
const NO_WHITEOUTS: &str = "no-whiteouts";

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
        strata_store::fsutil::create_tree_parent(home)?;
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

    /// A parent layer's branch; whiteouts are looked for in it unless it is marked free of
    /// them (layers committed before the mark existed are not).
    fn lower_branch(&self, id: i64) -> String {
        let marked = self.home.join(id.to_string()).join(NO_WHITEOUTS).exists();
        self.branch(id, if marked { "ro" } else { "ro+wh" })
    }
}

/// Whether the tree under `dir` holds a whiteout or an opaque marker (aufs's other
/// `.wh..wh.` names are the union's own and hide nothing).
fn has_whiteouts(dir: &impl AsFd) -> io::Result<bool> {
    let mut subdirs = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        let b = name.as_bytes();
        let (prefix, meta) = (PREFIX.as_bytes(), META_PREFIX.as_bytes());
        if b.starts_with(prefix) && (!b.starts_with(meta) || b == OPAQUE.as_bytes()) {
            return Ok(true);
        }
        if b == b"." || b == b".." || b.starts_with(prefix) {
            continue;
        }
        let is_dir = match e.file_type() {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => {
                let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
            }
            _ => false,
        };
        if is_dir {
            subdirs.push(name.to_os_string());
        }
    }
    for d in subdirs {
        if has_whiteouts(&open_dir_at(dir, &d)?)? {
            return Ok(true);
        }
    }
    Ok(false)
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

    fn tree_top(&self, id: i64) -> Option<PathBuf> {
        Some(self.home.join(id.to_string()))
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
        branches.extend(s.parents.iter().map(|p| self.lower_branch(*p)));
        let mut options = vec![format!("br={}", branches.join(":"))];
        options.push(if readonly { "ro" } else { "rw" }.into());
        if s.volatile && !readonly {
            // A container removed when it exits: its copy-ups need not survive a crash.
            options.push("volatile".into());
        }
        Ok(vec![Mount {
            kind: "aufs".into(),
            source: "none".into(),
            options,
        }])
    }

    fn commit(&self, s: &Layout) -> io::Result<()> {
        // A committed branch is read as it is, never through the server that knows which
        // of its files are still being filled.
        strata_aufs::finish_copy_ups(&self.diff_dir(s.id))?;
        // The layer no longer changes: what it holds now it holds for good. Without the
        // mark (a crash before it lands, say) whiteouts are merely looked for.
        let diff = fs::File::open(self.diff_dir(s.id))?;
        if !has_whiteouts(&diff)? {
            fs::File::create(self.home.join(s.id.to_string()).join(NO_WHITEOUTS))?;
        }
        Ok(())
    }

    fn remove(&self, id: i64) -> io::Result<()> {
        remove_tree(&self.home.join(id.to_string()))
    }

    fn holds(&self, id: i64) -> io::Result<bool> {
        self.home.join(id.to_string()).try_exists()
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
        let dir = self.diff_dir(s.id);
        // The tar holds what the branch's files hold: large copy-ups must be whole first.
        if let Err(e) = strata_aufs::finish_copy_ups(&dir) {
            return Some(Err(e));
        }
        Some(strata_archive::write_tree(&dir, w, WhiteoutFormat::Aufs).map(|_| ()))
    }

    fn stored_ids(&self) -> io::Result<Vec<i64>> {
        numeric_dirs(&self.home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(id: i64, parents: Vec<i64>, kind: Kind) -> Layout {
        Layout {
            id,
            parents,
            kind,
            volatile: false,
        }
    }

    #[test]
    fn layers_without_whiteouts_are_mounted_without_looking_for_them() {
        let home = tempfile::tempdir().unwrap();
        let d = Aufs {
            home: home.path().to_path_buf(),
        };
        let write = |id: i64, rel: &str| {
            let p = d.diff_dir(id).join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "").unwrap();
        };
        // 1: plain files and the union's own names; 2: a whiteout deep down; 3: an opaque
        // directory.
        write(1, "etc/passwd");
        write(1, ".wh..wh.plnk/1.2");
        write(2, "usr/lib/x/.wh.gone");
        write(3, "var/.wh..wh..opq");
        for id in 1..=3 {
            d.commit(&layout(id, vec![], Kind::Committed)).unwrap();
        }
        fs::create_dir_all(d.diff_dir(4)).unwrap();
        let m = d.mounts(&layout(4, vec![3, 2, 1], Kind::Active)).unwrap();
        let br = &m[0].options[0];
        let want = format!(
            "br={}=rw:{}=ro+wh:{}=ro+wh:{}=ro",
            d.diff_dir(4).display(),
            d.diff_dir(3).display(),
            d.diff_dir(2).display(),
            d.diff_dir(1).display()
        );
        assert_eq!(br, &want);
        assert!(!m[0].options.iter().any(|o| o == "volatile"));
        // A container removed when it exits: its copy-ups are not synced.
        let mut l = layout(4, vec![1], Kind::Active);
        l.volatile = true;
        let m = d.mounts(&l).unwrap();
        assert!(m[0].options.iter().any(|o| o == "volatile"));
    }
}
