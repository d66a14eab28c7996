//! The syscall filter seen from inside a sandbox (part of the conformance suite, so both runtimes
//! run it): every entry of the deny list is called for real and must fail with its errno, and
//! ordinary programs (threads, pip, compilers, node, git) keep working under the filter.

use corral_agent::runtime::seccomp::{self, DENIED, NAMESPACE_FLAGS, PERSONALITY_FLAGS, PTRACE_ATTACH, TTY_INJECTION};
use corral_core::model::RuntimeKind;

use super::{Harness, sandbox, sh};

/// Calls each listed syscall with arguments that would do something (or at least not fail with
/// EPERM) without the filter, and prints `name errno` per call. A call that succeeds in making a
/// child (clone, clone3) has the child exit at once.
const PROBE: &str = r#"
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(256)
ptr = ctypes.addressof(buf)
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    if r == 0 and nr in CHILD_MAKERS:
        os._exit(0)
    return 0 if r >= 0 else ctypes.get_errno()
entries = json.loads(sys.argv[1])
CHILD_MAKERS = {e["nr"] for e in entries if e["name"] in ("clone", "clone3")}
SIGCHLD = 17
for e in entries:
    name, nr = e["name"], e["nr"]
    if name == "clone":
        for flag in e["values"]:
            print(f"clone:{flag:#x}", call(nr, flag | SIGCHLD, 0, 0, 0, 0))
        continue
    if name == "clone3":
        ctypes.memset(buf, 0, 256)
        ctypes.c_uint64.from_address(ptr + 32).value = SIGCHLD  # exit_signal
        print(name, call(nr, ptr, 88))
        continue
    if name in ("ioctl", "ptrace", "personality"):
        for v in e["values"]:
            args = {"ioctl": (0, v, ptr), "ptrace": (v, 1, 0, 0), "personality": (v,)}[name]
            print(f"{name}:{v:#x}", call(nr, *args))
        if name == "ioctl":
            # The kernel reads the request as 32 bits: high bits must not get it past the filter.
            for v in e["values"]:
                print(f"{name}:{v:#x}-high", call(nr, 0, v | (1 << 32), ptr))
        continue
    args = {
        "io_uring_setup": (1, ptr),
        "keyctl": (0, -3, 0),
        "unshare": (0x10000000,),
        "userfaultfd": (0,),
    }.get(name, (0, 0, 0, 0, 0))
    ctypes.memset(buf, 0, 256)
    print(name, call(nr, *args))
personality = [x for x in entries if x["name"] == "personality"][0]["nr"]
print("personality-default", call(personality, 0))
print(open("/proc/self/status").read().split("Seccomp:")[1].split()[0], "seccomp-mode")
"#;

/// The entry's number on this machine's architecture.
fn on_host(d: &seccomp::Denied) -> Option<i64> {
    if cfg!(target_arch = "aarch64") { d.aarch64 } else { d.x86_64 }
}

/// The entries for this architecture as the probe's JSON argument.
fn entries() -> String {
    let list: Vec<serde_json::Value> = DENIED
        .iter()
        .filter_map(|d| {
            let values: &[u64] = match d.name {
                "clone" => NAMESPACE_FLAGS,
                "ioctl" => TTY_INJECTION,
                "ptrace" => PTRACE_ATTACH,
                "personality" => PERSONALITY_FLAGS,
                _ => &[],
            };
            on_host(d).map(|nr| serde_json::json!({"name": d.name, "nr": nr, "values": values}))
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

pub async fn syscall_filter_refuses_the_deny_list(h: &Harness) {
    let sb = sandbox(h).await;
    let script = format!("/usr/bin/python3 -c '{}' '{}'", PROBE.replace('\'', "'\\''"), entries());
    let out = sh(&*h.rt, &sb, &script).await;
    assert_eq!(out.status.exit_code, 0, "probe failed: {}{}", out.out(), out.err());
    let results: Vec<(String, i32)> = out
        .out()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.trim().parse().unwrap_or(-1))))
        .collect();
    let seen = |name: &str| results.iter().filter(|(n, _)| n == name || n.starts_with(&format!("{name}:"))).count();
    for d in DENIED.iter().filter(|d| on_host(d).is_some()) {
        assert!(seen(d.name) > 0, "{} was not probed:\n{}", d.name, out.out());
        for (name, errno) in results.iter().filter(|(n, _)| n == d.name || n.starts_with(&format!("{}:", d.name))) {
            assert_eq!(
                *errno,
                d.errno,
                "{name} inside a {:?} sandbox: errno {errno}, want {}",
                h.spec().runtime,
                d.errno
            );
        }
    }
    let get = |name: &str| results.iter().find(|(n, _)| n == name).map(|(_, e)| *e);
    assert_eq!(get("personality-default"), Some(0), "the default personality stays allowed");
    assert!(out.out().contains("2 seccomp-mode"), "a filter is installed: {}", out.out());
}

/// A wheel made inside the sandbox and installed with pip from the file.
const PIP_WHEEL: &str = r#"
set -e
mkdir -p /tmp/w && cd /tmp/w
/usr/bin/python3 - <<'PY'
import base64, hashlib, zipfile
files = {
    "corralprobe/__init__.py": b"VALUE = 42\n",
    "corralprobe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: corralprobe\nVersion: 1.0\n",
    "corralprobe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: corral-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={digest},{len(data)}\n"
record += "corralprobe-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile("corralprobe-1.0-py3-none-any.whl", "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("corralprobe-1.0.dist-info/RECORD", record)
PY
/usr/bin/python3 -m pip install -q --no-index --no-cache-dir --disable-pip-version-check --target /tmp/w/site corralprobe-1.0-py3-none-any.whl
PYTHONPATH=/tmp/w/site /usr/bin/python3 -c 'import corralprobe; print("wheel", corralprobe.VALUE)'
/usr/bin/python3 -c 'import threading; t = threading.Thread(target=print, args=("thread ok",)); t.start(); t.join()'
/usr/bin/python3 -c 'import subprocess; print(subprocess.run(["echo", "fork ok"], capture_output=True, text=True).stdout.strip())'
"#;

/// gcc (with threads), node and git: on the bubblewrap runtime, which sees the host's `/usr`.
const TOOLCHAINS: &str = r#"
set -e
cd /tmp/w
printf '#include <stdio.h>\n#include <pthread.h>\nstatic void *f(void *a) { puts("c thread ok"); return a; }\nint main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n' > t.c
gcc -pthread -o t t.c && ./t
node -e 'require("fs").writeFileSync("/tmp/w/n.txt", "x"); console.log("node", 6 * 7)'
git init -q r && cd r && git -c user.email=t@corral -c user.name=t commit -q --allow-empty -m first && echo "git $(git rev-list --count HEAD)"
"#;

pub async fn ordinary_programs_still_work(h: &Harness) {
    let sb = sandbox(h).await;
    let out = sh(&*h.rt, &sb, PIP_WHEEL).await;
    assert_eq!(out.status.exit_code, 0, "{}{}", out.out(), out.err());
    assert_eq!(out.out(), "wheel 42\nthread ok\nfork ok\n", "{}", out.err());
    if h.spec().runtime == RuntimeKind::Bwrap {
        let out = sh(&*h.rt, &sb, TOOLCHAINS).await;
        assert_eq!(out.status.exit_code, 0, "{}{}", out.out(), out.err());
        assert_eq!(out.out(), "c thread ok\nnode 42\ngit 1\n", "{}", out.err());
    }
}
