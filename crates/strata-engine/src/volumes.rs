//! Volumes: directories mounted into containers that bypass the storage driver.
//!
//! A volume is a row in `volumes` plus `ROOT/volumes/NAME/_data`; writes to it go straight
//! to the host and are never part of a container's writable layer, `ps -s`, `diff`,
//! `commit` or `export`. Containers name the volumes they use in `container_volumes`
//! (a foreign key), so a volume in use by any container, running or not, cannot be
//! removed. Mounts are resolved inside the container's root by fd (openat2
//! `RESOLVE_IN_ROOT`) and made on the resolved fd (`open_tree` + `move_mount`), so a
//! symlink in the image, or one swapped in during start, cannot send a mount to the host.

use crate::error::{EngineError, Result};
use crate::Engine;
use rusqlite::{params, OptionalExtension};
use rustix::mount::{self as m, MoveMountFlags, OpenTreeFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use strata_archive::Root;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name      TEXT PRIMARY KEY,
    driver    TEXT NOT NULL,
    created   TEXT NOT NULL,
    labels    TEXT NOT NULL DEFAULT '{}',
    options   TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS container_volumes (
    container   TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
    volume      TEXT NOT NULL REFERENCES volumes(name) ON DELETE RESTRICT,
    destination TEXT NOT NULL,
    PRIMARY KEY (container, destination)
);
CREATE INDEX IF NOT EXISTS container_volumes_volume ON container_volumes(volume);
";

/// One mount of a container beyond its root filesystem: a volume or a bind of a host path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountPoint {
    /// `volume` or `bind`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The volume's name (volumes only).
    pub name: String,
    /// The host path (binds only; a volume's is its `_data` directory).
    pub source: String,
    pub destination: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    /// `nocopy`: an empty volume is not filled from the image's content there.
    pub no_copy: bool,
    pub propagation: String,
}

/// A volume as `volume inspect` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: String,
    pub created_at: String,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    pub scope: String,
    /// Made for one container (`-v /path`, an image's VOLUME), not by name.
    #[serde(skip)]
    pub anonymous: bool,
}

/// What `volume create` is asked for.
#[derive(Debug, Clone, Default)]
pub struct VolumeOptions {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub labels: Vec<(String, String)>,
    pub options: Vec<(String, String)>,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// A new anonymous volume's name: 64 hex digits, as docker's.
fn anonymous_name() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The name for a new volume and whether it is anonymous: `given` checked against
/// docker's rule, or a new anonymous name.
fn volume_name(given: Option<&str>) -> Result<(String, bool)> {
    match given {
        Some(n) if valid_name(n) => Ok((n.to_string(), false)),
        Some(n) => Err(invalid(format!(
            "invalid volume name {n:?}: names match [a-zA-Z0-9][a-zA-Z0-9_.-]+"
        ))),
        None => Ok((anonymous_name(), true)),
    }
}

fn invalid(msg: String) -> EngineError {
    EngineError::Invalid(msg)
}

/// A container destination: absolute, clean, not `/`, and not `/proc` or `/sys` or below
/// them (the kernel's views a volume must not hide or redirect, CVE-2019-16884's class).
fn destination(raw: &str) -> Result<String> {
    if !raw.starts_with('/') {
        return Err(invalid(format!(
            "invalid mount destination {raw:?}: it must be an absolute path in the container"
        )));
    }
    let clean = strata_archive::root::clean_relative(Path::new(raw))
        .map_err(|e| invalid(format!("invalid mount destination {raw:?}: {e}")))?;
    let first = clean.components().next().map(|c| c.as_os_str().to_owned());
    if clean.as_os_str().is_empty() {
        return Err(invalid(format!(
            "invalid mount destination {raw:?}: a volume cannot replace the container's root"
        )));
    }
    if first.as_deref() == Some("proc".as_ref()) || first.as_deref() == Some("sys".as_ref()) {
        return Err(invalid(format!(
            "invalid mount destination {raw:?}: /proc and /sys cannot be mounted over"
        )));
    }
    Ok(format!("/{}", clean.display()))
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Parses `-v` as docker does: `/path` (anonymous volume), `NAME:/path[:OPTS]` (named
/// volume), `/host:/path[:OPTS]` (bind; a missing host directory is created). OPTS are
/// `ro`, `rw`, `nocopy`, a propagation mode, or `z`/`Z` (SELinux labels: nothing here).
pub fn parse_volume_flag(spec: &str) -> Result<MountPoint> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => {
            return Err(invalid(format!(
                "invalid volume specification {spec:?}: use [SOURCE:]DESTINATION[:OPTIONS]"
            )))
        }
    };
    let mut mp = MountPoint {
        destination: destination(dst)?,
        rw: true,
        ..Default::default()
    };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => mp.rw = false,
            "rw" => mp.rw = true,
            "nocopy" => mp.no_copy = true,
            "z" | "Z" => {}
            p if PROPAGATIONS.contains(&p) => mp.propagation = p.to_string(),
            other => {
                return Err(invalid(format!(
                    "invalid volume option {other:?} in {spec:?}: use ro, rw, nocopy or a propagation mode"
                )))
            }
        }
    }
    if src.starts_with('/') {
        mp.kind = "bind".into();
        mp.source = src.to_string();
    } else {
        mp.kind = "volume".into();
        if !src.is_empty() && !valid_name(src) {
            return Err(invalid(format!(
                "invalid volume name {src:?}: names match [a-zA-Z0-9][a-zA-Z0-9_.-]+ (a host path must be absolute)"
            )));
        }
        mp.name = src.to_string();
    }
    Ok(mp)
}

