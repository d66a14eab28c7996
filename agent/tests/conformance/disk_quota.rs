//! Disk quotas seen from inside a sandbox (part of the conformance suite, so both runtimes run
//! it with quotas on): writing past the quota on `/workspace`, `/tmp` or `/dev/shm` fails with
//! ENOSPC — for bytes and, separately, for inodes — in that sandbox only; the sandbox keeps
//! running, another sandbox keeps writing, and the use shows in `Runtime::disk_usage`.

use corral_core::ids::SandboxId;
use corral_core::model::SandboxSpec;

use super::{Harness, sandbox, sh};

/// A small disk, so filling it is quick: 16 MiB and (at the default ratio) 1,562 inodes.
const DISK_MB: u64 = 16;
/// `/dev/shm` gets half the memory limit: 64 MiB.
const MEMORY_MB: u64 = 128;

async fn small_sandbox(h: &Harness) -> SandboxId {
    let spec = SandboxSpec { disk_mb: DISK_MB, memory_mb: MEMORY_MB, ..h.spec() };
    h.rt.create(&spec).await.expect("create a sandbox with a 16 MiB disk");
    spec.id
}

const ENOSPC: &str = "No space left on device";

pub async fn disk_quota_stops_bytes_and_the_sandbox_lives_on(h: &Harness) {
    let sb = small_sandbox(h).await;
    let other = sandbox(h).await;
    // Each area is filled past its limit (the disk's 16 MiB, shm's 64 MiB), then emptied again.
    for (dir, limit_mb) in [("/workspace", DISK_MB), ("/tmp", DISK_MB), ("/dev/shm", MEMORY_MB / 2)] {
        let script =
            format!("head -c 100000000 /dev/zero > {dir}/fill; echo rc=$?; wc -c < {dir}/fill; rm -f {dir}/fill");
        let out = sh(&*h.rt, &sb, &script).await;
        assert!(out.err().contains(ENOSPC), "{dir}: the writer gets ENOSPC, stderr: {}", out.err());
        let mut lines = out.out().lines().map(str::to_owned).collect::<Vec<_>>().into_iter();
        assert_eq!(lines.next().as_deref(), Some("rc=1"), "{dir}: the write failed");
        let written: u64 = lines.next().and_then(|l| l.trim().parse().ok()).expect("size of the partial file");
        assert!(written <= limit_mb << 20, "{dir}: {written} bytes written past a {limit_mb} MiB limit");
        assert!(written >= (limit_mb << 20) / 2, "{dir}: only {written} bytes fitted under {limit_mb} MiB");
    }
    let out = sh(&*h.rt, &sb, "echo alive > /workspace/after && cat /workspace/after").await;
    assert_eq!(out.out(), "alive\n", "the sandbox runs and writes on after hitting its quota: {}", out.err());
    let out = sh(&*h.rt, &other, "head -c 20000000 /dev/zero > /workspace/f && wc -c < /workspace/f").await;
    assert_eq!(out.out().trim(), "20000000", "another sandbox is unaffected: {}", out.err());
}

pub async fn disk_quota_stops_inodes(h: &Harness) {
    let sb = small_sandbox(h).await;
    // Empty files cost no blocks, only inodes. `true >` is a builtin (forks nothing) and, unlike
    // `:`, not a special one, so a failed redirection does not end the shell.
    for dir in ["/workspace", "/tmp", "/dev/shm"] {
        let script = format!(
            "mkdir -p {dir}/many; i=0; while [ $i -lt 20000 ] && true > {dir}/many/f$i; do i=$((i+1)); done; \
             echo $i; rm -rf {dir}/many"
        );
        let out = sh(&*h.rt, &sb, &script).await;
        assert!(out.err().contains(ENOSPC), "{dir}: creating files past the inode quota is ENOSPC: {}", out.err());
        let made: u64 = out.out().trim().parse().expect("file count");
        assert!((1000..=1600).contains(&made), "{dir}: {made} files made under a 1,562-inode quota");
    }
    let out = sh(&*h.rt, &sb, "touch /workspace/after /tmp/after /dev/shm/after && echo alive").await;
    assert_eq!(out.out(), "alive\n", "the sandbox runs on after running out of inodes: {}", out.err());
}

