//! The end-to-end scenarios against `corral dev` (one process, embedded store and bus).

use corral_e2e::*;

async fn dev() -> anyhow::Result<(DevServer, corral_client::Client)> {
    let server = DevServer::start()?;
    let client = ready_client(&server.endpoint).await?;
    Ok((server, client))
}

macro_rules! dev_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() -> anyhow::Result<()> {
            let (server, client) = dev().await?;
            let result = corral_e2e::$name(&client).await;
            if result.is_err() {
                eprintln!("--- corral dev log:\n{}", server.proc.log_tail(6000));
            }
            result
        }
    };
}

dev_test!(lifecycle);
dev_test!(abandoned_create);
dev_test!(exec);
dev_test!(background_server);
dev_test!(files);
dev_test!(bad_input);
dev_test!(ttl_expiry);
dev_test!(set_timeout);
dev_test!(background_processes);
dev_test!(sessions);
dev_test!(languages_list);
dev_test!(run_code);
dev_test!(run_code_errors);
dev_test!(docker_run_code);
dev_test!(process_and_session_errors);
dev_test!(docker_sandbox);
dev_test!(codebase_store);
dev_test!(codebase_bad_rules);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_sandbox_bwrap() -> anyhow::Result<()> {
    let (server, client) = dev().await?;
    let result = codebase_sandbox(&client, corral_client::v1::Runtime::Bwrap).await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(6000));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_fs_crash_bwrap() -> anyhow::Result<()> {
    let (_server, client) = dev().await?;
    codebase_fs_crash(&client, corral_client::v1::Runtime::Bwrap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_fs_crash_docker() -> anyhow::Result<()> {
    let (_server, client) = dev().await?;
    codebase_fs_crash(&client, corral_client::v1::Runtime::Docker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_permission_matrix_bwrap() -> anyhow::Result<()> {
    let (_server, client) = dev().await?;
    codebase_permission_matrix(&client, corral_client::v1::Runtime::Bwrap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_permission_matrix_docker() -> anyhow::Result<()> {
    let (_server, client) = dev().await?;
    codebase_permission_matrix(&client, corral_client::v1::Runtime::Docker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_upload_limits() -> anyhow::Result<()> {
    let env = [
        ("CORRAL_COORDINATOR__CODEBASE_MAX_FILES", "3"),
        ("CORRAL_COORDINATOR__CODEBASE_MAX_MB", "1"),
        ("CORRAL_COORDINATOR__CODEBASE_MAX_FILE_MB", "1"),
    ];
    let server = DevServer::start_with_env(&env)?;
    let client = ready_client(&server.endpoint).await?;
    codebase_limits(&client).await
}

/// 100 sandboxes on one codebase: one copy on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_one_copy_for_100_sandboxes() -> anyhow::Result<()> {
    let (server, client) = dev().await?;
    let result = codebase_one_copy(&client, &server.dir.path().join("state"), 100).await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(6000));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codebase_sandbox_docker() -> anyhow::Result<()> {
    let (server, client) = dev().await?;
    let result = codebase_sandbox(&client, corral_client::v1::Runtime::Docker).await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(6000));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_output_keeps_memory_bounded() -> anyhow::Result<()> {
    let (server, client) = dev().await?;
    huge_output(&client).await?;
    let (rss, peak) = server.proc.memory_kib().ok_or_else(|| anyhow::anyhow!("no memory figures"))?;
    anyhow::ensure!(peak < 400 * 1024, "corral dev peaked at {peak} KiB (rss {rss} KiB) for 200 MB of output");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_bwrap() -> anyhow::Result<()> {
    let (_server, client) = dev().await?;
    pause_resume(&client, corral_client::v1::Runtime::Bwrap).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_docker() -> anyhow::Result<()> {
    let (_server, client) = dev().await?;
    pause_resume(&client, corral_client::v1::Runtime::Docker).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_quota_bwrap() -> anyhow::Result<()> {
    let (server, client) = dev().await?;
    let result = disk_quota(&client, corral_client::v1::Runtime::Bwrap).await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(6000));
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_quota_docker() -> anyhow::Result<()> {
    let (server, client) = dev().await?;
    let result = disk_quota(&client, corral_client::v1::Runtime::Docker).await;
    if result.is_err() {
        eprintln!("--- corral dev log:\n{}", server.proc.log_tail(6000));
    }
    result
}
