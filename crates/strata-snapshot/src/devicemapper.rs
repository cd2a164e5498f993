//! devicemapper: docker's thin-provisioning driver without device-mapper. The thin pool is
//! strata's own (`strata-thinpool`, dm-thin's metadata format) in two sparse files, as
//! docker's loop-lvm mode had them; its server process shows every thin device as a file
//! (`ROOT/devicemapper/dev/ID`), and a device is mounted through a loop device with the
//! filesystem the base device was made with.
//!
//! The base device (id 1) holds an empty filesystem of `dm.basesize`; every layer and
//! container is a snapshot of its parent's device (O(1): the pool shares the mapping
//! tree), so a container costs a few metadata blocks and writes copy only the blocks they
//! touch. Snapshot number N is thin device N + 1. Diffs are the generic comparison of two
//! mounted trees; sizes come from the pool (blocks only the device refers to).

use crate::mount::Mount;
use crate::usage::Usage;
use crate::{Driver, Kind, Layout, PrepareOpts};
use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use strata_archive::WhiteoutFormat;

const BASE: u64 = 1;

pub struct Devicemapper {
    home: PathBuf,
    cfg: Config,
}

#[derive(Debug, Clone)]
struct Config {
    base_size: u64,
    fs: String,
    mkfs_args: Vec<String>,
    block_size: u64,
    data_size: u64,
    metadata_size: u64,
    min_free_percent: u64,
    deferred_removal: bool,
    deferred_deletion: bool,
    /// Grow the data file by `.1` percent at `.0` percent used (off by default: the loop
    /// file is sparse and large already).
    autoextend: (u64, u64),
    /// Block devices (or partitions) for the pool instead of loop files (docker's
    /// direct-lvm mode, dm.datadev and dm.metadatadev).
    devices: Option<(PathBuf, PathBuf)>,
}

fn size_opt(k: &str, v: &str, min: u64) -> io::Result<u64> {
    strata_store::units::parse_bytes(v)
        .filter(|n| *n as u64 >= min)
        .map(|n| n as u64)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid {k} {v:?}: give a size of at least {min} bytes, e.g. {k}=10G"),
            )
        })
}

fn bool_opt(k: &str, v: &str) -> io::Result<bool> {
    strata_store::units::parse_bool(v).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {k} {v:?}: give true or false"),
        )
    })
}

impl Config {
    fn parse(opts: &[(String, String)]) -> io::Result<Config> {
        let mut c = Config {
            base_size: 10 << 30,
            fs: "ext4".into(),
            mkfs_args: Vec::new(),
            block_size: 64 << 10,
            data_size: 100 << 30,
            metadata_size: 2 << 30,
            min_free_percent: 10,
            deferred_removal: false,
            deferred_deletion: false,
            autoextend: (0, 0),
            devices: None,
        };
        let (mut data_dev, mut meta_dev) = (None, None);
        for (k, v) in opts {
            match k.as_str() {
                "dm.basesize" => c.base_size = size_opt(k, v, 64 << 20)?,
                "dm.fs" => {
                    if v != "ext4" && v != "xfs" {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("invalid dm.fs {v:?}: give ext4 or xfs"),
                        ));
                    }
                    c.fs = v.clone();
                }
                "dm.mkfsarg" => c.mkfs_args.push(v.clone()),
                "dm.blocksize" => {
                    c.block_size = size_opt(k, v, 64 << 10)?;
                    if !c.block_size.is_multiple_of(64 << 10) || c.block_size > 1 << 30 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("invalid dm.blocksize {v:?}: give 64K to 1G in steps of 64K"),
                        ));
                    }
                }
                "dm.loopdatasize" => c.data_size = size_opt(k, v, 256 << 20)?,
                "dm.loopmetadatasize" => c.metadata_size = size_opt(k, v, 2 << 20)?,
                "dm.min_free_space" => {
                    c.min_free_percent = v
                        .trim_end_matches('%')
                        .parse()
                        .ok()
                        .filter(|p| *p < 100)
                        .ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!("invalid dm.min_free_space {v:?}: give a percentage below 100, e.g. 10%"),
                            )
                        })?
                }
                "dm.use_deferred_removal" => c.deferred_removal = bool_opt(k, v)?,
                "dm.datadev" | "dm.metadatadev" => {
                    use std::os::unix::fs::FileTypeExt;
                    let p = PathBuf::from(v);
                    if !fs::metadata(&p).is_ok_and(|m| m.file_type().is_block_device()) {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("invalid {k} {v:?}: give a block device (a disk, a partition or a logical volume)"),
                        ));
                    }
                    if k == "dm.datadev" {
                        data_dev = Some(p);
                    } else {
                        meta_dev = Some(p);
                    }
                }
                "dm.thin_pool_autoextend_threshold" | "dm.thin_pool_autoextend_percent" => {
                    let n: u64 = v
                        .trim_end_matches('%')
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                format!("invalid {k} {v:?}: give a percentage from 1 to 100"),
                            )
                        })?;
                    if k.ends_with("threshold") {
                        c.autoextend.0 = n;
                    } else {
                        c.autoextend.1 = n;
                    }
                }
                "dm.use_deferred_deletion" => c.deferred_deletion = bool_opt(k, v)?,
                other => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "unknown storage option {other:?} for devicemapper: it takes dm.datadev, dm.metadatadev, dm.basesize, dm.fs, dm.mkfsarg, dm.blocksize, dm.loopdatasize, dm.loopmetadatasize, dm.min_free_space, dm.thin_pool_autoextend_threshold, dm.thin_pool_autoextend_percent, dm.use_deferred_removal and dm.use_deferred_deletion"
                        ),
                    ))
                }
            }
        }
        c.devices = match (data_dev, meta_dev) {
            (Some(d), Some(m)) => Some((d, m)),
            (None, None) => None,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "dm.datadev and dm.metadatadev go together: give both block devices",
                ))
            }
        };
        Ok(c)
    }
}