pub async fn disk_use_is_reported(h: &Harness) {
    let sb = small_sandbox(h).await;
    let before = h.rt.disk_usage(&sb).await.expect("disk usage").expect("quotas are on");
    assert!(
        (DISK_MB << 20) * 3 / 4 <= before.total_bytes && before.total_bytes <= DISK_MB << 20,
        "the disk holds about {DISK_MB} MiB: {before:?}"
    );
    assert!((1024..=1600).contains(&before.total_inodes), "about 1,562 inodes: {before:?}");
    let out = sh(&*h.rt, &sb, "head -c 4000000 /dev/zero > /workspace/f && mkdir /tmp/d1 /tmp/d2 && echo ok").await;
    assert_eq!(out.out(), "ok\n", "{}", out.err());
    let after = h.rt.disk_usage(&sb).await.expect("disk usage").expect("quotas are on");
    assert!(after.used_bytes >= before.used_bytes + 4_000_000, "4 MB more used: {before:?} → {after:?}");
    assert!(after.used_inodes >= before.used_inodes + 3, "three more inodes used: {before:?} → {after:?}");
    assert_eq!((after.total_bytes, after.total_inodes), (before.total_bytes, before.total_inodes));
}

/// Another process on the host copying the mounts at destroy time (what any sandbox starting
/// then does until it pivots away) keeps the disk busy for a moment: the destroy waits for its
/// loop device to go rather than leaving it behind.
pub async fn destroy_outlasts_a_mount_namespace_copied_meanwhile(h: &Harness) {
    let sb = small_sandbox(h).await;
    assert!((h.leftovers)(&sb).iter().any(|l| l.starts_with("loop device")), "the sandbox has its own disk");
    // A private copy of the host's mounts, the sandbox's disk among them, for half a second.
    let mut holder = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", "echo in; sleep 0.5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "in\n", "the copy is made");
    h.rt.destroy(&sb).await.expect("destroy");
    assert_eq!((h.leftovers)(&sb), Vec::<String>::new(), "nothing of the sandbox is left");
    holder.wait().expect("the holder ends");
}

/// Storage checks only one runtime can make: crash leftovers, the warm pool.
pub mod specific {
    use std::time::{Duration, Instant};

    use corral_agent::runtime::Runtime;
    use corral_agent::runtime::bwrap::{BwrapConfig, BwrapRuntime};
    use corral_agent::runtime::docker::DockerRuntime;
    use corral_core::model::RuntimeKind;

    use super::super::{
        DOCKER_IMAGES, disk_quotas, docker_cli, docker_config, docker_runtime, spec, storage_leftovers,
    };
    use super::*;

    /// Waits (bounded) until nothing of the sandbox's storage is left: a killed sandbox's mount
    /// namespace, which holds the disk, goes away a moment after its processes die.
    async fn wait_until_released(dir: &std::path::Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !storage_leftovers(dir).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(storage_leftovers(dir), Vec::<String>::new(), "nothing of {} is left", dir.display());
        assert!(!dir.exists(), "{} removed", dir.display());
    }

