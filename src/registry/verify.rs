//! A blob's bytes checked as they pass, whichever store they come from: counted (cut off past
//! the size the manifest gives), hashed with the digest's own algorithm, and the last chunk
//! held back until the digest is known good. A writer that takes such a stream commits the
//! blob only if it ends cleanly, so a wrong byte anywhere never lands under a digest.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use super::error::{find, StreamAbort};
use super::limits::human_bytes;
use crate::digest::{Algorithm, Digester};

/// A blob's bytes as a store hands them on: a stream that ends in an error, never cleanly,
/// when they are not the blob asked for.
pub type Chunks = BoxStream<'static, std::io::Result<Bytes>>;

/// `chunks`, said to be blob `digest` (hashed with `algorithm`) of `size` bytes, as a stream
/// that proves it: each chunk counted into `moved` as it is handed on, the last one held until
/// the end has been judged.
pub fn checked(
    chunks: Chunks,
    algorithm: Algorithm,
    digest: &str,
    size: u64,
    moved: Arc<AtomicU64>,
) -> Chunks {
    HoldLast::new(Verified {
        chunks,
        digester: Some(Digester::new(algorithm)),
        expected: digest.to_string(),
        size,
        seen: 0,
        moved,
    })
    .boxed()
}

/// The same error for another reader of one stream: its kind and message, and the check that
/// aborted the stream when there was one, so every reader tells a mismatch from a broken
/// connection.
pub fn copy_of(e: &std::io::Error) -> std::io::Error {
    match find::<StreamAbort>(e) {
        Some(abort) => std::io::Error::other(abort.clone()),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// The source's bytes, counted and hashed as they pass: cut off past `size`, and ended with
/// an error instead of cleanly when the length or the digest is wrong.
struct Verified {
    chunks: Chunks,
    /// `None` once the end has been judged.
    digester: Option<Digester>,
    expected: String,
    size: u64,
    seen: u64,
    /// Bytes handed on, shared with the stall watch.
    moved: Arc<AtomicU64>,
}

impl Stream for Verified {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(digester) = this.digester.as_mut() else {
            return Poll::Ready(None);
        };
        let abort = |reason| Poll::Ready(Some(Err(std::io::Error::other(reason))));
        match this.chunks.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    this.digester = None;
                    return abort(StreamAbort::TooLarge(format!(
                        "the source sends more than the {} the manifest says",
                        human_bytes(this.size)
                    )));
                }
                digester.update(&chunk);
                this.moved.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.digester = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let digester = this.digester.take().expect("checked above");
                if this.seen < this.size {
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "the source ended the blob after {} of {} bytes",
                        this.seen, this.size
                    )))));
                }
                let got = digester.finish();
                if got != this.expected {
                    return abort(StreamAbort::DigestMismatch(format!(
                        "expected {}, got {got}",
                        this.expected
                    )));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// Holds each chunk back until the next one arrives, so the last bytes of a blob are sent
/// only once the source stream has ended cleanly, which is when [`Verified`] has checked the
/// digest. On a mismatch an upload stops short of its Content-Length and the target never
/// commits the blob, whatever the target itself checks. Costs one chunk of memory.
struct HoldLast<S> {
    chunks: S,
    held: Option<Bytes>,
    done: bool,
}

impl<S> HoldLast<S> {
    fn new(chunks: S) -> Self {
        HoldLast {
            chunks,
            held: None,
            done: false,
        }
    }
}

impl<S, E> Stream for HoldLast<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.chunks.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_chunk_waits_for_a_clean_end() {
        let chunks = |items: Vec<Result<&'static str, &'static str>>| {
            futures_util::stream::iter(items.into_iter().map(|i| i.map(Bytes::from)))
        };
        let ok: Vec<_> = HoldLast::new(chunks(vec![Ok("a"), Ok("b"), Ok("c")]))
            .collect()
            .await;
        assert_eq!(
            ok,
            [
                Ok(Bytes::from("a")),
                Ok(Bytes::from("b")),
                Ok(Bytes::from("c"))
            ]
        );
        let bad: Vec<_> = HoldLast::new(chunks(vec![Ok("a"), Ok("b"), Err("digest")]))
            .collect()
            .await;
        assert_eq!(
            bad,
            [Ok(Bytes::from("a")), Err("digest")],
            "b is never sent"
        );
        let empty: Vec<Result<Bytes, ()>> =
            HoldLast::new(futures_util::stream::empty()).collect().await;
        assert!(empty.is_empty());
    }

    #[tokio::test]
    async fn a_blob_ends_cleanly_only_when_its_length_and_digest_are_right() {
        let read = |bytes: &'static [&'static str], size: u64| async move {
            let chunks = futures_util::stream::iter(bytes.iter().map(|b| Ok(Bytes::from(*b))));
            let digest = crate::digest::of(Algorithm::Sha256, b"abc");
            let moved = Arc::new(AtomicU64::new(0));
            let out: Vec<_> = checked(chunks.boxed(), Algorithm::Sha256, &digest, size, moved)
                .collect()
                .await;
            out.into_iter()
                .map(|c| c.map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(read(&["a", "bc"], 3).await.iter().all(Result::is_ok));
        let wrong = read(&["a", "bd"], 3).await;
        assert_eq!(
            wrong.len(),
            2,
            "the last chunk is never handed on: {wrong:?}"
        );
        assert!(wrong[1].as_ref().unwrap_err().contains("expected sha256:"));
        let long = read(&["ab", "cd"], 3).await;
        assert!(long
            .last()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .contains("more than"));
        let short = read(&["ab"], 3).await;
        assert!(short
            .last()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .contains("after 2 of 3"));
    }
}
