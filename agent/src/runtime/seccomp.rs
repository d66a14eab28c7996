//! The system-call filter of every sandbox, on both runtimes: one deny list ([`DENIED`]), compiled
//! to seccomp-BPF with `seccompiler` for bubblewrap (`--add-seccomp-fd`) and rendered as the
//! container's seccomp profile for Docker ([`docker_profile`]). Everything not listed is allowed:
//! the list removes the kernel interfaces a sandbox never needs and that widen the attack surface
//! (io_uring, bpf, perf, keyrings, modules, mounts, namespaces, clock changes, terminal injection).
//!
//! `clone3` answers ENOSYS rather than EPERM: its flags sit in a struct a filter cannot read, and
//! glibc falls back to `clone` (whose flags the filter checks) only on ENOSYS.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// When a listed call is refused.
#[derive(Debug, Clone, Copy)]
pub enum When {
    Always,
    /// Argument `arg` has any of these bits set (e.g. `clone` with a namespace flag).
    AnyFlag {
        arg: u8,
        flags: &'static [u64],
    },
    /// Argument `arg` (32-bit) is one of these values (e.g. `ioctl(fd, TIOCSTI)`).
    OneOf {
        arg: u8,
        values: &'static [u64],
    },
}

/// One refused system call: its name, its number on x86_64 and on aarch64 (`None` where the
/// architecture has no such call), when it is refused and with which errno.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    pub name: &'static str,
    pub x86_64: Option<i64>,
    pub aarch64: Option<i64>,
    pub when: When,
    pub errno: i32,
}

const EPERM: i32 = libc::EPERM;
const ENOSYS: i32 = libc::ENOSYS;

/// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME.
pub const NAMESPACE_FLAGS: &[u64] =
    &[0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000, 0x80];
/// TIOCSTI (push bytes into a terminal's input) and TIOCLINUX.
pub const TTY_INJECTION: &[u64] = &[0x5412, 0x541C];
/// PTRACE_ATTACH and PTRACE_SEIZE (a traced child of one's own, PTRACE_TRACEME, still works).
pub const PTRACE_ATTACH: &[u64] = &[16, 0x4206];
/// Personality bits refused: every execution domain but PER_LINUX (0) and PER_LINUX32 (8), and
/// every flag but UNAME26 (ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, …). Single-bit
/// tests, because libseccomp (Docker) cannot AND several comparisons of one argument; so the
/// query `personality(0xffffffff)` is refused too, on both runtimes.
pub const PERSONALITY_FLAGS: &[u64] = &[
    0x1, 0x2, 0x4, 0x10, 0x20, 0x40, 0x80, 0x4_0000, 0x8_0000, 0x10_0000, 0x20_0000, 0x40_0000, 0x80_0000, 0x100_0000,
    0x200_0000, 0x400_0000, 0x800_0000,
];

const fn always(name: &'static str, x86_64: i64, aarch64: i64) -> Denied {
    Denied { name, x86_64: Some(x86_64), aarch64: Some(aarch64), when: When::Always, errno: EPERM }
}

