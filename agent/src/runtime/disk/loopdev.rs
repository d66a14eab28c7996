//! Loop devices through their ioctls: attach an image with `LOOP_CONFIGURE` (autoclear, so the
//! device detaches itself when its last user, the mount, goes away), and detach leftovers.

#![allow(unsafe_code)] // raw system calls (ioctl, mount, lseek, copy_file_range) on values checked here

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel 5.8+).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device, open. With autoclear it detaches when the last descriptor or mount
/// using it goes away, so the caller mounts it and then drops this.
pub struct Attached {
    pub path: PathBuf,
    _device: File,
}

/// Whether this host lets us attach loop devices at all.
pub fn available() -> io::Result<()> {
    OpenOptions::new().read(true).write(true).open("/dev/loop-control").map(drop)
}

/// Attaches in this process go one at a time: concurrent creates would otherwise keep taking the
/// same free device from the kernel and lose the race to each other.
static ATTACH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How often an attach retries when another process took the free device first.
const ATTEMPTS: u32 = 64;

/// Attaches `image` to a free loop device (retrying when another attach takes the same one).
pub fn attach(image: &Path) -> io::Result<Attached> {
    let backing = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(image)?;
    let control = OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/loop-control")?;
    let _one_at_a_time = ATTACH.lock().unwrap_or_else(|p| p.into_inner());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            // Another process is attaching too (or udev is still making the node): let it finish.
            std::thread::sleep(std::time::Duration::from_millis(u64::from(attempt.min(10))));
        }
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = match OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(&path) {
            Ok(d) => d,
            // The node may appear a moment after the control device created it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        config.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: `config` is a valid, initialised `struct loop_config` that outlives the call.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
        if rc == 0 {
            return Ok(Attached { path, _device: device });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
    }
    Err(io::Error::other(format!("no free loop device after {ATTEMPTS} attempts")))
}

/// Loop devices whose backing file lies under `root` (from sysfs; a deleted backing file counts).
pub fn backed_under(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else { continue };
        let backing = backing.trim_end().trim_end_matches(" (deleted)");
        if Path::new(backing).starts_with(root) {
            found.push(PathBuf::from("/dev").join(name));
        }
    }
    found
}

/// Detaches a loop device (a busy one is marked to detach when its last user goes).
pub fn detach(device: &Path) -> io::Result<()> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(device)?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CLR_FD) };
    match rc {
        0 => Ok(()),
        _ => {
            let e = io::Error::last_os_error();
            // ENXIO: not attached any more.
            if e.raw_os_error() == Some(libc::ENXIO) { Ok(()) } else { Err(e) }
        }
    }
}
