//! The agent ⇄ init wire protocol: [`Request`]s go to the init on its stdin, [`Event`]s come back on
//! its stdout. Every message is one frame: `[u32 little-endian length][postcard bytes]`, at most
//! [`MAX_FRAME`] bytes of payload.
//!
//! Exchange: the init sends [`Event::Ready`] once it runs. For each [`Request::Spawn`] it answers
//! exactly one of `Started` or `SpawnFailed`; after `Started` come any number of `Stdout`/`Stderr`
//! chunks (in the order the process wrote them, per stream) and then exactly one `Exited`, which is
//! the last event for that id (a process with a side channel also gets `Side` chunks before it).
//! [`Request::Kill`] and [`Request::Signal`] for an unknown or finished id are ignored.
//! Each [`Request::File`] is answered by exactly one [`Event::File`] with the same id.
//!
//! Resync (for an agent that attaches to a running init mid-stream, e.g. after a restart, when a
//! previous connection may have left half a frame in either direction): the agent first writes
//! [`RESYNC_MAGIC`] followed by an 8-byte nonce, raw. The init discards whatever it had buffered
//! up to and including it and answers, raw, [`resync_marker`]`(nonce)` after the frames it had
//! already queued; the agent discards everything up to and including that marker, after which
//! both directions are frame-aligned again. (A payload that itself contains the magic only
//! desynchronises the sandbox that sent it.)

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::files::{Entry, FileData};

/// Largest payload of one frame.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Size of the length prefix.
pub const HEADER: usize = 4;

/// What the agent asks of the init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Spawn(SpawnRequest),
    /// SIGKILL the exec's whole process tree (its process group and session).
    Kill {
        id: u64,
    },
    /// Send `signal` to the exec's process group (ignored for an unknown or finished id).
    Signal {
        id: u64,
        signal: i32,
    },
    /// A file operation inside the sandbox (Docker), paths as for the runtime's files API.
    File {
        id: u64,
        op: FileOp,
    },
}

/// A file operation; see [`crate::files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    Read {
        path: String,
        offset: u64,
        len: u32,
    },
    /// One piece of an atomic write (see [`crate::files::write`]).
    Write {
        path: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        offset: u64,
        last: bool,
        mode: u32,
        token: u64,
    },
    List {
        path: String,
    },
    Remove {
        path: String,
        recursive: bool,
    },
}

/// The answer to a [`FileOp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileReply {
    Read(FileData),
    /// Bytes written so far.
    Written(u64),
    List(Vec<Entry>),
    Removed,
}

/// A failed [`FileOp`]: the `errno`, or 0 with `not_regular` for a FIFO/device/socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFailure {
    pub errno: i32,
    pub not_regular: bool,
    pub message: String,
}

/// Largest read or write piece carried by one frame (leaves room for the framing).
pub const MAX_FILE_PIECE: usize = MAX_FRAME - 64 * 1024;

/// Starts a resync request (followed by an 8-byte little-endian nonce).
pub const RESYNC_MAGIC: [u8; 16] = *b"\xc0\xffcorral-resync\x00";

/// What the init writes, raw, in answer to a resync request with `nonce`.
pub fn resync_marker(nonce: u64) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[..16].copy_from_slice(b"\xc0\xffcorral-synced\x00");
    m[16..].copy_from_slice(&nonce.to_le_bytes());
    m
}

/// Starts one command in its own session. The environment is exactly `env` (nothing inherited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub id: u64,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Written to the process's stdin, which is then closed; empty means `/dev/null`.
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    /// 0 means no timeout.
    pub timeout_ms: u64,
    /// Per stream; output beyond it is read and discarded and the exit marked `truncated`.
    pub max_output_bytes: u64,
    /// Give the process a side channel: its fd 3 is a pipe whose bytes (at most
    /// [`MAX_SIDE_BYTES`]) come back as [`Event::Side`], apart from its stdout and stderr.
    pub side_channel: bool,
}

/// Most bytes of a side channel reported; the rest is read and discarded.
pub const MAX_SIDE_BYTES: u64 = 1024 * 1024;

/// Why a spawn failed; the agent maps it to an exit code (127, 126) or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnErrorKind {
    /// The program does not exist (shell convention: exit code 127).
    NotFound,
    /// The program exists but cannot be executed (shell convention: exit code 126).
    NotExecutable,
    /// The working directory does not exist or is not a directory.
    BadCwd,
    /// The request itself is malformed (empty argv, NUL bytes).
    BadRequest,
    /// The system refused (fork failed: pids limit, memory).
    Resources,
}

