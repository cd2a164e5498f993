//! Whiteout vocabulary. In a layer tar a deleted `NAME` is an empty file `.wh.NAME` and an
//! opaque directory holds `.wh..wh..opq`; `.wh..wh.*` names are aufs metadata. On disk each
//! driver keeps them in its own form.

pub const PREFIX: &str = ".wh.";
pub const META_PREFIX: &str = ".wh..wh.";
pub const OPAQUE: &str = ".wh..wh..opq";
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// How a directory tree stores deletions relative to the layers below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// The tree is a full view (vfs, btrfs, a mounted union): a whiteout deletes the path.
    Apply,
    /// Kernel overlayfs upper dir: char device 0/0, opaque dirs by xattr.
    Overlay,
    /// aufs branch: whiteouts are kept as the `.wh.` files themselves.
    Aufs,
    /// Not a layer at all (`cp`): `.wh.` names are ordinary files.
    Literal,
}
