//! File operations on a sandbox's writable areas, shared by the agent (bubblewrap: on the host
//! directories behind `/workspace` and `/tmp`) and by the init (Docker: inside the container).
//!
//! [`resolve`] maps a sandbox path lexically: `/workspace/…` and `/tmp/…` to their area, relative
//! paths to `/workspace`, anything else (other absolute paths, `..`, NUL, over-long) is refused.
//! Every lookup then goes through `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV` relative to a descriptor of the area's directory, so absolute symlinks and
//! symlinks leading outside are refused by the kernel and the outside file is never opened; the
//! remaining steps use `*at` calls on single names with `O_NOFOLLOW`. FIFOs and devices are never
//! opened for reading.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest accepted sandbox path.
pub const MAX_PATH: usize = 4096;
/// Most entries returned by one listing.
pub const MAX_LIST: usize = 100_000;
/// Deepest directory tree a recursive remove descends.
const MAX_DEPTH: usize = 256;

/// A writable area of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Workspace,
    Tmp,
}

/// A lexically valid sandbox path: its area and components (no `.`, `..` or empty ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath {
    pub area: Area,
    pub parts: Vec<String>,
}

/// Maps a sandbox path to an area and components; `Err` says why it is refused.
pub fn resolve(path: &str) -> Result<SandboxPath, &'static str> {
    if path.len() > MAX_PATH {
        return Err("longer than 4096 bytes");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let under = |prefix: &str| path.strip_prefix(prefix).filter(|r| r.is_empty() || r.starts_with('/'));
    let (area, rest) = match (under("/workspace"), under("/tmp")) {
        (Some(rest), _) => (Area::Workspace, rest),
        (_, Some(rest)) => (Area::Tmp, rest),
        _ if path.starts_with('/') => return Err("must be under /workspace or /tmp"),
        _ => (Area::Workspace, path),
    };
    let parts: Vec<String> = rest.split('/').filter(|p| !p.is_empty() && *p != ".").map(str::to_owned).collect();
    if parts.iter().any(|p| p == "..") {
        return Err("must not contain '..'");
    }
    Ok(SandboxPath { area, parts })
}

/// Where an operation happens: the area's directory, the components beneath it, and the
/// `(uid, gid)` to give what is created (when the caller is not the sandbox user itself).
#[derive(Debug, Clone)]
pub struct Target {
    pub root: PathBuf,
    pub parts: Vec<String>,
    pub owner: Option<(u32, u32)>,
}

/// Part of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData {
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Total file size.
    pub size: u64,
    pub mode: u32,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub is_symlink: bool,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: i64,
}

/// One piece of a write (see [`write`]).
#[derive(Debug, Clone, Copy)]
pub struct WritePiece<'a> {
    pub data: &'a [u8],
    pub offset: u64,
    pub last: bool,
    pub mode: u32,
    /// Names the temp file; the same for every piece of one write.
    pub token: u64,
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

fn open_root(r: &Target) -> io::Result<OwnedFd> {
    let f = File::options().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(&r.root)?;
    Ok(f.into())
}

/// A read of something that is not a regular file (FIFO, device, socket).
#[derive(Debug, thiserror::Error)]
#[error("not a regular file")]
pub struct NotRegular;

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

/// Reads up to `len` bytes at `offset` of a regular file (never opening FIFOs or devices).
pub fn read(r: &Target, offset: u64, len: u32) -> io::Result<FileData> {
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
    Ok(FileData { data, size: meta.len(), mode: meta.mode() & 0o7777 })
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

/// One piece of an atomic write: the data goes to `offset` of a temp file named after `token` in
/// the target's directory (created, with missing parents, at offset 0); the `last` piece sets
/// `mode` and renames the temp file over the target. On error the temp file is removed.
pub fn write(r: &Target, piece: &WritePiece<'_>) -> io::Result<u64> {
    let root = open_root(r)?;
    let (name, parents) = r.parts.split_last().ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
    let dir = make_dirs(&root, parents, r.owner)?;
    let tmp = format!(".corral-write-{:016x}", piece.token);
    let result = write_piece(&dir, &tmp, name, r.owner, piece);
    if result.is_err() {
        let _ = unlink_name(&dir, &tmp, 0);
    }
    result
}

fn write_piece(dir: &OwnedFd, tmp: &str, name: &str, owner: Option<(u32, u32)>, p: &WritePiece<'_>) -> io::Result<u64> {
    let flags = if p.offset == 0 { libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL } else { libc::O_WRONLY };
    let file = File::from(open_name(dir, tmp, flags, 0o600)?);
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    if p.offset == 0
        && let Some((uid, gid)) = owner
    {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.write_all_at(p.data, p.offset)?;
    if !p.last {
        return Ok(p.offset + p.data.len() as u64);
    }
    file.set_permissions(Permissions::from_mode(p.mode))?;
    let (from, to) = (cstr(tmp)?, cstr(name)?);
    // SAFETY: both names are valid C strings relative to the same verified directory.
    ret(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })?;
    Ok(p.offset + p.data.len() as u64)
}

/// The entries of a directory, sorted by name, at most [`MAX_LIST`].
pub fn list(r: &Target) -> io::Result<Vec<Entry>> {
    let root = open_root(r)?;
    let dir = open_beneath(&root, &r.parts.join("/"), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut entries = Vec::new();
    for name in read_names(&dir)? {
        let Ok(st) = stat_name(&dir, &name) else { continue };
        let kind = st.st_mode & libc::S_IFMT;
        entries.push(Entry {
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

/// Removes a file, symlink or (empty, or with `recursive` any) directory.
pub fn remove(r: &Target, recursive: bool) -> io::Result<()> {
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
        let ok = |p: &str| resolve(p).map(|r| (r.area, r.parts.join("/"))).unwrap();
        assert_eq!(ok("/workspace/a/./b//c"), (Area::Workspace, "a/b/c".into()));
        assert_eq!(ok("/workspace"), (Area::Workspace, String::new()));
        assert_eq!(ok("/tmp/x"), (Area::Tmp, "x".into()));
        assert_eq!(ok("rel/y"), (Area::Workspace, "rel/y".into()));
        for bad in ["/etc/passwd", "/", "/workspacex", "/tmpx/y", "a/../b", "/workspace/..", "a\0b"] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
        assert!(resolve(&"a".repeat(MAX_PATH + 1)).is_err());
    }
}
