//! Crash recovery: finishing or rolling back what a process killed mid-operation left.
//!
//! Every mutating operation is written to the intent log (`operations`) while it runs. A
//! process that opens the store while no other strata process is working (it can take the
//! store lock exclusively) and finds entries there knows their processes died, and cleans
//! up; otherwise opening costs one indexed query.

use crate::error::{EngineError, Result};
use crate::records;
use crate::{Engine, EXTRACT_PREFIX};
use std::collections::HashSet;
use strata_snapshot::Kind;

impl Engine {
    pub(crate) fn recover(&self) -> Result<()> {
        // Trees set aside for deletion that nobody deleted: their shim was killed first.
        self.empty_trash();
        if records::interrupted_operations(&self.db)?.is_empty() {
            return Ok(());
        }
        self.clean_leftovers()?;
        records::clear_operations(&self.db)
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
