//! The operations that change the source. Each needs `Write` on every path it touches (see
//! `access`). New files belong to the caller's uid and gid; set-id bits are never set
//! (a sandbox must not plant set-id executables on the host).

use std::ffi::OsStr;
use std::time::UNIX_EPOCH;

use corral_core::permissions::Permission;
use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo, RenameFlags, Request, TimeOrNow};

use super::{Result, ViewFs, attr, kind_of};
use crate::host;

/// The mode bits a sandbox may set: permissions and sticky, no set-id.
const SETTABLE_MODE: u32 = 0o1777;

/// What a `setattr` changes.
pub(super) struct Change {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
}

impl ViewFs {
    pub(super) fn set_attributes(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Option<FileHandle>,
        change: Change,
    ) -> Result<FileAttr> {
        let Ok((path, kind)) = self.node(ino) else {
            // Unlinked while open: only truncating through a writable handle still works.
            let handle = self.file(fh.ok_or(Errno::ENOENT)?)?;
            match (change.size, handle.writable) {
                (Some(size), true) => host::ftruncate(handle.fd_ref(), size).map_err(Errno::from)?,
                _ => return Err(Errno::ENOENT),
            }
            let st = host::fstat(handle.fd_ref()).map_err(Errno::from)?;
            return Ok(attr(ino.0, &st, Permission::Write));
        };
        let perm = self.access.require(&path, kind == FileType::Directory, Permission::Write)?;
        if let Some(mode) = change.mode {
            self.host.chmod(&path, mode & SETTABLE_MODE).map_err(Errno::from)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            // Like the kernel's rule for non-root: only to oneself (no giving files away).
            let own = req.uid() == 0
                || (change.uid.is_none_or(|u| u == req.uid()) && change.gid.is_none_or(|g| g == req.gid()));
            if !own {
                return Err(Errno::EPERM);
            }
            self.host.chown(&path, change.uid, change.gid).map_err(Errno::from)?;
        }
        if let Some(size) = change.size {
            match fh.map(|fh| self.file(fh)).transpose()? {
                Some(handle) if handle.writable => host::ftruncate(handle.fd_ref(), size),
                _ => self.host.truncate(&path, size),
            }
            .map_err(Errno::from)?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            self.host.utimens(&path, [timespec(change.atime), timespec(change.mtime)]).map_err(Errno::from)?;
        }
        let st = self.host.lstat(&path).map_err(Errno::from)?;
        Ok(attr(ino.0, &st, perm))
    }

    pub(super) fn create_file(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, FileHandle)> {
        let path = self.new_path(parent, name, false)?;
        let host_flags =
            flags & (libc::O_ACCMODE | libc::O_EXCL | libc::O_TRUNC | libc::O_APPEND | libc::O_NONBLOCK | libc::O_SYNC);
        let fd = self.host.create(&path, host_flags, mode & SETTABLE_MODE).map_err(Errno::from)?;
        self.give_to_caller(req, &path);
        let st = host::fstat(host_fd(&fd)).map_err(Errno::from)?;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let attr = self.remember(&path, &st, Permission::Write);
        Ok((attr, self.add_file(fd, writable)))
    }

    pub(super) fn make_dir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> Result<FileAttr> {
        let path = self.new_path(parent, name, true)?;
        self.host.mkdir(&path, mode & SETTABLE_MODE).map_err(Errno::from)?;
        self.created(req, &path)
    }

    /// Regular files, FIFOs and sockets; no device nodes.
    pub(super) fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<FileAttr> {
        let kind = mode & libc::S_IFMT;
        if ![libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK].contains(&kind) {
            return Err(Errno::EPERM);
        }
        let path = self.new_path(parent, name, false)?;
        self.host.mknod(&path, kind | (mode & SETTABLE_MODE), u64::from(rdev)).map_err(Errno::from)?;
        self.created(req, &path)
    }

    /// The link's target is stored as given and never followed by the server.
    pub(super) fn make_symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<FileAttr> {
        let path = self.new_path(parent, name, false)?;
        self.host.symlink(target, &path).map_err(Errno::from)?;
        self.created(req, &path)
    }

