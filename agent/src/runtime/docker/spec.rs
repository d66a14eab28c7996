//! The settings of a sandbox's container.
//!
//! Storage: the root filesystem is read-only. With disk quotas, `/workspace` and `/tmp` are bind
//! mounts of the sandbox's disk on the host (a loop-mounted ext4 image of `disk_mb`, see
//! [`crate::runtime::disk`]) and `/dev/shm` of its size-limited tmpfs, exactly as bubblewrap
//! sandboxes get them. Without quotas, `/workspace` is an anonymous volume (on the engine's disk,
//! initialised from the image's `/workspace`, so owned by the sandbox user; removed with the
//! container) and `/tmp` a tmpfs owned by the sandbox user, capped at the memory limit (tmpfs
//! pages are charged to the container's memory cgroup).

use std::collections::HashMap;

use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount, MountType, MountVolumeOptions};
use corral_core::model::SandboxSpec;

use super::DockerConfig;
use crate::runtime::client::{INIT_IN_SANDBOX, SANDBOX_HOME, SANDBOX_LANG, SANDBOX_PATH};
use crate::runtime::{disk, seccomp};

pub const LABEL_SANDBOX: &str = "corral.sandbox_id";
pub const LABEL_NODE: &str = "corral.node_id";
pub const LABEL_TENANT: &str = "corral.tenant";

/// `/tmp`'s size when the sandbox has no memory limit.
const TMP_DEFAULT_BYTES: u64 = 256 << 20;

/// The image a spec runs.
pub fn image(config: &DockerConfig, spec: &SandboxSpec) -> String {
    if spec.image.is_empty() { config.default_image.clone() } else { spec.image.clone() }
}

fn labels(config: &DockerConfig, spec: &SandboxSpec) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_SANDBOX.to_owned(), spec.id.to_string()),
        (LABEL_NODE.to_owned(), config.node_id.to_string()),
        (LABEL_TENANT.to_owned(), spec.tenant.to_string()),
    ])
}

/// The container: `corral-init` as its command, attached stdin/stdout (stdin stays open across
/// attaches so the container outlives the agent's connection), no TTY (a binary-safe stream).
/// `storage` is the sandbox's prepared directory when disk quotas are on.
/// `binds` are host directories mounted read-write over the scratch areas (a codebase's view);
/// one at `/workspace` replaces the workspace mount.
pub fn container(
    config: &DockerConfig,
    spec: &SandboxSpec,
    storage: Option<&Path>,
    binds: &[(std::path::PathBuf, String)],
) -> ContainerCreateBody {
    // Only the base environment: the spec's variables travel with each exec (as with bubblewrap),
    // so they are not visible in the engine's container metadata.
    let env = [("PATH", SANDBOX_PATH), ("HOME", SANDBOX_HOME), ("LANG", SANDBOX_LANG)];
    ContainerCreateBody {
        image: Some(image(config, spec)),
        // As the entrypoint, so an image's own entrypoint never wraps it (its CMD, if any, only
        // becomes ignored arguments).
        entrypoint: Some(vec![INIT_IN_SANDBOX.to_owned()]),
        user: Some(format!("{}:{}", config.sandbox_uid, config.sandbox_gid)),
        working_dir: Some("/workspace".to_owned()),
        hostname: Some("corral".to_owned()),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels(config, spec)),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(false),
        open_stdin: Some(true),
        stdin_once: Some(false),
        tty: Some(false),
        host_config: Some(host_config(config, spec, storage, binds)),
        ..Default::default()
    }
}