/// The deny list (numbers from the kernel's `syscall_64.tbl` and `asm-generic/unistd.h`).
pub const DENIED: &[Denied] = &[
    always("io_uring_setup", 425, 425),
    always("io_uring_enter", 426, 426),
    always("io_uring_register", 427, 427),
    always("bpf", 321, 280),
    always("perf_event_open", 298, 241),
    always("userfaultfd", 323, 282),
    always("keyctl", 250, 219),
    always("add_key", 248, 217),
    always("request_key", 249, 218),
    always("kexec_load", 246, 104),
    always("kexec_file_load", 320, 294),
    always("init_module", 175, 105),
    always("finit_module", 313, 273),
    always("delete_module", 176, 106),
    always("mount", 165, 40),
    always("umount2", 166, 39),
    always("pivot_root", 155, 41),
    always("open_tree", 428, 428),
    always("move_mount", 429, 429),
    always("fsopen", 430, 430),
    always("fsconfig", 431, 431),
    always("fsmount", 432, 432),
    always("fspick", 433, 433),
    always("mount_setattr", 442, 442),
    always("unshare", 272, 97),
    always("setns", 308, 268),
    Denied { when: When::AnyFlag { arg: 0, flags: NAMESPACE_FLAGS }, ..always("clone", 56, 220) },
    Denied { errno: ENOSYS, ..always("clone3", 435, 435) },
    always("open_by_handle_at", 304, 265),
    always("name_to_handle_at", 303, 264),
    always("quotactl", 179, 60),
    always("quotactl_fd", 443, 443),
    always("swapon", 167, 224),
    always("swapoff", 168, 225),
    always("reboot", 169, 142),
    always("acct", 163, 89),
    always("settimeofday", 164, 170),
    always("clock_settime", 227, 112),
    always("clock_adjtime", 305, 266),
    always("adjtimex", 159, 171),
    Denied { aarch64: None, ..always("ioperm", 173, 0) },
    Denied { aarch64: None, ..always("iopl", 172, 0) },
    Denied { when: When::AnyFlag { arg: 0, flags: PERSONALITY_FLAGS }, ..always("personality", 135, 92) },
    always("lookup_dcookie", 212, 18),
    Denied { when: When::OneOf { arg: 0, values: PTRACE_ATTACH }, ..always("ptrace", 101, 117) },
    Denied { when: When::OneOf { arg: 1, values: TTY_INJECTION }, ..always("ioctl", 16, 29) },
];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the sandbox syscall filter knows the system call numbers of x86_64 and aarch64 only");

/// The architecture this agent runs on.
pub fn host_arch() -> TargetArch {
    if cfg!(target_arch = "aarch64") { TargetArch::aarch64 } else { TargetArch::x86_64 }
}

fn number(d: &Denied, arch: TargetArch) -> Option<i64> {
    match arch {
        TargetArch::x86_64 => d.x86_64,
        TargetArch::aarch64 => d.aarch64,
        _ => None,
    }
}

fn rules(when: When) -> Result<Vec<SeccompRule>, SeccompError> {
    let cond = |arg, len, op, v| SeccompCondition::new(arg, len, op, v);
    let rules = match when {
        When::Always => Vec::new(),
        When::AnyFlag { arg, flags } => flags
            .iter()
            .map(|&f| SeccompRule::new(vec![cond(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(f), f)?]))
            .collect::<Result<_, _>>()?,
        When::OneOf { arg, values } => values
            .iter()
            .map(|&v| SeccompRule::new(vec![cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v)?]))
            .collect::<Result<_, _>>()?,
    };
    Ok(rules)
}

/// The BPF programs for `arch`, one per errno in use (a program has a single match action);
/// the kernel runs them all, and any refusal wins over "allow".
pub fn programs(arch: TargetArch) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for d in DENIED {
        if let Some(nr) = number(d, arch) {
            by_errno.entry(d.errno).or_default().insert(nr, rules(d.when)?);
        }
    }
    by_errno
        .into_iter()
        .map(|(errno, rules)| {
            let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch)?;
            Ok(BpfProgram::try_from(filter)?)
        })
        .collect()
}

/// The host's programs as the bytes bwrap reads (`struct sock_filter` in native byte order),
/// compiled once.
fn host_program_bytes() -> Result<&'static [Vec<u8>], String> {
    static BYTES: OnceLock<Result<Vec<Vec<u8>>, String>> = OnceLock::new();
    let compiled = BYTES.get_or_init(|| {
        let progs = programs(host_arch()).map_err(|e| e.to_string())?;
        Ok(progs
            .iter()
            .map(|p| {
                p.iter()
                    .flat_map(|i| {
                        let mut b = Vec::with_capacity(8);
                        b.extend(i.code.to_ne_bytes());
                        b.extend([i.jt, i.jf]);
                        b.extend(i.k.to_ne_bytes());
                        b
                    })
                    .collect()
            })
            .collect())
    });
    compiled.as_ref().map(Vec::as_slice).map_err(Clone::clone)
}

/// How many descriptors [`program_fds`] returns (one `--add-seccomp-fd` each).
pub fn program_count() -> usize {
    host_program_bytes().map_or(0, <[_]>::len)
}

/// Fresh memory files holding the host's programs, read from the start by bwrap.
pub fn program_fds() -> std::io::Result<Vec<OwnedFd>> {
    let programs = host_program_bytes().map_err(std::io::Error::other)?;
    programs.iter().map(|bytes| memory_file(bytes)).collect()
}

