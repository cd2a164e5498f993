//! Crash recovery: finishing or rolling back what a process killed mid-operation left.
//!
//! Every mutating operation is written to the intent log (`operations`) while it runs. A
//! process that opens the store while no other strata process is working (it can take the
//! store lock exclusively) and finds entries there knows their processes died, and cleans
//! up; otherwise opening costs one indexed query.
//!
//! The first such process after a reboot also finishes what the reboot ended
//! ([`Engine::end_last_boot`]).

use crate::error::{EngineError, Result};
use crate::records;
use crate::{Engine, EXTRACT_PREFIX};
use std::collections::HashSet;
use std::path::PathBuf;
use strata_snapshot::Kind;

/// Where the kernel gives the current boot's random id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The meta key recording the boot in which the store was last recovered.
const BOOT_KEY: &str = "boot_id";

impl Engine {
    pub(crate) fn recover(&self) -> Result<()> {
        // Trees set aside for deletion that nobody deleted: their shim was killed first.
        self.empty_trash();
        let boot = std::fs::read_to_string(BOOT_ID).ok();
        let boot = boot.as_deref().map(str::trim);
        let last = self.db.get_meta(BOOT_KEY)?;
        let rebooted = last.is_some() && boot.is_some() && last.as_deref() != boot;
        if rebooted {
            self.end_last_boot()?;
        }
        if rebooted || !records::interrupted_operations(&self.db)?.is_empty() {
            self.clean_leftovers()?;
            records::clear_operations(&self.db)?;
        }
        // Recorded last: recovery that fails part-way is tried again by the next process.
        // A store first seen in this boot only records it.
        match boot {
            Some(b) if last.as_deref() != Some(b) => Ok(self.db.set_meta(BOOT_KEY, b)?),
            _ => Ok(()),
        }
    }

    /// When the store was last recovered in another boot, nothing of that boot runs any
    /// more. Its containers' runtime state is dropped unread (the pids in it may name
    /// other processes now), and its `--rm` containers are removed, as docker removes them
    /// on restart, including one whose removal a power cut lost (a volatile snapshot's
    /// records are not synced: `Snapshotter::write_for`). What such a cut left of a `--rm`
    /// container whose creation it lost, storage and directories no record owns, goes
    /// with the leftovers of interrupted work (`recover`).
    fn end_last_boot(&self) -> Result<()> {
        strata_exec::runtime::forget_all(&self.runtime_state_dir())
            .map_err(|e| EngineError::io("dropping the last boot's runtime state", e))?;
        for c in crate::containers::all(&self.db)? {
            if c.auto_remove {
                self.remove_container(&c.id, true, true)?;
            }
        }
        Ok(())
    }

    /// Container directories (run state, mount point) that no container owns: what a
    /// power cut leaves of a `--rm` container whose unsynced record it lost.
    pub(crate) fn orphan_container_dirs(&self) -> Result<Vec<PathBuf>> {
        let known: HashSet<String> = {
            let conn = self.db.conn();
            let mut st = conn.prepare("SELECT id FROM containers")?;
            let ids = st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        };
        let mut orphans = Vec::new();
        for dir in [
            self.root.join("containers"),
            self.root.join("mounts").join("containers"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_name().to_str().is_some_and(|n| known.contains(n)) {
                    orphans.push(e.path());
                }
            }
        }
        Ok(orphans)
    }

    /// Committed snapshots that are no layer (and active `extract-` ones), newest first so
    /// children come before their parents.
    pub(crate) fn stray_snapshots(&self) -> Result<Vec<String>> {
        let layers: HashSet<String> = records::all_layers(&self.db)?
            .iter()
            .map(|l| l.chain_id.to_string())
            .collect();
        let mut stray = Vec::new();
        self.snapshots.walk(&mut |info| {
            if !layers.contains(&info.name)
                && (info.kind == Kind::Committed || info.name.starts_with(EXTRACT_PREFIX))
            {
                stray.push(info.name.clone());
            }
            Ok(())
        })?;
        stray.reverse();
        Ok(stray)
    }

    /// Removes everything interrupted work can leave: half-applied layers, snapshots and
    /// storage no record owns, abandoned ingests, half-removed images, layers no image uses,
    /// blobs nothing points to, stray temporary mounts. Returns what it removed.
    pub(crate) fn clean_leftovers(&self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let mounts = self.tmp_dir().join("mounts");
        if let Ok(rd) = std::fs::read_dir(&mounts) {
            for e in rd.flatten() {
                let _ = strata_snapshot::mount::unmount(&e.path());
                let _ = std::fs::remove_dir(e.path());
            }
        }
        for s in self.stray_snapshots()? {
            self.snapshots.remove(&s)?;
            done.push(format!("snapshot {s}"));
        }
        for dir in self.orphan_container_dirs()? {
            self.throw_away(&dir)
                .map_err(|e| EngineError::io(format!("removing {}", dir.display()), e))?;
            done.push(format!("container directory {}", dir.display()));
        }
        self.empty_trash();
        done.extend(
            self.remove_orphan_volume_dirs()?
                .iter()
                .map(|v| format!("volume directory {v}")),
        );
        done.extend(
            self.snapshots
                .remove_orphans()?
                .iter()
                .map(|id| format!("storage #{id}")),
        );
        for p in self
            .content
            .abandoned_ingests()
            .map_err(|e| EngineError::io("listing ingests", e))?
        {
            std::fs::remove_file(&p)
                .map_err(|e| EngineError::io(format!("removing {}", p.display()), e))?;
            done.push(format!("ingest {}", p.display()));
        }
        records::finish_removals(&self.db)?;
        done.extend(self.gc_layers()?.iter().map(|l| format!("layer {l}")));
        Ok(done)
    }
}
