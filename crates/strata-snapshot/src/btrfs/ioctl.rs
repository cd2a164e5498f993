//! The btrfs ioctls the driver needs, written by hand with rustix.
//!
//! Why by hand: the `btrfs` crate is self-described as incomplete and `btrfsutil` links the
//! C libbtrfsutil; the driver needs a dozen fixed-layout calls from `linux/btrfs.h`
//! (the same set moby's driver used), so they are declared here with their kernel layouts.

use rustix::ioctl::{ioctl, opcode, Opcode, Setter, Updater};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

const MAGIC: u8 = 0x94;
const PATH_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;
const INO_LOOKUP_PATH_MAX: usize = 4080;
const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

/// `BTRFS_SUBVOL_RDONLY`: the subvolume (or snapshot) is read-only.
const SUBVOL_RDONLY: u64 = 1 << 1;
/// The object ID of every subvolume's root directory.
pub const FIRST_FREE_OBJECTID: u64 = 256;
const ROOT_TREE_OBJECTID: u64 = 1;
const QUOTA_TREE_OBJECTID: u64 = 8;
const ROOT_REF_KEY: u32 = 156;
const QGROUP_INFO_KEY: u32 = 242;
const QUOTA_CTL_ENABLE: u64 = 1;
const QGROUP_LIMIT_MAX_RFER: u64 = 1 << 0;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: [u64; 4],
}

#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

const SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(MAGIC, 23);
const SUBVOL_CREATE: Opcode = opcode::write::<VolArgs>(MAGIC, 14);
const SNAP_DESTROY_V2: Opcode = opcode::write::<VolArgsV2>(MAGIC, 63);
const SUBVOL_GETFLAGS: Opcode = opcode::read::<u64>(MAGIC, 25);
const SUBVOL_SETFLAGS: Opcode = opcode::write::<u64>(MAGIC, 26);
const INO_LOOKUP: Opcode = opcode::read_write::<InoLookupArgs>(MAGIC, 18);
const TREE_SEARCH: Opcode = opcode::read_write::<SearchArgs>(MAGIC, 17);
const QUOTA_CTL: Opcode = opcode::read_write::<QuotaCtlArgs>(MAGIC, 40);
// The kernel declares QGROUP_LIMIT with _IOR although it only reads the argument.
const QGROUP_LIMIT: Opcode = opcode::read::<QgroupLimitArgs>(MAGIC, 43);
const QUOTA_RESCAN_WAIT: Opcode = opcode::none(MAGIC, 46);

fn copy_name<const N: usize>(dst: &mut [u8; N], name: &CStr) -> io::Result<()> {
    let b = name.to_bytes();
    if b.len() >= N || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid subvolume name {name:?}"),
        ));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

fn zeroed<T>() -> Box<T> {
    // SAFETY: every type used here is plain old data for which all-zero bytes are valid.
    unsafe { Box::new(std::mem::zeroed()) }
}

/// Creates an empty subvolume `name` in directory `dir`.
pub fn subvol_create(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = zeroed::<VolArgs>();
    copy_name(&mut a.name, name)?;
    // SAFETY: the opcode matches the argument's kernel layout.
    unsafe { ioctl(dir, Updater::<SUBVOL_CREATE, VolArgs>::new(&mut a)) }?;
    Ok(())
}

/// Snapshots subvolume `source` as `name` in directory `dir`; read-only when `readonly`.
pub fn snapshot(
    source: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    readonly: bool,
) -> io::Result<()> {
    let mut a = zeroed::<VolArgsV2>();
    a.fd = i64::from(std::os::fd::AsRawFd::as_raw_fd(&source));
    a.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    copy_name(&mut a.name, name)?;
    // SAFETY: as above.
    unsafe { ioctl(dir, Updater::<SNAP_CREATE_V2, VolArgsV2>::new(&mut a)) }?;
    Ok(())
}

/// Deletes subvolume `name` in directory `dir` (it must hold no other subvolume).
pub fn subvol_destroy(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = zeroed::<VolArgsV2>();
    copy_name(&mut a.name, name)?;
    // SAFETY: as above.
    unsafe { ioctl(dir, Updater::<SNAP_DESTROY_V2, VolArgsV2>::new(&mut a)) }?;
    Ok(())
}

/// Makes the subvolume open at `fd` read-only (or writable again).
pub fn set_readonly(fd: BorrowedFd<'_>, readonly: bool) -> io::Result<()> {
    // SAFETY: as above.
    let flags = unsafe { ioctl(fd, rustix::ioctl::Getter::<SUBVOL_GETFLAGS, u64>::new()) }?;
    let flags = if readonly {
        flags | SUBVOL_RDONLY
    } else {
        flags & !SUBVOL_RDONLY
    };
    // SAFETY: as above.
    unsafe { ioctl(fd, Setter::<SUBVOL_SETFLAGS, u64>::new(flags)) }?;
    Ok(())
}

/// The ID of the subvolume `fd` is in.
pub fn subvol_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut a = zeroed::<InoLookupArgs>();
    a.objectid = FIRST_FREE_OBJECTID;
    // SAFETY: as above.
    unsafe { ioctl(fd, Updater::<INO_LOOKUP, InoLookupArgs>::new(&mut a)) }?;
    Ok(a.treeid)
}

/// The path of directory `dirid` inside subvolume `tree` (relative, ending in '/'), as
/// INO_LOOKUP answers it.
fn ino_path(fd: BorrowedFd<'_>, tree: u64, dirid: u64) -> io::Result<String> {
    let mut a = zeroed::<InoLookupArgs>();
    a.treeid = tree;
    a.objectid = dirid;
    // SAFETY: as above.
    unsafe { ioctl(fd, Updater::<INO_LOOKUP, InoLookupArgs>::new(&mut a)) }?;
    let end = a.name.iter().position(|b| *b == 0).unwrap_or(a.name.len());
    Ok(String::from_utf8_lossy(&a.name[..end]).into_owned())
}

