//! Deletion deferred past the command that removes. While deferring, a removal moves the
//! directory trees it would delete into the store's trash (`ROOT/trash`, one fresh name
//! each) once their records are gone, and hands the list to whoever has time to delete
//! them: a foreground `run --rm` passes it to the container's shim, which deletes them
//! after the CLI has returned (as containerd's snapshotters leave removed storage to a
//! later cleanup). On this machine's filesystem every directory deleted costs a
//! synchronous block discard, and a container leaves about ten. A `run --rm` container's
//! root may go to the trash still mounted ([`Engine::root_goes_mounted`]): the sweep
//! unmounts what is mounted in a tree before deleting it, so the command does not wait for
//! the unmount's RCU grace periods either.
//!
//! Trash is invisible to everything else: nothing refers to it, and what a shim killed
//! mid-way leaves there is deleted by the next process that opens the store alone
//! ([`Engine::empty_trash`]).

use crate::{Container, Engine};
use std::io;
use std::path::{Path, PathBuf};

impl Engine {
    /// From now on, this process's removals set directory trees aside in the trash
    /// instead of deleting them; [`Engine::take_retired`] gives them.
    pub fn defer_deletions(&self) {
        *self.retired.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// What was set aside since [`Engine::defer_deletions`], for the caller to delete or
    /// hand over; deferral ends.
    pub fn take_retired(&self) -> Vec<PathBuf> {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// Whether this process's removals are setting trees aside.
    fn deferring(&self) -> bool {
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether removing container `c` now may set its root aside still mounted, for the
    /// trash's sweep to unmount (`strata_exec::trash::sweep`): while deferring, with a
    /// driver whose mounts need nothing of it to go away, and with no volumes mounted
    /// below the root, which have unmounting of their own (plugins).
    pub(crate) fn root_goes_mounted(&self, c: &Container) -> bool {
        c.host.mount_points.is_empty()
            && self.snapshots.driver().mount_goes_with_retired_storage()
            && self.deferring()
    }

    /// Where removals set trees aside (`ROOT/trash`).
    pub fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// A fresh name in the trash while deferring (the trash made if need be).
    pub(crate) fn trash_slot(&self) -> Option<PathBuf> {
        self.retired.lock().ok()?.as_ref()?;
        self.fresh_trash_name().ok()
    }

    /// A fresh name in the trash (the trash made if need be).
    fn fresh_trash_name(&self) -> io::Result<PathBuf> {
        let trash = self.trash_dir();
        std::fs::create_dir_all(&trash)?;
        Ok(trash.join(format!("{:016x}", rand::random::<u64>())))
    }

    /// Moves `dir` into the trash, for [`Engine::empty_trash`] to delete with the rest
    /// (it unmounts what is mounted in it first, and leaves alone what stays busy).
    pub(crate) fn throw_away(&self, dir: &Path) -> io::Result<()> {
        std::fs::rename(dir, self.fresh_trash_name()?)
    }

    /// Records `path` as set aside.
    pub(crate) fn note_retired(&self, path: PathBuf) {
        if let Some(list) = self
            .retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            list.push(path);
        }
    }

    /// While deferring, moves `dir` into the trash and records it; whether it did. Only
    /// for trees nothing is mounted in, or whose mounts the sweep may undo
    /// (`root_goes_mounted`).
    pub(crate) fn set_aside(&self, dir: &Path) -> bool {
        let Some(slot) = self.trash_slot() else {
            return false;
        };
        let moved = std::fs::rename(dir, &slot).is_ok();
        if moved {
            self.note_retired(slot);
        }
        moved
    }

    /// Deletes the tree at `dir` (gone already is fine), or sets it aside while deferring.
    /// Only for trees nothing is mounted in.
    pub(crate) fn delete_tree(&self, dir: &Path) -> io::Result<()> {
        if self.set_aside(dir) {
            return Ok(());
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes what is left in the trash: trees set aside that nobody deleted (their shim
    /// was killed first). Run by a process that has the store to itself (recovery): one
    /// directory read when there is nothing.
    pub(crate) fn empty_trash(&self) {
        let trash = self.trash_dir();
        if let Ok(rd) = std::fs::read_dir(&trash) {
            let left: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            strata_exec::trash::sweep(&trash, &left);
        }
    }
}
