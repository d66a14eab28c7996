//! The `Runtime` conformance suite. Every runtime must pass the same tests: `conformance!(name,
//! make)` instantiates them, where `make` is an expression evaluating to a future of a [`Harness`].
//! Runtime-specific checks (host directories, cgroups) live in their own modules below.
//!
//! bwrap: needs `bwrap` on PATH and the init binary built first: `cargo build -p corral-init`.
//! docker: needs a reachable engine and the images of `deploy/images/build.sh`; without them the
//! docker tests fail (never skip silently). `CORRAL_REQUIRE_DOCKER=0` skips them explicitly, with a
//! warning, on a machine without Docker; CI sets `CORRAL_REQUIRE_DOCKER=1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_agent::runtime::bwrap::{BwrapConfig, BwrapRuntime};
use corral_agent::runtime::disk::{self, DiskSettings, Disks};
use corral_agent::runtime::docker::{DockerConfig, DockerRuntime};
use corral_agent::runtime::{ExecEvent, Runtime, RuntimeError};
use corral_core::ids::{ExecId, NodeId, SandboxId, TenantId};
use corral_core::model::{Command, ExecSpec, ExitStatus, RuntimeKind, SandboxSpec};

/// Lists what a destroyed sandbox left behind (directories, cgroups, containers, volumes).
type Leftovers = Box<dyn Fn(&SandboxId) -> Vec<String> + Send + Sync>;
/// Where a live sandbox keeps its storage (a pooled bwrap sandbox keeps its pool directory).
type StorageDir = Box<dyn Fn(&SandboxId) -> PathBuf + Send + Sync>;

/// A runtime under test plus whatever must live as long as it (temp dirs, cleanup guards).
pub struct Harness {
    pub rt: Arc<dyn Runtime>,
    kind: RuntimeKind,
    image: &'static str,
    leftovers: Leftovers,
    storage_dir: StorageDir,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl Harness {
    /// A sandbox spec with test defaults for this runtime.
    pub fn spec(&self) -> SandboxSpec {
        SandboxSpec { runtime: self.kind, image: self.image.to_owned(), ..spec() }
    }
}

/// The conformance suite runs bwrap with a warm pool, so most creates take a pooled sandbox.
async fn make_bwrap() -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = BwrapConfig::with_state_dir(dir.path()).expect("bwrap config (run `cargo build -p corral-init`)");
    config.warm_pool = 2;
    config.disk = disk_quotas(dir.path());
    let rt = Arc::new(BwrapRuntime::new(config).expect("bwrap runtime"));
    let probe = rt.clone();
    let leftovers: Leftovers = Box::new(move |id| {
        let sandbox_dir = probe.sandbox_dir(id);
        let mut left: Vec<PathBuf> = probe.cgroup_dirs(id).into_iter().filter(|d| d.exists()).collect();
        left.extend(Some(sandbox_dir.clone()).filter(|d| d.exists()));
        let mut left: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
        left.extend(storage_leftovers(&sandbox_dir));
        left
    });
    let probe = rt.clone();
    let storage_dir: StorageDir = Box::new(move |id| probe.sandbox_dir(id));
    Harness { rt, kind: RuntimeKind::Bwrap, image: "", leftovers, storage_dir, _guard: Box::new(dir) }
}

/// The images the docker tests run.
pub const DOCKER_IMAGES: [&str; 2] = ["corral/python:latest", "corral/base:latest"];

/// Whether the docker tests were explicitly switched off (`CORRAL_REQUIRE_DOCKER=0`).
pub fn docker_opted_out() -> bool {
    std::env::var_os("CORRAL_REQUIRE_DOCKER").is_some_and(|v| v == "0")
}

/// Kernel-enforced disk quotas with the default settings; the tests run as root, so quotas
/// that cannot be enforced are a failure, not a skip.
pub fn disk_quotas(state_dir: &std::path::Path) -> Disks {
    Disks::on(DiskSettings::default(), state_dir).expect("disk quotas (loop devices and mkfs.ext4, as root)")
}

/// Mounts and loop devices of a sandbox's storage that are still there.
pub fn storage_leftovers(sandbox_dir: &std::path::Path) -> Vec<String> {
    let mut left: Vec<String> =
        disk::mounts_under(sandbox_dir).iter().map(|p| format!("mount {}", p.display())).collect();
    left.extend(disk::loop_devices_under(sandbox_dir).iter().map(|p| format!("loop device {}", p.display())));
    left
}

/// A Docker runtime config for a test node, with disk quotas.
pub fn docker_config(node: &NodeId, dir: &std::path::Path) -> DockerConfig {
    let mut config = DockerConfig::new(node.clone(), dir).expect("docker config (run `cargo build -p corral-init`)");
    config.disk = disk_quotas(dir);
    config
}

/// A Docker runtime on a fresh node id; fails (never skips silently) when the engine or the
/// images are missing.
pub async fn docker_runtime(node: &NodeId, dir: &std::path::Path) -> DockerRuntime {
    let config = docker_config(node, dir);
    let rt = DockerRuntime::connect(config).await.unwrap_or_else(|e| {
        panic!("the docker conformance tests need a Docker engine: {e} (set CORRAL_REQUIRE_DOCKER=0 to skip them explicitly)")
    });
    let images = rt.images().await;
    for image in DOCKER_IMAGES {
        assert!(
            images.iter().any(|i| i == image),
            "image {image} is missing: run deploy/images/build.sh (have {images:?})"
        );
    }
    rt
}

pub fn test_node() -> NodeId {
    NodeId::parse(&format!("test-{:016x}", rand_u64())).unwrap()
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 32) ^ (SandboxId::random().as_str().len() as u64).wrapping_mul(0x9e37_79b9)
}

/// Removes every container and volume of a test node, and the storage mounts under its state
/// directory, even when the test failed (a failed test destroys nothing).
pub struct DockerCleanup(pub NodeId, pub PathBuf);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let _unmount_after_removal = ReapStorage(self.1.clone());
        let label = format!("label=corral.node_id={}", self.0);
        for (list, remove) in
            [(vec!["ps", "-aq"], vec!["rm", "-fv"]), (vec!["volume", "ls", "-q"], vec!["volume", "rm", "-f"])]
        {
            for id in docker_cli(&[&list[..], &["--filter", &label]].concat()) {
                docker_cli(&[&remove[..], &[id.as_str()]].concat());
            }
        }
    }
}

/// Unmounts whatever storage is left under a state directory when dropped.
struct ReapStorage(PathBuf);

impl Drop for ReapStorage {
    fn drop(&mut self) {
        disk::reap(&self.0);
    }
}

