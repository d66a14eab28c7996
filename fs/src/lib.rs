//! A FUSE filesystem that shows a host directory to a sandbox through path permission rules
//! ([`corral_core::permissions`]).
//!
//! - [`serve`]: the server, run by the `corral-fs` binary on an already-mounted `/dev/fuse`
//!   descriptor: a passthrough of the source directory in which a `None` path does not exist, a
//!   `View` path can be listed and `stat`ed but not opened, a `Read` path is read-only and a
//!   `Write` path is fully writable (see `ops` and `access` for the exact refusals).
//! - [`ViewMount`]: what the agent uses, one per sandbox: mounts, starts the server, watches it,
//!   answers EIO if it dies, unmounts.
//!
//! Modules: `host` (the confined host-side system calls: `openat2` beneath the source, never
//! following a symlink), `inodes` (our inode numbers ↔ paths), `access` (the rules applied to
//! operations), `ops` (the `fuser::Filesystem`), `mount` and `sys` (mounting and supervising),
//! `eio` (the fallback after a crash).
//!
//! The server runs as root on the host and mounts with `allow_other` and without
//! `default_permissions`: the rules are the policy, not the callers' uids. Hard links are
//! refused (one path per file keeps the rules exact), extended attributes are not offered,
//! set-id bits and device nodes cannot be created.

mod access;
mod eio;
mod host;
mod inodes;
mod mount;
mod ops;
mod sys;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use corral_core::permissions::Rules;
use fuser::{Config, Session, SessionACL};

pub use mount::{START_TIMEOUT, ViewMount};

/// Takes ownership of descriptor `fd`, inherited from the process that started this one
/// (`corral-fs --fd N`); an error if it is not open.
pub fn inherited_fd(fd: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    sys::inherited_fd(fd)
}

/// Threads answering requests.
const SERVER_THREADS: usize = 2;

/// Serves `source` through `rules` on `fuse_fd`, a `/dev/fuse` descriptor already mounted
/// (whose INIT request is still unanswered), until the filesystem is unmounted.
///
/// The server answers on its own clone of the connection (and one more per extra thread), so
/// when this process dies the requests it holds fail at once rather than waiting on it.
pub fn serve(fuse_fd: OwnedFd, source: &Path, rules: Rules) -> io::Result<()> {
    sys::clear_umask();
    let fs = ops::ViewFs::new(source, rules)?;
    let (device, cloned) = match sys::clone_device(fuse_fd.as_fd()) {
        Ok(clone) => (clone, true),
        Err(e) => {
            tracing::warn!(error = %e, "cannot clone the FUSE connection; serving on the inherited descriptor");
            (fuse_fd.try_clone()?, false)
        }
    };
    drop(fuse_fd);
    let mut config = Config::default();
    config.n_threads = Some(SERVER_THREADS);
    config.clone_fd = cloned;
    let session = Session::from_fd(fs, device, SessionACL::All, config)?;
    tracing::debug!(source = %source.display(), "serving");
    session.run()
}
