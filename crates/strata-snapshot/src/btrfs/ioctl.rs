//! The btrfs ioctls the driver needs, written by hand with rustix.
//!
//! Why by hand: the `btrfs` crate is self-described as incomplete and `btrfsutil` links the
//! C libbtrfsutil; the driver needs a dozen fixed-layout calls from `linux/btrfs.h`
//! (the same set moby's driver used), so they are declared here with their kernel layouts.

use rustix::ioctl::{ioctl, opcode, Opcode, Setter, Updater};
use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

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
const INODE_ITEM_KEY: u32 = 1;
const INODE_REF_KEY: u32 = 12;
const INODE_EXTREF_KEY: u32 = 13;
const ROOT_ITEM_KEY: u32 = 132;
const ROOT_REF_KEY: u32 = 156;
const QGROUP_STATUS_KEY: u32 = 240;
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
const START_SYNC: Opcode = opcode::read::<u64>(MAGIC, 24);
const WAIT_SYNC: Opcode = opcode::write::<u64>(MAGIC, 22);

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

/// Snapshots subvolume `source` as the writable subvolume `name` in directory `dir`.
pub fn snapshot(source: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = zeroed::<VolArgsV2>();
    a.fd = i64::from(std::os::fd::AsRawFd::as_raw_fd(&source));
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

/// A btrfs key: (object ID, item type, offset), ordered in that order.
type Key = (u64, u32, u64);

/// Calls `f(key, item bytes)` for every item of tree `tree` with a key in `min..=max` that
/// sits in a tree block written at or after `min_transid` (TREE_SEARCH, in as many rounds
/// as the kernel's buffer needs). The kernel compares whole keys, so a range spanning
/// several object IDs also yields other item types: `f` filters.
fn search(
    fd: BorrowedFd<'_>,
    tree: u64,
    min: Key,
    max: Key,
    min_transid: u64,
    mut f: impl FnMut(Key, &[u8]),
) -> io::Result<()> {
    let mut a = zeroed::<SearchArgs>();
    a.key.tree_id = tree;
    a.key.max_objectid = max.0;
    a.key.max_type = max.1;
    a.key.max_offset = max.2;
    a.key.min_transid = min_transid;
    a.key.max_transid = u64::MAX;
    let mut next = min;
    loop {
        a.key.min_objectid = next.0;
        a.key.min_type = next.1;
        a.key.min_offset = next.2;
        a.key.nr_items = 4096;
        // SAFETY: as above.
        unsafe { ioctl(fd, Updater::<TREE_SEARCH, SearchArgs>::new(&mut a)) }?;
        let n = a.key.nr_items;
        if n == 0 {
            return Ok(());
        }
        let mut pos = 0usize;
        let mut last = next;
        for _ in 0..n {
            let h = &a.buf[pos..pos + 32];
            let u64_at = |i: usize| u64::from_ne_bytes(h[i..i + 8].try_into().unwrap());
            let key = (
                u64_at(8),
                u32::from_ne_bytes(h[24..28].try_into().unwrap()),
                u64_at(16),
            );
            let len = u32::from_ne_bytes(h[28..32].try_into().unwrap()) as usize;
            pos += 32;
            f(key, &a.buf[pos..pos + len]);
            pos += len;
            last = key;
        }
        // Continue just after the last key returned (types are 8 bits on disk).
        next = match last {
            (o, t, off) if off < u64::MAX => (o, t, off + 1),
            (o, t, _) if t < 255 => (o, t + 1, 0),
            (o, _, _) if o < u64::MAX => (o + 1, 0, 0),
            _ => return Ok(()),
        };
        if next > max {
            return Ok(());
        }
    }
}

/// The subvolumes directly inside subvolume `id`, as paths relative to its root.
pub fn child_subvolumes(fd: BorrowedFd<'_>, id: u64) -> io::Result<Vec<String>> {
    let mut refs = Vec::new();
    let range = ((id, ROOT_REF_KEY, 0), (id, ROOT_REF_KEY, u64::MAX));
    search(fd, ROOT_TREE_OBJECTID, range.0, range.1, 0, |_, d| {
        // struct btrfs_root_ref { le64 dirid; le64 sequence; le16 name_len; } + name
        if d.len() >= 18 {
            let dirid = u64::from_le_bytes(d[..8].try_into().unwrap());
            let name_len = u16::from_le_bytes(d[16..18].try_into().unwrap()) as usize;
            let name = String::from_utf8_lossy(&d[18..(18 + name_len).min(d.len())]);
            refs.push((dirid, name.into_owned()));
        }
    })?;
    refs.into_iter()
        .map(|(dirid, name)| Ok(format!("{}{name}", ino_path(fd, id, dirid)?)))
        .collect()
}

/// The transaction that created subvolume `id` (its root item's `otransid`), if the
/// root item is of the current format.
pub fn created_transid(fd: BorrowedFd<'_>, id: u64) -> io::Result<Option<u64>> {
    let mut out = None;
    let range = ((id, ROOT_ITEM_KEY, 0), (id, ROOT_ITEM_KEY, u64::MAX));
    search(fd, ROOT_TREE_OBJECTID, range.0, range.1, 0, |_, d| {
        // struct btrfs_root_item: a 160-byte inode item, then (packed) generation ..
        // received_uuid up to byte 295, ctransid at 295, otransid at 303.
        if d.len() >= 311 {
            out = Some(u64::from_le_bytes(d[303..311].try_into().unwrap()));
        }
    })?;
    Ok(out)
}

/// Commits the running transaction of the filesystem of `fd` and waits for it. Inode
/// updates reach the trees as delayed items at commit, so tree searches see them only
/// after this; unlike `syncfs` it does not wait for file data to be written back.
pub fn commit_transaction(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: as above; START_SYNC writes the transaction ID, WAIT_SYNC reads it.
    let transid = unsafe { ioctl(fd, rustix::ioctl::Getter::<START_SYNC, u64>::new()) }?;
    // SAFETY: as above.
    unsafe { ioctl(fd, Setter::<WAIT_SYNC, u64>::new(transid)) }?;
    Ok(())
}

/// Inodes of subvolume `tree` changed in a transaction after `transid`: every inode whose
/// data, metadata, xattrs or entries were written since (btrfs-progs' find-new, for
/// inodes). Only tree blocks written since are read, so the cost follows the changes.
/// Changes not yet committed are not in the tree: see [`commit_transaction`].
pub fn changed_inodes(fd: BorrowedFd<'_>, tree: u64, transid: u64) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    let range = (
        (FIRST_FREE_OBJECTID, 0, 0),
        (u64::MAX, INODE_ITEM_KEY, u64::MAX),
    );
    search(
        fd,
        tree,
        range.0,
        range.1,
        transid + 1,
        |(ino, ty, _), d| {
            // struct btrfs_inode_item { le64 generation; le64 transid; .. }: blocks copied
            // for a neighbour's sake carry unchanged items, so the item's own transid decides.
            if ty == INODE_ITEM_KEY
                && d.len() >= 16
                && u64::from_le_bytes(d[8..16].try_into().unwrap()) > transid
            {
                out.push(ino);
            }
        },
    )?;
    Ok(out)
}

