//! Containers on disk: an image plus a thin writable layer (an active snapshot keyed by the
//! container ID on the image's top layer), with a record of its config. Running processes
//! in them is the exec driver's job; everything here works on stopped containers.

use crate::container_fs::is_mount_point;
use crate::error::{EngineError, Result};
use crate::records::{self, now};
use crate::{names, Engine};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use strata_snapshot::{PrepareOpts, SnapshotError};
use strata_store::{Db, Digest};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    image       TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
    image_name  TEXT NOT NULL,
    config      TEXT NOT NULL,
    created     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('created', 'removing')),
    mount_count INTEGER NOT NULL DEFAULT 0,
    auto_remove INTEGER NOT NULL DEFAULT 0,
    host_config TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS containers_image ON containers(image);
";

/// The part of a container's config docker keeps in `Config`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub image: String,
    pub working_dir: String,
    pub entrypoint: Vec<String>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
}

/// How a container runs, as docker's `HostConfig` (the part strata implements).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// Runtime name (`native`, `runc`, or one added with `--add-runtime`) and its binary.
    pub runtime: String,
    pub runtime_path: Option<PathBuf>,
    /// `none` (a private namespace with loopback only; the default until networks exist),
    /// `host`, or `container:NAME`.
    pub network_mode: String,
    pub pid_mode: String,
    pub ipc_mode: String,
    pub uts_mode: String,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    /// The seccomp profile given with `seccomp=FILE`, read at create time as docker does.
    pub seccomp_profile: Option<String>,
    pub readonly_rootfs: bool,
    pub tmpfs: BTreeMap<String, String>,
    pub extra_hosts: Vec<String>,
    pub restart_policy: RestartPolicyConfig,
    pub shm_size: u64,
    /// `--init`: an init (tini, as docker's docker-init) runs as PID 1 and forwards
    /// signals to the command and reaps orphans.
    pub init: bool,
    /// `--storage-opt KEY=VALUE` for the writable layer (`size`, where the driver
    /// enforces it).
    pub storage_opt: BTreeMap<String, String>,
    /// `-v` as given (docker's `Binds`).
    pub binds: Vec<String>,
    /// `--volumes-from CONTAINER[:ro|rw]`.
    pub volumes_from: Vec<String>,
    /// The volumes and binds resolved at create time, mounted at every start.
    pub mount_points: Vec<crate::volumes::MountPoint>,
    #[serde(flatten)]
    pub resources: strata_exec::spec::Resources,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicyConfig {
    pub name: String,
    pub maximum_retry_count: u32,
}

/// What `create` is asked for, beyond the image's defaults.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub image: String,
    /// Replaces the image's Cmd when not empty.
    pub cmd: Vec<String>,
    /// `Some("")` clears the image's entrypoint.
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub labels: Vec<(String, String)>,
    pub hostname: Option<String>,
    /// `--rm`: removed when it exits; its writable layer is not synced (overlay volatile).
    pub auto_remove: bool,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<i64>,
    pub tty: bool,
    pub open_stdin: bool,
    /// Close stdin when the first attached client's ends (`run -i` in the foreground).
    pub stdin_once: bool,
    pub host: HostConfig,
    /// `--mount` as given.
    pub mounts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: Digest,
    /// The image as the user named it at create time.
    pub image_name: String,
    pub config: ContainerConfig,
    pub created: String,
    pub mount_count: u32,
    pub auto_remove: bool,
    pub host: HostConfig,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Entrypoint and Cmd together, as docker shows COMMAND.
    pub fn command(&self) -> Vec<String> {
        self.config
            .entrypoint
            .iter()
            .chain(self.config.cmd.iter())
            .cloned()
            .collect()
    }
}

/// A container's writable layer and the image below it, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ContainerSize {
    pub rw: u64,
    pub root_fs: u64,
}

fn container_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Container> {
    let image: String = r.get(2)?;
    let config: String = r.get(4)?;
    Ok(Container {
        id: r.get(0)?,
        name: r.get(1)?,
        image: image.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        image_name: r.get(3)?,
        config: serde_json::from_str(&config).unwrap_or_default(),
        created: r.get(5)?,
        mount_count: r.get::<_, i64>(6)? as u32,
        auto_remove: r.get::<_, i64>(7)? != 0,
        host: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
    })
}

const COLS: &str =
    "id, name, image, image_name, config, created, mount_count, auto_remove, host_config";