    /// `unlink` (or `rmdir` with `dir`).
    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<()> {
        let (path, is_dir) = self.existing(parent, name)?;
        self.access.require(&path, is_dir, Permission::Write)?;
        self.host.unlink(&path, dir).map_err(Errno::from)?;
        self.inodes().detach(&path);
        Ok(())
    }

    /// `rename`/`renameat2`: `Write` on the old and new path of everything moved (EACCES for a
    /// hidden destination too), and on whatever it replaces.
    pub(super) fn move_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let (old, is_dir) = self.existing(parent, name)?;
        self.access.require(&old, is_dir, Permission::Write)?;
        let new = self.child(new_parent, new_name)?;
        if new == old {
            return Ok(());
        }
        self.access.require_new(&new, is_dir)?;
        match self.host.lstat(&new) {
            Ok(st) => {
                let replaced_is_dir = kind_of(st.st_mode) == FileType::Directory;
                self.access.require_new(&new, replaced_is_dir)?;
                if exchange {
                    self.access.require_new(&old, replaced_is_dir)?;
                    if replaced_is_dir {
                        self.access.check_move(&self.host, &new, &old)?;
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        if is_dir {
            self.access.check_move(&self.host, &old, &new)?;
        }
        self.host.rename(&old, &new, flags.bits()).map_err(Errno::from)?;
        if exchange {
            self.inodes().exchange(&old, &new);
        } else {
            self.inodes().rename(&old, &new);
        }
        Ok(())
    }

    pub(super) fn write_at(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32> {
        let handle = self.file(fh)?;
        if !handle.writable {
            return Err(Errno::EBADF);
        }
        let n = host::pwrite(handle.fd_ref(), data, offset).map_err(Errno::from)?;
        Ok(n as u32)
    }

    pub(super) fn allocate(&self, fh: FileHandle, offset: u64, length: u64, mode: i32) -> Result<()> {
        let handle = self.file(fh)?;
        if !handle.writable {
            return Err(Errno::EBADF);
        }
        host::fallocate(handle.fd_ref(), mode, offset, length).map_err(Errno::from)
    }

    /// The path for `name` in `parent`, if a new file (or directory) may be created there.
    fn new_path(&self, parent: INodeNo, name: &OsStr, is_dir: bool) -> Result<std::ffi::OsString> {
        let path = self.child(parent, name)?;
        self.access.require_new(&path, is_dir)?;
        Ok(path)
    }

    /// The path of the existing, visible `name` in `parent` and whether it is a directory;
    /// ENOENT when hidden.
    fn existing(&self, parent: INodeNo, name: &OsStr) -> Result<(std::ffi::OsString, bool)> {
        let path = self.child(parent, name)?;
        if !self.access.maybe_visible(&path) {
            return Err(Errno::ENOENT);
        }
        let st = self.host.lstat(&path).map_err(Errno::from)?;
        Ok((path, kind_of(st.st_mode) == FileType::Directory))
    }

    /// Gives a just-created path to the caller and returns its entry.
    fn created(&self, req: &Request, path: &OsStr) -> Result<FileAttr> {
        self.give_to_caller(req, path);
        let st = self.host.lstat(path).map_err(Errno::from)?;
        Ok(self.remember(path, &st, Permission::Write))
    }

    /// The server runs as root: a file a sandbox user creates is made theirs.
    fn give_to_caller(&self, req: &Request, path: &OsStr) {
        if (req.uid(), req.gid()) != (0, 0)
            && let Err(e) = self.host.chown(path, Some(req.uid()), Some(req.gid()))
        {
            tracing::debug!(error = %e, uid = req.uid(), "could not give a new file to its creator");
        }
    }
}

fn host_fd(fd: &std::os::fd::OwnedFd) -> std::os::fd::BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: i64::from(d.subsec_nanos()) },
            Err(e) => {
                let d = e.duration();
                libc::timespec { tv_sec: -(d.as_secs() as i64), tv_nsec: 0 }
            }
        },
    }
}