/// One item a tree search found: its key's object ID and offset, and its bytes.
struct Item {
    offset: u64,
    data: Vec<u8>,
}

/// Every item of type `ty` with object ID in `objectids` in tree `tree` (TREE_SEARCH, in
/// as many rounds as the kernel's buffer needs).
fn search(fd: BorrowedFd<'_>, tree: u64, objectids: (u64, u64), ty: u32) -> io::Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut a = zeroed::<SearchArgs>();
    a.key.tree_id = tree;
    a.key.min_objectid = objectids.0;
    a.key.max_objectid = objectids.1;
    a.key.max_offset = u64::MAX;
    a.key.max_transid = u64::MAX;
    a.key.min_type = ty;
    a.key.max_type = ty;
    loop {
        a.key.nr_items = 4096;
        // SAFETY: as above.
        unsafe { ioctl(fd, Updater::<TREE_SEARCH, SearchArgs>::new(&mut a)) }?;
        let n = a.key.nr_items;
        if n == 0 {
            return Ok(out);
        }
        let mut pos = 0usize;
        let mut last = (0u64, 0u64);
        for _ in 0..n {
            let h = &a.buf[pos..pos + 32];
            let u64_at = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap());
            let objectid = u64_at(8);
            let offset = u64_at(16);
            let item_type = u32::from_ne_bytes(h[24..28].try_into().unwrap());
            let len = u32::from_ne_bytes(h[28..32].try_into().unwrap()) as usize;
            pos += 32;
            if item_type == ty {
                out.push(Item {
                    offset,
                    data: a.buf[pos..pos + len].to_vec(),
                });
            }
            pos += len;
            last = (objectid, offset);
        }
        // Continue after the last key returned.
        match last.1.checked_add(1) {
            Some(o) => {
                a.key.min_objectid = last.0;
                a.key.min_offset = o;
            }
            None if last.0 < objectids.1 => {
                a.key.min_objectid = last.0 + 1;
                a.key.min_offset = 0;
            }
            None => return Ok(out),
        }
    }
}

/// The subvolumes directly inside subvolume `id`, as paths relative to its root.
pub fn child_subvolumes(fd: BorrowedFd<'_>, id: u64) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for item in search(fd, ROOT_TREE_OBJECTID, (id, id), ROOT_REF_KEY)? {
        // struct btrfs_root_ref { le64 dirid; le64 sequence; le16 name_len; } + name
        let d = &item.data;
        if d.len() < 18 {
            continue;
        }
        let dirid = u64::from_le_bytes(d[..8].try_into().unwrap());
        let name_len = u16::from_le_bytes(d[16..18].try_into().unwrap()) as usize;
        let name = String::from_utf8_lossy(&d[18..(18 + name_len).min(d.len())]).into_owned();
        out.push(format!("{}{name}", ino_path(fd, id, dirid)?));
    }
    Ok(out)
}

/// Turns quotas on for the filesystem of `fd` and waits for the initial rescan.
pub fn quota_enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = QuotaCtlArgs {
        cmd: QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: as above.
    unsafe { ioctl(fd, Updater::<QUOTA_CTL, QuotaCtlArgs>::new(&mut a)) }?;
    quota_rescan_wait(fd)
}

fn quota_rescan_wait(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: as above.
    unsafe { ioctl(fd, rustix::ioctl::NoArg::<QUOTA_RESCAN_WAIT>::new()) }?;
    Ok(())
}

/// Limits the bytes the subvolume open at `fd` may reference (its whole tree, shared
/// extents included: the container's root filesystem size, as docker's `size=`).
pub fn qgroup_limit(fd: BorrowedFd<'_>, bytes: u64) -> io::Result<()> {
    let a = QgroupLimitArgs {
        // 0: the qgroup of the subvolume `fd` is in.
        qgroupid: 0,
        flags: QGROUP_LIMIT_MAX_RFER,
        max_rfer: bytes,
        max_excl: 0,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: as above; the kernel only reads the argument.
    unsafe { ioctl(fd, Setter::<QGROUP_LIMIT, QgroupLimitArgs>::new(a)) }?;
    Ok(())
}

/// Exclusive bytes per level-0 qgroup (subvolume ID), or `None` when quotas are off.
pub fn qgroup_exclusive(fd: BorrowedFd<'_>) -> io::Result<Option<Vec<(u64, u64)>>> {
    match search(fd, QUOTA_TREE_OBJECTID, (0, 0), QGROUP_INFO_KEY) {
        // No quota tree: quotas were never enabled.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
        Ok(items) => Ok(Some(
            items
                .iter()
                // struct btrfs_qgroup_info_item { le64 generation, rfer, rfer_cmpr, excl, .. }
                .filter(|i| i.offset >> 48 == 0 && i.data.len() >= 32)
                .map(|i| {
                    (
                        i.offset,
                        u64::from_le_bytes(i.data[24..32].try_into().unwrap()),
                    )
                })
                .collect(),
        )),
    }
}

/// Whether `fd` is on btrfs.
pub fn is_btrfs(fd: impl AsFd) -> io::Result<bool> {
    const BTRFS_SUPER_MAGIC: i64 = 0x9123683e;
    Ok(rustix::fs::fstatfs(fd)?.f_type as i64 == BTRFS_SUPER_MAGIC)
}