/// Runs the docker CLI; its output lines.
pub fn docker_cli(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("docker").args(args).output().expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// Containers and volumes labelled with the sandbox's id.
fn docker_leftovers(id: &SandboxId) -> Vec<String> {
    let label = format!("label=corral.sandbox_id={id}");
    let mut left = docker_cli(&["ps", "-aq", "--filter", &label]);
    left.extend(docker_cli(&["volume", "ls", "-q", "--filter", &label]));
    left
}

async fn make_docker() -> Option<Harness> {
    if docker_opted_out() {
        eprintln!("WARNING: CORRAL_REQUIRE_DOCKER=0: the docker conformance tests are skipped");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let node = test_node();
    let rt = Arc::new(docker_runtime(&node, dir.path()).await);
    let probe = rt.clone();
    let guard = (DockerCleanup(node, dir.path().to_owned()), dir);
    let leftovers: Leftovers = Box::new(move |id| {
        let storage = probe.storage_dir(id);
        let mut left = docker_leftovers(id);
        left.extend(storage_leftovers(&storage));
        left.extend(Some(storage).filter(|d| d.exists()).map(|d| d.display().to_string()));
        left
    });
    let probe = rt.clone();
    let storage_dir: StorageDir = Box::new(move |id| probe.storage_dir(id));
    Some(Harness {
        rt,
        kind: RuntimeKind::Docker,
        image: DOCKER_IMAGES[0],
        leftovers,
        storage_dir,
        _guard: Box::new(guard),
    })
}

fn bwrap_runtime() -> (BwrapRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = BwrapConfig::with_state_dir(dir.path()).expect("bwrap config (run `cargo build -p corral-init`)");
    (BwrapRuntime::new(config).expect("bwrap runtime"), dir)
}

/// One sandbox's spec with test defaults.
pub fn spec() -> SandboxSpec {
    SandboxSpec {
        id: SandboxId::random(),
        tenant: TenantId::default_tenant(),
        runtime: RuntimeKind::Bwrap,
        name: None,
        cpus: 1.0,
        memory_mb: 512,
        pids_limit: 256,
        timeout_seconds: 600,
        internet_access: false,
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        workdir: "/workspace".into(),
        image: String::new(),
        disk_mb: 0,
        codebase: None,
    }
}

pub fn exec_spec(command: Command) -> ExecSpec {
    ExecSpec {
        command,
        env: BTreeMap::new(),
        cwd: "/workspace".into(),
        timeout_ms: 60_000,
        stdin: Vec::new(),
        max_output_bytes: 16 * 1024 * 1024,
        side_channel: false,
    }
}

pub fn argv(args: &[&str]) -> Command {
    Command::Argv(args.iter().map(|s| s.to_string()).collect())
}

#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub side: Vec<u8>,
    pub status: ExitStatus,
}

impl Output {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs an exec to completion, checking that `Exit` is the last event.
pub async fn run(rt: &dyn Runtime, sb: &SandboxId, spec: ExecSpec) -> Result<Output, RuntimeError> {
    let mut handle = rt.exec(sb, ExecId::random(), spec).await?;
    let (mut stdout, mut stderr, mut side) = (Vec::new(), Vec::new(), Vec::new());
    let collect = async {
        while let Some(ev) = handle.events.recv().await {
            match ev {
                ExecEvent::Stdout(d) => stdout.extend(d),
                ExecEvent::Stderr(d) => stderr.extend(d),
                ExecEvent::Side(d) => side.extend(d),
                ExecEvent::Exit(status) => {
                    assert!(handle.events.recv().await.is_none(), "events after Exit");
                    return status;
                }
            }
        }
        panic!("event stream ended without Exit");
    };
    let status = tokio::time::timeout(Duration::from_secs(120), collect).await.expect("exec finished within 120 s");
    Ok(Output { stdout, stderr, side, status })
}

pub async fn sh(rt: &dyn Runtime, sb: &SandboxId, script: &str) -> Output {
    run(rt, sb, exec_spec(Command::Shell(script.into()))).await.expect("exec")
}

/// Creates a sandbox with the default spec.
pub async fn sandbox(h: &Harness) -> SandboxId {
    let s = h.spec();
    h.rt.create(&s).await.expect("create");
    s.id
}

macro_rules! conformance {
    ($name:ident, $make:expr) => {
        conformance!(@tests $name, $make,
            exec_argv_and_shell, env_is_exactly_the_requested_one, cwd_is_honoured_and_checked, stdin_is_fed,
            exit_codes_and_signals, missing_program_is_127, timeout_kills_the_whole_tree, kill_exec_kills,
            output_arrives_in_order, output_is_capped, concurrent_execs, background_server_survives_its_exec,
            network_is_off_by_default, internet_access_turns_the_network_on, files_round_trip, large_files_round_trip,
            traversal_is_refused, pids_limit_stops_fork_bomb, memory_limit_kills_inside_only, host_is_invisible,
            sandboxes_are_isolated_from_each_other, pause_stops_and_resume_continues, destroy_leaves_nothing,
            create_is_idempotent, destroy_is_idempotent, unknown_sandbox_is_not_found,
            signal_exec_reaches_the_process_group, side_channel_is_apart_from_output,
            background_processes_are_buffered_followed_and_signalled, sessions_keep_cd_and_export,
            syscall_filter_refuses_the_deny_list, ordinary_programs_still_work,
            disk_quota_stops_bytes_and_the_sandbox_lives_on, disk_quota_stops_inodes, disk_use_is_reported,
            watchdog_kill_reaches_every_sandbox_process);
    };
    (@tests $name:ident, $make:expr, $($test:ident),* $(,)?) => {
        mod $name {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(h) = $make.await else { return };
                    suite::$test(&h).await;
                    for id in h.rt.list().await {
                        h.rt.destroy(&id).await.expect("destroy");
                    }
                }
            )*
        }
    };
}

conformance!(bwrap, async { Some(make_bwrap().await) });
conformance!(docker, make_docker());

/// Checks only the bubblewrap runtime can make (host directories, cgroups, processes).
mod bwrap_specific {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// Host processes whose cgroup paths mention the sandbox.
    fn host_processes_of(id: &SandboxId) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let cg = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            if cg.contains(id.as_str()) {
                found.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        found
    }

    #[tokio::test]
    async fn cgroups_limit_and_report_memory_here() {
        let (rt, _dir) = bwrap_runtime();
        assert!(rt.cgroups_enabled(), "this machine has cgroup controllers; limits must be enforced");
        let s = spec();
        rt.create(&s).await.unwrap();
        let dirs = rt.cgroup_dirs(&s.id);
        assert!(!dirs.is_empty() && dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
        let used = rt.memory_usage_bytes(&s.id).await.expect("memory usage");
        assert!(used > 0 && used < 64 << 20, "idle sandbox uses {used} bytes");
        assert!(!host_processes_of(&s.id).is_empty(), "bwrap and the init run in the sandbox cgroup");
        rt.destroy(&s.id).await.unwrap();
    }

    /// This machine's cgroup2 mount has no resource controllers, but the v2 code path still
    /// places, kills and removes sandboxes.
    #[tokio::test]
    async fn cgroup_v2_without_controllers_still_holds_the_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BwrapConfig::with_state_dir(dir.path()).unwrap();
        config.cgroup = corral_agent::runtime::cgroup::CgroupMode::V2;
        let rt = BwrapRuntime::new(config).unwrap();
        let s = spec();
        rt.create(&s).await.unwrap();
        let dirs = rt.cgroup_dirs(&s.id);
        assert_eq!(dirs.len(), 1);
        sh(&rt, &s.id, "nohup sleep 300 >/dev/null 2>&1 &").await;
        let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs")).unwrap();
        assert!(procs.lines().count() >= 3, "bwrap, init and sleep: {procs}");
        rt.destroy(&s.id).await.unwrap();
        assert!(!dirs[0].exists());
        assert_eq!(host_processes_of(&s.id), Vec::<String>::new());
    }

    /// Names of the entries of a directory (empty if it is gone).
    fn entries(dir: &std::path::Path) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_warm_pool_hands_out_isolated_sandboxes_with_the_spec_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BwrapConfig::with_state_dir(dir.path()).unwrap();
        config.warm_pool = 2;
        let rt = BwrapRuntime::new(config).unwrap();
        let sandboxes = dir.path().join("sandboxes");
        wait_for("the pool to fill", || rt.pooled() == 2).await;
        let slots = entries(&sandboxes);
        assert!(slots.len() == 2 && slots.iter().all(|n| n.starts_with("pool-")), "{slots:?}");
        assert!(rt.list().await.is_empty(), "pool slots are not listed");
        let cgroup_base =
            rt.cgroup_dirs(&SandboxId::random()).iter().map(|d| d.parent().unwrap().to_owned()).collect::<Vec<_>>();

        let (mut a, mut b) = (spec(), spec());
        (a.memory_mb, a.pids_limit) = (48, 32);
        (b.memory_mb, b.pids_limit) = (96, 64);
        rt.create(&a).await.unwrap();
        rt.create(&b).await.unwrap();
        let (da, db) = (rt.sandbox_dir(&a.id), rt.sandbox_dir(&b.id));
        assert_ne!(da, db);
        for d in [&da, &db] {
            assert!(
                slots.contains(&d.file_name().unwrap().to_string_lossy().into_owned()),
                "{} was pooled",
                d.display()
            );
        }
        let mut listed = rt.list().await;
        listed.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        let mut want = vec![a.id.clone(), b.id.clone()];
        want.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(listed, want, "only bound sandboxes are listed");

        // The spec's limits, written after the spawn.
        for (s, mem, pids) in [(&a, 48u64 << 20, 32), (&b, 96u64 << 20, 64)] {
            let dirs = rt.cgroup_dirs(&s.id);
            let read = |needle: &str, file: &str| {
                let d = dirs.iter().find(|d| d.to_string_lossy().contains(needle)).expect(needle);
                std::fs::read_to_string(d.join(file)).unwrap().trim().to_owned()
            };
            assert_eq!(read("/memory/", "memory.limit_in_bytes"), mem.to_string());
            assert_eq!(read("/pids/", "pids.max"), pids.to_string());
            assert_eq!(read("/cpu", "cpu.cfs_quota_us"), "100000");
        }

        // Isolated files.
        rt.write_file(&a.id, "/workspace/f", b"a", 0o644).await.unwrap();
        assert_eq!(sh(&rt, &b.id, "cat /workspace/f 2>&1 || echo none").await.out().lines().last(), Some("none"));
        assert_eq!(sh(&rt, &a.id, "cat /workspace/f").await.out(), "a");
        assert!(da.join("disk/workspace/f").is_file() && !db.join("disk/workspace/f").exists());

        let out = sh(&rt, &a.id, "for i in $(seq 100); do sleep 2 & done; wait").await;
        assert_ne!(out.status.exit_code, 0, "the pids limit stops a fork bomb: {}", out.err());

