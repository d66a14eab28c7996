//! The operations that only look: lookup, attributes, links, opening and reading, listings,
//! `access(2)`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use corral_core::permissions::Permission;
use fuser::{AccessFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, INodeNo, OpenFlags};

use super::{Entry, Result, ViewFs, attr, kind_of};
use crate::host;
use crate::inodes::{ROOT, join};

/// The open flags passed on to the host (`O_CREAT`, `O_EXCL`, `O_TRUNC`, `O_NOCTTY` are handled
/// by the kernel before `open`; `O_DIRECT` would need aligned buffers).
const PASSED_OPEN_FLAGS: i32 =
    libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

impl ViewFs {
    /// `name` in directory `parent`: its attributes, counting one lookup; ENOENT when hidden.
    pub(super) fn lookup_entry(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr> {
        let path = self.child(parent, name)?;
        if !self.access.maybe_visible(&path) {
            return Err(Errno::ENOENT);
        }
        let st = self.host.lstat(&path).map_err(Errno::from)?;
        let kind = kind_of(st.st_mode);
        let perm = self.access.require(&path, kind == FileType::Directory, Permission::View)?;
        Ok(self.remember(&path, &st, perm))
    }

    pub(super) fn attributes(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr> {
        let node = self.node(ino);
        if let (Err(_), Some(fh)) = (&node, fh) {
            // Unlinked while open: the handle still answers.
            let st = host::fstat(self.file(fh)?.fd_ref()).map_err(Errno::from)?;
            return Ok(attr(ino.0, &st, Permission::Read));
        }
        let (path, kind) = node?;
        let st = self.host.lstat(&path).map_err(Errno::from)?;
        if kind_of(st.st_mode) != kind {
            // Replaced by another kind of file behind our back: the kernel must look it up anew.
            return Err(Errno::ENOENT);
        }
        let perm = self.access.require(&path, kind == FileType::Directory, Permission::View)?;
        Ok(attr(ino.0, &st, perm))
    }

    pub(super) fn read_link(&self, ino: INodeNo) -> Result<Vec<u8>> {
        let (path, _) = self.node(ino)?;
        self.access.require(&path, false, Permission::Read)?;
        self.host.readlink(&path).map_err(Errno::from)
    }

    pub(super) fn open_file(&self, ino: INodeNo, flags: OpenFlags) -> Result<(FileHandle, FopenFlags)> {
        let (path, kind) = self.node(ino)?;
        let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
        let need = if read_only { Permission::Read } else { Permission::Write };
        self.access.require(&path, kind == FileType::Directory, need)?;
        let fd = self.host.open_file(&path, flags.0 & PASSED_OPEN_FLAGS).map_err(Errno::from)?;
        let fopen = if read_only { FopenFlags::FOPEN_KEEP_CACHE } else { FopenFlags::empty() };
        Ok((self.add_file(fd, !read_only), fopen))
    }

    pub(super) fn read_at(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>> {
        let handle = self.file(fh)?;
        host::pread(handle.fd_ref(), size as usize, offset).map_err(Errno::from)
    }

    /// Opens a directory for listing (`View` is enough) and snapshots its visible entries.
    pub(super) fn open_dir(&self, ino: INodeNo) -> Result<FileHandle> {
        let (path, kind) = self.node(ino)?;
        if kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        self.access.require(&path, true, Permission::View)?;
        let bytes = path.as_bytes();
        let parent = OsStr::from_bytes(&bytes[..bytes.iter().rposition(|b| *b == b'/').unwrap_or(0)]);
        let parent_ino = if path.is_empty() { ROOT } else { self.inodes().ino_of(parent).unwrap_or(ROOT) };
        let mut entries = vec![
            Entry { name: ".".into(), ino: ino.0, kind: FileType::Directory },
            Entry { name: "..".into(), ino: parent_ino, kind: FileType::Directory },
        ];
        for e in self.host.read_dir(&path).map_err(Errno::from)? {
            let child = join(&path, &e.name);
            let kind = match e.d_type {
                libc::DT_UNKNOWN => match self.host.lstat(&child) {
                    Ok(st) => kind_of(st.st_mode),
                    Err(_) => continue,
                },
                t => dtype_kind(t),
            };
            if self.access.perm(&child, kind == FileType::Directory) == Permission::None {
                continue;
            }
            let ino = self.inodes().ino_of(&child).unwrap_or(e.ino);
            entries.push(Entry { name: e.name, ino, kind });
        }
        let fh = self.next_fh.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).insert(fh, Arc::new(entries));
        Ok(FileHandle(fh))
    }

    /// `access(2)` (and `chdir`): `W_OK` needs `Write`; `R_OK`/`X_OK` need `Read` on a file and
    /// `View` on a directory (listing and entering).
    pub(super) fn check_access(&self, ino: INodeNo, mask: AccessFlags) -> Result<()> {
        let (path, kind) = self.node(ino)?;
        let is_dir = kind == FileType::Directory;
        let mut need = Permission::View;
        if mask.intersects(AccessFlags::R_OK | AccessFlags::X_OK) && !is_dir {
            need = Permission::Read;
        }
        if mask.contains(AccessFlags::W_OK) {
            need = Permission::Write;
        }
        self.access.require(&path, is_dir, need).map(|_| ())
    }

    /// Refuses with ENOENT or EACCES unless `ino` is writable.
    pub(super) fn writable(&self, ino: INodeNo) -> Result<()> {
        let (path, kind) = self.node(ino)?;
        self.access.require(&path, kind == FileType::Directory, Permission::Write).map(|_| ())
    }
}

fn dtype_kind(d_type: u8) -> FileType {
    match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}
