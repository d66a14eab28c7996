//! The host side: every operation on the source directory, confined beneath it.
//!
//! A path is always resolved relative to a descriptor of the source with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so neither `..` nor a symlink anywhere on the way (one
//! placed by the sandbox, or swapped in while we look) can take the server outside the source.
//! Operations on the last component work on its parent's descriptor with the `*at` calls that
//! never follow it (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`); `chmod`, which has no such flag before
//! Linux 6.6, goes through an `O_PATH` descriptor of the very inode after checking it is no
//! symlink. Paths are relative to the source, `/`-separated, `""` for the source itself.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The source directory.
pub(crate) struct Host {
    root: OwnedFd,
}

/// One entry of a host directory.
pub(crate) struct DirEntry {
    pub name: OsString,
    /// The host's inode number.
    pub ino: u64,
    /// `DT_*` (`DT_UNKNOWN` when the filesystem does not say).
    pub d_type: u8,
}

/// `struct open_how` of `openat2(2)` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

impl Host {
    pub(crate) fn open(source: &Path) -> io::Result<Host> {
        let f = File::options().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(source)?;
        Ok(Host { root: f.into() })
    }

    /// Opens `rel` with `flags`, refusing a symlink anywhere in it (ELOOP), the last component
    /// included unless `flags` has `O_PATH | O_NOFOLLOW` (then the link itself is opened).
    fn resolve(&self, rel: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let rel = cstr(if rel.is_empty() { OsStr::new(".") } else { rel })?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: u64::from(mode),
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
        };
        // SAFETY: `rel` and `how` outlive the call; the size passed is that of `how`.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, self.root.as_raw_fd(), rel.as_ptr(), &how, size_of::<OpenHow>())
        };
        owned(fd)
    }

    /// The parent directory of `rel` (which is not the root) and its last component.
    fn parent(&self, rel: &OsStr) -> io::Result<(OwnedFd, CString)> {
        let bytes = rel.as_bytes();
        let (dir, name) = match bytes.iter().rposition(|b| *b == b'/') {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (&b""[..], bytes),
        };
        if name.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let fd = self.resolve(OsStr::from_bytes(dir), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((fd, cstr(OsStr::from_bytes(name))?))
    }

    /// `lstat` of `rel`.
    pub(crate) fn lstat(&self, rel: &OsStr) -> io::Result<libc::stat> {
        if rel.is_empty() {
            return fstat(self.root_fd());
        }
        let (dir, name) = self.parent(rel)?;
        let mut st = zeroed_stat();
        // SAFETY: valid descriptor, C string and out pointer.
        ret(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
        Ok(st)
    }

    /// Opens an existing file or directory (never through a symlink).
    pub(crate) fn open_file(&self, rel: &OsStr, flags: i32) -> io::Result<OwnedFd> {
        self.resolve(rel, flags | libc::O_NOFOLLOW, 0)
    }

    /// Creates (or opens, without `O_EXCL`) the regular file `rel`.
    pub(crate) fn create(&self, rel: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let (dir, name) = self.parent(rel)?;
        let flags = flags | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: valid descriptor and C string.
        owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) } as libc::c_long)
    }

    pub(crate) fn mkdir(&self, rel: &OsStr, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        // SAFETY: valid descriptor and C string.
        ret(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
    }

    pub(crate) fn mknod(&self, rel: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        // SAFETY: valid descriptor and C string.
        ret(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })
    }

    pub(crate) fn symlink(&self, target: &OsStr, rel: &OsStr) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        let target = cstr(target)?;
        // SAFETY: valid descriptor and C strings.
        ret(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    pub(crate) fn readlink(&self, rel: &OsStr) -> io::Result<Vec<u8>> {
        let (dir, name) = self.parent(rel)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: valid descriptor, C string, and a buffer of the length passed.
        let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Removes a file (or, with `dir`, an empty directory).
    pub(crate) fn unlink(&self, rel: &OsStr, dir: bool) -> io::Result<()> {
        let (parent, name) = self.parent(rel)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid descriptor and C string.
        ret(unsafe { libc::unlinkat(parent.as_raw_fd(), name.as_ptr(), flags) })
    }

    /// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    pub(crate) fn rename(&self, old: &OsStr, new: &OsStr, flags: u32) -> io::Result<()> {
        let (old_dir, old_name) = self.parent(old)?;
        let (new_dir, new_name) = self.parent(new)?;
        // SAFETY: valid descriptors and C strings.
        ret(unsafe {
            libc::renameat2(old_dir.as_raw_fd(), old_name.as_ptr(), new_dir.as_raw_fd(), new_name.as_ptr(), flags)
        })
    }

    /// Changes the mode of a file or directory; a symlink has none (EOPNOTSUPP).
    pub(crate) fn chmod(&self, rel: &OsStr, mode: u32) -> io::Result<()> {
        let fd = self.resolve(rel, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        if fstat(fd.as_fd())?.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        // The magic link names exactly the inode `fd` holds, which is no symlink.
        let path = cstr(OsStr::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))?;
        // SAFETY: a valid C string.
        ret(unsafe { libc::chmod(path.as_ptr(), mode) })
    }

    /// Changes the owner (`None` keeps a field), never following a symlink.
    pub(crate) fn chown(&self, rel: &OsStr, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        if rel.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let (dir, name) = self.parent(rel)?;
        let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
        // SAFETY: valid descriptor and C string; -1 (u32::MAX) keeps a field.
        ret(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
    }

    /// Sets access and modification times (`UTIME_OMIT` / `UTIME_NOW` allowed in `times`).
    pub(crate) fn utimens(&self, rel: &OsStr, times: [libc::timespec; 2]) -> io::Result<()> {
        let (dir, name) = if rel.is_empty() {
            (self.resolve(rel, libc::O_PATH | libc::O_DIRECTORY, 0)?, cstr(OsStr::new("."))?)
        } else {
            self.parent(rel)?
        };
        // SAFETY: valid descriptor, C string and a two-element array.
        ret(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
    }

    pub(crate) fn truncate(&self, rel: &OsStr, size: u64) -> io::Result<()> {
        let fd = self.open_file(rel, libc::O_WRONLY | libc::O_NONBLOCK)?;
        ftruncate(fd.as_fd(), size)
    }

    /// The entries of the directory `rel`, without `.` and `..`.
    pub(crate) fn read_dir(&self, rel: &OsStr) -> io::Result<Vec<DirEntry>> {
        let fd = self.open_file(rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let mut entries = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: a valid descriptor and a buffer of the length passed.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Ok(entries);
            }
            parse_dirents(&buf[..n as usize], &mut entries);
        }
    }

    pub(crate) fn statvfs(&self) -> io::Result<libc::statvfs> {
        // SAFETY: statvfs is plain data.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and out pointer.
        ret(unsafe { libc::fstatvfs(self.root.as_raw_fd(), &mut st) })?;
        Ok(st)
    }

    fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }
}

