//! Starting `bwrap` without forking the agent.
//!
//! `fork` copies the page tables of the whole agent (a large, multi-threaded process) and then
//! makes every page the agent writes afterwards fault once more for copy-on-write, only for the
//! child to throw it all away at `exec`: profiles of job runs put that at the top of the agent's
//! own kernel time. Like `posix_spawn`, [`spawn`] instead clones with `CLONE_VM | CLONE_VFORK`:
//! the child borrows the agent's memory on a stack of its own, the calling thread sleeps until the
//! child has exec'd, and nothing is copied. `posix_spawn` itself cannot be used because the child
//! must also join the sandbox's cgroups and drop to the sandbox's host identity before `exec`.
//!
//! Between clone and exec the child makes only raw system calls on values prepared beforehand:
//! it shares the agent's memory, so it may not allocate, take locks or run signal handlers.
//! Every signal is blocked around the clone and the child resets every disposition to the
//! default before unblocking.
//!
//! The child is watched through a pidfd (readable when it exits) and reaped by pid, so nothing else
//! in the agent can reap it or see its pid reused before [`Process`] is done with it.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// Where one of the child's standard streams goes.
pub enum Stdio {
    Null,
    /// A pipe whose other end the [`Process`] keeps.
    Piped,
    /// This descriptor (e.g. a log file).
    Fd(OwnedFd),
}

/// What to start and how.
pub struct Spawn<'a> {
    pub program: &'a Path,
    pub args: Vec<OsString>,
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Cgroup files (from [`SandboxCgroup::join_files`](crate::runtime::cgroup::SandboxCgroup::join_files))
    /// the child writes "0" to, joining the cgroups before its first instruction of `bwrap`.
    pub join: Vec<OwnedFd>,
    /// The host `(uid, gid)` to become, when the agent runs as root.
    pub owner: Option<(u32, u32)>,
    /// More descriptors for the child, as 3, 4, … in this order (e.g. files bwrap copies in).
    pub fds: Vec<OwnedFd>,
}

/// A started child with an empty environment, working directory `/`, and only its three standard
/// streams (and [`Spawn::fds`]) open. Dropping it kills the child (if still running) and reaps it
/// in the background.
pub struct Process {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Everything the child reads, prepared before the clone.
struct ChildPlan {
    program: CString,
    argv: Vec<*const c_char>,
    envp: [*const c_char; 1],
    stdio: [RawFd; 3],
    join: Vec<RawFd>,
    /// Descriptors to put in place as 3, 4, …; each numbered above all of those targets.
    fds: Vec<RawFd>,
    owner: Option<(u32, u32)>,
    /// The errno of the step that failed, written by the child before it exits.
    error: AtomicI32,
}

/// Starts `spec.program` as described. Must be called inside a Tokio runtime.
pub fn spawn(spec: Spawn<'_>) -> io::Result<Process> {
    let program = CString::new(spec.program.as_os_str().as_bytes())?;
    let args = std::iter::once(Ok(program.clone()))
        .chain(spec.args.iter().map(|a| CString::new(a.as_bytes())))
        .collect::<Result<Vec<CString>, _>>()?;
    let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());

    // The child's ends (closed here once it has exec'd) and this side's ends.
    let (in_child, in_ours) = ends(spec.stdin, false)?;
    let (out_child, out_ours) = ends(spec.stdout, true)?;
    let (err_child, err_ours) = ends(spec.stderr, true)?;
    // Above 2, so that putting one in place (dup2 onto 0..=2) never overwrites another.
    let child_ends = [above(in_child, 3)?, above(out_child, 3)?, above(err_child, 3)?];
    // Above every target, so that putting one in place never overwrites another.
    let first_free = 3 + spec.fds.len() as c_int;
    let extra = spec.fds.into_iter().map(|fd| above(fd, first_free)).collect::<io::Result<Vec<OwnedFd>>>()?;

    let plan = ChildPlan {
        program,
        argv,
        envp: [std::ptr::null()],
        stdio: child_ends.each_ref().map(AsRawFd::as_raw_fd),
        join: spec.join.iter().map(AsRawFd::as_raw_fd).collect(),
        fds: extra.iter().map(AsRawFd::as_raw_fd).collect(),
        owner: spec.owner,
        error: AtomicI32::new(0),
    };
    let pid = clone_and_exec(&plan)?;
    drop(child_ends);
    drop(spec.join);
    drop(extra);