/// Parses `--mount` as docker does: `type=volume|bind|tmpfs,src=,dst=,readonly,...`.
/// Returns the mount point, the volume driver options (`volume-opt`), and a tmpfs's
/// destination and options when the type is tmpfs.
pub fn parse_mount_flag(spec: &str) -> Result<ParsedMount> {
    let mut kind = "volume".to_string();
    let mut mp = MountPoint {
        rw: true,
        ..Default::default()
    };
    let mut dst = None;
    let mut volume_opts = Vec::new();
    let mut tmpfs_opts = Vec::new();
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        let truth = |v: &str| -> Result<bool> {
            // A bare key (`readonly`) means true.
            if v.is_empty() {
                return Ok(true);
            }
            strata_store::units::parse_bool(v)
                .ok_or_else(|| invalid(format!("invalid value for {k} in --mount {spec:?}: {v:?}")))
        };
        match k {
            "type" => kind = v.to_string(),
            "source" | "src" => mp.source = v.to_string(),
            "destination" | "dst" | "target" => dst = Some(v.to_string()),
            "readonly" | "ro" => mp.rw = !truth(v)?,
            "volume-nocopy" => mp.no_copy = truth(v)?,
            "volume-opt" => {
                let (ok, ov) = v.split_once('=').ok_or_else(|| {
                    invalid(format!("invalid volume-opt {v:?} in --mount {spec:?}: use KEY=VALUE"))
                })?;
                volume_opts.push((ok.to_string(), ov.to_string()));
            }
            "bind-propagation" if PROPAGATIONS.contains(&v) => mp.propagation = v.to_string(),
            "tmpfs-size" => tmpfs_opts.push(format!("size={v}")),
            "tmpfs-mode" => tmpfs_opts.push(format!("mode={v}")),
            _ => {
                return Err(invalid(format!(
                    "invalid field {field:?} in --mount {spec:?}: use type=, source=, target=, readonly, volume-opt=, volume-nocopy, bind-propagation=, tmpfs-size=, tmpfs-mode="
                )))
            }
        }
    }
    let dst = dst.ok_or_else(|| invalid(format!("--mount {spec:?} needs target=PATH")))?;
    mp.destination = destination(&dst)?;
    match kind.as_str() {
        "volume" => {
            if !mp.source.is_empty() && !valid_name(&mp.source) {
                return Err(invalid(format!(
                    "invalid volume name {:?}: names match [a-zA-Z0-9][a-zA-Z0-9_.-]+",
                    mp.source
                )));
            }
            mp.name = std::mem::take(&mut mp.source);
            mp.kind = kind;
        }
        "bind" => {
            if !mp.source.starts_with('/') {
                return Err(invalid(format!(
                    "--mount {spec:?}: a bind needs an absolute source=PATH"
                )));
            }
            // Unlike -v, --mount does not create a missing source, as docker.
            if !Path::new(&mp.source).exists() {
                return Err(invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    mp.source
                )));
            }
            mp.kind = kind;
        }
        "tmpfs" => {
            return Ok(ParsedMount::Tmpfs {
                destination: mp.destination,
                options: tmpfs_opts.join(","),
            })
        }
        other => {
            return Err(invalid(format!(
                "invalid mount type {other:?} in --mount {spec:?}: use volume, bind or tmpfs"
            )))
        }
    }
    Ok(ParsedMount::Mount {
        mount: mp,
        volume_opts,
    })
}