/// An anonymous memory file holding `data`, positioned at its start (bwrap reads it from there).
#[allow(unsafe_code)]
pub fn memory_file(data: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create takes a C string and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"corral-bwrap-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(data)?;
    std::io::Seek::rewind(&mut file)?;
    Ok(file.into())
}

/// The same list as a Docker seccomp profile (JSON): default allow, each listed call refused with
/// its errno, conditions as libseccomp argument comparisons.
pub fn docker_profile(arch: TargetArch) -> String {
    let architectures: &[&str] = match arch {
        TargetArch::aarch64 => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    };
    let mut syscalls = Vec::new();
    for d in DENIED.iter().filter(|d| number(d, arch).is_some()) {
        let entry = |args: serde_json::Value| serde_json::json!({"names": [d.name], "action": "SCMP_ACT_ERRNO", "errnoRet": d.errno, "args": args});
        let cmp = |arg: u8, op: &str, v: u64, two: u64| serde_json::json!({"index": arg, "value": v, "valueTwo": two, "op": op});
        match d.when {
            When::Always => syscalls.push(entry(serde_json::json!([]))),
            When::AnyFlag { arg, flags } => {
                syscalls.extend(flags.iter().map(|&f| entry(serde_json::json!([cmp(arg, "SCMP_CMP_MASKED_EQ", f, f)]))))
            }
            When::OneOf { arg, values } => {
                // The low 32 bits only, as the BPF side compares them: `ioctl` takes its request as
                // an unsigned int, so a value with high bits set must not slip past the rule.
                let low = |v| entry(serde_json::json!([cmp(arg, "SCMP_CMP_MASKED_EQ", 0xffff_ffff, v)]));
                syscalls.extend(values.iter().map(|&v| low(v)))
            }
        }
    }
    serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": architectures, "syscalls": syscalls})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's numbers for the architecture the tests run on agree with libc's.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn numbers_match_libc_here() {
        let libc_nr = |name: &str| -> i64 {
            match name {
                "io_uring_setup" => libc::SYS_io_uring_setup,
                "bpf" => libc::SYS_bpf,
                "perf_event_open" => libc::SYS_perf_event_open,
                "userfaultfd" => libc::SYS_userfaultfd,
                "keyctl" => libc::SYS_keyctl,
                "kexec_file_load" => libc::SYS_kexec_file_load,
                "mount" => libc::SYS_mount,
                "fspick" => libc::SYS_fspick,
                "unshare" => libc::SYS_unshare,
                "setns" => libc::SYS_setns,
                "clone" => libc::SYS_clone,
                "clone3" => libc::SYS_clone3,
                "open_by_handle_at" => libc::SYS_open_by_handle_at,
                "clock_adjtime" => libc::SYS_clock_adjtime,
                "iopl" => libc::SYS_iopl,
                "personality" => libc::SYS_personality,
                "lookup_dcookie" => libc::SYS_lookup_dcookie,
                "ptrace" => libc::SYS_ptrace,
                "ioctl" => libc::SYS_ioctl,
                "quotactl_fd" => libc::SYS_quotactl_fd,
                _ => -1,
            }
        };
        let mut checked = 0;
        for d in DENIED {
            let nr = libc_nr(d.name);
            if nr >= 0 {
                assert_eq!(d.x86_64, Some(nr), "{}", d.name);
                checked += 1;
            }
        }
        assert_eq!(checked, 20);
    }

    #[test]
    fn both_architectures_compile() {
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let progs = programs(arch).expect("compiles");
            assert_eq!(progs.len(), 2, "one EPERM and one ENOSYS program");
            assert!(progs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        }
        assert_eq!(program_count(), 2);
    }

    #[test]
    fn the_docker_profile_lists_every_call() {
        let profile: serde_json::Value = serde_json::from_str(&docker_profile(TargetArch::x86_64)).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
        let names: Vec<&str> =
            profile["syscalls"].as_array().unwrap().iter().map(|s| s["names"][0].as_str().unwrap()).collect();
        for d in DENIED {
            assert!(names.contains(&d.name), "{} missing", d.name);
        }
        let arm: serde_json::Value = serde_json::from_str(&docker_profile(TargetArch::aarch64)).unwrap();
        assert!(!arm.to_string().contains("\"iopl\""), "aarch64 has no iopl");
    }
}