    let mut process = Process { pid, pidfd: None, status: None, stdin: None, stdout: None, stderr: None };
    // From here on, dropping `process` kills and reaps the child.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: kill and waitpid on our own unreaped child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0)
        };
        process.status = Some(ExitStatus::from_raw(libc::SIGKILL));
        return Err(e);
    }
    // SAFETY: a fresh descriptor owned by nothing else; the `OwnedFd` inside the `AsyncFd` keeps
    // it open and unchanged for the `AsyncFd`'s whole life.
    let registered =
        unsafe { AsyncFd::register_with_interest(OwnedFd::from_raw_fd(fd as RawFd), tokio::io::Interest::READABLE) };
    process.pidfd = Some(registered.map_err(|e| e.into_parts().1)?);
    process.stdin = in_ours.map(pipe::Sender::from_owned_fd).transpose()?;
    process.stdout = out_ours.map(pipe::Receiver::from_owned_fd).transpose()?;
    process.stderr = err_ours.map(pipe::Receiver::from_owned_fd).transpose()?;
    Ok(process)
}

impl Process {
    /// The child's pid, until it has been reaped.
    pub fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid as u32)
    }

    /// The exit status if the child has ended (reaping it), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        match unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) } {
            0 => Ok(None),
            -1 => Err(io::Error::last_os_error()),
            _ => {
                let status = ExitStatus::from_raw(raw);
                self.status = Some(status);
                Ok(Some(status))
            }
        }
    }

    /// Waits for the child to end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let pidfd = self.pidfd.as_ref().ok_or_else(|| io::Error::other("no pidfd"))?;
            // Cleared before the next check, so an exit after it still wakes the next wait.
            pidfd.readable().await?.clear_ready();
        }
    }

    /// Sends SIGKILL unless the child has been reaped already.
    pub fn start_kill(&mut self) -> io::Result<()> {
        match (&self.pidfd, self.status) {
            (Some(fd), None) => {
                // SAFETY: pidfd_send_signal on a pidfd we own; null info is allowed.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
                if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let _ = self.start_kill();
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        // The child may take a moment to die (or sit frozen until its cgroup thaws): reap it
        // without blocking the caller. Not through another `Process`, whose drop would start
        // over when the runtime is shutting down and drops the task unfinished.
        let (pid, Some(pidfd)) = (self.pid, self.pidfd.take()) else { return };
        let reap = move || {
            let mut raw = 0;
            // SAFETY: waitpid on our own child with a valid out pointer.
            unsafe { libc::waitpid(pid, &mut raw, libc::WNOHANG) != 0 }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    while !reap() {
                        match pidfd.readable().await {
                            Ok(mut ready) => ready.clear_ready(),
                            Err(_) => return,
                        }
                    }
                });
            }
            Err(_) => {
                std::thread::spawn(move || {
                    // SAFETY: blocking waitpid on our own child.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    drop(pidfd);
                });
            }
        }
    }
}

/// The child's descriptor for a stream and, when piped, this side's end (the write end for the
/// child's stdin, else the read end).
fn ends(stdio: Stdio, child_writes: bool) -> io::Result<(OwnedFd, Option<OwnedFd>)> {
    match stdio {
        Stdio::Null => Ok((dev_null()?, None)),
        Stdio::Fd(fd) => Ok((fd, None)),
        Stdio::Piped => {
            let (read, write) = pipe_pair()?;
            Ok(if child_writes { (write, Some(read)) } else { (read, Some(write)) })
        }
    }
}