/// The directories holding inode `ino` of subvolume `tree` (one per hard link's parent).
pub fn parent_dirs(fd: BorrowedFd<'_>, tree: u64, ino: u64) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    let range = ((ino, INODE_REF_KEY, 0), (ino, INODE_EXTREF_KEY, u64::MAX));
    search(
        fd,
        tree,
        range.0,
        range.1,
        0,
        |(_, ty, offset), d| match ty {
            // An inode ref's key offset is the parent directory.
            INODE_REF_KEY => out.push(offset),
            // Extended refs (many links in one directory) pack entries of
            // { le64 parent; le64 index; le16 name_len; name }.
            INODE_EXTREF_KEY => {
                let mut p = 0;
                while p + 18 <= d.len() {
                    out.push(u64::from_le_bytes(d[p..p + 8].try_into().unwrap()));
                    p += 18 + u16::from_le_bytes(d[p + 16..p + 18].try_into().unwrap()) as usize;
                }
            }
            _ => {}
        },
    )?;
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

/// Whether quotas are on for the filesystem of `fd` (it has a quota tree).
pub fn quota_enabled(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let status = (0, QGROUP_STATUS_KEY, 0);
    match search(fd, QUOTA_TREE_OBJECTID, status, status, 0, |_, _| {}) {
        // No quota tree: quotas were never enabled, or were disabled.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
        Ok(()) => Ok(true),
    }
}

/// The exclusive bytes of subvolume `id`'s quota group (its level-0 qgroup), or `None`
/// when quotas are off or it has none.
pub fn qgroup_exclusive(fd: BorrowedFd<'_>, id: u64) -> io::Result<Option<u64>> {
    let mut out = None;
    let key = (0, QGROUP_INFO_KEY, id);
    let found = search(fd, QUOTA_TREE_OBJECTID, key, key, 0, |_, d| {
        // struct btrfs_qgroup_info_item { le64 generation, rfer, rfer_cmpr, excl, .. }
        if d.len() >= 32 {
            out = Some(u64::from_le_bytes(d[24..32].try_into().unwrap()));
        }
    });
    match found {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
        Ok(()) => Ok(out),
    }
}