/// `struct linux_dirent64`: d_ino u64, d_off i64, d_reclen u16, d_type u8, then the NUL-ended name.
fn parse_dirents(mut buf: &[u8], out: &mut Vec<DirEntry>) {
    while buf.len() >= 19 {
        let reclen = usize::from(u16::from_ne_bytes([buf[16], buf[17]]));
        if reclen < 19 || reclen > buf.len() {
            return;
        }
        let ino = u64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
        let d_type = buf[18];
        let name = &buf[19..reclen];
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        if name != b"." && name != b".." {
            out.push(DirEntry { name: OsString::from_vec(name.to_vec()), ino, d_type });
        }
        buf = &buf[reclen..];
    }
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = zeroed_stat();
    // SAFETY: valid descriptor and out pointer.
    ret(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Reads up to `size` bytes at `offset`.
pub(crate) fn pread(fd: BorrowedFd<'_>, size: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        // SAFETY: a valid descriptor and the unfilled part of `buf`.
        let n = unsafe {
            libc::pread(fd.as_raw_fd(), buf[done..].as_mut_ptr().cast(), size - done, (offset + done as u64) as i64)
        };
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Writes all of `data` at `offset` (at the end for an `O_APPEND` descriptor).
pub(crate) fn pwrite(fd: BorrowedFd<'_>, data: &[u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: a valid descriptor and the unwritten part of `data`.
        let n = unsafe {
            libc::pwrite(fd.as_raw_fd(), data[done..].as_ptr().cast(), data.len() - done, (offset + done as u64) as i64)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        done += n as usize;
    }
    Ok(done)
}

pub(crate) fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    ret(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) })
}

pub(crate) fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    ret(unsafe { if datasync { libc::fdatasync(fd.as_raw_fd()) } else { libc::fsync(fd.as_raw_fd()) } })
}

pub(crate) fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    ret(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) })
}

pub(crate) fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: a valid descriptor.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn zeroed_stat() -> libc::stat {
    // SAFETY: `stat` is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ret(r: libc::c_int) -> io::Result<()> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
