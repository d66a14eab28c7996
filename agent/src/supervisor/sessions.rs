//! Shell sessions: a working directory and exported environment that persist from one command
//! to the next. Each command runs in a fresh `/bin/sh` that first restores the session's state,
//! then `eval`s the command; an EXIT trap writes the shell's final `pwd` and `env -0` to the
//! command's side channel (fd 3, apart from its output), and the agent keeps that as the
//! session's new state.
//!
//! Why not one long-lived shell per session: a persistent shell needs prompt/marker parsing of
//! its output (which the command can forge or break), a command that reads stdin or `exec`s
//! would take the session over, and a timeout or a crash would lose all state. A fresh shell per
//! command keeps the exec path (timeouts, output caps, kill-the-tree) exactly the one `Exec`
//! uses; what persists is what sessions promise: `cd` and `export` (shell functions, aliases and
//! unexported variables do not). A command that times out, is killed or `exec`s another program
//! leaves the state as it was before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use corral_core::ids::{ExecId, SandboxId, SessionId};
use corral_core::model::{Command, ExecSpec, SandboxSpec};
use tokio::sync::mpsc;

use crate::runtime::client::base_env;
use crate::runtime::{ExecEvent, Runtime, RuntimeError, RuntimeResult};

/// Sessions a sandbox may have open at once.
pub const MAX_SESSIONS: usize = 16;

/// `$1` = the session's cwd, `$2` = variables to unset (names the runtime would add back),
/// `$3` = the command line.
const WRAPPER: &str = r#"__corral_old=${OLDPWD-}
cd -- "$1" 2>/dev/null || printf 'corral: session directory %s is gone; now in %s\n' "$1" "$PWD" >&2
if [ -n "$__corral_old" ]; then OLDPWD=$__corral_old; else unset OLDPWD; fi
for __corral_v in $2; do unset "$__corral_v"; done
__corral_cmd=$3
unset __corral_old __corral_v
shift 3
__corral_save() { __corral_rc=$?; { pwd; printf '\0'; env -0; } >&3 2>/dev/null; exit "$__corral_rc"; }
trap __corral_save EXIT
eval "$__corral_cmd"
"#;

/// Variables the shell sets for itself; never part of a session's state.
const SHELL_OWN: [&str; 3] = ["PWD", "SHLVL", "_"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    cwd: String,
    env: BTreeMap<String, String>,
}

struct Session {
    /// Names the runtime adds to every command (PATH/HOME/LANG and the sandbox's env): unset
    /// explicitly when the session unset them.
    defaults: BTreeSet<String>,
    state: Arc<tokio::sync::Mutex<State>>,
}

/// The sessions of every sandbox on this node.
#[derive(Default)]
pub struct Sessions {
    sandboxes: Mutex<HashMap<SandboxId, HashMap<SessionId, Arc<Session>>>>,
}

