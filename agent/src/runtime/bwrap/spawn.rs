//! What the forked child does between fork and exec of `bwrap`: join the sandbox's cgroups, stop
//! inheriting the agent's descriptors, and drop to the unprivileged host identity of sandboxes.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Returns a `pre_exec` hook. `join` are the cgroup files from
/// [`SandboxCgroup::join_files`](crate::runtime::cgroup::SandboxCgroup::join_files) (writing "0"
/// moves the writer); `owner` is the host `(uid, gid)` to become, when the agent runs as root.
/// Only raw system calls on values prepared before the fork: async-signal-safe, no allocation.
pub fn child_setup(
    join: Vec<OwnedFd>,
    owner: Option<(u32, u32)>,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    move || {
        for fd in &join {
            // SAFETY: writes one byte from a static buffer to an open descriptor.
            if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        // Descriptors the agent inherited without close-on-exec (e.g. a build tool's jobserver)
        // must not reach bwrap and the sandbox. Best effort: kernels before 5.11 lack the flag.
        // SAFETY: close_range only changes descriptor flags of this (child) process.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        if let Some((uid, gid)) = owner {
            // Raw system calls change only this thread's credentials, which is the whole process
            // after fork (glibc's wrappers would try to synchronise threads of the parent).
            // SAFETY: plain integer arguments; a null list with size 0 is valid for setgroups.
            let failed = unsafe {
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            };
            if failed {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
