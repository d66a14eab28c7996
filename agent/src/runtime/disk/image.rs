//! Disk images: one ext4 template formatted per (size, inodes), copied sparsely for each sandbox
//! (a few hundred KiB of metadata instead of a `mkfs.ext4` run per sandbox).
//!
//! The file system has no journal (a sandbox's scratch space is deleted with it, and after a
//! crash too, so a journal would only cost writes), no reserved blocks (the sandbox gets all of
//! it), a 4 KiB block size and exactly the inode count of the quota.

#![allow(unsafe_code)] // raw system calls (ioctl, mount, lseek, copy_file_range) on values checked here

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::DiskError;

/// Where `mkfs.ext4` is looked for (it is usually not on a non-root `PATH`).
const MKFS_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Formats templates once and copies them.
#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    mkfs: PathBuf,
    /// Templates made so far, by `(bytes, inodes)`; the lock also serialises formatting.
    made: Mutex<HashMap<(u64, u64), PathBuf>>,
}

/// Finds `mkfs.ext4`.
pub fn find_mkfs() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    MKFS_DIRS.iter().map(PathBuf::from).chain(path_dirs).map(|d| d.join("mkfs.ext4")).find(|p| p.is_file())
}

impl Templates {
    /// Templates live in `dir`, emptied now (a template from an older agent may differ).
    pub fn new(dir: PathBuf, mkfs: PathBuf) -> io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, mkfs, made: Mutex::new(HashMap::new()) })
    }

    /// Writes a fresh file system of `bytes` and `inodes` at `dest` (sparse).
    pub fn create(&self, dest: &Path, bytes: u64, inodes: u64) -> Result<(), DiskError> {
        let template = self.template(bytes, inodes)?;
        copy_sparse(&template, dest, bytes).map_err(|source| DiskError::Io {
            context: format!("copying the disk template to {}", dest.display()),
            source,
        })
    }

    fn template(&self, bytes: u64, inodes: u64) -> Result<PathBuf, DiskError> {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = made.get(&(bytes, inodes)) {
            return Ok(path.clone());
        }
        let path = self.dir.join(format!("ext4-{bytes}-{inodes}.img"));
        let tmp = self.dir.join(format!(".ext4-{bytes}-{inodes}.tmp"));
        let io_err = |context: String| move |source| DiskError::Io { context, source };
        let file = File::create(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        file.set_len(bytes).map_err(io_err(format!("sizing {}", tmp.display())))?;
        drop(file);
        let out = Command::new(&self.mkfs)
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-O", "^has_journal"])
            .args(["-N", &inodes.to_string(), "-E", "lazy_itable_init=1,nodiscard"])
            .arg(&tmp)
            .output()
            .map_err(io_err(format!("running {}", self.mkfs.display())))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(DiskError::Format { bytes, inodes, why: format!("{}: {why}", out.status) });
        }
        std::fs::rename(&tmp, &path).map_err(io_err(format!("renaming {}", tmp.display())))?;
        made.insert((bytes, inodes), path.clone());
        Ok(path)
    }
}

/// Copies only the data extents of `src` to a new `dest` of length `len`; holes stay holes.
fn copy_sparse(src: &Path, dest: &Path, len: u64) -> io::Result<()> {
    let from = File::open(src)?;
    let to = OpenOptions::new().write(true).create_new(true).open(dest)?;
    to.set_len(len)?;
    let (fi, fo) = (from.as_raw_fd(), to.as_raw_fd());
    let mut pos: i64 = 0;
    loop {
        // SAFETY: plain lseek on an open descriptor.
        let data = unsafe { libc::lseek(fi, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { Ok(()) } else { Err(e) };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fi, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            let want = (hole - off_in) as usize;
            // SAFETY: both descriptors are open; the offsets are valid pointers to i64.
            let n = unsafe { libc::copy_file_range(fi, &mut off_in, fo, &mut off_out, want, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the template shrank while copied"));
            }
        }
        pos = hole;
    }
}