/// The spec of one session command.
pub struct SessionCommand {
    pub command: String,
    pub timeout_ms: u64,
    pub max_output_bytes: u64,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<SandboxId, HashMap<SessionId, Arc<Session>>>> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session in `cwd` (empty: the sandbox's workdir) with `env` over the sandbox's.
    pub fn open(&self, spec: &SandboxSpec, cwd: String, env: BTreeMap<String, String>) -> RuntimeResult<SessionId> {
        let mut full = base_env();
        full.extend(spec.env.clone());
        let defaults = full.keys().cloned().collect();
        full.extend(env);
        let cwd = if cwd.is_empty() { spec.workdir.clone() } else { cwd };
        let session = Session { defaults, state: Arc::new(tokio::sync::Mutex::new(State { cwd, env: full })) };
        let mut map = self.lock();
        let open = map.entry(spec.id.clone()).or_default();
        if open.len() >= MAX_SESSIONS {
            return Err(RuntimeError::ResourceExhausted(format!(
                "sandbox {} already has {MAX_SESSIONS} open sessions (the limit per sandbox); close one first",
                spec.id
            )));
        }
        let id = SessionId::random(&spec.id);
        open.insert(id.clone(), Arc::new(session));
        Ok(id)
    }

    fn get(&self, id: &SessionId) -> RuntimeResult<Arc<Session>> {
        let found = self.lock().get(id.sandbox()).and_then(|m| m.get(id).cloned());
        found.ok_or_else(|| RuntimeError::SessionNotFound(id.to_string()))
    }

    /// Runs a command in the session; its events end with `Exit`, sent after the session's state
    /// was updated. A session runs one command at a time.
    pub async fn exec(
        &self,
        rt: &Arc<dyn Runtime>,
        id: &SessionId,
        exec: ExecId,
        cmd: SessionCommand,
    ) -> RuntimeResult<mpsc::Receiver<ExecEvent>> {
        let session = self.get(id)?;
        let mut state = session.state.clone().try_lock_owned().map_err(|_| {
            RuntimeError::Conflict(format!(
                "session {id} is running another command; open another session to run commands concurrently"
            ))
        })?;
        let unset: Vec<&str> =
            session.defaults.iter().filter(|k| !state.env.contains_key(*k)).map(String::as_str).collect();
        let argv = ["/bin/sh", "-c", WRAPPER, "corral-session", &state.cwd, &unset.join(" "), &cmd.command];
        let spec = ExecSpec {
            command: Command::Argv(argv.iter().map(|s| s.to_string()).collect()),
            env: state.env.clone(),
            cwd: "/tmp".to_owned(),
            timeout_ms: cmd.timeout_ms,
            stdin: Vec::new(),
            max_output_bytes: cmd.max_output_bytes,
            side_channel: true,
        };
        let mut handle = rt.exec(id.sandbox(), exec, spec).await?;
        let (tx, rx) = mpsc::channel(crate::runtime::conn::EXEC_CHANNEL);
        corral_core::task::spawn_detached("agent.session_exec", async move {
            let mut side = Vec::new();
            while let Some(event) = handle.events.recv().await {
                match event {
                    ExecEvent::Side(d) => side.extend(d),
                    ExecEvent::Exit(status) => {
                        if let Some(next) = parse_state(&side) {
                            *state = next;
                        }
                        drop(state);
                        let _ = tx.send(ExecEvent::Exit(status)).await;
                        return;
                    }
                    other => drop(tx.send(other).await),
                }
            }
        });
        Ok(rx)
    }

    pub fn close(&self, id: &SessionId) -> RuntimeResult<()> {
        let removed = self.lock().get_mut(id.sandbox()).and_then(|m| m.remove(id));
        removed.map(|_| ()).ok_or_else(|| RuntimeError::SessionNotFound(id.to_string()))
    }

    /// Forgets a destroyed sandbox's sessions.
    pub fn forget(&self, sandbox: &SandboxId) {
        self.lock().remove(sandbox);
    }
}

/// Reads `pwd` NUL `env -0` as written by the wrapper; `None` when nothing usable came back.
fn parse_state(side: &[u8]) -> Option<State> {
    let mut parts = side.split(|b| *b == 0);
    let cwd = std::str::from_utf8(parts.next()?).ok()?;
    let cwd = cwd.strip_suffix('\n').unwrap_or(cwd);
    if !cwd.starts_with('/') {
        return None;
    }
    let valid_name = |k: &str| {
        !k.is_empty()
            && !k.as_bytes()[0].is_ascii_digit()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !SHELL_OWN.contains(&k)
    };
    let env = parts
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .filter(|(k, _)| valid_name(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some(State { cwd: cwd.to_owned(), env })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_from_the_side_channel() {
        let side = b"/workspace/sub\n\0A=1\0PWD=/x\0SHLVL=1\0B=x=y\0bad-name=1\0";
        let st = parse_state(side).unwrap();
        assert_eq!(st.cwd, "/workspace/sub");
        let env: Vec<(&str, &str)> = st.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(env, vec![("A", "1"), ("B", "x=y")]);
        assert_eq!(parse_state(b""), None);
        assert_eq!(parse_state(b"relative\n\0"), None);
    }
}
