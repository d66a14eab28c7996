//! The files API of both runtimes. Path rules and the confined file operations live in
//! [`corral_init::files`] (shared with the init, which runs them inside Docker containers); this
//! module checks paths the same way for both runtimes, maps failures to [`RuntimeError`]s the same
//! way, and runs the operations on the host for bubblewrap ([`SandboxFs`]).

use std::io;
use std::path::PathBuf;

use corral_core::model::FileEntry;
use corral_init::files::{self, Area, Entry, FileData, SandboxPath, Target, WritePiece};
use corral_init::protocol::FileFailure;

use super::{FileChunk, RuntimeError, RuntimeResult};

pub use corral_init::files::MAX_PATH;
/// Largest piece returned by one read.
pub const MAX_READ: u32 = 16 * 1024 * 1024;

/// Checks a sandbox path lexically.
pub fn check(path: &str) -> RuntimeResult<SandboxPath> {
    files::resolve(path).map_err(|why| RuntimeError::InvalidPath { path: path.to_owned(), why: why.to_owned() })
}

/// Checks the target of a write and normalises its mode (0 means 0o644; setuid/setgid dropped).
pub fn check_write(path: &str, mode: u32) -> RuntimeResult<(SandboxPath, u32)> {
    let p = check(path)?;
    if p.parts.is_empty() {
        return Err(RuntimeError::InvalidPath { path: path.to_owned(), why: "is a directory".into() });
    }
    Ok((p, if mode == 0 { 0o644 } else { mode & 0o1777 }))
}

/// Checks the target of a remove (never an area's root).
pub fn check_remove(path: &str) -> RuntimeResult<SandboxPath> {
    let p = check(path)?;
    if p.parts.is_empty() {
        return Err(RuntimeError::InvalidPath { path: path.to_owned(), why: "cannot remove a root".into() });
    }
    Ok(p)
}

/// Maps a failed file operation on `path` to the runtime's error.
pub fn path_error(path: &str, e: io::Error) -> RuntimeError {
    let path = path.to_owned();
    let refused = |why: &str| RuntimeError::PathRefused { path: path.clone(), why: why.to_owned() };
    let invalid = |why: &str| RuntimeError::InvalidPath { path: path.clone(), why: why.to_owned() };
    match e.raw_os_error() {
        Some(libc::ENOENT) => RuntimeError::PathNotFound { path },
        Some(libc::EXDEV | libc::ELOOP) => refused("resolves outside the sandbox (symlink or mount)"),
        Some(libc::EACCES | libc::EPERM) => refused("permission denied"),
        Some(libc::ENOTDIR) => invalid("it or a parent is not a directory"),
        Some(libc::EISDIR) => invalid("is a directory"),
        Some(libc::ENOTEMPTY) => {
            RuntimeError::PathConflict { path: path.clone(), why: "directory not empty (remove it recursively)".into() }
        }
        Some(libc::ENAMETOOLONG) => invalid("name too long"),
        Some(libc::E2BIG) => RuntimeError::ResourceExhausted(format!("{path:?}: {e}")),
        Some(libc::ENOSPC | libc::EDQUOT) => RuntimeError::ResourceExhausted(format!("{path:?}: no space left")),
        _ if e.get_ref().is_some_and(|i| i.is::<files::NotRegular>()) => refused("not a regular file"),
        _ => RuntimeError::io(format!("path {path:?}"), e),
    }
}

/// The error a file operation inside the sandbox reported.
pub fn failure_error(path: &str, f: FileFailure) -> RuntimeError {
    let e = if f.not_regular {
        io::Error::new(io::ErrorKind::InvalidInput, files::NotRegular)
    } else if f.errno != 0 {
        io::Error::from_raw_os_error(f.errno)
    } else {
        io::Error::other(f.message)
    };
    path_error(path, e)
}

pub fn chunk(d: FileData) -> FileChunk {
    FileChunk { data: d.data, size: d.size, mode: d.mode }
}

pub fn entry(e: Entry) -> FileEntry {
    FileEntry {
        name: e.name,
        is_dir: e.is_dir,
        is_symlink: e.is_symlink,
        size: e.size,
        mode: e.mode,
        mtime_ms: e.mtime_ms,
    }
}

/// The writable areas of one bubblewrap sandbox on the host.
#[derive(Debug, Clone)]
pub struct SandboxFs {
    workspace: PathBuf,
    tmp: PathBuf,
    /// Host `(uid, gid)` given to what the API creates, so the sandbox user owns it.
    owner: Option<(u32, u32)>,
}

impl SandboxFs {
    pub fn new(workspace: PathBuf, tmp: PathBuf, owner: Option<(u32, u32)>) -> Self {
        Self { workspace, tmp, owner }
    }

    fn target(&self, p: SandboxPath) -> Target {
        let root = match p.area {
            Area::Workspace => self.workspace.clone(),
            Area::Tmp => self.tmp.clone(),
        };
        Target { root, parts: p.parts, owner: self.owner }
    }

    pub async fn read(&self, path: &str, offset: u64, len: u32) -> RuntimeResult<FileChunk> {
        let t = self.target(check(path)?);
        blocking(path, move || files::read(&t, offset, len.min(MAX_READ)).map(chunk)).await
    }

    /// Writes atomically (temp file + rename), creating parents.
    pub async fn write(&self, path: &str, data: Vec<u8>, mode: u32) -> RuntimeResult<u64> {
        let (p, mode) = check_write(path, mode)?;
        let t = self.target(p);
        let token = rand::random::<u64>();
        blocking(path, move || files::write(&t, &WritePiece { data: &data, offset: 0, last: true, mode, token })).await
    }

    pub async fn list(&self, path: &str) -> RuntimeResult<Vec<FileEntry>> {
        let t = self.target(check(path)?);
        blocking(path, move || files::list(&t).map(|es| es.into_iter().map(entry).collect())).await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> RuntimeResult<()> {
        let t = self.target(check_remove(path)?);
        blocking(path, move || files::remove(&t, recursive)).await
    }
}

/// Runs `f` on the blocking pool and maps its `io::Error` to a sandbox-path error.
async fn blocking<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> RuntimeResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| path_error(path, e)),
        Err(e) => Err(RuntimeError::io(format!("file operation on {path:?}"), io::Error::other(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_are_invalid_and_roots_protected() {
        for bad in ["/etc/passwd", "/", "a/../b", "a\0b"] {
            assert!(matches!(check(bad), Err(RuntimeError::InvalidPath { .. })), "{bad:?}");
        }
        assert!(check_write("/workspace", 0).is_err() && check_remove("/tmp").is_err());
        assert_eq!(check_write("/tmp/x", 0o4755).unwrap().1, 0o755);
    }
}