/// What a `--mount` flag asks for.
pub enum ParsedMount {
    Mount {
        mount: MountPoint,
        volume_opts: Vec<(String, String)>,
    },
    Tmpfs {
        destination: String,
        options: String,
    },
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn row_to_volume(engine: &Engine, r: &rusqlite::Row<'_>) -> rusqlite::Result<Volume> {
    let name: String = r.get(0)?;
    let labels: String = r.get(3)?;
    let options: String = r.get(4)?;
    let driver: String = r.get(1)?;
    Ok(Volume {
        // A plugin volume's is the plugin's to say (see `Engine::volume`).
        mountpoint: if driver == "local" {
            engine.volume_data(&name).display().to_string()
        } else {
            String::new()
        },
        name,
        driver,
        created_at: r.get(2)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        options: serde_json::from_str(&options).unwrap_or_default(),
        scope: "local".into(),
        anonymous: r.get(5)?,
    })
}

const VOLUME_COLS: &str = "name, driver, created, labels, options, anonymous";

impl Engine {
    /// `ROOT/volumes/NAME/_data`.
    pub(crate) fn volume_data(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name).join("_data")
    }

    /// The volume's record, without asking a plugin anything.
    pub(crate) fn volume_row(&self, name: &str) -> Result<Volume> {
        self.db
            .conn()
            .query_row(
                &format!("SELECT {VOLUME_COLS} FROM volumes WHERE name = ?1"),
                [name],
                |r| row_to_volume(self, r),
            )
            .optional()?
            .ok_or_else(|| EngineError::NoSuchVolume(name.to_string()))
    }

    /// The volume as `volume inspect` shows it: a plugin volume's mount point is asked
    /// of its plugin.
    pub fn volume(&self, name: &str) -> Result<Volume> {
        let mut v = self.volume_row(name)?;
        if v.driver != "local" {
            // Where the plugin has it: empty while no container uses it, or if the plugin
            // is gone.
            v.mountpoint = crate::volume_plugin::Plugin::activate(&v.driver)
                .and_then(|p| p.path(&v.name))
                .unwrap_or_default();
        }
        Ok(v)
    }

