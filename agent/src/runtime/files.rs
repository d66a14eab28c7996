//! Host-side file operations on a sandbox's writable areas. Sandbox paths map `/workspace/…` to the
//! sandbox's `workspace` directory, `/tmp/…` to its `tmp` directory, and relative paths to
//! `/workspace`. Every lookup goes through `openat2(2)` with `RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` relative to a descriptor of that directory, so `..`,
//! absolute symlinks and symlinks leading outside are refused by the kernel and the host file is
//! never opened; the remaining steps use `*at` calls on single names with `O_NOFOLLOW`.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use corral_core::model::FileEntry;

use super::{FileChunk, RuntimeError, RuntimeResult};

/// Longest accepted sandbox path.
pub const MAX_PATH: usize = 4096;
/// Largest piece returned by one read.
pub const MAX_READ: u32 = 16 * 1024 * 1024;
/// Most entries returned by one listing.
pub const MAX_LIST: usize = 100_000;
/// Deepest directory tree a recursive remove descends.
const MAX_DEPTH: usize = 256;

/// The writable areas of one sandbox on the host.
#[derive(Debug, Clone)]
pub struct SandboxFs {
    workspace: PathBuf,
    tmp: PathBuf,
    /// Host `(uid, gid)` given to what the API creates, so the sandbox user owns it.
    owner: Option<(u32, u32)>,
}

/// A validated sandbox path: its area and its components (no `.`, `..` or empty ones).
struct Resolved {
    root: PathBuf,
    parts: Vec<String>,
    owner: Option<(u32, u32)>,
}

impl SandboxFs {
    pub fn new(workspace: PathBuf, tmp: PathBuf, owner: Option<(u32, u32)>) -> Self {
        Self { workspace, tmp, owner }
    }

    /// Maps a sandbox path to an area and relative components, refusing anything else lexically.
    fn resolve(&self, path: &str) -> RuntimeResult<Resolved> {
        let invalid = |why: &str| RuntimeError::InvalidPath { path: path.to_owned(), why: why.to_owned() };
        if path.len() > MAX_PATH {
            return Err(invalid("longer than 4096 bytes"));
        }
        if path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let under = |prefix: &str| path.strip_prefix(prefix).filter(|r| r.is_empty() || r.starts_with('/'));
        let (root, rest) = match (under("/workspace"), under("/tmp")) {
            (Some(rest), _) => (&self.workspace, rest),
            (_, Some(rest)) => (&self.tmp, rest),
            _ if path.starts_with('/') => return Err(invalid("must be under /workspace or /tmp")),
            _ => (&self.workspace, path),
        };
        let parts: Vec<String> = rest.split('/').filter(|p| !p.is_empty() && *p != ".").map(str::to_owned).collect();
        if parts.iter().any(|p| p == "..") {
            return Err(invalid("must not contain '..'"));
        }
        Ok(Resolved { root: root.clone(), parts, owner: self.owner })
    }

    pub async fn read(&self, path: &str, offset: u64, len: u32) -> RuntimeResult<FileChunk> {
        let r = self.resolve(path)?;
        blocking(path, move || read_blocking(&r, offset, len.min(MAX_READ))).await
    }

    /// Writes atomically (temp file + rename), creating parents; `mode` 0 means 0o644, and the
    /// setuid/setgid bits are dropped.
    pub async fn write(&self, path: &str, data: Vec<u8>, mode: u32) -> RuntimeResult<u64> {
        let r = self.resolve(path)?;
        if r.parts.is_empty() {
            return Err(RuntimeError::InvalidPath { path: path.to_owned(), why: "is a directory".into() });
        }
        let mode = if mode == 0 { 0o644 } else { mode & 0o1777 };
        blocking(path, move || write_blocking(&r, &data, mode)).await
    }

