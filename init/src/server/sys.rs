//! Thin safe wrappers over the few system calls the init needs.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Makes the init non-dumpable (so sandbox processes of the same uid cannot ptrace it or open its
/// `/proc/1/fd`) and, when it is not pid 1, a child subreaper so orphans are still reaped here.
pub fn harden_process() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    if std::process::id() != 1 {
        // SAFETY: prctl with integer arguments only.
        check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    }
    Ok(())
}

/// Closes every descriptor above stderr that bwrap passed on (the agent's must never reach
/// sandbox processes). Best effort: kernels before 5.9 lack close_range.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors of this process; none ≥ 3 is in use yet.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
}

/// Moves `fd` to a new close-on-exec descriptor ≥ 3 and points `fd` at `/dev/null`, so children
/// never inherit the control pipe and stray writes to fd 0/1 go nowhere.
pub fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a descriptor number; the result is a fresh descriptor we own.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(new) };
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    // SAFETY: dup2 between two valid descriptors; `fd` is replaced atomically.
    check(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    set_nonblocking(owned.as_raw_fd())?;
    Ok(owned)
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl flag query/update on a valid descriptor.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Blocks SIGCHLD and returns a non-blocking signalfd that becomes readable when a child changes
/// state. (std's `Command` resets the signal mask in the children it spawns.)
pub fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; the libc calls initialise and use it in place.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        check(libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()))?;
        let fd = check(libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Empties a signalfd (the siginfo contents are not needed: we reap with `waitpid`).
pub fn drain_signalfd(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 128 * 4];
    while matches!(read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// `read(2)`; `Ok(0)` is end of file, `WouldBlock` means nothing available.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the buffer is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `write(2)`; `WouldBlock` means the pipe is full.
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the buffer is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `poll(2)` over `fds`, waiting at most `timeout_ms` (-1: forever).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    match check(ret) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Reaps one exited child without blocking: `(pid, exit_code, signal)`.
pub fn reap_any() -> Option<(i32, i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a valid local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    if libc::WIFSIGNALED(status) {
        Some((pid, -1, libc::WTERMSIG(status)))
    } else {
        Some((pid, libc::WEXITSTATUS(status), 0))
    }
}

/// Sends SIGKILL to a process (`pid > 0`) or process group (`pid < 0`); errors (already gone) are
/// irrelevant to callers.
pub fn sigkill(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Sends `signal` to a process (`pid > 0`) or process group (`pid < 0`); a process that is
/// already gone is not an error for callers.
pub fn signal(pid: i32, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}

/// A close-on-exec pipe for a child's side channel: `(read end, write end)`, the write end moved
/// to a descriptor ≥ 10 so `dup2` onto fd 3 in the child always clears its close-on-exec flag.
pub fn side_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into a valid array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a valid descriptor; the result is a fresh descriptor we own.
    let high = check(unsafe { libc::fcntl(write.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) })?;
    // SAFETY: `high` was just returned by fcntl.
    Ok((read, unsafe { OwnedFd::from_raw_fd(high) }))
}

/// In the child between fork and exec: makes `fd` the child's descriptor 3. Async-signal-safe.
pub fn install_side_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: dup2 between two valid descriptors; fd ≥ 10 so the target differs and loses
    // close-on-exec.
    check(unsafe { libc::dup2(fd, 3) }).map(|_| ())
}

/// Puts the calling (child) process in a new session and process group. Async-signal-safe.
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid has no preconditions.
    check(unsafe { libc::setsid() }).map(|_| ())
}