    pub fn list_volumes(&self) -> Result<Vec<Volume>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(&format!("SELECT {VOLUME_COLS} FROM volumes ORDER BY name"))?;
        let rows = st.query_map([], |r| row_to_volume(self, r))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many containers use each volume.
    pub fn volume_links(&self) -> Result<BTreeMap<String, usize>> {
        let conn = self.db.conn();
        let mut st = conn.prepare(
            "SELECT volume, COUNT(DISTINCT container) FROM container_volumes GROUP BY volume",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Creates a volume (`volume create`); an existing one of that name is returned as it
    /// is, as docker does.
    pub fn create_volume(&self, opts: &VolumeOptions) -> Result<Volume> {
        let driver = opts.driver.clone().unwrap_or_else(|| "local".into());
        if driver != "local" {
            return self.create_plugin_volume(&driver, opts);
        }
        for (k, _) in &opts.options {
            if !["type", "device", "o"].contains(&k.as_str()) {
                return Err(invalid(format!(
                    "invalid option {k:?} for the local volume driver: it takes type, device and o"
                )));
            }
        }
        let options: BTreeMap<String, String> = opts.options.iter().cloned().collect();
        if !options.is_empty() && !options.contains_key("type") {
            return Err(invalid(
                "the local driver's mount options need type=FSTYPE (e.g. -o type=tmpfs -o device=tmpfs -o o=size=64m)".into(),
            ));
        }
        let (name, anonymous) = volume_name(opts.name.as_deref())?;
        self.ensure_volume(&name, anonymous, &opts.labels, &options)?;
        self.volume(&name)
    }

    /// A volume served by plugin `driver`: the plugin makes it, strata records it.
    fn create_plugin_volume(&self, driver: &str, opts: &VolumeOptions) -> Result<Volume> {
        let plugin = crate::volume_plugin::Plugin::activate(driver)?;
        let (name, anonymous) = volume_name(opts.name.as_deref())?;
        if self.volume_row(&name).is_ok() {
            return self.volume(&name);
        }
        let options: BTreeMap<String, String> = opts.options.iter().cloned().collect();
        plugin.create(&name, &options)?;
        let labels: BTreeMap<_, _> = opts.labels.iter().cloned().collect();
        self.db.conn().execute(
            "INSERT OR IGNORE INTO volumes (name, driver, created, labels, options, anonymous) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, driver, now(), serde_json::to_string(&labels).expect("labels serialise"), serde_json::to_string(&options).expect("options serialise"), anonymous],
        )?;
        self.volume(&name)
    }

    /// Mounts the filesystem a local volume was created with (`-o type=,device=,o=`) on
    /// its `_data`, the first time a container uses it; it stays mounted until the volume
    /// is removed. An image file as device is attached to a loop device first, as
    /// mount(8)'s `loop` option does; `o=bind` binds the device path.
    fn mount_local_options(&self, v: &Volume) -> Result<()> {
        let Some(fstype) = v.options.get("type") else {
            return Ok(());
        };
        let data = self.volume_data(&v.name);
        if mounted(&data) {
            return Ok(());
        }
        let io = |e: std::io::Error| EngineError::io(format!("mounting volume {}", v.name), e);
        let device = v
            .options
            .get("device")
            .cloned()
            .unwrap_or_else(|| fstype.clone());
        let mut opts: Vec<&str> = v
            .options
            .get("o")
            .map(|o| o.split(',').collect())
            .unwrap_or_default();
        let bind = opts.contains(&"bind");
        let mut flags = m::MountFlags::empty();
        if opts.contains(&"ro") {
            flags |= m::MountFlags::RDONLY;
        }
        opts.retain(|o| !["bind", "loop", "ro", "rw", ""].contains(o));
        if bind {
            return m::mount_bind(device.as_str(), &data).map_err(|e| io(e.into()));
        }
        let loop_dev = if Path::new(&device).is_file() {
            Some(strata_snapshot::loopdev::LoopDevice::attach(Path::new(&device)).map_err(io)?)
        } else {
            None
        };
        let source = loop_dev
            .as_ref()
            .map(|l| l.path().display().to_string())
            .unwrap_or(device);
        let data_opts =
            std::ffi::CString::new(opts.join(",")).map_err(|e| io(std::io::Error::other(e)))?;
        // With autoclear, the loop device goes when the mount does.
        m::mount(
            source.as_str(),
            &data,
            fstype.as_str(),
            flags,
            data_opts.as_c_str(),
        )
        .map_err(|e| io(e.into()))
    }

    /// The volume `name`, made (directory first, then its row) if it does not exist.
    fn ensure_volume(
        &self,
        name: &str,
        anonymous: bool,
        labels: &[(String, String)],
        options: &BTreeMap<String, String>,
    ) -> Result<()> {
        if self.volume_row(name).is_ok() {
            return Ok(());
        }
        let data = self.volume_data(name);
        std::fs::create_dir_all(&data)
            .map_err(|e| EngineError::io(format!("creating volume {name}"), e))?;
        let labels: BTreeMap<_, _> = labels.iter().cloned().collect();
        self.db.conn().execute(
            "INSERT OR IGNORE INTO volumes (name, driver, created, labels, options, anonymous) VALUES (?1, 'local', ?2, ?3, ?4, ?5)",
            params![name, now(), serde_json::to_string(&labels).expect("labels serialise"), serde_json::to_string(options).expect("options serialise"), anonymous],
        )?;
        Ok(())
    }

    /// Removes volumes by name: a volume any container uses is refused (with `force`, a
    /// missing one is not an error), and its data stays.
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let v = match self.volume_row(name) {
            Err(EngineError::NoSuchVolume(_)) if force => return Ok(()),
            other => other?,
        };
        let users: Vec<String> = {
            let conn = self.db.conn();
            let mut st =
                conn.prepare("SELECT DISTINCT container FROM container_volumes WHERE volume = ?1")?;
            let rows = st.query_map([name], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        self.drop_volume(&v.name)
    }

    /// The row first (refused by its foreign key if a container took the volume since),
    /// then the data.
    fn drop_volume(&self, name: &str) -> Result<()> {
        if let Ok(v) = self.volume_row(name) {
            if v.driver != "local" {
                crate::volume_plugin::Plugin::activate(&v.driver)?.remove(name)?;
            }
        }
        let deleted = self
            .db
            .conn()
            .execute("DELETE FROM volumes WHERE name = ?1", [name]);
        match deleted {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(EngineError::Conflict(format!(
                    "remove {name}: volume is in use"
                )));
            }
            other => other?,
        };
        self.remove_volume_dir(name)
    }

    /// Removes `ROOT/volumes/NAME`. A filesystem mounted on its `_data` (-o type=) is
    /// unmounted first: a removal never deletes through a mount.
    fn remove_volume_dir(&self, name: &str) -> Result<()> {
        let data = self.volume_data(name);
        for _ in 0..8 {
            if !mounted(&data) {
                let dir = self.root.join("volumes").join(name);
                return match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(EngineError::io(format!("removing volume {name}"), e))
                    }
                    _ => Ok(()),
                };
            }
            strata_snapshot::mount::unmount(&data)
                .map_err(|e| EngineError::io(format!("unmounting volume {name}"), e))?;
        }
        Err(EngineError::Store(format!(
            "volume {name}: {} stays mounted after 8 unmounts; unmount it by hand",
            data.display()
        )))
    }

