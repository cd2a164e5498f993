//! The one piece of networking before bridge networks exist: a private network namespace
//! gets its loopback interface up, as docker's `--network none` has it.

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::fs::File;
use std::os::fd::AsFd;

/// Brings `lo` up in the network namespace of process `pid`, then returns to ours. The
/// shim is single-threaded, so switching its namespace affects nothing else.
pub fn loopback_up(pid: i32) -> std::io::Result<()> {
    let ours = File::open("/proc/self/ns/net")?;
    let theirs = File::open(format!("/proc/{pid}/ns/net"))?;
    move_into_link_name_space(theirs.as_fd(), Some(LinkNameSpaceType::Network))?;
    let res = set_up("lo");
    move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::Network))?;
    res
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
