//! Loop devices: a regular file attached as a block device.
//!
//! Why by hand: `loopdev-3` builds its bindings with bindgen, which needs libclang; the
//! driver needs three ioctls (LOOP_CTL_GET_FREE, LOOP_CONFIGURE, LOOP_GET_STATUS64).
//! Devices are attached with `LO_FLAGS_AUTOCLEAR`: the kernel detaches one when its last
//! user (the filesystem mounted on it) lets go, so an unmount never leaves a device behind.

use rustix::ioctl::{ioctl, Getter, Opcode, Setter};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; LO_NAME_SIZE],
    crypt_name: [u8; LO_NAME_SIZE],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The loop ioctls predate _IOC encoding: their numbers are plain.
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_GET_STATUS64: Opcode = 0x4C05;
const LOOP_CTL_GET_FREE: Opcode = 0x4C82;

/// An attached loop device. Dropping it closes the handle; with autoclear the device stays
/// attached only while something (a mount) holds it.
pub struct LoopDevice {
    file: File,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `backing` to a free loop device (read-write, autoclear, direct I/O where
    /// the backing filesystem allows it).
    pub fn attach(backing: &Path) -> io::Result<LoopDevice> {
        let back = OpenOptions::new().read(true).write(true).open(backing)?;
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        // SAFETY: all-zero is a valid loop_info64.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        let name = backing.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        info.file_name[..len].copy_from_slice(&name[..len]);
        // Another process may take the free device between asking and configuring it.
        'devices: for _ in 0..100 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // Direct I/O needs the backing file's block size to allow it: without it
            // when the kernel refuses.
            for flags in [LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO, LO_FLAGS_AUTOCLEAR] {
                info.flags = flags;
                // Block size 0: the kernel's choice (the backing device's with direct
                // I/O), so filesystems of any block size mount on the device.
                let cfg = LoopConfig {
                    fd: back.as_raw_fd() as u32,
                    block_size: 0,
                    info,
                    reserved: [0; 8],
                };
                // SAFETY: LOOP_CONFIGURE reads a struct loop_config, whose layout this is.
                match unsafe { ioctl(&dev, Setter::<LOOP_CONFIGURE, LoopConfig>::new(cfg)) } {
                    Ok(()) => return Ok(LoopDevice { file: dev, path }),
                    Err(rustix::io::Errno::BUSY) => continue 'devices,
                    Err(rustix::io::Errno::INVAL) if flags & LO_FLAGS_DIRECT_IO != 0 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(io::Error::other("no free loop device after 100 tries"))
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device and inode of the file backing loop device `dev`, if it is attached.
    pub fn backing_of(dev: &Path) -> io::Result<Option<(u64, u64)>> {
        let f = File::open(dev)?;
        // SAFETY: LOOP_GET_STATUS64 writes a struct loop_info64.
        match unsafe { ioctl(&f, Getter::<LOOP_GET_STATUS64, LoopInfo64>::new()) } {
            Ok(info) => Ok(Some((info.device, info.inode))),
            Err(rustix::io::Errno::NXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The loop devices whose backing file is `backing`.
    pub fn find(backing: &Path) -> io::Result<Vec<PathBuf>> {
        let st = std::fs::metadata(backing)?;
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/block")? {
            let name = e?.file_name();
            let Some(n) = name.to_str().filter(|n| n.starts_with("loop")) else {
                continue;
            };
            let dev = PathBuf::from("/dev").join(n);
            if let Ok(Some((d, i))) = LoopDevice::backing_of(&dev) {
                if d == st.dev() && i == st.ino() {
                    out.push(dev);
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for LoopDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LoopDevice({}, fd {})",
            self.path.display(),
            self.file.as_raw_fd()
        )
    }
}
