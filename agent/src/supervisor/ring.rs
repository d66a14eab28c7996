//! A background process's output buffer: the most recent [`OUTPUT_BUFFER_BYTES`] of stdout and
//! stderr in the order they were written; older bytes are dropped and counted.

use std::collections::VecDeque;

/// Bytes of output kept per background process for followers that arrive later.
pub const OUTPUT_BUFFER_BYTES: usize = 1024 * 1024;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Output chunks with a byte cap.
#[derive(Debug)]
pub struct Ring {
    chunks: VecDeque<(Stream, Vec<u8>)>,
    bytes: usize,
    cap: usize,
    dropped: u64,
}

impl Default for Ring {
    fn default() -> Self {
        Self::with_capacity(OUTPUT_BUFFER_BYTES)
    }
}

impl Ring {
    pub fn with_capacity(cap: usize) -> Self {
        Self { chunks: VecDeque::new(), bytes: 0, cap, dropped: 0 }
    }

    /// Appends a chunk, dropping the oldest bytes beyond the cap.
    pub fn push(&mut self, stream: Stream, mut data: Vec<u8>) {
        if data.len() > self.cap {
            let cut = data.len() - self.cap;
            data.drain(..cut);
            self.dropped += cut as u64;
        }
        self.bytes += data.len();
        self.chunks.push_back((stream, data));
        while self.bytes > self.cap {
            let over = self.bytes - self.cap;
            let Some((_, front)) = self.chunks.front_mut() else { break };
            if front.len() <= over {
                let n = front.len();
                self.chunks.pop_front();
                self.bytes -= n;
                self.dropped += n as u64;
            } else {
                front.drain(..over);
                self.bytes -= over;
                self.dropped += over as u64;
            }
        }
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept chunks, oldest first.
    pub fn chunks(&self) -> impl Iterator<Item = &(Stream, Vec<u8>)> {
        self.chunks.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(r: &Ring) -> Vec<(Stream, String)> {
        r.chunks().map(|(s, d)| (*s, String::from_utf8_lossy(d).into_owned())).collect()
    }

    #[test]
    fn keeps_order_and_drops_the_oldest_bytes() {
        let mut r = Ring::with_capacity(8);
        r.push(Stream::Stdout, b"abc".to_vec());
        r.push(Stream::Stderr, b"def".to_vec());
        assert_eq!(r.dropped(), 0);
        r.push(Stream::Stdout, b"ghij".to_vec());
        assert_eq!(
            kept(&r),
            vec![(Stream::Stdout, "c".into()), (Stream::Stderr, "def".into()), (Stream::Stdout, "ghij".into())]
        );
        assert_eq!(r.dropped(), 2);
        r.push(Stream::Stdout, b"0123456789".to_vec());
        assert_eq!(kept(&r), vec![(Stream::Stdout, "23456789".into())]);
        // 2 cut from the oversized chunk itself, then the 8 bytes of every older chunk
        assert_eq!(r.dropped(), 2 + 2 + 8);
    }
}