    pub async fn list(&self, path: &str) -> RuntimeResult<Vec<FileEntry>> {
        let r = self.resolve(path)?;
        blocking(path, move || list_blocking(&r)).await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> RuntimeResult<()> {
        let r = self.resolve(path)?;
        if r.parts.is_empty() {
            return Err(RuntimeError::InvalidPath { path: path.to_owned(), why: "cannot remove a root".into() });
        }
        blocking(path, move || remove_blocking(&r, recursive)).await
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

fn path_error(path: &str, e: io::Error) -> RuntimeError {
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
        Some(libc::ENOSPC | libc::EDQUOT) => RuntimeError::ResourceExhausted(format!("{path:?}: no space left")),
        _ if e.get_ref().is_some_and(|i| i.is::<NotRegular>()) => refused("not a regular file"),
        _ => RuntimeError::io(format!("path {path:?}"), e),
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fd_result(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ret(r: libc::c_int) -> io::Result<()> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `rel` (may contain `/`) beneath `dir`, never leaving it.
fn open_beneath(dir: &OwnedFd, rel: &str, flags: i32) -> io::Result<OwnedFd> {
    let rel = cstr(if rel.is_empty() { "." } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    };
    // SAFETY: `rel` and `how` outlive the call; the size passed is that of `how`.
    let fd = unsafe {
        libc::syscall(libc::SYS_openat2, dir.as_raw_fd(), rel.as_ptr(), &how, std::mem::size_of::<OpenHow>())
    };
    fd_result(fd)
}

/// Opens a single name in `dir` without following a symlink in its place.
fn open_name(dir: &OwnedFd, name: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `name` is a valid C string for the duration of the call.
    fd_result(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) } as libc::c_long)
}

fn open_root(r: &Resolved) -> io::Result<OwnedFd> {
    let f = File::options().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(&r.root)?;
    Ok(f.into())
}

/// A read of something that is not a regular file (FIFO, device, socket).
#[derive(Debug, thiserror::Error)]
#[error("not a regular file")]
struct NotRegular;

fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegular)
}

/// `lstat` of a single name in `dir`.
fn stat_name(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` and `st` are valid for the call.
    ret(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn unlink_name(dir: &OwnedFd, name: &str, flags: i32) -> io::Result<()> {
    let name = cstr(name)?;
    // SAFETY: `name` is a valid C string for the duration of the call.
    ret(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// Names in a directory (without `.` and `..`), at most [`MAX_LIST`].
fn read_names(dir: &OwnedFd) -> io::Result<Vec<String>> {
    // SAFETY: duplicating a valid descriptor; fdopendir takes ownership of the duplicate.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    ret(dup)?;
    // SAFETY: `dup` is a valid directory descriptor we own; on failure we close it.
    let stream = unsafe { libc::fdopendir(dup) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: closing the descriptor fdopendir did not take.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: `stream` is a valid DIR*; the entry is copied before the next readdir.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() || names.len() >= MAX_LIST {
            break;
        }
        // SAFETY: d_name of a returned entry is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        let name = OsStr::from_bytes(name.to_bytes()).to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    // SAFETY: `stream` is valid and closed exactly once (this also closes `dup`).
    unsafe { libc::closedir(stream) };
    Ok(names)
}

fn read_blocking(r: &Resolved, offset: u64, len: u32) -> io::Result<FileChunk> {
    let root = open_root(r)?;
    let rel = r.parts.join("/");
    // Look first without opening (O_PATH), so FIFOs and devices are never opened.
    let probe = File::from(open_beneath(&root, &rel, libc::O_PATH)?).metadata()?;
    if probe.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !probe.is_file() {
        return Err(not_regular());
    }
    let file = File::from(open_beneath(&root, &rel, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?);
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (probe.dev(), probe.ino()) || !meta.is_file() {
        return Err(not_regular());
    }
    let want = (len as u64).min(meta.len().saturating_sub(offset)) as usize;
    let mut data = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut data[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    data.truncate(got);
    Ok(FileChunk { data, size: meta.len(), mode: meta.mode() & 0o7777 })
}

/// Opens (creating as needed) the directory `parts` beneath `root`.
fn make_dirs(root: &OwnedFd, parts: &[String], owner: Option<(u32, u32)>) -> io::Result<OwnedFd> {
    if let Ok(fd) = open_beneath(root, &parts.join("/"), libc::O_PATH | libc::O_DIRECTORY) {
        return Ok(fd);
    }
    let mut dir = open_beneath(root, "", libc::O_PATH | libc::O_DIRECTORY)?;
    for i in 0..parts.len() {
        let name = cstr(&parts[i])?;
        // SAFETY: `name` is a valid C string; mkdirat never follows a symlink in the last component.
        if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        } else if let Some((uid, gid)) = owner {
            // SAFETY: `name` is a valid C string; the directory was just made, not followed.
            ret(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
        }
        dir = open_beneath(root, &parts[..=i].join("/"), libc::O_PATH | libc::O_DIRECTORY)?;
    }
    Ok(dir)
}

fn write_blocking(r: &Resolved, data: &[u8], mode: u32) -> io::Result<u64> {
    let root = open_root(r)?;
    let (name, parents) = r.parts.split_last().ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
    let dir = make_dirs(&root, parents, r.owner)?;
    let tmp = format!(".corral-write-{:016x}", rand::random::<u64>());
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let mut file = File::from(open_name(&dir, &tmp, flags, 0o600)?);
    let owned = r.owner.map_or(Ok(()), |(uid, gid)| std::os::unix::fs::fchown(&file, Some(uid), Some(gid)));
    let written = owned.and_then(|()| file.write_all(data));
    let written = written.and_then(|()| file.set_permissions(Permissions::from_mode(mode)));
    let renamed = written.and_then(|()| {
        let (from, to) = (cstr(&tmp)?, cstr(name)?);
        // SAFETY: both names are valid C strings relative to the same verified directory.
        ret(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
    });
    if renamed.is_err() {
        let _ = unlink_name(&dir, &tmp, 0);
    }
    renamed.map(|()| data.len() as u64)
}

fn list_blocking(r: &Resolved) -> io::Result<Vec<FileEntry>> {
    let root = open_root(r)?;
    let dir = open_beneath(&root, &r.parts.join("/"), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut entries = Vec::new();
    for name in read_names(&dir)? {
        let Ok(st) = stat_name(&dir, &name) else { continue };
        let kind = st.st_mode & libc::S_IFMT;
        entries.push(FileEntry {
            name,
            is_dir: kind == libc::S_IFDIR,
            is_symlink: kind == libc::S_IFLNK,
            size: st.st_size as u64,
            mode: st.st_mode & 0o7777,
            mtime_ms: st.st_mtime * 1000 + st.st_mtime_nsec / 1_000_000,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

fn remove_blocking(r: &Resolved, recursive: bool) -> io::Result<()> {
    let root = open_root(r)?;
    let (name, parents) = r.parts.split_last().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = open_beneath(&root, &parents.join("/"), libc::O_PATH | libc::O_DIRECTORY)?;
    let st = stat_name(&dir, name)?;
    match (st.st_mode & libc::S_IFMT == libc::S_IFDIR, recursive) {
        (true, true) => remove_tree(&dir, name, 0),
        (true, false) => unlink_name(&dir, name, libc::AT_REMOVEDIR),
        (false, _) => unlink_name(&dir, name, 0),
    }
}

/// Removes the directory `name` in `parent` and everything in it, never following symlinks.
fn remove_tree(parent: &OwnedFd, name: &str, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let dir = open_name(parent, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for child in read_names(&dir)? {
        match stat_name(&dir, &child) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => remove_tree(&dir, &child, depth + 1)?,
            Ok(_) => unlink_name(&dir, &child, 0)?,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    unlink_name(parent, name, libc::AT_REMOVEDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_paths_map_to_areas_or_are_refused() {
        let fs = SandboxFs::new("/h/ws".into(), "/h/tmp".into(), None);
        let ok = |p: &str| fs.resolve(p).map(|r| (r.root, r.parts.join("/"))).unwrap();
        assert_eq!(ok("/workspace/a/./b//c"), ("/h/ws".into(), "a/b/c".into()));
        assert_eq!(ok("/workspace"), ("/h/ws".into(), String::new()));
        assert_eq!(ok("/tmp/x"), ("/h/tmp".into(), "x".into()));
        assert_eq!(ok("rel/y"), ("/h/ws".into(), "rel/y".into()));
        for bad in ["/etc/passwd", "/", "/workspacex", "/tmpx/y", "a/../b", "/workspace/..", "a\0b"] {
            assert!(matches!(fs.resolve(bad), Err(RuntimeError::InvalidPath { .. })), "{bad:?}");
        }
        assert!(fs.resolve(&"a".repeat(MAX_PATH + 1)).is_err());
    }
}
