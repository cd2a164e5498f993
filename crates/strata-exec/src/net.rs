//! The one piece of networking before bridge networks exist: a private network namespace
//! with its loopback interface up, as docker's `--network none` has it.
//!
//! The shim makes that namespace itself, before its container's config is even written,
//! and the spec joins it by path: creating a network namespace is the costliest single
//! step of a container's start (0.45-0.75 ms here, in the kernel's per-namespace setup),
//! and made this way it runs while the CLI still creates the container and mounts its root.

use rustix::fd::{AsFd, OwnedFd};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType, UnshareFlags};
use std::fs::File;

/// A new network namespace with `lo` up; this process stays in its own. The caller must
/// be single-threaded: the switch is per thread, and back again before returning.
pub fn private_namespace() -> std::io::Result<OwnedFd> {
    let ours = File::open("/proc/thread-self/ns/net")?;
    // SAFETY: only the network namespace is unshared (no fd table is split), and the
    // thread moves back into `ours` below.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
    let made = set_up("lo").and_then(|()| File::open("/proc/thread-self/ns/net"));
    move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::Network))?;
    Ok(made?.into())
}

/// SIOCGIFFLAGS/SIOCSIFFLAGS on an AF_INET socket: rustix has no interface-flag calls.
fn set_up(name: &str) -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name fits (checked).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        let mut res = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if res == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            res = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if res != 0 {
            return Err(err);
        }
    }
    Ok(())
}