        // Destroy removes the slot; the pool refills; dropping the runtime removes everything.
        rt.destroy(&a.id).await.unwrap();
        assert!(!da.exists(), "destroyed slot dir removed");
        let a_slot = da.file_name().unwrap().to_owned();
        assert!(cgroup_base.iter().all(|base| !base.join(&a_slot).exists()), "destroyed slot cgroups removed");
        wait_for("the pool to refill", || rt.pooled() == 2).await;
        assert_eq!(rt.list().await, vec![b.id.clone()]);
        assert_eq!(entries(&sandboxes).len(), 3, "b and two pool slots");
        drop(rt);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(entries(&sandboxes), Vec::<String>::new(), "no slot dirs left");
        for base in &cgroup_base {
            let left: Vec<String> = entries(base).into_iter().filter(|n| base.join(n).is_dir()).collect();
            assert!(left.is_empty(), "cgroups left in {}: {left:?}", base.display());
        }
    }

    /// A spec asking for internet access never takes a pooled (network-less) sandbox.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn internet_access_takes_the_normal_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BwrapConfig::with_state_dir(dir.path()).unwrap();
        config.warm_pool = 1;
        let rt = BwrapRuntime::new(config).unwrap();
        wait_for("the pool to fill", || rt.pooled() == 1).await;
        let mut s = spec();
        s.internet_access = true;
        rt.create(&s).await.unwrap();
        assert_eq!(rt.sandbox_dir(&s.id), dir.path().join("sandboxes").join(s.id.as_str()));
        assert_eq!(rt.pooled(), 1);
        rt.shutdown().await;
        assert_eq!(entries(&dir.path().join("sandboxes")), Vec::<String>::new(), "shutdown removes pool slots");
    }

    #[tokio::test]
    async fn destroy_leaves_nothing_on_the_host() {
        let (rt, _dir) = bwrap_runtime();
        let s = spec();
        rt.create(&s).await.unwrap();
        let out = sh(&rt, &s.id, "nohup sleep 300 >/dev/null 2>&1 & echo started").await;
        assert_eq!(out.out(), "started\n");
        rt.write_file(&s.id, "/workspace/f", b"x", 0o644).await.unwrap();
        assert!(rt.sandbox_dir(&s.id).join("disk/workspace/f").is_file());
        rt.destroy(&s.id).await.unwrap();
        assert!(!rt.sandbox_dir(&s.id).exists(), "sandbox dir removed");
        for d in rt.cgroup_dirs(&s.id) {
            assert!(!d.exists(), "cgroup {} removed", d.display());
        }
        assert_eq!(host_processes_of(&s.id), Vec::<String>::new(), "no process left");
    }

    /// A one-shot's `/workspace` and `/tmp` are its own tmpfs mounts, half its memory each: files
    /// (a code job's source) are copied in with their parent directories, a run that fills one
    /// gets ENOSPC (not an OOM kill), and nothing is made on the host's filesystem.
    #[tokio::test]
    async fn one_shots_work_on_their_own_size_capped_tmpfs() {
        let (rt, dir) = bwrap_runtime();
        let mut s = spec();
        s.memory_mb = 64;
        let files = [
            ("/tmp/corral-job/main.sh".to_owned(), b"echo from-file".to_vec()),
            ("/workspace/a/b/data.txt".to_owned(), b"nested".to_vec()),
        ];
        let script = "sh /tmp/corral-job/main.sh; cat /workspace/a/b/data.txt; echo; \
                      stat -c '%U %a' /workspace /tmp /tmp/corral-job/main.sh; \
                      df -k /workspace /tmp | awk 'NR>1 {print $1, $2}'; \
                      head -c 40000000 /dev/zero > /workspace/fill || echo FULL; \
                      awk '/^Seccomp:/ {print \"seccomp\", $2}' /proc/self/status";
        let run = rt.run_once(&s, &files, exec_spec(Command::Shell(script.into())), Arc::default()).await.unwrap();
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        assert_eq!(run.status.exit_code, 0, "{out} {}", String::from_utf8_lossy(&run.stderr));
        assert!(!run.status.oom_killed, "{:?}", run.status);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "from-file",
                "nested",
                "sandbox 755",
                "sandbox 1777",
                "sandbox 644",
                "tmpfs 32768",
                "tmpfs 32768",
                "FULL",
                "seccomp 2"
            ],
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(String::from_utf8_lossy(&run.stderr).contains("No space left on device"), "{run:?}");
        let sandboxes = dir.path().join("sandboxes");
        assert!(!sandboxes.exists() || entries(&sandboxes).is_empty(), "{:?}", entries(&sandboxes));
        for bad in ["/etc/x.py", "/tmp/../etc/x.py"] {
            let files = [(bad.to_owned(), b"x".to_vec())];
            let e = rt.run_once(&s, &files, exec_spec(Command::Shell("true".into())), Arc::default()).await;
            assert!(e.is_err(), "{bad} placed: {e:?}");
        }
    }

    /// One-shots (jobs) reuse emptied cgroups with the same limits: the OOM kill of one run is
    /// not reported for the next, nothing a run left behind survives it, and the runtime's end
    /// removes the pooled cgroups.
    #[tokio::test]
    async fn one_shots_reuse_emptied_cgroups_and_report_only_their_own_oom() {
        let (rt, _dir) = bwrap_runtime();
        let mut s = spec();
        s.memory_mb = 64;
        let once = |script: &str| {
            let (s, exec) = (s.clone(), exec_spec(Command::Shell(script.into())));
            let rt = &rt;
            async move { rt.run_once(&s, &[], exec, Arc::new(tokio::sync::Notify::new())).await.unwrap() }
        };
        let memory_cgroup = |out: &[u8]| {
            let text = String::from_utf8_lossy(out).into_owned();
            text.lines()
                .find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory")))
                .map(|l| l.splitn(3, ':').nth(2).unwrap_or_default().to_owned())
        };
        let first = once("nohup sleep 300 >/dev/null 2>&1 & cat /proc/self/cgroup").await;
        assert_eq!(first.status.exit_code, 0, "{first:?}");
        let oom = once("head -c 300000000 /dev/zero | tail > /dev/null").await;
        assert!(oom.status.oom_killed, "a 300 MB tail under a 64 MiB limit is OOM-killed: {:?}", oom.status);
        let after = once("cat /proc/self/cgroup; ps -e -o comm=").await;
        assert!(!after.status.oom_killed, "the OOM kill of the previous run is not this run's: {:?}", after.status);
        let Some(cgroup) = memory_cgroup(&first.stdout) else {
            panic!("no memory cgroup on a machine with cgroup v1 limits: {}", String::from_utf8_lossy(&first.stdout))
        };
        assert_eq!(memory_cgroup(&after.stdout).as_deref(), Some(cgroup.as_str()), "the cgroup is reused");
        assert!(
            !String::from_utf8_lossy(&after.stdout).contains("sleep"),
            "{}",
            String::from_utf8_lossy(&after.stdout)
        );
        let memory_base =
            rt.cgroup_dirs(&SandboxId::random()).into_iter().find(|d| d.to_string_lossy().contains("/memory/"));
        let dir = memory_base.unwrap().parent().unwrap().join(cgroup.rsplit('/').next().unwrap());
        assert!(dir.is_dir(), "{} is pooled", dir.display());
        drop(rt);
        assert!(!dir.exists(), "{} removed with the runtime", dir.display());
    }

    #[tokio::test]
    async fn a_new_runtime_removes_what_a_previous_run_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = spec();
        let rt = BwrapRuntime::new(BwrapConfig::with_state_dir(dir.path()).unwrap()).unwrap();
        rt.create(&s).await.unwrap();
        let (sandbox_dir, cgroups) = (rt.sandbox_dir(&s.id), rt.cgroup_dirs(&s.id));
        // Forgotten, as if the agent had crashed before cleaning up; its sandbox still runs.
        std::mem::forget(rt);
        assert!(sandbox_dir.exists() && !host_processes_of(&s.id).is_empty());
        let rt = BwrapRuntime::new(BwrapConfig::with_state_dir(dir.path()).unwrap()).unwrap();
        assert!(!sandbox_dir.exists(), "leftover sandbox dir removed");
        assert!(cgroups.iter().all(|d| !d.exists()), "leftover cgroups removed");
        assert_eq!(host_processes_of(&s.id), Vec::<String>::new(), "leftover processes killed");
        assert!(rt.list().await.is_empty());
    }

    #[tokio::test]
    async fn sandbox_files_belong_to_an_unprivileged_host_user() {
        let (rt, _dir) = bwrap_runtime();
        let s = spec();
        rt.create(&s).await.unwrap();
        rt.write_file(&s.id, "/workspace/api/file", b"x", 0o644).await.unwrap();
        assert_eq!(
            sh(&rt, &s.id, "echo y > made; stat -c %u:%g api api/file made").await.out(),
            "1000:1000\n".repeat(3)
        );
        let ws = rt.sandbox_dir(&s.id).join("disk/workspace");
        for p in ["api", "api/file", "made"] {
            let meta = std::fs::metadata(ws.join(p)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (1_000_000, 1_000_000), "{p} on the host");
        }
        let ps = std::fs::read_to_string(rt.cgroup_dirs(&s.id)[0].join("cgroup.procs")).unwrap();
        for pid in ps.lines() {
            let meta = std::fs::metadata(format!("/proc/{pid}")).unwrap();
            assert_eq!(meta.uid(), 1_000_000, "bwrap and the init run unprivileged on the host");
        }
        rt.destroy(&s.id).await.unwrap();
    }

    #[tokio::test]
    async fn a_sandbox_that_dies_ends_its_execs() {
        let (rt, _dir) = bwrap_runtime();
        let s = spec();
        rt.create(&s).await.unwrap();
        let mut handle = rt.exec(&s.id, ExecId::random(), exec_spec(argv(&["sleep", "30"]))).await.unwrap();
        // Kill every process of the sandbox behind the runtime's back (bwrap and the init included).
        let pids = rt.cgroup_dirs(&s.id).into_iter().find(|d| d.to_string_lossy().contains("/pids/")).unwrap();
        let procs = std::fs::read_to_string(pids.join("cgroup.procs")).unwrap();
        let procs: Vec<i32> = procs.lines().map(|l| l.parse().unwrap()).collect();
        assert!(procs.len() >= 3, "bwrap, init and sleep: {procs:?}");
        for pid in procs {
            std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        }
        let mut last = None;
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), handle.events.recv()).await.unwrap() {
            last = Some(ev);
        }
        assert!(matches!(last, Some(ExecEvent::Exit(st)) if st.signal == 9), "{last:?}");
        let err = rt.exec(&s.id, ExecId::random(), exec_spec(argv(&["true"]))).await.expect_err("dead sandbox");
        assert!(err.to_string().contains("no longer running"), "{err}");
        rt.destroy(&s.id).await.unwrap();
        assert!(!rt.sandbox_dir(&s.id).exists());
    }

    #[tokio::test]
    async fn a_sandbox_that_cannot_start_says_why_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BwrapConfig::with_state_dir(dir.path()).unwrap();
        config.bwrap_path = "/usr/bin/false".into();
        let rt = BwrapRuntime::new(config).unwrap();
        let s = spec();
        let err = rt.create(&s).await.expect_err("bwrap fails");
        assert!(matches!(err, RuntimeError::StartFailed { .. }), "{err}");
        assert!(err.to_string().contains("exited before it was ready"), "{err}");
        assert!(rt.list().await.is_empty() && !rt.sandbox_dir(&s.id).exists());
        assert!(rt.cgroup_dirs(&s.id).iter().all(|d| !d.exists()));
    }

    #[tokio::test]
    async fn a_missing_init_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BwrapConfig::with_state_dir(dir.path()).unwrap();
        config.init_path = dir.path().join("no-such-init");
        let err = BwrapRuntime::new(config).err().expect("refused").to_string();
        assert!(err.contains("no-such-init"), "{err}");
    }
}

