//! Mounts as data, and the one place that performs them.
//!
//! overlay is mounted through the new mount API (fsopen/fsconfig/fsmount/move_mount) with
//! one `lowerdir+` call per layer, so the number of layers is limited by the kernel (500)
//! and not by the one-page limit of mount(2)'s option string.

use rustix::mount::{
    self as m, FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags,
};
use std::io::{self, Read};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// `overlay`, `bind`, `aufs` (the userspace union), or a block device filesystem
    /// (`btrfs`).
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

impl Mount {
    pub fn bind(source: &Path, readonly: bool) -> Mount {
        let mut options = vec!["rbind".to_string()];
        options.push(if readonly { "ro" } else { "rw" }.to_string());
        Mount {
            kind: "bind".into(),
            source: source.display().to_string(),
            options,
        }
    }

    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// Mounts `mounts` (in order) on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> io::Result<()> {
    for mnt in mounts {
        match mnt.kind.as_str() {
            "bind" => {
                m::mount_bind(mnt.source.as_str(), target)?;
                if mnt.is_readonly() {
                    if let Err(e) =
                        m::mount_remount(target, m::MountFlags::BIND | m::MountFlags::RDONLY, "")
                    {
                        let _ = m::unmount(target, UnmountFlags::DETACH);
                        return Err(e.into());
                    }
                }
            }
            "overlay" | "btrfs" => mount_fs(mnt, target)?,
            // A filesystem image in a file: on a loop device of its own, which goes away
            // with the mount (autoclear).
            "ext4" | "xfs" if mnt.options.iter().any(|o| o == "loop") => {
                let dev = crate::loopdev::LoopDevice::attach(Path::new(&mnt.source))?;
                let on_dev = Mount {
                    kind: mnt.kind.clone(),
                    source: dev.path().display().to_string(),
                    options: mnt
                        .options
                        .iter()
                        .filter(|o| *o != "loop")
                        .cloned()
                        .collect(),
                };
                mount_fs(&on_dev, target)?;
            }
            "aufs" => mount_aufs(mnt, target)?,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("unknown mount type {other:?}"),
                ))
            }
        }
    }
    Ok(())
}

/// Mounts a filesystem of type `mnt.kind` through the new mount API; a block device
/// filesystem's device is `mnt.source`.
fn mount_fs(mnt: &Mount, target: &Path) -> io::Result<()> {
    let fs = m::fsopen(mnt.kind.as_str(), FsOpenFlags::FSOPEN_CLOEXEC)?;
    let mut attrs = MountAttrFlags::empty();
    let configure = || -> rustix::io::Result<()> {
        if mnt.kind != "overlay" {
            m::fsconfig_set_string(&fs, "source", mnt.source.as_str())?;
        }
        if mnt.is_readonly() && mnt.kind != "overlay" {
            // The superblock read-only too: nothing at all is written to the device.
            m::fsconfig_set_flag(&fs, "ro")?;
        }
        for opt in &mnt.options {
            match opt.split_once('=') {
                Some((k, v)) => m::fsconfig_set_string(&fs, k, v)?,
                // Mount attributes, not filesystem parameters.
                None if opt == "ro" || opt == "rw" || opt == "noatime" => {}
                None => m::fsconfig_set_flag(&fs, opt.as_str())?,
            }
        }
        m::fsconfig_create(&fs)
    };
    if let Err(e) = configure() {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "mounting {} on {}: {e}{}",
                mnt.kind,
                target.display(),
                fs_log(&fs)
            ),
        ));
    }
    if mnt.is_readonly() {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    if mnt.options.iter().any(|o| o == "noatime") {
        attrs |= MountAttrFlags::MOUNT_ATTR_NOATIME;
    }
    let mfd = m::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
    m::move_mount(
        &mfd,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// The `strata-aufs` mount helper.
pub fn aufs_helper() -> io::Result<std::path::PathBuf> {
    helper("strata-aufs", "STRATA_AUFS")
}

/// A helper program of strata's (`name`): `$ENV`, else beside the running program (or one
/// directory up, where cargo puts binaries next to its test programs), else on `PATH`.
pub fn helper(name: &str, env: &str) -> io::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let beside = exe
        .parent()
        .into_iter()
        .flat_map(|d| [d.join(name), d.join("..").join(name)]);
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside.chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{name} is neither beside strata nor on PATH: build the workspace \
                 (`cargo build --release`) or set {env}"
            ),
        )
    })
}

