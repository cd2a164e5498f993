//! mount_setattr(2) on a detached mount tree: attributes and propagation set on the tree
//! itself, so no path is looked up again. Written by hand because rustix has no wrapper.

use std::os::fd::{AsFd, AsRawFd};

/// `struct mount_attr`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets `attr_set` (`MOUNT_ATTR_*` bits) and `propagation` (`MS_SHARED`, `MS_SLAVE`,
/// `MS_PRIVATE`, or 0 to leave it) on the mount `tree` refers to, and on every mount below
/// it with `recursive`.
pub fn set(
    tree: &impl AsFd,
    attr_set: u64,
    propagation: u64,
    recursive: bool,
) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: a valid fd, an empty C path with AT_EMPTY_PATH, and a struct mount_attr of
    // the size passed; nothing is kept past the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