/// Checks only the Docker runtime can make (engine state, re-adoption, container settings).
mod docker_specific {
    use super::*;

    /// A Docker runtime on a fresh node, plus its cleanup guard; `None` when explicitly skipped.
    async fn runtime() -> Option<(DockerRuntime, NodeId, (DockerCleanup, tempfile::TempDir))> {
        if docker_opted_out() {
            eprintln!("WARNING: CORRAL_REQUIRE_DOCKER=0: the docker tests are skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let node = test_node();
        let rt = docker_runtime(&node, dir.path()).await;
        Some((rt, node.clone(), (DockerCleanup(node, dir.path().to_owned()), dir)))
    }

    fn docker_spec() -> SandboxSpec {
        SandboxSpec { runtime: RuntimeKind::Docker, image: DOCKER_IMAGES[0].into(), ..spec() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_runtime_adopts_surviving_containers() {
        let Some((rt, node, guard)) = runtime().await else { return };
        let s = docker_spec();
        rt.create(&s).await.unwrap();
        sh(&rt, &s.id, "nohup sleep 300 >/dev/null 2>&1 & echo kept > /workspace/mark").await;
        // Drop the runtime while an exec is streaming, so the new one attaches mid-frame.
        let mut ticking = exec_spec(Command::Shell("while true; do echo tick-tick-tick; done".into()));
        ticking.timeout_ms = 3_000;
        let mut handle = rt.exec(&s.id, ExecId::random(), ticking).await.unwrap();
        assert!(matches!(handle.events.recv().await, Some(ExecEvent::Stdout(_))));
        drop(rt);
        let dir = guard.1.path().to_owned();
        let rt = DockerRuntime::connect(docker_config(&node, &dir)).await.unwrap();
        assert_eq!(rt.list().await, vec![s.id.clone()], "the container survived and is found by label");
        rt.adopt(&s).await.expect("adopt");
        let out = sh(&rt, &s.id, "pgrep -x sleep >/dev/null && echo sleeping; cat /workspace/mark").await;
        assert_eq!(out.out(), "sleeping\nkept\n", "the background process and files are still there: {}", out.err());
        assert_eq!(rt.read_file(&s.id, "/workspace/mark", 0, 10).await.unwrap().data, b"kept\n");
        let out = run(&rt, &s.id, exec_spec(argv(&["seq", "1", "20000"]))).await.unwrap();
        assert_eq!(out.stdout.len(), (1..=20000).map(|i: u32| i.to_string().len() + 1).sum::<usize>());
        rt.destroy(&s.id).await.unwrap();
        assert!(docker_leftovers(&s.id).is_empty());
        assert!(rt.adopt(&s).await.is_err(), "nothing left to adopt");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn security_settings_are_visible_inside() {
        let Some((rt, _node, _guard)) = runtime().await else { return };
        let s = docker_spec();
        rt.create(&s).await.unwrap();
        let script = "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; id -u; id -g; \
            awk '$2 == \"/\" {print $4}' /proc/mounts | cut -d, -f1; touch /x 2>&1 | grep -c 'Read-only'; \
            touch /workspace/ok /tmp/ok && echo writable";
        let out = sh(&rt, &s.id, script).await;
        assert_eq!(
            out.out(),
            "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n1000\n1000\nro\n1\nwritable\n",
            "{}",
            out.err()
        );
        let info = rt.engine().inspect_container(&DockerRuntime::container_name(&s.id), None).await.unwrap();
        let labels = info.config.unwrap().labels.unwrap();
        assert_eq!(labels["corral.sandbox_id"], s.id.to_string());
        assert_eq!(labels["corral.tenant"], s.tenant.to_string());
        let env = sh(&rt, &s.id, "cat /proc/1/environ | tr '\\0' '\\n' | sort").await;
        assert!(
            env.out().is_empty()
                || env.out().lines().all(|l| l.starts_with("PATH=")
                    || l.starts_with("HOME=")
                    || l.starts_with("LANG=")
                    || l.starts_with("HOSTNAME=")),
            "{}",
            env.out()
        );
        rt.destroy(&s.id).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_image_is_a_clear_error_and_leaves_nothing() {
        let Some((rt, _node, _guard)) = runtime().await else { return };
        let s = SandboxSpec { image: "corral/no-such-image:latest".into(), ..docker_spec() };
        let err = rt.create(&s).await.expect_err("missing image");
        assert!(
            matches!(err, RuntimeError::StartFailed { .. }) && err.to_string().contains("not on this node"),
            "{err}"
        );
        assert!(rt.list().await.is_empty() && docker_leftovers(&s.id).is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = DockerConfig::new(test_node(), dir.path()).unwrap();
        config.socket = Some(dir.path().join("no-docker.sock"));
        let err = DockerRuntime::connect(config).await.err().expect("refused").to_string();
        assert!(err.contains("unreachable") && err.contains("no-docker.sock"), "{err}");
    }
}

/// The test bodies, runtime-agnostic: each takes a fresh [`Harness`].
#[path = "conformance/disk_quota.rs"]
mod disk_quota;
#[path = "conformance/syscalls.rs"]
mod syscalls;
#[path = "conformance/watchdog.rs"]
mod watchdog;

mod suite {
    use super::*;
    pub use crate::disk_quota::{
        disk_quota_stops_bytes_and_the_sandbox_lives_on, disk_quota_stops_inodes, disk_use_is_reported,
    };
    pub use crate::syscalls::{ordinary_programs_still_work, syscall_filter_refuses_the_deny_list};
    pub use crate::watchdog::watchdog_kill_reaches_every_sandbox_process;

    fn shell(script: &str) -> ExecSpec {
        exec_spec(Command::Shell(script.into()))
    }

    pub async fn exec_argv_and_shell(h: &Harness) {
        let sb = sandbox(h).await;
        let out = run(&*h.rt, &sb, exec_spec(argv(&["echo", "hello", "$HOME"]))).await.unwrap();
        assert_eq!(out.out(), "hello $HOME\n", "argv is not interpreted by a shell");
        assert_eq!(out.status.exit_code, 0);
        let out = sh(&*h.rt, &sb, "echo $((1 + 2)); echo oops >&2; exit 3").await;
        assert_eq!((out.out().as_str(), out.err().as_str(), out.status.exit_code), ("3\n", "oops\n", 3));
        assert!(!out.status.timed_out && !out.status.truncated && out.status.signal == 0);
    }

    pub async fn env_is_exactly_the_requested_one(h: &Harness) {
        let mut s = h.spec();
        s.env = BTreeMap::from([("SBX_VAR".into(), "s".into()), ("SHARED".into(), "sandbox".into())]);
        h.rt.create(&s).await.unwrap();
        let mut e = exec_spec(argv(&["env"]));
        e.env = BTreeMap::from([("EXEC_VAR".into(), "e".into()), ("SHARED".into(), "exec".into())]);
        let out = run(&*h.rt, &s.id, e).await.unwrap();
        let env: BTreeMap<String, String> =
            out.out().lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))).collect();
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["EXEC_VAR", "HOME", "LANG", "PATH", "SBX_VAR", "SHARED"], "nothing of the agent leaks");
        assert_eq!(env["SHARED"], "exec", "exec env overrides sandbox env");
        assert_eq!(env["HOME"], "/workspace");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert!(env["PATH"].split(':').any(|p| p == "/usr/bin"), "{}", env["PATH"]);
    }

    pub async fn cwd_is_honoured_and_checked(h: &Harness) {
        let sb = sandbox(h).await;
        assert_eq!(sh(&*h.rt, &sb, "pwd").await.out(), "/workspace\n");
        sh(&*h.rt, &sb, "mkdir -p /workspace/sub/dir").await;
        for cwd in ["/tmp", "/workspace/sub/dir"] {
            let mut e = exec_spec(argv(&["pwd"]));
            e.cwd = cwd.into();
            assert_eq!(run(&*h.rt, &sb, e).await.unwrap().out(), format!("{cwd}\n"));
        }
        for bad in ["/etc", "/workspace/../etc", "relative", "/workspace/missing"] {
            let mut e = exec_spec(argv(&["pwd"]));
            e.cwd = bad.into();
            let err = run(&*h.rt, &sb, e).await.expect_err(bad);
            assert!(matches!(err, RuntimeError::Invalid { what: "cwd", .. }), "{bad}: {err}");
        }
    }

    pub async fn stdin_is_fed(h: &Harness) {
        let sb = sandbox(h).await;
        let mut e = exec_spec(argv(&["cat"]));
        e.stdin = b"line1\nline2\n".to_vec();
        assert_eq!(run(&*h.rt, &sb, e).await.unwrap().out(), "line1\nline2\n");
        let mut e = exec_spec(argv(&["wc", "-c"]));
        e.stdin = vec![b'x'; 300_000];
        assert_eq!(run(&*h.rt, &sb, e).await.unwrap().out().trim(), "300000", "more than a pipe buffer");
        let out = run(&*h.rt, &sb, exec_spec(argv(&["cat"]))).await.unwrap();
        assert_eq!((out.stdout.len(), out.status.exit_code), (0, 0), "no stdin reads as end of file");
        // Every byte value, including Docker's detach keys (ctrl-p ctrl-q), passes unchanged.
        let mut e = exec_spec(argv(&["cat"]));
        e.stdin = (0..=255u8).cycle().take(70_000).collect();
        let out = run(&*h.rt, &sb, e.clone()).await.unwrap();
        assert!(out.stdout == e.stdin, "binary stdin echoed unchanged ({} bytes back)", out.stdout.len());
    }

    pub async fn exit_codes_and_signals(h: &Harness) {
        let sb = sandbox(h).await;
        assert_eq!(run(&*h.rt, &sb, exec_spec(argv(&["true"]))).await.unwrap().status.exit_code, 0);
        assert_eq!(sh(&*h.rt, &sb, "exit 3").await.status.exit_code, 3);
        let st = run(&*h.rt, &sb, exec_spec(argv(&["sh", "-c", "kill -9 $$"]))).await.unwrap().status;
        assert_eq!((st.exit_code, st.signal, st.timed_out), (-1, 9, false));
        let st = run(&*h.rt, &sb, exec_spec(argv(&["sh", "-c", "kill -TERM $$"]))).await.unwrap().status;
        assert_eq!((st.exit_code, st.signal), (-1, 15));
    }

    pub async fn missing_program_is_127(h: &Harness) {
        let sb = sandbox(h).await;
        let out = run(&*h.rt, &sb, exec_spec(argv(&["no-such-program"]))).await.unwrap();
        assert_eq!(out.status.exit_code, 127);
        assert!(out.err().contains("no-such-program"), "{}", out.err());
        let out = run(&*h.rt, &sb, exec_spec(argv(&["/etc/hostname"]))).await.unwrap();
        assert!(matches!(out.status.exit_code, 126 | 127), "{:?}", out.status);
    }

    pub async fn timeout_kills_the_whole_tree(h: &Harness) {
        let sb = sandbox(h).await;
        let mut e = exec_spec(argv(&["sleep", "30"]));
        e.timeout_ms = 300;
        let t0 = Instant::now();
        let st = run(&*h.rt, &sb, e).await.unwrap().status;
        assert!(st.timed_out && st.signal == 9 && st.exit_code == -1, "{st:?}");
        assert!(st.duration_ms >= 250 && st.duration_ms < 5_000, "{st:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(sh(&*h.rt, &sb, "echo still here").await.out(), "still here\n");

        let mut e = shell("sleep 100 & sleep 100");
        e.timeout_ms = 300;
        assert!(run(&*h.rt, &sb, e).await.unwrap().status.timed_out);
        let ps = run(&*h.rt, &sb, exec_spec(argv(&["ps", "-eo", "stat=,comm="]))).await.unwrap().out();
        let live_sleeps = ps.lines().filter(|l| l.contains("sleep") && !l.trim_start().starts_with('Z')).count();
        assert_eq!(live_sleeps, 0, "background children of a timed-out exec are killed too:\n{ps}");
    }

    pub async fn kill_exec_kills(h: &Harness) {
        let sb = sandbox(h).await;
        let exec = ExecId::random();
        let mut handle = h.rt.exec(&sb, exec, shell("sleep 30 & sleep 30")).await.unwrap();
        h.rt.kill_exec(&sb, exec).await.unwrap();
        let mut last = None;
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), handle.events.recv()).await.unwrap() {
            last = Some(ev);
        }
        match last {
            Some(ExecEvent::Exit(st)) => assert_eq!((st.signal, st.timed_out), (9, false)),
            other => panic!("expected Exit, got {other:?}"),
        }
        let err = h.rt.kill_exec(&sb, exec).await.expect_err("finished exec");
        assert!(matches!(err, RuntimeError::ExecNotFound { .. }), "{err}");
    }

    pub async fn output_arrives_in_order(h: &Harness) {
        let sb = sandbox(h).await;
        let out = run(&*h.rt, &sb, exec_spec(argv(&["seq", "1", "50000"]))).await.unwrap();
        let expected: String = (1..=50000).map(|i| format!("{i}\n")).collect();
        assert!(out.out() == expected, "stdout of seq differs");
        let out = sh(&*h.rt, &sb, "for i in $(seq 1 300); do echo out$i; echo err$i >&2; done").await;
        let exp_out: String = (1..=300).map(|i| format!("out{i}\n")).collect();
        let exp_err: String = (1..=300).map(|i| format!("err{i}\n")).collect();
        assert_eq!((out.out(), out.err()), (exp_out, exp_err));
    }

    pub async fn output_is_capped(h: &Harness) {
        let sb = sandbox(h).await;
        let mut e = shell("head -c 200000000 /dev/zero; echo done >&2");
        e.max_output_bytes = 1 << 20;
        let t0 = Instant::now();
        let out = run(&*h.rt, &sb, e).await.unwrap();
        assert_eq!(out.stdout.len(), 1 << 20, "exactly the cap is kept");
        assert_eq!(out.err(), "done\n", "the other stream has its own budget");
        assert!(out.status.truncated && out.status.exit_code == 0, "{:?}", out.status);
        assert!(t0.elapsed() < Duration::from_secs(30));
    }

    pub async fn concurrent_execs(h: &Harness) {
        let sb = sandbox(h).await;
        let runs = (0..8).map(|i| {
            let rt = h.rt.clone();
            let sb = sb.clone();
            async move { sh(&*rt, &sb, &format!("sleep 0.2; echo {i}")).await }
        });
        let outs = futures::future::join_all(runs).await;
        for (i, out) in outs.iter().enumerate() {
            assert_eq!(out.out(), format!("{i}\n"));
        }
    }

    const SERVER: &str = "import socket\n\
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('127.0.0.1', 8000)); s.listen()\n\
        while True:\n    c, _ = s.accept(); c.sendall(b'hello from the server\\n'); c.close()\n";
    const CLIENT: &str = "import socket, time\n\
        for _ in range(250):\n    try:\n        c = socket.create_connection(('127.0.0.1', 8000), timeout=2)\n\
        \x20       print(c.recv(100).decode(), end=''); break\n    except OSError:\n        time.sleep(0.02)\n";

    pub async fn background_server_survives_its_exec(h: &Harness) {
        let sb = sandbox(h).await;
        let mut e = shell("nohup python3 -c \"$SERVER\" >/dev/null 2>&1 & echo started");
        e.env.insert("SERVER".into(), SERVER.into());
        let t0 = Instant::now();
        let out = run(&*h.rt, &sb, e).await.unwrap();
        assert_eq!((out.out().as_str(), out.status.exit_code), ("started\n", 0));
        assert!(t0.elapsed() < Duration::from_secs(2), "the exec ends while its background job runs");
        let out = run(&*h.rt, &sb, exec_spec(argv(&["python3", "-c", CLIENT]))).await.unwrap();
        assert_eq!(out.out(), "hello from the server\n", "stderr: {}", out.err());
    }

    pub async fn network_is_off_by_default(h: &Harness) {
        let sb = sandbox(h).await;
        let dev = run(&*h.rt, &sb, exec_spec(argv(&["cat", "/proc/net/dev"]))).await.unwrap().out();
        let ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
        assert_eq!(ifaces, ["lo"]);
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        let probe = format!(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('refused', e)\n"
        );
        let out = run(&*h.rt, &sb, exec_spec(argv(&["python3", "-c", &probe]))).await.unwrap();
        assert!(out.out().starts_with("refused"), "host port reachable: {} {}", out.out(), out.err());
    }

    pub async fn internet_access_turns_the_network_on(h: &Harness) {
        let mut s = h.spec();
        s.internet_access = true;
        h.rt.create(&s).await.unwrap();
        let dev = run(&*h.rt, &s.id, exec_spec(argv(&["cat", "/proc/net/dev"]))).await.unwrap().out();
        assert!(dev.lines().skip(2).any(|l| !l.trim_start().starts_with("lo:")), "{dev}");
        let out =
            sh(&*h.rt, &s.id, "test -s /etc/resolv.conf && test -s /etc/ssl/certs/ca-certificates.crt && echo ok")
                .await;
        assert_eq!(out.out(), "ok\n", "DNS and CA certificates are there: {}", out.err());
    }

    pub async fn files_round_trip(h: &Harness) {
        let (rt, sb) = (&*h.rt, sandbox(h).await);
        assert_eq!(rt.write_file(&sb, "/workspace/a/b/c.txt", b"hello\nworld\n", 0o640).await.unwrap(), 12);
        let chunk = rt.read_file(&sb, "/workspace/a/b/c.txt", 0, 1024).await.unwrap();
        assert_eq!((chunk.data.as_slice(), chunk.size, chunk.mode), (&b"hello\nworld\n"[..], 12, 0o640));
        let part = rt.read_file(&sb, "a/b/c.txt", 6, 3).await.unwrap();
        assert_eq!((part.data.as_slice(), part.size), (&b"wor"[..], 12), "relative paths are under /workspace");
        let entries = rt.list_files(&sb, "/workspace/a/b").await.unwrap();
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!((e.name.as_str(), e.is_dir, e.is_symlink, e.size, e.mode), ("c.txt", false, false, 12, 0o640));
        assert!(e.mtime_ms > 1_600_000_000_000);
        let dirs = rt.list_files(&sb, "/workspace").await.unwrap();
        assert!(dirs.iter().any(|e| e.name == "a" && e.is_dir), "{dirs:?}");
        // The sandbox user owns what the API wrote and can change it.
        let out = sh(rt, &sb, "id -u; stat -c %u a/b/c.txt; echo more >> a/b/c.txt && cat a/b/c.txt").await;
        assert_eq!(out.out(), "1000\n1000\nhello\nworld\nmore\n", "{}", out.err());
        rt.write_file(&sb, "/workspace/a/b/c.txt", b"new", 0o4755).await.unwrap();
        let chunk = rt.read_file(&sb, "/workspace/a/b/c.txt", 0, 1024).await.unwrap();
        assert_eq!((chunk.data.as_slice(), chunk.mode), (&b"new"[..], 0o755), "overwritten, setuid dropped");
        rt.write_file(&sb, "/tmp/t.txt", b"in tmp", 0o600).await.unwrap();
        assert_eq!(sh(rt, &sb, "cat /tmp/t.txt").await.out(), "in tmp");
        sh(rt, &sb, "echo from-sandbox > made.txt").await;
        assert_eq!(rt.read_file(&sb, "/workspace/made.txt", 0, 100).await.unwrap().data, b"from-sandbox\n");
        // Remove: file, non-empty dir without and with recursion.
        rt.remove_file(&sb, "/workspace/made.txt", false).await.unwrap();
        let gone = rt.read_file(&sb, "/workspace/made.txt", 0, 1).await.unwrap_err();
        assert!(matches!(gone, RuntimeError::PathNotFound { .. }), "{gone}");
        assert!(rt.remove_file(&sb, "/workspace/a", false).await.is_err(), "non-empty dir needs recursive");
        rt.remove_file(&sb, "/workspace/a", true).await.unwrap();
        assert!(!rt.list_files(&sb, "/workspace").await.unwrap().iter().any(|e| e.name == "a"));
        assert_eq!(sh(rt, &sb, "ls /workspace").await.out(), "");
    }

    pub async fn large_files_round_trip(h: &Harness) {
        let (rt, sb) = (&*h.rt, sandbox(h).await);
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(rt.write_file(&sb, "/workspace/big.bin", &data, 0o600).await.unwrap(), data.len() as u64);
        let out = sh(rt, &sb, "wc -c < big.bin; ls -A").await;
        assert_eq!(out.out(), "5000000\nbig.bin\n", "written whole, no temp file left: {}", out.err());
        let back = rt.read_file(&sb, "/workspace/big.bin", 0, 8_000_000).await.unwrap();
        assert_eq!(back.size, 5_000_000);
        assert!(back.data == data, "read back unchanged ({} bytes)", back.data.len());
        let part = rt.read_file(&sb, "/workspace/big.bin", 4_999_990, 100).await.unwrap();
        assert_eq!(part.data, data[4_999_990..]);
        rt.write_file(&sb, "/workspace/empty", b"", 0).await.unwrap();
        let empty = rt.read_file(&sb, "/workspace/empty", 0, 10).await.unwrap();
        assert_eq!((empty.data.len(), empty.size, empty.mode), (0, 0, 0o644));
    }

    /// Reads the counter the background loop of [`pause_stops_and_resume_continues`] writes.
    async fn counter(h: &Harness, sb: &SandboxId) -> u64 {
        let out = sh(&*h.rt, sb, "cat /tmp/count").await;
        out.out().trim().parse().unwrap_or_else(|_| panic!("counter: {:?} {:?}", out.out(), out.err()))
    }

    pub async fn pause_stops_and_resume_continues(h: &Harness) {
        let sb = sandbox(h).await;
        let looped = "nohup sh -c 'n=0; while true; do n=$((n+1)); echo $n > /tmp/c.new; mv /tmp/c.new /tmp/count; sleep 0.02; done' >/dev/null 2>&1 & sleep 0.3";
        sh(&*h.rt, &sb, looped).await;
        let before = counter(h, &sb).await;
        let pausing = tokio::time::Instant::now();
        h.rt.pause(&sb).await.unwrap();
        // The loop (one turn per 20 ms or more) may still turn until the pause takes hold.
        let slack = 8 + pausing.elapsed().as_millis() as u64 / 20;
        h.rt.pause(&sb).await.expect("pause is idempotent");
        let err = run(&*h.rt, &sb, exec_spec(argv(&["true"]))).await.expect_err("no exec while paused");
        assert!(err.to_string().contains("paused"), "{err}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.rt.resume(&sb).await.unwrap();
        h.rt.resume(&sb).await.expect("resume is idempotent");
        let after_pause = counter(h, &sb).await;
        assert!(
            after_pause - before < slack,
            "the loop did not run while paused: {before} → {after_pause} (slack {slack})"
        );
        // Resumed, the loop advances again (polled: a loaded machine may run it slowly).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut resumed = counter(h, &sb).await;
        while resumed - after_pause < 8 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            resumed = counter(h, &sb).await;
        }
        assert!(resumed - after_pause >= 8, "the loop runs again: {after_pause} → {resumed}");
        assert!(h.rt.pause(&SandboxId::random()).await.is_err(), "unknown sandbox");
        h.rt.pause(&sb).await.unwrap();
        h.rt.destroy(&sb).await.expect("a paused sandbox can be destroyed");
        assert_eq!((h.leftovers)(&sb), Vec::<String>::new());
    }

    pub async fn destroy_leaves_nothing(h: &Harness) {
        let sb = sandbox(h).await;
        let out = sh(&*h.rt, &sb, "nohup sleep 300 >/dev/null 2>&1 & echo started").await;
        assert_eq!(out.out(), "started\n");
        h.rt.write_file(&sb, "/workspace/f", b"x", 0o644).await.unwrap();
        assert!(h.rt.list().await.contains(&sb));
        let storage = (h.storage_dir)(&sb);
        h.rt.destroy(&sb).await.unwrap();
        assert!(!h.rt.list().await.contains(&sb));
        assert_eq!((h.leftovers)(&sb), Vec::<String>::new(), "nothing of the sandbox is left");
        assert_eq!(storage_leftovers(&storage), Vec::<String>::new(), "nothing of its storage is left");
        assert!(!storage.exists(), "{} removed", storage.display());
    }

    pub async fn traversal_is_refused(h: &Harness) {
        let (rt, sb) = (&*h.rt, sandbox(h).await);
        let shadow = std::fs::read("/etc/shadow").unwrap_or_default();
        for bad in ["../x", "/etc/passwd", "/", "/workspace/../etc/passwd", "/workspacex/a", "a\0b"] {
            let err = rt.read_file(&sb, bad, 0, 100).await.expect_err(bad);
            assert!(matches!(err, RuntimeError::InvalidPath { .. }), "{bad:?}: {err}");
            let err = rt.write_file(&sb, bad, b"x", 0o644).await.expect_err(bad);
            assert!(matches!(err, RuntimeError::InvalidPath { .. }), "{bad:?}: {err}");
        }
        let long = format!("/workspace/{}", "a/".repeat(3000));
        assert!(matches!(rt.read_file(&sb, &long, 0, 1).await, Err(RuntimeError::InvalidPath { .. })));
        let out =
            sh(rt, &sb, "ln -s /etc/shadow evil && ln -s /etc etcdir && ln -s ../../../../../etc up && mkfifo fifo")
                .await;
        assert_eq!(out.status.exit_code, 0, "{}", out.err());
        for path in ["/workspace/evil", "/workspace/etcdir/passwd", "up/passwd"] {
            let err = rt.read_file(&sb, path, 0, 4096).await.expect_err(path);
            assert!(matches!(err, RuntimeError::PathRefused { .. }), "{path}: {err}");
        }
        let err = rt.write_file(&sb, "/workspace/etcdir/corral-escape", b"x", 0o644).await.expect_err("escape");
        assert!(matches!(err, RuntimeError::PathRefused { .. }), "{err}");
        assert!(!std::path::Path::new("/etc/corral-escape").exists());
        assert!(matches!(rt.list_files(&sb, "/workspace/etcdir").await, Err(RuntimeError::PathRefused { .. })));
        let read_fifo = tokio::time::timeout(Duration::from_secs(5), rt.read_file(&sb, "/workspace/fifo", 0, 10));
        let err = read_fifo.await.expect("reading a FIFO does not hang").expect_err("fifo");
        assert!(matches!(err, RuntimeError::PathRefused { .. }), "{err}");
        // Writing over a symlink replaces the link, never its target; removing it keeps the target.
        rt.write_file(&sb, "/workspace/evil", b"replaced", 0o644).await.unwrap();
        rt.remove_file(&sb, "/workspace/etcdir", true).await.unwrap();
        assert!(std::path::Path::new("/etc/passwd").exists());
        assert_eq!(std::fs::read("/etc/shadow").unwrap_or_default(), shadow);
        let listed = rt.list_files(&sb, "/workspace").await.unwrap();
        let up = listed.iter().find(|e| e.name == "up").expect("symlink listed");
        assert!(up.is_symlink && !up.is_dir);
    }

    const FORK_MANY: &str = "import os, time\npids, fail = [], 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        fail += 1\n        continue\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    pids.append(pid)\nfor p in pids:\n    os.kill(p, 9)\n    os.waitpid(p, 0)\nprint(len(pids), fail)\n";

    pub async fn pids_limit_stops_fork_bomb(h: &Harness) {
        let mut s = h.spec();
        s.pids_limit = 64;
        h.rt.create(&s).await.unwrap();
        let out = run(&*h.rt, &s.id, exec_spec(argv(&["python3", "-c", FORK_MANY]))).await.unwrap();
        let counts: Vec<u32> = out.out().split_whitespace().filter_map(|n| n.parse().ok()).collect();
        assert!(counts.len() == 2 && counts[0] < 64 && counts[1] > 100, "{} {}", out.out(), out.err());
        let out = sh(&*h.rt, &s.id, "for i in $(seq 200); do sleep 2 & done; wait").await;
        assert_ne!(out.status.exit_code, 0, "a shell fork bomb fails: {}", out.err());
        let other = sandbox(h).await;
        assert_eq!(sh(&*h.rt, &other, "echo fine").await.out(), "fine\n", "other sandboxes unaffected");
        assert!(h.rt.list_files(&s.id, "/workspace").await.is_ok(), "the runtime still answers");
    }

    pub async fn memory_limit_kills_inside_only(h: &Harness) {
        let mut s = h.spec();
        s.memory_mb = 64;
        h.rt.create(&s).await.unwrap();
        let hog = "a = b'x' * (512 * 1024 * 1024); print(len(a))";
        let st = run(&*h.rt, &s.id, exec_spec(argv(&["python3", "-c", hog]))).await.unwrap().status;
        assert!(st.signal == 9 || st.exit_code == 137, "killed by the OOM killer: {st:?}");
        assert!(st.oom_killed, "reported as an OOM kill: {st:?}");
        let out = sh(&*h.rt, &s.id, "echo alive").await;
        assert_eq!(out.out(), "alive\n", "the sandbox survives");
        assert!(!out.status.oom_killed, "a later command is not an OOM kill: {:?}", out.status);
        let st = sh(&*h.rt, &s.id, "kill -9 $$").await.status;
        assert!(st.signal == 9 && !st.oom_killed, "a plain SIGKILL is not an OOM kill: {st:?}");
    }

    pub async fn host_is_invisible(h: &Harness) {
        let (rt, sb) = (&*h.rt, sandbox(h).await);
        let ps = run(rt, &sb, exec_spec(argv(&["ps", "-eo", "pid=,comm="]))).await.unwrap().out();
        let procs: Vec<(u32, String)> = ps
            .lines()
            .filter_map(|l| l.trim().split_once(' ').map(|(p, c)| (p.parse().unwrap_or(0), c.trim().to_owned())))
            .collect();
        assert!(procs.len() <= 3 && procs.iter().any(|(_, c)| c == "ps"), "only sandbox processes:\n{ps}");
        assert!(procs.iter().all(|(p, _)| *p < 100), "{ps}");
        let out =
            sh(rt, &sb, "cat /etc/shadow; cat /proc/1/root/etc/hostname; touch /usr/x; touch /etc/x; touch /x").await;
        assert!(out.stdout.is_empty(), "{}", out.out());
        assert_eq!(out.err().lines().count(), 5, "every probe fails: {}", out.err());
        let st = run(rt, &sb, exec_spec(argv(&["grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/self/status"]))).await;
        let st = st.unwrap().out();
        assert!(st.contains("CapEff:\t0000000000000000") && st.contains("NoNewPrivs:\t1"), "{st}");
        let probe = "for f in /proc/sys/kernel/core_pattern /proc/sys/vm/drop_caches /proc/sysrq-trigger; do \
            [ -w $f ] && echo writable $f; done; true";
        assert_eq!(sh(rt, &sb, probe).await.out(), "", "kernel knobs are not writable");
        let out = sh(rt, &sb, "unshare -U true || echo no-userns; hostname; id -u").await;
        assert_eq!(out.out(), "no-userns\ncorral\n1000\n");
        let out = sh(rt, &sb, "ls /proc/self/fd; ls /proc/1/fd || echo init-fds-hidden").await;
        assert_eq!(out.out(), "0\n1\n2\n3\ninit-fds-hidden\n", "no inherited descriptors: {}", out.err());
        let out = sh(rt, &sb, "echo a b | awk '{print $2}'; grep -c '^sandbox:x:1000:' /etc/passwd; whoami").await;
        assert_eq!(out.out(), "b\n1\nsandbox\n", "a usable /etc: {}", out.err());
        let dev = run(rt, &sb, exec_spec(argv(&["ls", "/dev"]))).await.unwrap().out();
        assert!(!dev.contains("mem") && !dev.contains("kmsg") && !dev.contains("sda") && !dev.contains("vda"), "{dev}");
    }

    pub async fn sandboxes_are_isolated_from_each_other(h: &Harness) {
        let (rt, a, b) = (&*h.rt, sandbox(h).await, sandbox(h).await);
        rt.write_file(&a, "/workspace/secret", b"a's", 0o600).await.unwrap();
        sh(rt, &a, "echo tmp > /tmp/a-tmp; nohup sleep 60 >/dev/null 2>&1 &").await;
        let out = sh(rt, &b, "ls -A /workspace /tmp; ps -eo comm=").await;
        assert!(!out.out().contains("secret") && !out.out().contains("a-tmp"), "{}", out.out());
        assert!(!out.out().contains("sleep"), "{}", out.out());
        assert!(matches!(rt.read_file(&b, "/workspace/secret", 0, 10).await, Err(RuntimeError::PathNotFound { .. })));
    }

    pub async fn create_is_idempotent(h: &Harness) {
        let s = h.spec();
        h.rt.create(&s).await.unwrap();
        h.rt.write_file(&s.id, "/workspace/keep", b"1", 0o644).await.unwrap();
        h.rt.create(&s).await.unwrap();
        assert_eq!(h.rt.read_file(&s.id, "/workspace/keep", 0, 1).await.unwrap().data, b"1");
        assert_eq!(h.rt.list().await.iter().filter(|id| **id == s.id).count(), 1);
    }

    pub async fn destroy_is_idempotent(h: &Harness) {
        let sb = sandbox(h).await;
        h.rt.destroy(&sb).await.unwrap();
        h.rt.destroy(&sb).await.unwrap();
        assert!(!h.rt.list().await.contains(&sb));
        let err = run(&*h.rt, &sb, exec_spec(argv(&["true"]))).await.unwrap_err();
        assert!(matches!(err, RuntimeError::SandboxNotFound(_)), "{err}");
    }

    pub async fn unknown_sandbox_is_not_found(h: &Harness) {
        let id = SandboxId::random();
        let not_found = |r: Result<(), RuntimeError>| matches!(r, Err(RuntimeError::SandboxNotFound(_)));
        assert!(not_found(run(&*h.rt, &id, exec_spec(argv(&["true"]))).await.map(|_| ())));
        assert!(not_found(h.rt.kill_exec(&id, ExecId::random()).await));
        assert!(not_found(h.rt.read_file(&id, "/workspace/x", 0, 1).await.map(|_| ())));
        assert!(not_found(h.rt.write_file(&id, "/workspace/x", b"", 0).await.map(|_| ())));
        assert!(not_found(h.rt.list_files(&id, "/workspace").await.map(|_| ())));
        assert!(not_found(h.rt.remove_file(&id, "/workspace/x", false).await));
        h.rt.destroy(&id).await.unwrap();
    }

    pub async fn signal_exec_reaches_the_process_group(h: &Harness) {
        let sb = sandbox(h).await;
        let script = "trap 'echo term; exit 5' TERM; echo up; while :; do sleep 0.05; done";
        let mut handle = h.rt.exec(&sb, ExecId(11), shell(script)).await.unwrap();
        assert_eq!(handle.events.recv().await, Some(ExecEvent::Stdout(b"up\n".to_vec())));
        h.rt.signal_exec(&sb, ExecId(11), 15).await.expect("signal");
        let mut last = None;
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), handle.events.recv()).await.unwrap() {
            last = Some(ev);
        }
        assert!(matches!(last, Some(ExecEvent::Exit(st)) if st.exit_code == 5), "{last:?}");
        let err = h.rt.signal_exec(&sb, ExecId(11), 15).await.expect_err("finished exec");
        assert!(matches!(err, RuntimeError::ExecNotFound { .. }), "{err}");
    }