impl Devicemapper {
    pub fn open(home: &Path, opts: &[(String, String)]) -> io::Result<Devicemapper> {
        let cfg = Config::parse(opts)?;
        if !Path::new("/dev/fuse").exists() || !Path::new("/dev/loop-control").exists() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "devicemapper needs FUSE and loop devices, which this machine does not offer: use --storage-driver vfs",
            ));
        }
        let dm = Devicemapper {
            home: home.to_path_buf(),
            cfg,
        };
        fs::create_dir_all(dm.pool_dir())?;
        fs::create_dir_all(dm.dev_dir())?;
        match &dm.cfg.devices {
            Some(_) => dm.format_devices()?,
            None if !dm.metadata_file().exists() => dm.format()?,
            None => {}
        }
        dm.start_server()?;
        dm.ensure_base()?;
        dm.retry_deferred()?;
        Ok(dm)
    }

    fn pool_dir(&self) -> PathBuf {
        self.home.join("devicemapper")
    }

    fn data_file(&self) -> PathBuf {
        match &self.cfg.devices {
            Some((d, _)) => d.clone(),
            None => self.pool_dir().join("data"),
        }
    }

    fn metadata_file(&self) -> PathBuf {
        match &self.cfg.devices {
            Some((_, m)) => m.clone(),
            None => self.pool_dir().join("metadata"),
        }
    }

    /// A pool on block devices: made on first use when the metadata device starts with
    /// zeros; a device holding anything else is never overwritten.
    fn format_devices(&self) -> io::Result<()> {
        let open = |p: &Path| fs::OpenOptions::new().read(true).write(true).open(p);
        let meta_path = self.metadata_file();
        let meta = open(&meta_path)?;
        if strata_thinpool::Pool::is_formatted(&meta) {
            return Ok(());
        }
        let mut head = [0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&meta, &mut head, 0)?;
        if head.iter().any(|b| *b != 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "dm.metadatadev {} holds data that is not a thin pool: wipe its first 4 KiB to give it to strata",
                    meta_path.display()
                ),
            ));
        }
        let data = open(&self.data_file())?;
        let size = |f: &fs::File| strata_thinpool::size_of(f).map_err(io::Error::other);
        let cfg = strata_thinpool::PoolConfig {
            block_sectors: (self.cfg.block_size / 512) as u32,
            data_blocks: size(&data)? / self.cfg.block_size,
            metadata_blocks: (size(&meta)? / 4096).min(255 * 16320),
        };
        let _ = fs::remove_file(self.sizes_file());
        strata_thinpool::Pool::format(meta, data, &cfg)
            .map_err(|e| io::Error::other(format!("making the thin pool: {e}")))?;
        Ok(())
    }

    fn sizes_file(&self) -> PathBuf {
        self.pool_dir().join("sizes")
    }

    fn dev_dir(&self) -> PathBuf {
        self.home.join("dev")
    }

    fn device(&self, id: u64) -> PathBuf {
        self.dev_dir().join(id.to_string())
    }

    fn thin_id(snapshot: i64) -> u64 {
        snapshot as u64 + 1
    }

    /// Makes the pool: formatted under temporary names, the metadata renamed into place
    /// last (its presence says the pool exists).
    fn format(&self) -> io::Result<()> {
        let tmp_meta = self.pool_dir().join("metadata.tmp");
        let open = |p: &Path| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
        };
        let meta = open(&tmp_meta)?;
        let data = open(&self.data_file())?;
        strata_thinpool::Pool::format(
            meta,
            data,
            &strata_thinpool::PoolConfig {
                block_sectors: (self.cfg.block_size / 512) as u32,
                data_blocks: self.cfg.data_size / self.cfg.block_size,
                metadata_blocks: self.cfg.metadata_size / 4096,
            },
        )
        .map_err(|e| io::Error::other(format!("making the thin pool: {e}")))?;
        let _ = fs::remove_file(self.sizes_file());
        fs::rename(&tmp_meta, self.metadata_file())?;
        fs::File::open(self.pool_dir())?.sync_all()
    }

    fn server_up(&self) -> bool {
        crate::overlay::backing_fs(&self.dev_dir()) == "fuse"
    }

    /// Starts the pool's server unless it runs; a server that died leaves a dead mount,
    /// which is cleared first. The server runs in its own process group, so it outlives
    /// the CLI, and ends when its mount is unmounted.
    fn start_server(&self) -> io::Result<()> {
        let dev = self.dev_dir();
        if self.server_up() {
            return Ok(()); // the usual case: one statfs per open of the store
        }
        if crate::mount::dead_fuse(&dev) {
            rustix::mount::unmount(&dev, rustix::mount::UnmountFlags::DETACH)?;
        }
        let log = self.pool_dir().join("server.log");
        let mut child = Command::new(crate::mount::helper("strata-thinpool", "STRATA_THINPOOL")?)
            .arg("serve")
            .arg("--metadata")
            .arg(self.metadata_file())
            .arg("--data")
            .arg(self.data_file())
            .arg("--sizes")
            .arg(self.sizes_file())
            .arg("--min-free")
            .arg(self.cfg.min_free_percent.to_string())
            .args(match self.cfg.autoextend {
                (t, p) if t > 0 && p > 0 => vec!["--autoextend".into(), format!("{t},{p}")],
                _ => vec![],
            })
            .arg(&dev)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .process_group(0)
            .spawn()?;
        for _ in 0..500 {
            if self.server_up() {
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                let text = fs::read_to_string(&log).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "the thin pool server exited ({status}): {}",
                    text.trim()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        Err(io::Error::other(
            "the thin pool server did not come up in 5 s",
        ))
    }

    /// The base device: an empty filesystem every image's first layer snapshots.
    fn ensure_base(&self) -> io::Result<()> {
        let base = self.device(BASE);
        if base.exists() {
            return Ok(());
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&base)?;
        f.set_len(self.cfg.base_size)?;
        drop(f);
        let made = (|| {
            let dev = crate::loopdev::LoopDevice::attach(&base)?;
            let mut args: Vec<String> = match self.cfg.fs.as_str() {
                "xfs" => vec!["-q".into(), "-f".into()],
                _ => vec![
                    "-q".into(),
                    "-E".into(),
                    "nodiscard,lazy_itable_init=1,lazy_journal_init=1".into(),
                ],
            };
            args.extend(self.cfg.mkfs_args.iter().cloned());
            let out = Command::new(format!("mkfs.{}", self.cfg.fs))
                .args(&args)
                .arg(dev.path())
                .output()
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "running mkfs.{}: {e} (install e2fsprogs or xfsprogs)",
                            self.cfg.fs
                        ),
                    )
                })?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "mkfs.{} on the base device: {}",
                    self.cfg.fs,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            fs::File::open(dev.path())?.sync_all()?;
            drop(dev);
            // Layers hold only their own files: lost+found goes (fsck makes it again).
            let m = crate::mount::MountGuard::new(
                &[Mount {
                    kind: self.cfg.fs.clone(),
                    source: base.display().to_string(),
                    options: vec!["loop".into(), "rw".into()],
                }],
                &self.pool_dir().join("base-mnt"),
            )?;
            match fs::remove_dir(m.path().join("lost+found")) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })();
        if made.is_err() {
            let _ = fs::remove_file(&base);
        }
        made
    }

    /// Makes a new device `size` bytes and its filesystem with it (docker's `size=`): the
    /// device can only grow past the base device's size.
    fn grow(&self, dev: &Path, size: u64) -> io::Result<()> {
        let now = fs::metadata(dev)?.len();
        if size < now {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "size={size} is smaller than the base device ({now} bytes): give at least dm.basesize"
                ),
            ));
        }
        if size == now {
            return Ok(());
        }
        fs::OpenOptions::new()
            .write(true)
            .open(dev)?
            .set_len(size)?;
        let out = if self.cfg.fs == "xfs" {
            // xfs grows only while mounted.
            let m = crate::mount::MountGuard::new(
                &[Mount {
                    kind: "xfs".into(),
                    source: dev.display().to_string(),
                    options: vec!["loop".into(), "rw".into()],
                }],
                &self.pool_dir().join("grow-mnt"),
            )?;
            Command::new("xfs_growfs").arg(m.path()).output()?
        } else {
            let loop_dev = crate::loopdev::LoopDevice::attach(dev)?;
            let out = Command::new("resize2fs")
                .arg("-f")
                .arg(loop_dev.path())
                .output()?;
            fs::File::open(loop_dev.path())?.sync_all()?;
            out
        };
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "growing the filesystem of a new device to {size} bytes: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn deferred_list(&self) -> PathBuf {
        self.pool_dir().join("deferred-deletion")
    }

    fn deferred(&self) -> Vec<u64> {
        fs::read_to_string(self.deferred_list())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn set_deferred(&self, ids: &[u64]) -> io::Result<()> {
        let tmp = self.deferred_list().with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        for id in ids {
            writeln!(f, "{id}")?;
        }
        f.sync_all()?;
        fs::rename(&tmp, self.deferred_list())
    }

    /// Deletes what an earlier removal had to leave because the device was busy.
    fn retry_deferred(&self) -> io::Result<()> {
        let ids = self.deferred();
        if ids.is_empty() {
            return Ok(());
        }
        let left: Vec<u64> = ids
            .into_iter()
            .filter(|id| match fs::remove_file(self.device(*id)) {
                Ok(()) => false,
                Err(e) => e.kind() != io::ErrorKind::NotFound,
            })
            .collect();
        self.set_deferred(&left)
    }

    fn pool_status(&self) -> Vec<(String, u64)> {
        fs::read_to_string(self.dev_dir().join(".pool"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    fn device_bytes(&self, id: i64, attr: &str) -> io::Result<u64> {
        let path = self.device(Self::thin_id(id));
        let mut buf = [0u8; 32];
        match rustix::fs::getxattr(&path, attr, &mut buf[..]) {
            Ok(n) => std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| io::Error::other(format!("{attr} of {}", path.display()))),
            Err(rustix::io::Errno::NOENT) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

fn gb(bytes: u64) -> String {
    format!("{:.4} GB", bytes as f64 / 1e9)
}

impl Driver for Devicemapper {
    fn name(&self) -> &'static str {
        "devicemapper"
    }

    fn status(&self) -> Vec<(String, String)> {
        let st = self.pool_status();
        let get = |k: &str| st.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        let (du, dt, mu, mt) = (
            get("Data Used"),
            get("Data Total"),
            get("Metadata Used"),
            get("Metadata Total"),
        );
        let dir = self.pool_dir();
        let mut out: Vec<(String, String)> = vec![
            ("Pool Name".into(), "strata-thinpool".into()),
            (
                "Pool Blocksize".into(),
                format!("{:.2} kB", self.cfg.block_size as f64 / 1e3),
            ),
            ("Base Device Size".into(), gb(self.cfg.base_size)),
            ("Backing Filesystem".into(), self.cfg.fs.clone()),
            ("Data file".into(), self.data_file().display().to_string()),
            (
                "Metadata file".into(),
                self.metadata_file().display().to_string(),
            ),
            ("Data Space Used".into(), gb(du)),
            ("Data Space Total".into(), gb(dt)),
            ("Data Space Available".into(), gb(dt.saturating_sub(du))),
            ("Metadata Space Used".into(), gb(mu)),
            ("Metadata Space Total".into(), gb(mt)),
            ("Metadata Space Available".into(), gb(mt.saturating_sub(mu))),
            (
                "Thin Pool Minimum Free Space".into(),
                gb(dt * self.cfg.min_free_percent / 100),
            ),
            (
                "Deferred Removal Enabled".into(),
                self.cfg.deferred_removal.to_string(),
            ),
            (
                "Deferred Deletion Enabled".into(),
                self.cfg.deferred_deletion.to_string(),
            ),
            (
                "Deferred Deleted Device Count".into(),
                self.deferred().len().to_string(),
            ),
        ];
        if self.cfg.devices.is_none() {
            out.push((
                "Data loop file".into(),
                dir.join("data").display().to_string(),
            ));
            out.push((
                "Metadata loop file".into(),
                dir.join("metadata").display().to_string(),
            ));
        }
        out
    }

    fn warnings(&self) -> Vec<String> {
        if self.cfg.devices.is_some() {
            return Vec::new();
        }
        vec![
            "devicemapper: the thin pool is in loop files (data and metadata). \
             Usage of loopback devices is strongly discouraged for production use."
                .into(),
        ]
    }

    fn create(&self, s: &Layout, opts: &PrepareOpts) -> io::Result<()> {
        if s.kind == Kind::View {
            return Ok(()); // a view reads its parent's device
        }
        let origin = s.parents.first().map_or(BASE, |p| Self::thin_id(*p));
        let dev = self.device(Self::thin_id(s.id));
        match fs::hard_link(self.device(origin), &dev) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            r => r?,
        }
        if let Some(size) = opts.size_limit {
            self.grow(&dev, size)?;
        }
        Ok(())
    }

    fn limits_size(&self) -> bool {
        true
    }

    fn mounts(&self, s: &Layout) -> io::Result<Vec<Mount>> {
        let (id, readonly) = match (s.kind, s.parents.first()) {
            (Kind::View, Some(p)) => (Self::thin_id(*p), true),
            (Kind::View, None) => (BASE, true),
            (kind, _) => (Self::thin_id(s.id), kind == Kind::View),
        };
        let mut options = vec!["loop".to_string()];
        if readonly {
            options.push("ro".into());
            if self.cfg.fs == "ext4" {
                options.push("noload".into());
            }
        } else {
            options.push("rw".into());
            options.push("discard".into());
        }
        Ok(vec![Mount {
            kind: self.cfg.fs.clone(),
            source: self.device(id).display().to_string(),
            options,
        }])
    }

    fn commit(&self, _s: &Layout) -> io::Result<()> {
        // Unmounting synced the filesystem, and the pool commits on every sync.
        Ok(())
    }

    fn remove(&self, id: i64) -> io::Result<()> {
        let tid = Self::thin_id(id);
        let mut tries = 0;
        let res = loop {
            // A loop device lets go of its file shortly after the unmount that detached it.
            match fs::remove_file(self.device(tid)) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r,
            }
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && self.cfg.deferred_deletion => {
                let mut ids = self.deferred();
                ids.push(tid);
                self.set_deferred(&ids)
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("deleting thin device {tid}: {e} (set dm.use_deferred_deletion=true to delete busy devices later)"),
            )),
        }
    }

    fn holds(&self, id: i64) -> io::Result<bool> {
        self.device(Self::thin_id(id)).try_exists()
    }

    fn deferred_removal(&self) -> bool {
        self.cfg.deferred_removal
    }

    fn usage(&self, s: &Layout) -> io::Result<Usage> {
        Ok(Usage {
            size: self.device_bytes(s.id, "user.thin.exclusive_bytes")?,
            inodes: 0,
        })
    }

    fn apply_dir(&self, _s: &Layout) -> Option<(PathBuf, WhiteoutFormat)> {
        None
    }

    fn diff(&self, _s: &Layout, _w: &mut dyn Write) -> Option<io::Result<()>> {
        None
    }

    fn stored_ids(&self) -> io::Result<Vec<i64>> {
        Ok(crate::numeric_dirs(&self.dev_dir())?
            .into_iter()
            .filter(|id| *id as u64 > BASE)
            .map(|id| id - 1)
            .collect())
    }

    fn close(&self) -> io::Result<()> {
        crate::mount::unmount(&self.dev_dir())
    }
}