fn host_config(
    config: &DockerConfig,
    spec: &SandboxSpec,
    storage: Option<&Path>,
    binds: &[(std::path::PathBuf, String)],
) -> HostConfig {
    let memory = (spec.memory_mb > 0).then(|| (spec.memory_mb * 1024 * 1024) as i64);
    let (mut mounts, tmpfs) = match storage {
        Some(dir) => (quota_mounts(dir), None),
        None => {
            let tmp_bytes = memory.map_or(TMP_DEFAULT_BYTES, |m| m as u64);
            let (uid, gid) = (config.sandbox_uid, config.sandbox_gid);
            let tmp = format!("rw,exec,nosuid,nodev,size={tmp_bytes},uid={uid},gid={gid},mode=1777");
            let workspace = Mount {
                target: Some("/workspace".to_owned()),
                typ: Some(MountType::VOLUME),
                volume_options: Some(MountVolumeOptions { labels: Some(labels(config, spec)), ..Default::default() }),
                ..Default::default()
            };
            (vec![workspace], Some(HashMap::from([("/tmp".to_owned(), tmp)])))
        }
    };
    for (host, inside) in binds {
        mounts.retain(|m| m.target.as_deref() != Some(inside.as_str()));
        mounts.push(Mount {
            target: Some(inside.clone()),
            source: Some(host.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        });
    }
    HostConfig {
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec![
            "no-new-privileges".to_owned(),
            format!("seccomp={}", seccomp::docker_profile(seccomp::host_arch())),
        ]),
        readonly_rootfs: Some(true),
        network_mode: Some(if spec.internet_access { "bridge" } else { "none" }.to_owned()),
        memory,
        // No swap beyond the memory limit.
        memory_swap: memory,
        nano_cpus: (spec.cpus > 0.0).then_some((spec.cpus * 1e9) as i64),
        pids_limit: (spec.pids_limit > 0).then_some(i64::from(spec.pids_limit)),
        binds: Some(vec![format!("{}:{INIT_IN_SANDBOX}:ro", config.init_path.display())]),
        mounts: Some(mounts),
        tmpfs,
        // The control stream is binary and private: nothing is logged.
        log_config: Some(HostConfigLogConfig { typ: Some("none".to_owned()), config: None }),
        init: Some(false),
        auto_remove: Some(false),
        cgroup_parent: config.cgroup_parent.clone(),
        ..Default::default()
    }
}

/// Bind mounts of the sandbox's disk (`/workspace`, `/tmp`) and `/dev/shm` tmpfs from the host.
fn quota_mounts(dir: &Path) -> Vec<Mount> {
    let bind = |source: std::path::PathBuf, target: &str| Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        ..Default::default()
    };
    vec![bind(disk::workspace(dir), "/workspace"), bind(disk::tmp(dir), "/tmp"), bind(disk::shm(dir), "/dev/shm")]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use corral_core::ids::{NodeId, SandboxId, TenantId};
    use corral_core::model::RuntimeKind;

    use super::*;

    #[test]
    fn containers_are_locked_down_and_labelled() {
        let config = DockerConfig {
            node_id: NodeId::parse("n1").unwrap(),
            state_dir: "/s".into(),
            init_path: "/s/bin/corral-init".into(),
            socket: None,
            default_image: "corral/base:latest".into(),
            sandbox_uid: 1000,
            sandbox_gid: 1000,
            disk: disk::Disks::off(Default::default()),
            cgroup_parent: Some("/corral-docker/n1".into()),
            layers: None,
        };
        let spec = SandboxSpec {
            id: SandboxId::random(),
            tenant: TenantId::default_tenant(),
            runtime: RuntimeKind::Docker,
            name: None,
            cpus: 0.5,
            memory_mb: 64,
            pids_limit: 32,
            timeout_seconds: 60,
            internet_access: false,
            env: BTreeMap::from([("SECRET".into(), "x".into())]),
            labels: BTreeMap::new(),
            workdir: "/workspace".into(),
            image: String::new(),
            disk_mb: 0,
            codebase: None,
        };
        let quota = container(&config, &spec, Some(Path::new("/s/docker/x")), &[]);
        let mounts = quota.host_config.and_then(|h| h.mounts).unwrap();
        let targets: Vec<_> = mounts.iter().filter_map(|m| m.target.as_deref()).collect();
        assert_eq!(targets, ["/workspace", "/tmp", "/dev/shm"]);
        assert_eq!(mounts[0].source.as_deref(), Some("/s/docker/x/disk/workspace"));
        // A codebase's view at /workspace replaces the workspace mount, with or without quotas.
        let view = [(std::path::PathBuf::from("/s/docker/x/view"), "/workspace".to_owned())];
        for storage in [Some(Path::new("/s/docker/x")), None] {
            let mounts = container(&config, &spec, storage, &view).host_config.and_then(|h| h.mounts).unwrap();
            let at: Vec<_> = mounts.iter().filter(|m| m.target.as_deref() == Some("/workspace")).collect();
            assert_eq!(at.len(), 1);
            assert_eq!(at[0].source.as_deref(), Some("/s/docker/x/view"));
        }
        let c = container(&config, &spec, None, &[]);
        let h = c.host_config.clone().unwrap();
        assert_eq!(c.image.as_deref(), Some("corral/base:latest"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert!(!c.env.unwrap().iter().any(|e| e.contains("SECRET")));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(
            (h.memory, h.memory_swap, h.pids_limit, h.nano_cpus),
            (Some(64 << 20), Some(64 << 20), Some(32), Some(500_000_000))
        );
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(c.labels.unwrap()[LABEL_SANDBOX], spec.id.to_string());
    }
}