/// Mounts a branch union through the `strata-aufs` helper, which returns once the mount is
/// in place and keeps serving it from its own session until it is unmounted. Mounted so
/// that a container's processes (any user) may use it, with devices and set-ID bits.
fn mount_aufs(mnt: &Mount, target: &Path) -> io::Result<()> {
    let mut opts = vec!["allow_other".to_string(), "dev".into(), "suid".into()];
    opts.extend(mnt.options.iter().cloned());
    let out = std::process::Command::new(aufs_helper()?)
        .arg("-o")
        .arg(opts.join(","))
        .arg(&mnt.source)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mounting aufs on {}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The messages the kernel queued on a filesystem context (why a mount was refused).
fn fs_log(fs: &std::os::fd::OwnedFd) -> String {
    let mut out = String::new();
    let mut f = std::fs::File::from(fs.try_clone().expect("dup fs context"));
    let mut buf = [0u8; 512];
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.push_str(": ");
        out.push_str(String::from_utf8_lossy(&buf[..n]).trim());
    }
    out
}

/// Unmounts `target`, retrying briefly while it is busy.
pub fn unmount(target: &Path) -> io::Result<()> {
    for attempt in 0..50 {
        match m::unmount(target, UnmountFlags::empty()) {
            Ok(()) => return Ok(()),
            // Not a mount point, or no such path: nothing is mounted there.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => return Ok(()),
            Err(rustix::io::Errno::BUSY) if attempt < 49 => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("unmounting {}: {e}", target.display()),
                ))
            }
        }
    }
    Ok(())
}

/// Unmounts `target` at once if it is not busy, else detaches it: it goes away when its
/// last user does (deferred removal).
pub fn unmount_or_detach(target: &Path) -> io::Result<()> {
    match m::unmount(target, UnmountFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::BUSY) => m::unmount(target, UnmountFlags::DETACH)
            .map_err(|e| io::Error::new(e.kind(), format!("detaching {}: {e}", target.display()))),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("unmounting {}: {e}", target.display()),
        )),
    }
}

/// The mount points below `dir` (not `dir` itself) in this mount namespace, deepest first
/// (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out: Vec<std::path::PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|t| std::path::PathBuf::from(unescape_octal(t)))
        .filter(|t| t.starts_with(dir) && t != dir)
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.as_os_str().len()));
    out.dedup();
    Ok(out)
}

/// `target` is a FUSE mount whose server is gone: every request fails with ENOTCONN, or,
/// over FUSE over io_uring while the kernel tears the dead server's rings down, with
/// ECANCELED or ECONNABORTED. Asked with statfs, which always reaches the server: a stat
/// may be answered from the kernel's attribute cache.
pub fn dead_fuse(target: &Path) -> bool {
    use rustix::io::Errno;
    matches!(
        rustix::fs::statfs(target).err(),
        Some(Errno::NOTCONN | Errno::CANCELED | Errno::CONNABORTED)
    )
}

/// Unmounts everything mounted below `dir` (not `dir` itself), deepest first.
pub fn unmount_below(dir: &Path) -> io::Result<()> {
    for t in mounts_under(dir)? {
        unmount(&t)?;
    }
    Ok(())
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mount that is undone when dropped: for short-lived mounts the engine makes itself.
pub struct MountGuard {
    target: std::path::PathBuf,
    remove_dir: bool,
}

impl MountGuard {
    /// Mounts `mounts` on a new directory `target` (removed again on drop).
    pub fn new(mounts: &[Mount], target: &Path) -> io::Result<MountGuard> {
        std::fs::create_dir_all(target)?;
        if let Err(e) = mount_all(mounts, target) {
            let _ = std::fs::remove_dir(target);
            return Err(e);
        }
        Ok(MountGuard {
            target: target.to_path_buf(),
            remove_dir: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = unmount(&self.target);
        if self.remove_dir {
            let _ = std::fs::remove_dir(&self.target);
        }
    }
}