    /// Volume directories no volume owns: a removal or creation interrupted between the
    /// row and the directory.
    pub(crate) fn orphan_volume_dirs(&self) -> Result<Vec<String>> {
        let known: std::collections::HashSet<String> =
            self.list_volumes()?.into_iter().map(|v| v.name).collect();
        let dir = self.root.join("volumes");
        let entries = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.map_err(|e| EngineError::io("listing volumes", e))?,
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !known.contains(n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes the directories [`Self::orphan_volume_dirs`] found.
    pub(crate) fn remove_orphan_volume_dirs(&self) -> Result<Vec<String>> {
        let orphans = self.orphan_volume_dirs()?;
        for name in &orphans {
            self.remove_volume_dir(name)?;
        }
        Ok(orphans)
    }

    /// Removes unused volumes: anonymous ones, or all with `all` (docker 23+). Returns the
    /// names and the bytes freed.
    pub fn prune_volumes(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let links = self.volume_links()?;
        let mut removed = Vec::new();
        let mut freed = 0;
        for v in self.list_volumes()? {
            if links.contains_key(&v.name) || !(all || v.anonymous) {
                continue;
            }
            let size = strata_snapshot::usage::tree_usage(Path::new(&v.mountpoint))
                .map(|u| u.size)
                .unwrap_or(0);
            match self.drop_volume(&v.name) {
                Ok(()) => {
                    freed += size;
                    removed.push(v.name);
                }
                Err(EngineError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((removed, freed))
    }

    /// Turns a container's mount requests into mount points: volumes named or made (an
    /// anonymous one per unnamed request and per image VOLUME not otherwise covered),
    /// binds checked, `--volumes-from` copied. Returns them with the volumes to link.
    pub(crate) fn resolve_mounts(
        &self,
        requested: Vec<MountPoint>,
        volumes_from: &[String],
        image_volumes: &[String],
    ) -> Result<Vec<MountPoint>> {
        let mut out: Vec<MountPoint> = Vec::new();
        for mp in requested {
            if out.iter().any(|o| o.destination == mp.destination) {
                return Err(invalid(format!(
                    "Duplicate mount point: {}",
                    mp.destination
                )));
            }
            out.push(mp);
        }
        for from in volumes_from {
            let (name, mode) = match from.rsplit_once(':') {
                Some((n, m @ ("ro" | "rw"))) => (n, Some(m)),
                _ => (from.as_str(), None),
            };
            let other = self.container(name)?;
            for mut mp in other.host.mount_points.clone() {
                if out.iter().any(|o| o.destination == mp.destination) {
                    continue;
                }
                if let Some(m) = mode {
                    mp.rw = m == "rw";
                }
                out.push(mp);
            }
        }
        for raw in image_volumes {
            let dst = destination(raw)?;
            if !out.iter().any(|o| o.destination == dst) {
                out.push(MountPoint {
                    kind: "volume".into(),
                    destination: dst,
                    rw: true,
                    ..Default::default()
                });
            }
        }
        for mp in &mut out {
            match mp.kind.as_str() {
                "volume" => {
                    let anonymous = mp.name.is_empty();
                    if anonymous {
                        mp.name = anonymous_name();
                    }
                    self.ensure_volume(&mp.name, anonymous, &[], &BTreeMap::new())?;
                }
                _ => {
                    // -v creates a missing host directory, as docker's does.
                    std::fs::create_dir_all(&mp.source).or_else(|e| {
                        if Path::new(&mp.source).exists() {
                            Ok(())
                        } else {
                            Err(EngineError::io(
                                format!("creating bind source {}", mp.source),
                                e,
                            ))
                        }
                    })?;
                }
            }
        }
        Ok(out)
    }

    /// Removes the anonymous volumes container `id` used and no other container uses
    /// (`rm -v`, `--rm`); named volumes and bind sources are never touched. Called after
    /// the container's row is gone.
    pub(crate) fn remove_anonymous_volumes(&self, mounts: &[MountPoint]) -> Result<()> {
        for mp in mounts.iter().filter(|m| m.kind == "volume") {
            let anonymous = self.volume_row(&mp.name).is_ok_and(|v| v.anonymous);
            if anonymous {
                match self.drop_volume(&mp.name) {
                    Ok(()) | Err(EngineError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Mounts a container's volumes and binds into its root filesystem at `rootfs`, each
    /// target resolved inside the root and mounted on the resolved fd. For a run (`run`
    /// set), an empty volume over image content is first filled with it (owners and modes
    /// kept) unless nocopy, and plugin volumes are mounted for container `id`; otherwise
    /// (`cp`) plugin volumes are left out and nothing is filled, as docker's `cp`.
    pub(crate) fn mount_volumes(
        &self,
        id: &str,
        mounts: &[MountPoint],
        rootfs: &Path,
        run: bool,
    ) -> Result<()> {
        let root =
            Root::open(rootfs).map_err(|e| EngineError::io("opening the container root", e))?;
        let mut ordered: Vec<&MountPoint> = mounts.iter().collect();
        // Parents before children: /data before /data/logs.
        ordered.sort_by_key(|m| m.destination.matches('/').count());
        for mp in ordered {
            let volume = match mp.kind.as_str() {
                "volume" => Some(self.volume_row(&mp.name)?),
                _ => None,
            };
            let plugin_volume = volume.as_ref().is_some_and(|v| v.driver != "local");
            if plugin_volume && !run {
                continue;
            }
            let rel = Path::new(mp.destination.trim_start_matches('/'));
            let source = match &volume {
                Some(v) if plugin_volume => {
                    crate::volume_plugin::Plugin::activate(&v.driver)?.mount(&v.name, id)?
                }
                Some(v) => {
                    self.mount_local_options(v)?;
                    self.volume_data(&v.name)
                }
                None => PathBuf::from(&mp.source),
            };
            let io = |what: &str, e: std::io::Error| {
                EngineError::io(format!("{what} for {}", mp.destination), e)
            };
            let rel = &in_root(&root, rel, 0).map_err(|e| io("resolving the mount point", e))?;
            let source_is_dir = source.is_dir();
            let target = if source_is_dir {
                root.open_dir(rel, true)
                    .map_err(|e| io("making the mount point", e))?
            } else {
                let parent = root
                    .open_dir(rel.parent().unwrap_or(Path::new("")), true)
                    .map_err(|e| io("making the mount point", e))?;
                let name = rel.file_name().unwrap_or_default();
                let _ = rustix::fs::openat(
                    &parent,
                    name,
                    rustix::fs::OFlags::CREATE
                        | rustix::fs::OFlags::WRONLY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::from_raw_mode(0o644),
                );
                root.open_at(rel, rustix::fs::OFlags::PATH)
                    .map_err(|e| io("opening the mount point", e))?
            };
            if run && volume.is_some() && !plugin_volume && !mp.no_copy && is_empty_dir(&source) {
                let from = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&target));
                strata_archive::copy_tree(Path::new(&from), &source)
                    .map_err(|e| io("filling the volume from the image", e))?;
            }
            let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
            if mp.kind == "bind" {
                flags |= OpenTreeFlags::AT_RECURSIVE;
            }
            let tree = m::open_tree(rustix::fs::CWD, &source, flags)
                .map_err(|e| io("opening the mount source", e.into()))?;
            set_tree_attrs(&tree, !mp.rw, &mp.propagation)
                .map_err(|e| io("setting the mount's attributes", e))?;
            m::move_mount(
                tree.as_fd(),
                "",
                target.as_fd(),
                "",
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
            )
            .map_err(|e| io("mounting", e.into()))?;
        }
        Ok(())
    }
}

impl Engine {
    /// Tells the plugins serving container `id`'s volumes that its run ended.
    pub(crate) fn unmount_plugin_volumes(&self, id: &str, mounts: &[MountPoint]) -> Result<()> {
        for mp in mounts.iter().filter(|m| m.kind == "volume") {
            let v = self.volume_row(&mp.name)?;
            if v.driver != "local" {
                crate::volume_plugin::Plugin::activate(&v.driver)?.unmount(&v.name, id)?;
            }
        }
        Ok(())
    }
}

/// Sets read-only and propagation on a detached mount tree, and all below it, before it is
/// attached.
fn set_tree_attrs(tree: &impl AsFd, readonly: bool, propagation: &str) -> std::io::Result<()> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let prop = match propagation.trim_start_matches('r') {
        "shared" => libc::MS_SHARED,
        "slave" => libc::MS_SLAVE,
        _ => libc::MS_PRIVATE,
    };
    let attr = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
    strata_exec::mount_attr::set(tree, attr, prop, true)
}

/// `rel` with every dangling symlink on its way replaced by its target, read inside the
/// root and clamped there (as the kernel resolves `RESOLVE_IN_ROOT`), so the mount point
/// can be made where the container will see it: runc makes it there too.
fn in_root(root: &Root, rel: &Path, depth: u32) -> std::io::Result<PathBuf> {
    use rustix::fs::OFlags;
    let mut prefix = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c);
        match root.open_at(&prefix, OFlags::PATH) {
            Ok(_) => continue,
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(e) => {
                let Ok(link) = root.open_at(&prefix, OFlags::PATH | OFlags::NOFOLLOW) else {
                    // A plain missing component: made later like the rest.
                    return Ok(rel.to_path_buf());
                };
                if depth >= 40 {
                    return Err(e);
                }
                let target = rustix::fs::readlinkat(&link, "", Vec::new())?;
                let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                let mut next = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    prefix.parent().unwrap_or(Path::new("")).to_path_buf()
                };
                next.push(target);
                next.extend(&comps[i + 1..]);
                return in_root(root, &clamp(&next), depth + 1);
            }
        }
    }
    Ok(rel.to_path_buf())
}

/// `p` made relative with `.` dropped and `..` applied, never above the top.
fn clamp(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Whether something is mounted on `p`, by the mount table: a bind from the same
/// filesystem has the same device number, so `stat` cannot tell.
fn mounted(p: &Path) -> bool {
    p.parent()
        .and_then(|dir| strata_snapshot::mount::mounts_under(dir).ok())
        .is_some_and(|m| m.iter().any(|t| t == p))
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

/// Records, in the transaction that writes container `id`'s row, which volumes it uses.
pub(crate) fn link_volumes(
    tx: &rusqlite::Connection,
    id: &str,
    mounts: &[MountPoint],
) -> rusqlite::Result<()> {
    for mp in mounts.iter().filter(|m| m.kind == "volume") {
        tx.execute(
            "INSERT INTO container_volumes (container, volume, destination) VALUES (?1, ?2, ?3)",
            params![id, mp.name, mp.destination],
        )?;
    }
    Ok(())
}
