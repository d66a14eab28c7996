//! What both runtimes do the same way once a sandbox's init is connected: build and send execs
//! (the environment is exactly PATH/HOME/LANG plus the sandbox's and the exec's variables), kill
//! them, and refuse execs while the sandbox is paused.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corral_core::ids::{ExecId, SandboxId};
use corral_core::model::{Command, ExecSpec, SandboxSpec};
use corral_init::protocol::{Request, SpawnRequest};

use super::conn::Conn;
use super::{ExecHandle, RuntimeError, RuntimeResult};

/// PATH inside sandboxes (the system one: host-user tool managers such as pyenv are not there).
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const SANDBOX_HOME: &str = "/workspace";
pub const SANDBOX_LANG: &str = "C.UTF-8";
/// Where the init binary is mounted inside every sandbox.
pub const INIT_IN_SANDBOX: &str = "/.corral/init";
/// Output cap per stream when the exec does not set one.
pub const DEFAULT_MAX_OUTPUT: u64 = 16 * 1024 * 1024;
/// How long the init may take to answer a request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected sandbox init plus the sandbox's exec defaults.
pub struct InitClient {
    pub sandbox: SandboxId,
    pub conn: Arc<Conn>,
    env: BTreeMap<String, String>,
    workdir: String,
    paused: AtomicBool,
}

impl InitClient {
    pub fn new(spec: &SandboxSpec, conn: Arc<Conn>) -> Self {
        Self {
            sandbox: spec.id.clone(),
            conn,
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            paused: AtomicBool::new(false),
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Refuses operations that need the (frozen) init while the sandbox is paused.
    pub fn check_running(&self) -> RuntimeResult<()> {
        if self.is_paused() {
            return Err(RuntimeError::Invalid {
                what: "sandbox",
                why: format!("{} is paused; resume it first", self.sandbox),
            });
        }
        Ok(())
    }

    pub async fn exec(&self, exec: ExecId, spec: ExecSpec) -> RuntimeResult<ExecHandle> {
        self.check_running()?;
        let req = self.spawn_request(exec, spec)?;
        let (started, events) = self.conn.register(exec.0)?;
        if let Err(e) = self.conn.send(&req).await {
            self.conn.unregister(exec.0);
            return Err(e);
        }
        match tokio::time::timeout(REPLY_TIMEOUT, started).await {
            Ok(Ok(Ok(()))) => Ok(ExecHandle { events }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) | Err(_) => {
                self.conn.unregister(exec.0);
                Err(RuntimeError::io("waiting for the sandbox init", io::ErrorKind::TimedOut.into()))
            }
        }
    }

    fn spawn_request(&self, exec: ExecId, spec: ExecSpec) -> RuntimeResult<Request> {
        let cwd = if spec.cwd.is_empty() { self.workdir.clone() } else { spec.cwd };
        check_cwd(&cwd)?;
        let argv = match spec.command {
            Command::Argv(argv) if !argv.is_empty() => argv,
            Command::Argv(_) => return Err(RuntimeError::Invalid { what: "command", why: "empty argv".into() }),
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
        };
        let mut env = base_env();
        env.extend(self.env.iter().chain(&spec.env).map(|(k, v)| (k.clone(), v.clone())));
        if let Some(k) = env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            return Err(RuntimeError::Invalid { what: "env", why: format!("bad variable name {k:?}") });
        }
        Ok(Request::Spawn(SpawnRequest {
            id: exec.0,
            argv,
            env: env.into_iter().collect(),
            cwd,
            stdin: spec.stdin,
            timeout_ms: spec.timeout_ms,
            max_output_bytes: if spec.max_output_bytes == 0 { DEFAULT_MAX_OUTPUT } else { spec.max_output_bytes },
            side_channel: spec.side_channel,
        }))
    }

    pub async fn kill_exec(&self, exec: ExecId) -> RuntimeResult<()> {
        if !self.conn.is_running(exec.0) {
            return Err(RuntimeError::ExecNotFound { sandbox: self.sandbox.clone(), exec });
        }
        self.conn.send(&Request::Kill { id: exec.0 }).await
    }

    pub async fn signal_exec(&self, exec: ExecId, signal: i32) -> RuntimeResult<()> {
        self.check_running()?;
        if !self.conn.is_running(exec.0) {
            return Err(RuntimeError::ExecNotFound { sandbox: self.sandbox.clone(), exec });
        }
        self.conn.send(&Request::Signal { id: exec.0, signal }).await
    }
}

/// The variables every command gets before the sandbox's and its own: PATH, HOME and LANG.
pub fn base_env() -> BTreeMap<String, String> {
    let base = [("PATH", SANDBOX_PATH), ("HOME", SANDBOX_HOME), ("LANG", SANDBOX_LANG)];
    base.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Accepts absolute paths under `/workspace` or `/tmp` without `..`.
fn check_cwd(cwd: &str) -> RuntimeResult<()> {
    let invalid = |why: &str| RuntimeError::Invalid { what: "cwd", why: format!("{cwd:?} {why}") };
    if cwd.len() > 4096 || cwd.contains('\0') {
        return Err(invalid("is too long or contains NUL"));
    }
    let under = |root: &str| cwd.strip_prefix(root).is_some_and(|r| r.is_empty() || r.starts_with('/'));
    if !under("/workspace") && !under("/tmp") {
        return Err(invalid("must be under /workspace or /tmp"));
    }
    if cwd.split('/').any(|c| c == "..") {
        return Err(invalid("must not contain '..'"));
    }
    Ok(())
}
