//! The system calls of mounting and supervising: `/dev/fuse`, `mount(2)`, pidfds, `poll(2)`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `FUSE_DEV_IOC_CLONE`: `_IOR(229, 0, uint32_t)`.
const FUSE_DEV_IOC_CLONE: libc::c_ulong = 0x8004_e500;

pub(crate) fn open_fuse_device() -> io::Result<OwnedFd> {
    let f = File::options().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/fuse")?;
    Ok(f.into())
}

/// A new `/dev/fuse` descriptor attached to the connection of `device`, with its own queue of
/// requests being processed: when it closes, the requests it holds fail (ECONNABORTED) instead
/// of waiting for an answer.
pub(crate) fn clone_device(device: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let clone = open_fuse_device()?;
    let mut source = device.as_raw_fd() as u32;
    // SAFETY: the ioctl reads one u32 from a valid pointer.
    let r = unsafe { libc::ioctl(clone.as_raw_fd(), FUSE_DEV_IOC_CLONE, &mut source) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(clone)
}

/// Mounts the FUSE connection of `device` at `mountpoint` for every user (no
/// `default_permissions`: the server's rules are the policy), without set-id or device files.
pub(crate) fn mount_fuse(device: BorrowedFd<'_>, mountpoint: &Path) -> io::Result<()> {
    let target = c_path(mountpoint)?;
    let data = format!("fd={},rootmode=40000,user_id=0,group_id=0,allow_other", device.as_raw_fd());
    let data = CString::new(data).expect("no NUL");
    // SAFETY: valid C strings; the data string is what fuse's mount parses.
    let r = unsafe {
        libc::mount(
            c"corral".as_ptr(),
            target.as_ptr(),
            c"fuse.corral".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Detaches the mount now; it goes away when nothing uses it any more.
pub(crate) fn umount_lazy(mountpoint: &Path) -> io::Result<()> {
    let target = c_path(mountpoint)?;
    // SAFETY: a valid C string.
    let r = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// SIGKILL to the process of `pidfd` (a no-op error once it is reaped).
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: pidfd_send_signal on a valid pidfd; null info is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Waits until one of `fds` is readable, hung up or in error (or `timeout_ms` passes; -1 waits
/// forever) and returns each one's `revents`. Retries on EINTR.
pub(crate) fn poll(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    loop {
        // SAFETY: a valid array of the length passed.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(pfds.iter().map(|p| p.revents).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a valid descriptor and a buffer of the length passed.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: a valid descriptor and a buffer of the length passed.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// A pipe, both ends close-on-exec: (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// New files get exactly the mode their creator asked for.
pub(crate) fn clear_umask() {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
}

/// Takes ownership of an inherited descriptor number, checking that it is open.
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {fd} is not open")));
    }
    // SAFETY: the descriptor is open and was passed to this process to own; nothing else in it
    // refers to the number.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
