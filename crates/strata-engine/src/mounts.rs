//! `image mount` / `image umount` (as podman's): an image's filesystem mounted read-only,
//! at a path printed for the user, until unmounted.

use crate::container_fs::is_mount_point;
use crate::error::{EngineError, Result};
use crate::records;
use crate::Engine;
use std::path::PathBuf;
use strata_store::Digest;

const IMAGE_MOUNT_PREFIX: &str = "image-mount-";

impl Engine {
    fn image_mount_point(&self, id: &Digest) -> PathBuf {
        self.root.join("mounts").join("images").join(id.hex())
    }

    /// Mounts image `name` read-only and returns where. Mounting a mounted image returns
    /// the same path.
    pub fn mount_image(&self, name: &str) -> Result<PathBuf> {
        let id = self.resolve_image(name)?;
        let img = records::image(&self.db, &id)?
            .ok_or_else(|| EngineError::NoSuchImage(name.to_string()))?;
        let top = img
            .top_layer
            .ok_or_else(|| EngineError::Invalid(format!("image {name} has no layers to mount")))?;
        let key = format!("{IMAGE_MOUNT_PREFIX}{}", id.hex());
        let target = self.image_mount_point(&id);
        if self.snapshots.exists(&key)? && is_mount_point(&target) {
            return Ok(target);
        }
        let mounts = match self.snapshots.exists(&key)? {
            true => self.snapshots.mounts(&key)?,
            false => self.snapshots.view(&key, Some(&top.to_string()))?,
        };
        std::fs::create_dir_all(&target)
            .map_err(|e| EngineError::io(format!("creating {}", target.display()), e))?;
        if let Err(e) = strata_snapshot::mount::mount_all(&mounts, &target) {
            let _ = self.snapshots.remove(&key);
            return Err(EngineError::io(format!("mounting image {name}"), e));
        }
        Ok(target)
    }

    pub fn unmount_image(&self, name: &str) -> Result<()> {
        let id = self.resolve_image(name)?;
        let key = format!("{IMAGE_MOUNT_PREFIX}{}", id.hex());
        if !self.snapshots.exists(&key)? {
            return Err(EngineError::Invalid(format!("image {name} is not mounted")));
        }
        let target = self.image_mount_point(&id);
        strata_snapshot::mount::unmount(&target)
            .map_err(|e| EngineError::io(format!("unmounting image {name}"), e))?;
        let _ = std::fs::remove_dir(&target);
        self.snapshots.remove(&key)?;
        Ok(())
    }

    pub(crate) fn is_image_mounted(&self, id: &Digest) -> Result<bool> {
        Ok(self
            .snapshots
            .exists(&format!("{IMAGE_MOUNT_PREFIX}{}", id.hex()))?)
    }
}