pub(crate) fn all(db: &Db) -> Result<Vec<Container>> {
    let conn = db.conn();
    let mut st = conn.prepare(&format!(
        "SELECT {COLS} FROM containers WHERE state = 'created' ORDER BY created DESC, id"
    ))?;
    let rows = st
        .query_map([], container_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn using_image(db: &Db, image: &Digest) -> Result<Vec<String>> {
    let conn = db.conn();
    let mut st = conn.prepare("SELECT id FROM containers WHERE image = ?1")?;
    let rows = st
        .query_map([image.to_string()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(rows)
}

impl Engine {
    /// Finds a container by full or unique short ID, or by name (with or without `/`).
    pub fn container(&self, name_or_id: &str) -> Result<Container> {
        let key = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        let conn = self.db.conn();
        // Cached: one command looks its container up several times.
        let mut by_key = conn.prepare_cached(&format!(
            "SELECT {COLS} FROM containers WHERE state = 'created' AND (id = ?1 OR name = ?1)"
        ))?;
        if let Some(c) = by_key.query_row([key], container_row).optional()? {
            return Ok(c);
        }
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut st = conn.prepare(&format!(
                "SELECT {COLS} FROM containers WHERE state = 'created' AND substr(id, 1, ?2) = ?1"
            ))?;
            let found = st
                .query_map(params![key, key.len() as i64], container_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            match found.len() {
                1 => return Ok(found.into_iter().next().expect("one")),
                n if n > 1 => {
                    return Err(EngineError::Invalid(format!(
                        "container ID prefix {key:?} is ambiguous: give more digits"
                    )))
                }
                _ => {}
            }
        }
        Err(EngineError::NoSuchContainer(name_or_id.to_string()))
    }

    pub fn list_containers(&self) -> Result<Vec<Container>> {
        all(&self.db)
    }

    /// `create`: records a container and prepares its writable layer. Returns its ID.
    pub fn create_container(&self, opts: &CreateOptions) -> Result<Container> {
        self.operation("create", || self.create_container_inner(opts))
    }

    fn create_container_inner(&self, opts: &CreateOptions) -> Result<Container> {
        let image = self.resolve_image(&opts.image)?;
        let img = records::image(&self.db, &image)?
            .ok_or_else(|| EngineError::NoSuchImage(opts.image.clone()))?;
        let cfg = self.config_of(&image)?;
        let icfg = cfg.oci.config().clone().unwrap_or_default();
        let id = hex_id();
        let mut config = ContainerConfig {
            hostname: opts
                .hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_string()),
            user: opts
                .user
                .clone()
                .or_else(|| icfg.user().clone())
                .unwrap_or_default(),
            env: icfg.env().clone().unwrap_or_default(),
            cmd: icfg.cmd().clone().unwrap_or_default(),
            image: opts.image.clone(),
            working_dir: opts
                .working_dir
                .clone()
                .or_else(|| icfg.working_dir().clone())
                .unwrap_or_default(),
            entrypoint: icfg.entrypoint().clone().unwrap_or_default(),
            labels: icfg
                .labels()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            stop_signal: icfg.stop_signal().clone(),
            ..Default::default()
        };
        if let Some(ep) = &opts.entrypoint {
            // As docker: a new entrypoint drops the image's Cmd unless one is given.
            config.entrypoint = if ep.is_empty() {
                Vec::new()
            } else {
                vec![ep.clone()]
            };
            config.cmd = Vec::new();
        }
        if !opts.cmd.is_empty() {
            config.cmd = opts.cmd.clone();
        }
        for e in &opts.env {
            let key = e.split('=').next().unwrap_or(e);
            config.env.retain(|x| x.split('=').next() != Some(key));
            config.env.push(e.clone());
        }
        for (k, v) in &opts.labels {
            config.labels.insert(k.clone(), v.clone());
        }
        if opts.stop_signal.is_some() {
            config.stop_signal = opts.stop_signal.clone();
        }
        config.stop_timeout = opts.stop_timeout;
        config.tty = opts.tty;
        config.open_stdin = opts.open_stdin;
        config.stdin_once = opts.stdin_once;
        let mut host = self.complete_host_config(&opts.host)?;
        let mut requested = Vec::new();
        for b in &host.binds {
            requested.push(crate::volumes::parse_volume_flag(b)?);
        }
        for m in &opts.mounts {
            match crate::volumes::parse_mount_flag(m)? {
                crate::volumes::ParsedMount::Mount { mount, volume_opts } => {
                    // volume-opt= configures a named volume this mount creates, as docker.
                    if !volume_opts.is_empty() && self.volume_row(&mount.name).is_err() {
                        self.create_volume(&crate::volumes::VolumeOptions {
                            name: (!mount.name.is_empty()).then(|| mount.name.clone()),
                            options: volume_opts,
                            ..Default::default()
                        })?;
                    }
                    requested.push(mount)
                }
                crate::volumes::ParsedMount::Tmpfs {
                    destination,
                    options,
                } => {
                    host.tmpfs.insert(destination, options);
                }
            }
        }
        let mut size_limit = None;
        for (k, v) in &host.storage_opt {
            match k.as_str() {
                "size" => {
                    size_limit = Some(
                        strata_store::units::parse_bytes(v)
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                EngineError::Invalid(format!(
                                    "invalid --storage-opt size={v}: give a size, e.g. size=10G"
                                ))
                            })? as u64,
                    )
                }
                other => {
                    return Err(EngineError::Invalid(format!(
                        "unknown --storage-opt {other:?}: a container takes size=SIZE"
                    )))
                }
            }
        }
        if config.entrypoint.is_empty() && config.cmd.is_empty() {
            return Err(EngineError::Invalid(
                "no command specified: the image has no CMD or ENTRYPOINT; give a command".into(),
            ));
        }
        let name = match &opts.name {
            Some(n) => {
                if !names::valid(n) {
                    return Err(EngineError::Invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.clone()
            }
            None => self.free_name()?,
        };
        host.mount_points = self.resolve_mounts(
            requested,
            &host.volumes_from,
            &icfg.volumes().clone().unwrap_or_default(),
        )?;
        let made: Result<()> = {
            let parent = img.top_layer.map(|t| t.to_string());
            let mut prepare = PrepareOpts {
                size_limit,
                ..Default::default()
            };
            if opts.auto_remove {
                prepare.labels.push((
                    strata_snapshot::VOLATILE_LABEL.to_string(),
                    "true".to_string(),
                ));
            }
            // The row and the volumes it uses are recorded with the writable layer's
            // snapshot, in one transaction.
            let record = |tx: &rusqlite::Transaction<'_>| -> rusqlite::Result<()> {
                tx.execute(
                    "INSERT INTO containers (id, name, image, image_name, config, created, state, auto_remove, host_config) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'created', ?7, ?8)",
                    params![id, name, image.to_string(), opts.image, serde_json::to_string(&config).expect("config serialises"), now(), opts.auto_remove, serde_json::to_string(&host).expect("host config serialises")],
                )?;
                crate::volumes::link_volumes(tx, &id, &host.mount_points)
            };
            match self
                .snapshots
                .prepare_with(&id, parent.as_deref(), &prepare, record)
            {
                Ok(_) => Ok(()),
                Err(SnapshotError::Db(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(EngineError::Conflict(match self.container(&name) {
                        Ok(other) => format!(
                            "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                            other.id
                        ),
                        // The other constraint: a volume it names was removed meanwhile.
                        Err(_) => format!(
                            "a volume of container {name} was removed while it was created: create it again"
                        ),
                    }))
                }
                Err(e) => {
                    // The records were committed when the storage failed after them: the
                    // snapshotter removed its own, the row goes too.
                    let _ = delete_row(&self.db.conn(), &id);
                    Err(e.into())
                }
            }
        };
        if made.is_err() {
            // Volumes are made before the row names them: the anonymous ones go again.
            let _ = self.remove_anonymous_volumes(&host.mount_points);
        }
        made?;
        self.container(&id)
    }

    fn free_name(&self) -> Result<String> {
        for attempt in 0..20 {
            let n = names::generate(attempt / 5);
            let taken: bool = self.db.conn().query_row(
                "SELECT EXISTS(SELECT 1 FROM containers WHERE name = ?1)",
                [&n],
                |r| r.get(0),
            )?;
            if !taken {
                return Ok(n);
            }
        }
        Ok(format!("strata_{}", &hex_id()[..12]))
    }

    /// Removes a container and its writable layer. A mounted container is unmounted first;
    /// a running one is refused unless `force`, which kills it first.
    /// With `volumes` (`rm -v`, `--rm`), the anonymous volumes only it used go too.
    pub fn remove_container(
        &self,
        name_or_id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<Container> {
        let c = self.container(name_or_id)?;
        if self.run_state(&c)?.active() {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.name
                )));
            }
            self.stop_container(&c.id, Some(0))?;
        }
        self.remove_run_state(&c);
        let op = records::begin_operation(&self.db, "rm")?;
        let removed = self.delete_container(&c).and_then(|()| {
            if volumes {
                self.remove_anonymous_volumes(&c.host.mount_points)?;
            }
            Ok(())
        });
        // A writable layer whose record went but whose storage did not stays announced:
        // the next recovery removes it.
        if removed.is_ok() || self.container(&c.id).is_ok() {
            records::end_operation(&self.db, op)?;
        }
        removed.map(|()| c)
    }

    /// Unmounts a container and removes its mount point, then deletes its row with its
    /// writable layer's record in one (synced) transaction, then the layer's storage.
    /// A crash after the transaction leaves only storage no record owns, which recovery
    /// removes (`remove_orphans`): the container is gone either way.
    pub(crate) fn delete_container(&self, c: &Container) -> Result<()> {
        let id = c.id.as_str();
        let target = self.container_mount_point(id);
        let dir = target.parent().expect("mount point has a parent");
        // The mount point is only ever written through a mount: unmounted, it is an empty
        // directory with nothing mounted below it, and its directory can be set aside
        // whole; mounted, it can when the trash's sweep is to unmount it
        // (`root_goes_mounted`). Otherwise (or when not deferring) only known, empty
        // entries go: never a recursive delete next to a mount point.
        let aside = (!is_mount_point(&target) || self.root_goes_mounted(c)) && self.set_aside(dir);
        if !aside {
            // An empty directory that is no mount point has nothing mounted in or below
            // it: removed first, it spares the unmount's work when the run's end
            // unmounted it.
            if std::fs::remove_dir(&target).is_err() {
                self.unmount_tree(&target)?;
                let _ = std::fs::remove_dir(&target);
            }
            // The lock file of a store from before directories were locked themselves.
            let _ = std::fs::remove_file(dir.join("lock"));
            let _ = std::fs::remove_dir(dir);
        }
        let slot = self.trash_slot();
        match self
            .snapshots
            .remove_record_first_with(id, slot.as_deref(), |tx| delete_row(tx, id))
        {
            Ok(retired) => {
                if let (true, Some(slot)) = (retired, slot) {
                    self.note_retired(slot);
                }
                Ok(())
            }
            Err(SnapshotError::NotFound(_)) => Ok(delete_row(&self.db.conn(), id)?),
            Err(e) => Err(e.into()),
        }
    }

    pub fn rename_container(&self, old: &str, new: &str) -> Result<()> {
        let c = self.container(old)?;
        if !names::valid(new) {
            return Err(EngineError::Invalid(format!(
                "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        match self.db.conn().execute("UPDATE containers SET name = ?1 WHERE id = ?2", [new, &c.id]) {
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Err(EngineError::Conflict(format!(
                "Error when allocating new name: Conflict. The container name \"/{new}\" is already in use"
            ))),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// The size of a container's writable layer and of everything it sees.
    pub fn container_size(&self, c: &Container) -> Result<ContainerSize> {
        Ok(self.container_sizes(std::slice::from_ref(c))?[0])
    }

    /// `container_size` for many containers with a fixed number of queries: `ps -s` stays
    /// fast with thousands of containers (each costs one walk of its own writable layer).
    pub fn container_sizes(&self, cs: &[Container]) -> Result<Vec<ContainerSize>> {
        let image_sizes: std::collections::HashMap<Digest, u64> = records::images(&self.db)?
            .into_iter()
            .map(|i| (i.id, i.size))
            .collect();
        let keys: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
        let rws = self.snapshots.changes_sizes(&keys)?;
        Ok(cs
            .iter()
            .zip(rws)
            .map(|(c, rw)| {
                let rw = rw.unwrap_or(0);
                ContainerSize {
                    rw,
                    root_fs: rw + image_sizes.get(&c.image).copied().unwrap_or(0),
                }
            })
            .collect())
    }

    pub(crate) fn container_mount_point(&self, id: &str) -> PathBuf {
        self.root
            .join("mounts")
            .join("containers")
            .join(id)
            .join("merged")
    }

    /// Where a container's layers are, as docker's GraphDriver.Data shows them.
    pub fn container_graph_data(&self, c: &Container) -> Result<serde_json::Value> {
        let mut data = serde_json::Map::new();
        for m in self.snapshots.mounts(&c.id)? {
            for o in &m.options {
                if let Some((k, v)) = o.split_once('=') {
                    let key = match k {
                        "lowerdir+" => "LowerDir",
                        "upperdir" => "UpperDir",
                        "workdir" => "WorkDir",
                        _ => continue,
                    };
                    let entry = data
                        .entry(key.to_string())
                        .or_insert_with(|| serde_json::Value::String(String::new()));
                    let joined = match entry.as_str() {
                        Some("") | None => v.to_string(),
                        Some(prev) => format!("{prev}:{v}"),
                    };
                    *entry = serde_json::Value::String(joined);
                }
            }
            if m.kind == "bind" {
                data.insert("UpperDir".into(), m.source.clone().into());
            }
        }
        data.insert(
            "MergedDir".into(),
            self.container_mount_point(&c.id)
                .display()
                .to_string()
                .into(),
        );
        Ok(serde_json::Value::Object(data))
    }
}

/// A new container ID: 64 random hex digits that do not look like a number.
fn hex_id() -> String {
    loop {
        let id = format!(
            "{:032x}{:032x}",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        // docker avoids all-digit short IDs (they read as numbers).
        if id[..12].bytes().any(|b| b.is_ascii_alphabetic()) {
            return id;
        }
    }
}

impl Engine {
    /// `inspect` of a container, in docker's JSON shape (with sizes when `size` is set).
    pub fn inspect_container(&self, name_or_id: &str, size: bool) -> Result<serde_json::Value> {
        let c = self.container(name_or_id)?;
        let cmd = c.command();
        let (path, args) = match cmd.split_first() {
            Some((p, a)) => (p.clone(), a.to_vec()),
            None => (String::new(), Vec::new()),
        };
        const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
        let st = self.run_state(&c)?;
        let running = st.status == strata_exec::state::Status::Running;
        let paused = running && self.is_paused(&c);
        let restarting = st.status == strata_exec::state::Status::Restarting;
        let status = match st.status {
            _ if paused => "paused",
            strata_exec::state::Status::Restarting => "restarting",
            strata_exec::state::Status::Running => "running",
            strata_exec::state::Status::Exited => "exited",
            strata_exec::state::Status::Created => "created",
        };
        let time = |t: &str| {
            if t.is_empty() {
                ZERO_TIME.to_string()
            } else {
                t.to_string()
            }
        };
        let dir = self.run_dir(&c.id);
        let file = |name: &str| {
            let p = dir.join(name);
            if p.exists() {
                p.display().to_string()
            } else {
                String::new()
            }
        };
        let mut host = serde_json::to_value(&c.host).expect("host config serialises");
        host["AutoRemove"] = c.auto_remove.into();
        let mut v = serde_json::json!({
            "Id": c.id,
            "Created": c.created,
            "Path": path,
            "Args": args,
            "State": {
                "Status": status, "Running": running, "Paused": paused, "Restarting": restarting,
                "OOMKilled": st.oom_killed, "Dead": false, "Pid": if running { st.pid } else { 0 },
                "ExitCode": st.exit_code, "Error": st.error,
                "StartedAt": time(&st.started_at), "FinishedAt": time(&st.finished_at)
            },
            "Image": c.image.to_string(),
            "ResolvConfPath": file("resolv.conf"),
            "HostnamePath": file("hostname"),
            "HostsPath": file("hosts"),
            "LogPath": file(strata_exec::state::LOG_FILE),
            "Name": format!("/{}", c.name),
            "RestartCount": st.restart_count,
            "Driver": self.driver,
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": null,
            "HostConfig": host,
            "GraphDriver": {"Data": self.container_graph_data(&c)?, "Name": self.driver},
            "Mounts": c.host.mount_points.iter().map(|m| {
                // A volume's driver and place come from the volume (a plugin says where).
                let volume = (m.kind == "volume").then(|| self.volume(&m.name).ok()).flatten();
                serde_json::json!({
                    "Type": m.kind,
                    "Name": (m.kind == "volume").then_some(&m.name),
                    "Source": volume.as_ref().map_or(m.source.clone(), |v| v.mountpoint.clone()),
                    "Destination": m.destination,
                    "Driver": volume.as_ref().map_or("", |v| v.driver.as_str()),
                    "Mode": if m.rw { "rw" } else { "ro" },
                    "RW": m.rw,
                    "Propagation": if m.kind == "volume" { String::new() } else if m.propagation.is_empty() { "rprivate".to_string() } else { m.propagation.clone() },
                })
            }).collect::<Vec<_>>(),
            "Config": c.config,
            "NetworkSettings": {"Networks": {}},
        });
        if size {
            let s = self.container_size(&c)?;
            v["SizeRw"] = s.rw.into();
            v["SizeRootFs"] = s.root_fs.into();
        }
        Ok(v)
    }
}

/// Deletes container `id`'s row (in a transaction or on its own).
fn delete_row(conn: &rusqlite::Connection, id: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM containers WHERE id = ?1", [id])?;
    Ok(())
}
