//! The agent ⇄ init frame decoder, fed arbitrary bytes as both directions of the protocol.
//!
//! Input: one control byte (bit 0: decode `Event`s instead of `Request`s; bits 1–7: the size
//! of the pieces the bytes arrive in, 1–128), then the byte stream. Invariants:
//!
//! - the decoder never panics, and what it yields does not depend on how the stream was split;
//! - it agrees with a frame-by-frame walk using [`protocol::payload_len`] and [`protocol::decode`];
//! - every decoded message encodes again, and decodes back to itself;
//! - after any bytes without the resync magic, a resync request (written whole, as the agent
//!   does) is recognised with its nonce, and the frames sent after it decode exactly.

use std::fmt::Debug;

use corral_init::protocol::{self, Event, FrameDecoder, HEADER, RESYNC_MAGIC, Request};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message of one direction of the protocol.
trait Message: Serialize + DeserializeOwned + PartialEq + Debug {
    /// A small well-formed message, to send after a resync.
    fn sample(id: u64) -> Self;
}

impl Message for Request {
    fn sample(id: u64) -> Self {
        Request::Signal { id, signal: 15 }
    }
}

impl Message for Event {
    fn sample(id: u64) -> Self {
        Event::Started { id, pid: 2 }
    }
}

pub fn run(data: &[u8]) {
    let Some((&ctl, stream)) = data.split_first() else { return };
    let piece = usize::from(ctl >> 1) + 1;
    if ctl & 1 == 0 { check::<Request>(stream, piece) } else { check::<Event>(stream, piece) }
}

fn check<T: Message>(stream: &[u8], piece: usize) {
    let whole = decode_stream::<T>(stream, stream.len().max(1));
    let split = decode_stream::<T>(stream, piece);
    assert_eq!(whole, split, "the result depends on how the stream was split ({piece}-byte pieces)");
    assert_eq!(whole, walk_frames::<T>(stream), "the decoder disagrees with a frame-by-frame walk");
    for msg in &whole.messages {
        round_trip(msg);
    }
    resync_after::<T>(stream, piece, &whole.messages);
}

/// What a stream decodes to: its messages, then the error that stopped decoding, if any.
#[derive(Debug, PartialEq)]
struct Decoded<T> {
    messages: Vec<T>,
    error: Option<String>,
}

/// Decodes the stream arriving in `piece`-byte reads, as the init's loop does; the first error
/// ends it (the init treats it as fatal).
fn decode_stream<T: Message>(stream: &[u8], piece: usize) -> Decoded<T> {
    let mut dec = FrameDecoder::default();
    let mut out = Decoded { messages: Vec::new(), error: None };
    for bytes in stream.chunks(piece) {
        dec.push(bytes);
        loop {
            match dec.next_frame::<T>() {
                Ok(Some(msg)) => out.messages.push(msg),
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(e.to_string());
                    return out;
                }
            }
        }
    }
    out
}

/// The same stream read frame by frame with the single-frame functions.
fn walk_frames<T: Message>(mut rest: &[u8]) -> Decoded<T> {
    let mut out = Decoded { messages: Vec::new(), error: None };
    while let Some((header, after)) = rest.split_first_chunk::<HEADER>() {
        let len = match protocol::payload_len(*header) {
            Ok(len) => len,
            Err(e) => {
                out.error = Some(e.to_string());
                break;
            }
        };
        let Some((payload, next)) = after.split_at_checked(len) else { break };
        match protocol::decode::<T>(payload) {
            Ok(msg) => out.messages.push(msg),
            Err(e) => {
                out.error = Some(e.to_string());
                break;
            }
        }
        rest = next;
    }
    out
}

fn round_trip<T: Message>(msg: &T) {
    let frame = protocol::encode(msg).unwrap_or_else(|e| panic!("{msg:?} was decoded but does not encode: {e}"));
    let header = frame.first_chunk::<HEADER>().expect("a frame starts with its header");
    assert_eq!(protocol::payload_len(*header).ok(), Some(frame.len() - HEADER), "wrong length prefix");
    let back: T = protocol::decode(&frame[HEADER..]).unwrap_or_else(|e| panic!("{msg:?} does not decode: {e}"));
    assert_eq!(&back, msg, "the message changed in a round trip");
}

fn contains_magic(bytes: &[u8]) -> bool {
    bytes.windows(RESYNC_MAGIC.len()).any(|w| w == RESYNC_MAGIC)
}

/// An agent attaching mid-stream: whatever the init had buffered, a resync realigns it.
fn resync_after<T: Message>(garbage: &[u8], piece: usize, decoded: &[T]) {
    if contains_magic(garbage) {
        return;
    }
    let mut dec = FrameDecoder::default();
    for bytes in garbage.chunks(piece) {
        dec.push(bytes);
        assert_eq!(dec.take_resync(), None, "a resync was found in bytes without the magic");
        while let Ok(Some(_)) = dec.next_frame::<T>() {}
    }
    let nonce = 0x5eed_0000_0000_0000 | garbage.len() as u64;
    dec.push(&RESYNC_MAGIC);
    dec.push(&nonce.to_le_bytes());
    assert_eq!(dec.take_resync(), Some(nonce), "a resync request after {} bytes was missed", garbage.len());

    let mut sent: Vec<T> = vec![T::sample(nonce), T::sample(1)];
    let mut frames: Vec<u8> = sent.iter().flat_map(|m| protocol::encode(m).expect("a sample encodes")).collect();
    for msg in decoded.iter().take(4) {
        let frame = protocol::encode(msg).expect("checked by round_trip");
        let with = [frames.as_slice(), &frame].concat();
        if !contains_magic(&with) {
            frames = with;
            sent.push(protocol::decode(&frame[HEADER..]).expect("checked by round_trip"));
        }
    }
    let mut got = Vec::new();
    for bytes in frames.chunks(piece) {
        dec.push(bytes);
        assert_eq!(dec.take_resync(), None, "a resync was found in well-formed frames");
        while let Some(msg) = dec.next_frame::<T>().unwrap_or_else(|e| panic!("frames after a resync: {e}")) {
            got.push(msg);
        }
    }
    assert_eq!(got, sent, "the frames after a resync did not decode as sent");
}
