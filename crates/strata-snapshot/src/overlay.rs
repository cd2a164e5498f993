//! overlay2: kernel overlayfs. Each snapshot has its own `diff` dir (its upper dir while
//! active, a lower dir once committed), so commit moves no data and the native diff is the
//! diff dir itself. Directories are named by snapshot number, which keeps paths short;
//! layers are passed one `lowerdir+` at a time, so there is no option-length limit either.
//!
//! Mounted with `redirect_dir=off`, `metacopy=off` and `index=off`: a redirect or metacopy
//! entry in an upper dir would make the native diff wrong (moby falls back to a naive diff
//! for the same reason); renaming a lower directory then returns EXDEV and tools copy it.

use crate::mount::Mount;
use crate::usage::{tree_usage, Usage};
use crate::{numeric_dirs, remove_tree, retire_tree, Driver, Kind, Layout, PrepareOpts};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use strata_archive::WhiteoutFormat;

pub struct Overlay {
    home: PathBuf,
}

/// overlayfs is registered with the kernel (or can be loaded).
pub fn supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .is_ok_and(|s| s.lines().any(|l| l.ends_with("\toverlay")))
}

impl Overlay {
    pub fn open(home: &Path, opts: &[(String, String)]) -> io::Result<Overlay> {
        crate::no_options("overlay2", opts)?;
        if !supported() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "overlay2 needs overlayfs, which this kernel does not offer: use --storage-driver vfs"));
        }
        strata_store::fsutil::create_tree_parent(home)?;
        Ok(Overlay {
            home: home.to_path_buf(),
        })
    }

    fn dir(&self, id: i64) -> PathBuf {
        self.home.join(id.to_string())
    }

    fn diff_dir(&self, id: i64) -> PathBuf {
        self.dir(id).join("diff")
    }
}

pub fn backing_fs(path: &Path) -> &'static str {
    match rustix::fs::statfs(path).map(|s| s.f_type) {
        Ok(0xEF53) => "extfs",
        Ok(0x9123683E) => "btrfs",
        Ok(0x58465342) => "xfs",
        Ok(0x01021994) => "tmpfs",
        Ok(0x794c7630) => "overlayfs",
        Ok(0x65735546) => "fuse",
        _ => "<unknown>",
    }
}

impl Driver for Overlay {
    fn name(&self) -> &'static str {
        "overlay2"
    }

    fn status(&self) -> Vec<(String, String)> {
        vec![
            ("Backing Filesystem".into(), backing_fs(&self.home).into()),
            ("Supports d_type".into(), "true".into()),
            ("Using metacopy".into(), "false".into()),
            ("Native Overlay Diff".into(), "true".into()),
            ("userxattr".into(), "false".into()),
        ]
    }

    fn tree_top(&self, id: i64) -> Option<PathBuf> {
        Some(self.dir(id))
    }

    fn create(&self, s: &Layout, _opts: &PrepareOpts) -> io::Result<()> {
        fs::create_dir_all(self.diff_dir(s.id))?;
        if s.kind == Kind::Active && !s.parents.is_empty() {
            fs::create_dir_all(self.dir(s.id).join("work"))?;
        }
        Ok(())
    }

    fn mounts(&self, s: &Layout) -> io::Result<Vec<Mount>> {
        let readonly = s.kind == Kind::View;
        match (s.kind, s.parents.as_slice()) {
            (_, []) => Ok(vec![Mount::bind(&self.diff_dir(s.id), readonly)]),
            (Kind::View, [only]) => Ok(vec![Mount::bind(&self.diff_dir(*only), true)]),
            _ => {
                let mut options: Vec<String> = s
                    .parents
                    .iter()
                    .map(|p| format!("lowerdir+={}", self.diff_dir(*p).display()))
                    .collect();
                if readonly {
                    options.push("ro".into());
                } else {
                    options.push(format!("upperdir={}", self.diff_dir(s.id).display()));
                    options.push(format!("workdir={}", self.dir(s.id).join("work").display()));
                }
                options.extend(["index=off", "redirect_dir=off", "metacopy=off"].map(String::from));
                if s.volatile && !readonly {
                    // No syncs for data that dies with its container (as podman does for
                    // --rm). After a host crash the kernel refuses to mount such an upper
                    // dir again (work/incompat/volatile): the container was to go anyway.
                    options.push("volatile".into());
                }
                Ok(vec![Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }])
            }
        }
    }

    fn commit(&self, s: &Layout) -> io::Result<()> {
        // The work dir only serves an upper dir; a committed layer is only ever a lower.
        remove_tree(&self.dir(s.id).join("work"))
    }

    fn remove(&self, id: i64) -> io::Result<()> {
        remove_tree(&self.dir(id))
    }

    fn retire(&self, id: i64, to: &Path) -> io::Result<bool> {
        retire_tree(&self.dir(id), to)
    }

    fn mount_goes_with_retired_storage(&self) -> bool {
        true
    }

    fn holds(&self, id: i64) -> io::Result<bool> {
        self.dir(id).try_exists()
    }

    fn usage(&self, s: &Layout) -> io::Result<Usage> {
        tree_usage(&self.diff_dir(s.id))
    }

    fn apply_dir(&self, s: &Layout) -> Option<(PathBuf, WhiteoutFormat)> {
        (s.kind == Kind::Active).then(|| (self.diff_dir(s.id), WhiteoutFormat::Overlay))
    }

    fn diff(&self, s: &Layout, w: &mut dyn Write) -> Option<io::Result<()>> {
        if s.kind == Kind::View {
            return None;
        }
        Some(
            strata_archive::write_tree(&self.diff_dir(s.id), w, WhiteoutFormat::Overlay)
                .map(|_| ()),
        )
    }

    fn stored_ids(&self) -> io::Result<Vec<i64>> {
        numeric_dirs(&self.home)
    }
}