    fn bwrap_with_quotas(state: &std::path::Path, warm_pool: usize) -> BwrapRuntime {
        let mut config = BwrapConfig::with_state_dir(state).expect("bwrap config");
        config.disk = disk_quotas(state);
        config.warm_pool = warm_pool;
        BwrapRuntime::new(config).expect("bwrap runtime")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bwrap_a_new_runtime_unmounts_what_a_crashed_one_left() {
        let state = tempfile::tempdir().unwrap();
        let rt = bwrap_with_quotas(state.path(), 0);
        let s = SandboxSpec { disk_mb: DISK_MB, ..spec() };
        rt.create(&s).await.unwrap();
        let dir = rt.sandbox_dir(&s.id);
        assert_eq!(sh(&rt, &s.id, "echo x > /workspace/f && cat /workspace/f").await.out(), "x\n");
        // Forgotten, as if the agent had crashed: its disk stays mounted and attached.
        std::mem::forget(rt);
        let left = storage_leftovers(&dir);
        assert_eq!(left.len(), 3, "disk and shm mounts and a loop device: {left:?}");
        let _rt = bwrap_with_quotas(state.path(), 0);
        wait_until_released(&dir).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bwrap_pool_serves_the_default_disk_and_other_sizes_start_cold() {
        let state = tempfile::tempdir().unwrap();
        let rt = bwrap_with_quotas(state.path(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt.pooled() < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rt.pooled(), 1, "the pool filled");
        let default = spec();
        rt.create(&default).await.unwrap();
        assert!(rt.sandbox_dir(&default.id).ends_with("pool-1"), "the default disk comes from the pool");
        let usage = rt.disk_usage(&default.id).await.unwrap().expect("quota");
        assert!(usage.total_bytes > 900 << 20, "the pooled disk has the default 1 GiB: {usage:?}");
        let small = SandboxSpec { disk_mb: DISK_MB, ..spec() };
        rt.create(&small).await.unwrap();
        assert!(rt.sandbox_dir(&small.id).ends_with(small.id.as_str()), "another size starts cold");
        let usage = rt.disk_usage(&small.id).await.unwrap().expect("quota");
        assert!(usage.total_bytes <= DISK_MB << 20, "{usage:?}");
        let too_big = SandboxSpec { disk_mb: 1 << 30, ..spec() };
        let err = rt.create(&too_big).await.expect_err("larger than the node allows").to_string();
        assert!(err.contains("max_sandbox_disk_mb"), "{err}");
        let dirs = [rt.sandbox_dir(&default.id), rt.sandbox_dir(&small.id)];
        rt.destroy(&default.id).await.unwrap();
        rt.destroy(&small.id).await.unwrap();
        for dir in dirs {
            wait_until_released(&dir).await;
        }
        rt.shutdown().await;
    }

    /// A destroy cut short after the sandbox left the runtime's books (its task aborted at agent
    /// shutdown) leaves its directory and disk; the sweep (GC, fencing) removes them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bwrap_the_sweep_removes_what_an_interrupted_destroy_left() {
        use futures::FutureExt;
        let state = tempfile::tempdir().unwrap();
        let rt = bwrap_with_quotas(state.path(), 1);
        let s = SandboxSpec { disk_mb: DISK_MB, ..spec() };
        rt.create(&s).await.unwrap();
        let dir = rt.sandbox_dir(&s.id);
        assert!(rt.destroy(&s.id).now_or_never().is_none(), "the destroy is still under way when dropped");
        assert!(!storage_leftovers(&dir).is_empty(), "its disk is still mounted");
        rt.sweep().await;
        wait_until_released(&dir).await;
        rt.shutdown().await;
    }

    /// A container removed while its agent was down leaves storage that the next agent removes;
    /// the storage of a surviving container is kept for its adoption.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn docker_a_new_runtime_removes_storage_without_a_container() {
        if super::super::docker_opted_out() {
            eprintln!("WARNING: CORRAL_REQUIRE_DOCKER=0: the docker tests are skipped");
            return;
        }
        let state = tempfile::tempdir().unwrap();
        let node = super::super::test_node();
        let _cleanup = super::super::DockerCleanup(node.clone(), state.path().to_owned());
        let rt = docker_runtime(&node, state.path()).await;
        let spec_of =
            || SandboxSpec { runtime: RuntimeKind::Docker, image: DOCKER_IMAGES[0].into(), disk_mb: DISK_MB, ..spec() };
        let (gone, kept) = (spec_of(), spec_of());
        for s in [&gone, &kept] {
            rt.create(s).await.unwrap();
            sh(&rt, &s.id, "echo kept > /workspace/mark").await;
        }
        drop(rt);
        docker_cli(&["rm", "-f", &DockerRuntime::container_name(&gone.id)]);
        let rt = DockerRuntime::connect(docker_config(&node, state.path())).await.unwrap();
        wait_until_released(&rt.storage_dir(&gone.id)).await;
        rt.adopt(&kept).await.expect("adopt");
        assert_eq!(sh(&rt, &kept.id, "cat /workspace/mark").await.out(), "kept\n", "the survivor keeps its disk");
        rt.destroy(&kept.id).await.unwrap();
        wait_until_released(&rt.storage_dir(&kept.id)).await;
    }
}
