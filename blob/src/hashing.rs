//! Hashing on the way: a reader that hashes, counts and caps what passes through it, and a
//! stream that checks the hash of what it passed at its end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::Stream;
use futures::stream::{BoxStream, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};

use crate::{BlobError, Digest};

/// Wraps an upload's source: hashes and counts its bytes, and fails the read that takes it past
/// `limit` (so an upload of it fails and keeps nothing).
pub(crate) struct HashingReader<'a> {
    inner: &'a mut (dyn AsyncRead + Send + Unpin),
    hasher: blake3::Hasher,
    count: u64,
    limit: u64,
    exceeded: bool,
}

impl<'a> HashingReader<'a> {
    pub(crate) fn new(inner: &'a mut (dyn AsyncRead + Send + Unpin), limit: u64) -> Self {
        Self { inner, hasher: blake3::Hasher::new(), count: 0, limit, exceeded: false }
    }

    /// True once more than `limit` bytes were read.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// The digest and length of everything read.
    pub(crate) fn finish(&self) -> (Digest, u64) {
        (self.hasher.finalize().into(), self.count)
    }
}

impl AsyncRead for HashingReader<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.exceeded {
            return Poll::Ready(Err(io::Error::other("the source is larger than the limit")));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut *this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        this.count += new.len() as u64;
        if this.count > this.limit {
            this.exceeded = true;
            // A failed read must not hand out bytes.
            buf.set_filled(before);
            return Poll::Ready(Err(io::Error::other("the source is larger than the limit")));
        }
        this.hasher.update(new);
        Poll::Ready(Ok(()))
    }
}

/// Passes a blob's chunks through, and ends with `Err(Corrupt)` instead of the end of the stream
/// when they do not hash to `expected`.
pub(crate) struct Verified {
    inner: BoxStream<'static, Result<Bytes, BlobError>>,
    /// `None` once the stream has ended (or failed).
    hasher: Option<blake3::Hasher>,
    key: String,
    expected: Digest,
}

impl Verified {
    pub(crate) fn new(inner: BoxStream<'static, Result<Bytes, BlobError>>, key: String, expected: Digest) -> Self {
        Self { inner, hasher: Some(blake3::Hasher::new()), key, expected }
    }
}

impl Stream for Verified {
    type Item = Result<Bytes, BlobError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(hasher) = this.hasher.as_mut() else { return Poll::Ready(None) };
        match ready!(this.inner.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                this.hasher = None;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                let actual: Digest = hasher.finalize().into();
                this.hasher = None;
                if actual == this.expected {
                    return Poll::Ready(None);
                }
                let key = std::mem::take(&mut this.key);
                Poll::Ready(Some(Err(BlobError::Corrupt { key, expected: this.expected, actual })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn the_reader_hashes_and_caps() {
        let data = vec![7u8; 1000];
        let mut src: &[u8] = &data;
        let mut r = HashingReader::new(&mut src, 1000);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.expect("at the limit is fine");
        assert_eq!(r.finish(), (Digest::of(&data), 1000));
        let mut src: &[u8] = &data;
        let mut r = HashingReader::new(&mut src, 999);
        assert!(r.read_to_end(&mut Vec::new()).await.is_err());
        assert!(r.exceeded());
    }

    #[tokio::test]
    async fn the_stream_checks_at_the_end() {
        let chunks = || futures::stream::iter([Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"c"))]).boxed();
        let good = Verified::new(chunks(), "k".into(), Digest::of(b"abc"));
        assert_eq!(good.try_collect::<Vec<_>>().await.expect("verified").concat(), b"abc");
        let bad: Vec<_> = Verified::new(chunks(), "k".into(), Digest::of(b"abd")).collect().await;
        assert_eq!(bad.len(), 3, "both chunks, then the error");
        assert!(
            matches!(&bad[2], Err(BlobError::Corrupt { key, actual, .. }) if key == "k" && *actual == Digest::of(b"abc"))
        );
    }
}