/// What the init reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Ready,
    /// `pid` is the process id inside the sandbox's pid namespace.
    Started {
        id: u64,
        pid: u32,
    },
    SpawnFailed {
        id: u64,
        kind: SpawnErrorKind,
        error: String,
    },
    Stdout {
        id: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Stderr {
        id: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Bytes the process wrote to its side channel (see [`SpawnRequest::side_channel`]).
    Side {
        id: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Exited(Exited),
    File {
        id: u64,
        result: Result<FileReply, FileFailure>,
    },
}

/// How an exec ended. `exit_code` is -1 when a signal ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    pub id: u64,
    pub exit_code: i32,
    pub signal: i32,
    pub timed_out: bool,
    pub truncated: bool,
    pub duration_ms: u64,
}

/// A frame that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(msg, vec![0u8; HEADER])?;
    let len = out.len() - HEADER;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    out[..HEADER].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out)
}

/// Decodes one frame payload (without the length prefix).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Reads the payload length from a frame header, refusing oversized frames.
pub fn payload_len(header: [u8; HEADER]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Splits a byte stream into frames, for readers that receive bytes in arbitrary pieces.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the next search for [`RESYNC_MAGIC`] starts.
    scan_from: usize,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Finds a resync request in what has arrived; if there is one, drops everything up to and
    /// including it and returns its nonce.
    pub fn take_resync(&mut self) -> Option<u64> {
        const LEN: usize = RESYNC_MAGIC.len() + 8;
        let from = self.scan_from.min(self.buf.len());
        let found = self.buf[from..].windows(LEN).position(|w| w[..RESYNC_MAGIC.len()] == RESYNC_MAGIC);
        let Some(at) = found.map(|i| from + i) else {
            self.scan_from = self.buf.len().saturating_sub(LEN - 1);
            return None;
        };
        let nonce = u64::from_le_bytes(self.buf[at + RESYNC_MAGIC.len()..at + LEN].try_into().ok()?);
        self.buf.drain(..at + LEN);
        self.scan_from = 0;
        Some(nonce)
    }

    /// The next complete message, if one has arrived.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(header) = self.buf.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = payload_len(*header)?;
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let msg = decode(&self.buf[HEADER..HEADER + len]);
        self.buf.drain(..HEADER + len);
        self.scan_from = self.scan_from.saturating_sub(HEADER + len);
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_decoder_in_pieces() {
        let spawn = Request::Spawn(SpawnRequest {
            id: 7,
            argv: vec!["/bin/echo".into(), "hi".into()],
            env: vec![("PATH".into(), "/usr/bin".into())],
            cwd: "/workspace".into(),
            stdin: b"input".to_vec(),
            timeout_ms: 1000,
            max_output_bytes: 10,
            side_channel: true,
        });
        let mut bytes = encode(&spawn).unwrap();
        bytes.extend(encode(&Request::Kill { id: 7 }).unwrap());
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for b in bytes.chunks(3) {
            dec.push(b);
            while let Some(m) = dec.next_frame::<Request>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![spawn, Request::Kill { id: 7 }]);
    }

    #[test]
    fn a_resync_request_realigns_the_decoder() {
        let kill = encode(&Request::Kill { id: 9 }).unwrap();
        let mut bytes = kill[..3].to_vec();
        bytes.extend(RESYNC_MAGIC);
        bytes.extend(42u64.to_le_bytes());
        bytes.extend(&kill);
        let mut dec = FrameDecoder::default();
        let mut nonce = None;
        for b in bytes.chunks(5) {
            dec.push(b);
            nonce = nonce.or(dec.take_resync());
        }
        assert_eq!(nonce, Some(42));
        assert_eq!(dec.next_frame::<Request>().unwrap(), Some(Request::Kill { id: 9 }));
    }

    #[test]
    fn oversized_frames_are_refused() {
        let big = Event::Stdout { id: 1, data: vec![0; MAX_FRAME + 1] };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge(_))));
        let mut dec = FrameDecoder::default();
        dec.push(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(matches!(dec.next_frame::<Event>(), Err(FrameError::TooLarge(_))));
    }
}
