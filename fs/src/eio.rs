//! Answering EIO once the server is gone.
//!
//! [`ViewMount`](crate::ViewMount) keeps its own descriptor of the FUSE connection, so the
//! connection outlives a crashed server: nothing falls through to the directory beneath the
//! mountpoint, and instead of blocking, every further request gets `-EIO` from this loop. It reads
//! one request at a time, takes the `fuse_in_header` (len u32, opcode u32, unique u64, nodeid u64,
//! uid, gid, pid, padding: 40 bytes), skips the requests that take no answer (FORGET,
//! BATCH_FORGET, INTERRUPT) and writes a bare `fuse_out_header` (len 16, error, unique).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::ops::MAX_WRITE;
use crate::sys;

const FUSE_FORGET: u32 = 2;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_BATCH_FORGET: u32 = 42;
const IN_HEADER_LEN: usize = 40;

/// The kernel refuses reads with less room than the negotiated `max_write` plus headers.
const BUFFER_LEN: usize = MAX_WRITE as usize + 64 * 1024;

/// Answers `-EIO` to every request on `device` until the connection ends (unmounted and
/// released) or `stop` becomes readable or hung up.
pub(crate) fn answer_eio(device: &OwnedFd, stop: &OwnedFd) {
    if let Err(e) = sys::set_nonblocking(device.as_fd()) {
        tracing::error!(error = %e, "cannot answer the dead view's requests");
        return;
    }
    let mut buf = vec![0u8; BUFFER_LEN];
    loop {
        match sys::poll(&[device.as_fd(), stop.as_fd()], -1) {
            Ok(revents) if revents[1] != 0 => return,
            Ok(revents) if revents[0] & (libc::POLLERR | libc::POLLHUP) != 0 => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "poll on the dead view failed");
                return;
            }
        }
        match answer_one(device, &mut buf) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return,
            Err(e) => {
                tracing::error!(error = %e, "reading the dead view's requests failed");
                return;
            }
        }
    }
}

/// Reads one request (if any is waiting) and answers it.
fn answer_one(device: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    let n = match sys::read(device.as_fd(), buf) {
        Ok(n) => n,
        // Nothing waiting, interrupted, or the request was interrupted before we read it.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR | libc::ENOENT)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some((opcode, unique)) = parse_in_header(&buf[..n]) else { return Ok(()) };
    if matches!(opcode, FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT) {
        return Ok(());
    }
    match sys::write(device.as_fd(), &error_reply(unique, libc::EIO)) {
        // ENOENT: the request was interrupted and is gone.
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}

/// The opcode and unique id of a request.
fn parse_in_header(req: &[u8]) -> Option<(u32, u64)> {
    if req.len() < IN_HEADER_LEN {
        return None;
    }
    let opcode = u32::from_ne_bytes(req[4..8].try_into().ok()?);
    let unique = u64::from_ne_bytes(req[8..16].try_into().ok()?);
    Some((opcode, unique))
}

/// A `fuse_out_header` answering `unique` with `-errno`.
fn error_reply(unique: u64, errno: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16u32.to_ne_bytes());
    out[4..8].copy_from_slice(&(-errno).to_ne_bytes());
    out[8..].copy_from_slice(&unique.to_ne_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let mut req = [0u8; 48];
        req[..4].copy_from_slice(&48u32.to_ne_bytes());
        req[4..8].copy_from_slice(&1u32.to_ne_bytes());
        req[8..16].copy_from_slice(&77u64.to_ne_bytes());
        assert_eq!(parse_in_header(&req), Some((1, 77)));
        assert_eq!(parse_in_header(&req[..39]), None);
        let out = error_reply(77, libc::EIO);
        assert_eq!(u32::from_ne_bytes(out[..4].try_into().unwrap()), 16);
        assert_eq!(i32::from_ne_bytes(out[4..8].try_into().unwrap()), -libc::EIO);
        assert_eq!(u64::from_ne_bytes(out[8..].try_into().unwrap()), 77);
    }
}