/// A descriptor of `/dev/null` (a duplicate of one opened once: cheaper than a path lookup).
fn dev_null() -> io::Result<OwnedFd> {
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    let fd = match NULL.get() {
        Some(fd) => fd,
        None => {
            let opened = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
            NULL.get_or_init(|| opened.into())
        }
    };
    fd.try_clone()
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fd` itself when it is at least `min`, else a close-on-exec duplicate that is.
fn above(fd: OwnedFd, min: c_int) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

const CHILD_STACK: usize = 64 * 1024;

/// Clones a child that shares this process's memory until it execs (the calling thread waits
/// until then), runs [`child_main`] and returns its pid, or the error of the step that failed.
fn clone_and_exec(plan: &ChildPlan) -> io::Result<libc::pid_t> {
    // Never zeroed: the child only reads what it wrote (saves a 64 KiB memset per spawn).
    let mut stack: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(CHILD_STACK);
    // SAFETY: the stack pointer stays inside `stack` (which outlives the child's use of it: the
    // caller sleeps until the child has exec'd or exited), aligned down to 16 bytes as the ABI
    // wants; `plan` outlives the child's use likewise. All signals are blocked across the clone
    // so that no handler of the agent ever runs on the child's stack.
    unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK).cast::<u8>();
        let top = top.sub(top as usize % 16);
        let (mut all, mut old) = (std::mem::zeroed::<libc::sigset_t>(), std::mem::zeroed::<libc::sigset_t>());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top.cast::<c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(plan).cast_mut().cast::<c_void>(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        match plan.error.load(Ordering::Acquire) {
            0 => Ok(pid),
            errno => {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// The child between clone and exec: default signal handling, standard streams in place, cgroups
/// joined, inherited descriptors closed at exec, host identity dropped, then exec. Raw system
/// calls only (it runs in the agent's memory); on failure it records errno and exits.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildPlan` the parent keeps alive while this runs.
    let plan = unsafe { &*arg.cast_const().cast::<ChildPlan>() };
    // SAFETY: only async-signal-safe calls on plain values and descriptors prepared by the parent.
    unsafe {
        let fail = || -> c_int {
            plan.error.store(*libc::__errno_location(), Ordering::Release);
            libc::_exit(127)
        };
        // The kernel's `struct sigaction` with the handler (its first field) SIG_DFL (0): the
        // raw call also resets the C library's internal signals, which its wrapper refuses.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<c_void>(), 8usize);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for (target, fd) in plan.stdio.iter().enumerate() {
            if libc::dup2(*fd, target as c_int) < 0 {
                return fail();
            }
        }
        for fd in &plan.join {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                return fail();
            }
        }
        // Descriptors the agent inherited without close-on-exec (e.g. a build tool's jobserver)
        // must not reach bwrap and the sandbox. Best effort: kernels before 5.11 lack the flag.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
        // The descriptors handed over, without close-on-exec (dup2 clears it on the copy).
        for (i, fd) in plan.fds.iter().enumerate() {
            if libc::dup2(*fd, 3 + i as c_int) < 0 {
                return fail();
            }
        }
        if let Some((uid, gid)) = plan.owner {
            // Raw system calls: glibc's wrappers would try to synchronise the agent's threads.
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                return fail();
            }
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return fail();
        }
        libc::syscall(libc::SYS_execve, plan.program.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
        fail()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sh(script: &str) -> Spawn<'static> {
        Spawn {
            program: Path::new("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            stdin: Stdio::Piped,
            stdout: Stdio::Piped,
            stderr: Stdio::Piped,
            join: Vec::new(),
            owner: None,
            fds: Vec::new(),
        }
    }

    #[tokio::test]
    async fn runs_with_an_empty_environment_in_root_and_reports_the_exit_code() {
        let mut p =
            spawn(sh("cat; pwd; env | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^_='; echo oops >&2; exit 7"))
                .unwrap();
        let mut stdin = p.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
        let (mut out, mut err) = (String::new(), String::new());
        p.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        p.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
        assert_eq!(out, "hello\n/\n");
        assert_eq!(err, "oops\n");
        assert_eq!(p.wait().await.unwrap().code(), Some(7));
        assert_eq!(p.id(), None, "reaped");
    }

    #[tokio::test]
    async fn only_the_standard_streams_reach_the_child() {
        // A descriptor without close-on-exec, as a build tool's jobserver would be.
        let (r, _w) = pipe_pair().unwrap();
        // SAFETY: clears FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFD, 0) };
        let mut p = spawn(sh("ls /proc/self/fd | sort -n | tr '\\n' ' '")).unwrap();
        let mut out = String::new();
        p.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        p.wait().await.unwrap();
        // 0, 1, 2 and the descriptor `ls` opens to list the directory.
        assert_eq!(out.split_whitespace().count(), 4, "{out}");
    }

    #[tokio::test]
    async fn handed_over_descriptors_arrive_in_order_from_3() {
        let file = |text: &str| -> OwnedFd {
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
            std::io::Seek::rewind(&mut f).unwrap();
            f.into()
        };
        // Opened before the others, so low numbers: put in place without clobbering each other.
        let fds = vec![file("three "), file("four "), file("five")];
        let mut p = spawn(Spawn { fds, ..sh("cat <&3; cat <&4; cat <&5; ls /proc/self/fd | wc -l") }).unwrap();
        let mut out = String::new();
        p.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        assert_eq!(p.wait().await.unwrap().code(), Some(0));
        // 0-2, 3-5 and the descriptor `ls` opens.
        assert_eq!(out, "three four five7\n");
    }

    #[tokio::test]
    async fn ignored_and_blocked_signals_are_not_inherited() {
        // Rust ignores SIGPIPE in the agent; a child must get the default back.
        let mut p = spawn(sh("grep -E '^(SigIgn|SigBlk)' /proc/self/status")).unwrap();
        let mut out = String::new();
        p.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        p.wait().await.unwrap();
        for line in out.lines() {
            assert!(line.ends_with("0000000000000000"), "{out}");
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_and_kill_ends_a_child() {
        let mut missing = sh("true");
        missing.program = Path::new("/nonexistent/bwrap");
        let e = spawn(missing).err().expect("spawning a missing program fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");

        let mut p = spawn(sh("sleep 30")).unwrap();
        p.start_kill().unwrap();
        assert_eq!(p.wait().await.unwrap().signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn dropping_a_running_child_kills_and_reaps_it() {
        let p = spawn(sh("sleep 30")).unwrap();
        let pid = p.pid;
        drop(p);
        for _ in 0..500 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("child {pid} still exists (not killed or not reaped)");
    }
}