    pub async fn side_channel_is_apart_from_output(h: &Harness) {
        let sb = sandbox(h).await;
        let mut spec = shell("echo out; echo side >&3; echo err >&2; printf more >&3");
        spec.side_channel = true;
        let out = run(&*h.rt, &sb, spec).await.unwrap();
        assert_eq!((out.out().as_str(), out.err().as_str()), ("out\n", "err\n"));
        assert_eq!(out.side, b"side\nmore");
        let out = sh(&*h.rt, &sb, "echo x >&3").await;
        assert!(out.side.is_empty() && out.status.exit_code != 0, "no fd 3 without a side channel: {out:?}");
    }

    pub async fn background_processes_are_buffered_followed_and_signalled(h: &Harness) {
        use corral_agent::supervisor::{ProcOutput, Processes};
        let sb = sandbox(h).await;
        let procs = Processes::default();
        let script = "trap 'echo bye; exit 4' TERM; echo hello; echo warn >&2; while :; do sleep 0.05; done";
        let mut spec = shell(script);
        spec.timeout_ms = 200;
        let pid = procs.start(&h.rt, &sb, spec).await.expect("start");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(procs.list(&sb)[0].exit.is_none(), "the exec timeout does not apply to processes");
        let mut follow = procs.follow(&sb, pid, ExecId(1)).unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&ProcOutput::Stdout(b"hello\n".to_vec())) || seen.len() < 2 {
            seen.push(tokio::time::timeout(Duration::from_secs(10), follow.next()).await.unwrap().unwrap());
        }
        assert!(seen.contains(&ProcOutput::Stderr(b"warn\n".to_vec())), "{seen:?}");
        procs.signal(&h.rt, &sb, pid, 15).await.expect("signal");
        let exit = loop {
            match tokio::time::timeout(Duration::from_secs(10), follow.next()).await.unwrap() {
                Some(ProcOutput::Exit(st)) => break st,
                Some(_) => {}
                None => panic!("the follower ended without the exit"),
            }
        };
        assert_eq!(exit.exit_code, 4);
        assert!(follow.next().await.is_none(), "nothing after the exit");
        assert_eq!(procs.list(&sb)[0].exit.map(|x| x.exit_code), Some(4));
        let err = procs.signal(&h.rt, &sb, pid, 15).await.expect_err("exited");
        assert!(matches!(err, RuntimeError::Conflict(_)), "{err}");
        let mut late = procs.follow(&sb, pid, ExecId(2)).unwrap();
        let mut text = Vec::new();
        while let Some(out) = late.next().await {
            if let ProcOutput::Stdout(d) = out {
                text.extend(d);
            }
        }
        assert_eq!(String::from_utf8_lossy(&text), "hello\nbye\n", "a late follower gets the buffer");
        procs.kill(&h.rt, &sb, pid).await.expect("killing an exited process is a no-op");
        assert!(matches!(procs.kill(&h.rt, &sb, 99).await, Err(RuntimeError::ProcessNotFound { .. })));
    }

    pub async fn sessions_keep_cd_and_export(h: &Harness) {
        use corral_agent::supervisor::{SessionCommand, Sessions};
        let s = h.spec();
        h.rt.create(&s).await.unwrap();
        let sessions = Sessions::default();
        let a = sessions.open(&s, String::new(), BTreeMap::new()).unwrap();
        let b = sessions.open(&s, "/tmp".into(), BTreeMap::new()).unwrap();
        let exec = |id, command: &str| {
            let cmd = SessionCommand { command: command.to_owned(), timeout_ms: 10_000, max_output_bytes: 1 << 20 };
            let (sessions, rt, id) = (&sessions, h.rt.clone(), id);
            async move {
                let mut events = sessions.exec(&rt, id, ExecId::random(), cmd).await.expect("session exec");
                let mut out = Vec::new();
                while let Some(ev) = events.recv().await {
                    match ev {
                        ExecEvent::Stdout(d) => out.extend(d),
                        ExecEvent::Exit(st) => return (String::from_utf8_lossy(&out).into_owned(), st.exit_code),
                        _ => {}
                    }
                }
                panic!("no exit");
            }
        };
        assert_eq!(exec(&a, "mkdir -p /workspace/d && cd /workspace/d && export V=1").await.1, 0);
        assert_eq!(exec(&a, "pwd; echo $V; cd /tmp; cd -").await.0, "/workspace/d\n1\n/workspace/d\n");
        assert_eq!(exec(&b, "pwd; echo ${V:-none}").await.0, "/tmp\nnone\n");
        assert_eq!(exec(&a, "unset HOME; exit 6").await.1, 6);
        assert_eq!(exec(&a, "echo ${HOME:-unset}").await.0, "unset\n", "unsetting a default persists");
        sessions.close(&a).unwrap();
        assert!(matches!(sessions.close(&a), Err(RuntimeError::SessionNotFound(_))));
    }
}
