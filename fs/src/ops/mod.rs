//! The FUSE operations: a passthrough of the source directory through the rules.
//!
//! [`ViewFs`] implements `fuser::Filesystem` (in `dispatch`) with thin methods that turn a
//! `Result` into a reply; the work is in `read` (lookup, attributes, opening and reading,
//! listings) and `write` (everything that changes the source). Handles keep host descriptors (`pread`/`pwrite` on them);
//! listings are snapshots taken at `opendir`. Entries and attributes are cached by the kernel for
//! [`TTL`]; read-only opens keep the page cache (`FOPEN_KEEP_CACHE`); `flush` answers ENOSYS once
//! so the kernel stops sending it (a close costs no round trip: host descriptors are closed at
//! `release`).

mod dispatch;
mod read;
mod write;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_core::permissions::{Permission, Rules};
use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo};

use crate::access::{Access, shown_mode};
use crate::host::Host;
use crate::inodes::Inodes;

/// How long the kernel may cache entries and attributes. Short on purpose: once the server dies,
/// names cached before answer from the cache until it expires (metadata only; opens and reads
/// already answer EIO).
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// The largest write the kernel sends in one request; the EIO fallback reads with a buffer sized
/// from it.
pub(crate) const MAX_WRITE: u32 = 1 << 20;

/// An open file: its host descriptor and whether it was opened for writing.
struct Handle {
    fd: OwnedFd,
    writable: bool,
}

/// One entry of a listing snapshot.
struct Entry {
    name: OsString,
    ino: u64,
    kind: FileType,
}

pub(crate) struct ViewFs {
    host: Host,
    access: Access,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Entry>>>>,
    next_fh: AtomicU64,
}

type Result<T> = std::result::Result<T, Errno>;

impl ViewFs {
    pub(crate) fn new(source: &Path, rules: Rules) -> std::io::Result<ViewFs> {
        let host = Host::open(source)?;
        let root = host.lstat(OsStr::new(""))?;
        Ok(ViewFs {
            host,
            access: Access::new(rules),
            inodes: Mutex::new(Inodes::new((root.st_dev, root.st_ino))),
            files: Mutex::default(),
            dirs: Mutex::default(),
            next_fh: AtomicU64::new(1),
        })
    }

    fn inodes(&self) -> MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The path and kind of `ino`; ENOENT once it is detached or forgotten.
    fn node(&self, ino: INodeNo) -> Result<(OsString, FileType)> {
        let inodes = self.inodes();
        let node = inodes.get(ino.0).ok_or(Errno::ENOENT)?;
        Ok((node.path.clone().ok_or(Errno::ENOENT)?, node.kind))
    }

    /// The path of `name` in directory `parent`; EINVAL for names that are not one entry.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<OsString> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
            return Err(Errno::EINVAL);
        }
        let (dir, _) = self.node(parent)?;
        Ok(crate::inodes::join(&dir, name))
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<Handle>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_file(&self, fd: OwnedFd, writable: bool) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, Arc::new(Handle { fd, writable }));
        FileHandle(fh)
    }

    /// Counts a lookup of `path` (just stat'ed as `st`) and returns its attributes.
    fn remember(&self, path: &OsStr, st: &libc::stat, perm: Permission) -> FileAttr {
        let kind = kind_of(st.st_mode);
        let ino = self.inodes().remember(path, kind, (st.st_dev, st.st_ino));
        attr(ino, st, perm)
    }
}

/// The file type of a `st_mode`.
pub(crate) fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The attributes of host file `st` as inode `ino`, its mode bits showing `perm`.
fn attr(ino: u64, st: &libc::stat, perm: Permission) -> FileAttr {
    let kind = kind_of(st.st_mode);
    let time = |sec: i64, nsec: i64| {
        let d = Duration::new(sec.unsigned_abs(), nsec.clamp(0, 999_999_999) as u32);
        if sec >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH) }
    };
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm: shown_mode(st.st_mode, kind, perm),
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

impl Handle {
    fn fd_ref(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}
