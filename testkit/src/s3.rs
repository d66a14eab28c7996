//! [`S3Server`]: a real S3-protocol server (`s3s-fs`) on a free loopback port, storing in a
//! temporary directory, with one bucket and static credentials. [`S3Server::stop`] and
//! [`S3Server::restart`] (same port, same data) let tests check what clients do in an outage.
//!
//! `s3s-fs` is a Rust crate (`cargo install s3s-fs@0.14.1 --features binary --locked`, done by
//! `scripts/install-deps.sh --test`); newer versions need a newer Rust. A bucket is a directory
//! under its root, so the bucket is made before the server starts. It is ready once it accepts
//! connections and its own log says it runs on our port (another test's server may own it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::{file_contains, find_binary, free_port, wait_for_port, with_port_retries};

const INSTALL_HINT: &str =
    "install it with `cargo install s3s-fs@0.14.1 --features binary --locked` (or `scripts/install-deps.sh --test`)";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of the server log quoted in start errors.
const LOG_TAIL: u64 = 4096;
const BUCKET: &str = "corral-test";
const ACCESS_KEY: &str = "corral-test-access";
const SECRET_KEY: &str = "corral-test-secret";
const REGION: &str = "us-east-1";

/// A running s3s-fs, killed (by PID) and waited for on drop.
pub struct S3Server {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl S3Server {
    /// Creates the bucket, starts the server and waits (blocking) until it serves requests.
    pub fn start() -> anyhow::Result<Self> {
        let binary = s3s_fs_binary()?;
        with_port_retries(|| {
            let dir = tempfile::Builder::new().prefix("corral-s3-").tempdir().context("creating s3 data dir")?;
            let bucket = dir.path().join("data").join(BUCKET);
            std::fs::create_dir_all(&bucket).with_context(|| format!("creating bucket dir {}", bucket.display()))?;
            let mut server = Self { binary: binary.clone(), port: free_port(), dir, child: None };
            server.spawn()?;
            Ok(server)
        })
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint (path-style requests, plain HTTP).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket made at start.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    /// The secret access key the server accepts.
    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The region clients should sign for (the server accepts any).
    pub fn region(&self) -> &str {
        REGION
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PID of the running server (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The connection settings as a JSON object (`{"kind": "s3", "endpoint": …, "bucket": …,
    /// "region": …, "access_key_id": …, "secret_access_key": …}`), the shape of Corral's blob
    /// config, without this crate depending on it.
    pub fn config_json(&self) -> String {
        format!(
            r#"{{"kind": "s3", "endpoint": "{}", "bucket": "{BUCKET}", "region": "{REGION}", "access_key_id": "{ACCESS_KEY}", "secret_access_key": "{SECRET_KEY}"}}"#,
            self.endpoint()
        )
    }

    /// Where the bucket's objects are stored on disk (one file per key).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("data").join(BUCKET)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it to exit: an outage.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::terminate(child, STOP_TIMEOUT);
        }
    }

    /// Stops the server and starts it again on the same port with the same data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).context("opening s3 log")?;
        let log_err = log.try_clone().context("opening s3 log")?;
        let child = Command::new(&self.binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path().join("data"))
            // Its start-up line is how we know the server on the port is ours.
            .env("RUST_LOG", "s3s_fs=info,s3s=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            self.stop();
            return Err(e.context(format!("s3s-fs log tail:\n{}", self.log_tail())));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let running = format!("server is running at http://127.0.0.1:{}", self.port);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("waiting for s3s-fs")?
            {
                bail!("s3s-fs exited during start-up with {status}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("s3s-fs did not serve on port {} within {READY_TIMEOUT:?}", self.port);
            }
            if wait_for_port(self.port, left.min(Duration::from_millis(200))).is_ok()
                && file_contains(&self.log_path(), &running)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(self.log_path())?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL)))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail)?;
            Ok(String::from_utf8_lossy(&tail).into_owned())
        };
        read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `s3s-fs` on `PATH`, else in cargo's bin directory (where `cargo install` puts it).
fn s3s_fs_binary() -> anyhow::Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let cargo_bin = cargo_home.map(|home| home.join("bin").to_string_lossy().into_owned());
    let fallbacks: Vec<&str> = cargo_bin.as_deref().into_iter().collect();
    find_binary("s3s-fs", &fallbacks, INSTALL_HINT)
}
