//! A blob copied from one store into others, its bytes read once.
//!
//! The source's bytes are checked as they pass ([`crate::registry::verify`], the last chunk
//! held back until the digest is known good) and handed to each target's writer through a
//! bounded buffer of [`BUFFER_CHUNKS`] chunks, so memory stays a few chunks per target however
//! large the blob. A mismatch reaches every writer as an error before its last bytes, so no
//! target commits the blob. A target that refuses the blob, or takes none of its bytes for a
//! whole transfer window, is dropped alone: the others go on at the source's pace. The
//! transfer must keep moving (see [`crate::registry::limits::stalled`]); a target dropped for
//! a reason that may pass (a stall, a broken connection) is tried again on its own afterwards,
//! within `max_wait`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Chunks, Stores};
use crate::reference::Repository;
use crate::registry::limits::stalled;
use crate::registry::retry::retrying;
use crate::registry::verify::copy_of;
use crate::registry::waiting::Waiter;
use crate::registry::{Failure, RegistryError};

/// Chunks of a blob buffered for each target: what a slower target may lag behind.
const BUFFER_CHUNKS: usize = 4;

type Chunk = std::io::Result<Bytes>;

impl Stores {
    /// Copies blob `digest` (`size` bytes) of `from` into every repository of `to`, reading
    /// the source once; the result of each target, in order.
    pub async fn copy_blob_to_all(
        &self,
        from: &Repository,
        to: &[Repository],
        digest: &str,
        size: u64,
        waiter: &Waiter,
    ) -> Vec<Result<u64, RegistryError>> {
        if let [only] = to {
            return vec![self.copy_blob(from, only, digest, size, waiter).await];
        }
        let mut results = self.fan_out(from, to, digest, size).await;
        for (target, result) in to.iter().zip(results.iter_mut()) {
            if let Err(e) = result {
                if e.is_retryable() {
                    if let Failure::Stalled { waited, .. } = &e.failure {
                        waiter.charge(*waited);
                    }
                    tracing::info!(blob = digest, target = %target, error = %e, "will retry this target alone");
                    *result = self.copy_blob(from, target, digest, size, waiter).await;
                }
            }
        }
        results
    }

    /// Streams a blob from one repository into another, retried whole on transient failures.
    /// Returns the bytes moved.
    pub async fn copy_blob(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
        waiter: &Waiter,
    ) -> Result<u64, RegistryError> {
        retrying(waiter, || async {
            let mut results = self
                .fan_out(from, std::slice::from_ref(to), digest, size)
                .await;
            results.pop().expect("one result for one target")
        })
        .await
    }

    /// One try at every target: their writers started, the source read once into all, the
    /// whole watched for stalls.
    async fn fan_out(
        &self,
        from: &Repository,
        to: &[Repository],
        digest: &str,
        size: u64,
    ) -> Vec<Result<u64, RegistryError>> {
        let writers = join_all(
            to.iter()
                .map(|t| self.of(&t.registry).create_blob(t, digest, size)),
        )
        .await;
        if writers.iter().all(Result::is_err) {
            return writers.into_iter().map(|w| w.map(|_| 0)).collect();
        }
        let subject = format!("{from}@{digest}");
        let moved = Arc::new(AtomicU64::new(0));
        let opened = self
            .of(&from.registry)
            .open_blob(from, digest, size, moved.clone())
            .await;
        let source = match opened {
            Ok(source) => counted(source, self.transferred.clone()),
            Err(e) => return to.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut senders = Vec::new();
        let mut writes = Vec::new();
        for writer in writers {
            let (sender, receiver) = mpsc::channel::<Chunk>(BUFFER_CHUNKS);
            let subject = &subject;
            writes.push(async move {
                writer?
                    .write(stream_of(receiver))
                    .await
                    .map_err(|e| from_source(e, subject))
            });
            senders.push(Some(sender));
        }
        let both = async {
            tokio::join!(
                pump(source, senders, self.deadlines.window),
                join_all(writes)
            )
        };
        // The source's pace, and after its last byte the targets' answers, are watched as a
        // single copy's are; a target that lags is cut off by the pump alone.
        tokio::select! {
            (dropped, results) = both => results
                .into_iter()
                .zip(dropped)
                .map(|(result, dropped)| match (result, dropped) {
                    (Ok(size), _) => Ok(size),
                    (Err(_), Some(stall @ Failure::Stalled { .. })) => {
                        Err(RegistryError::with("copy blob", &subject, stall))
                    }
                    (Err(e), _) => Err(e),
                })
                .collect(),
            failure = stalled(&moved, size, self.deadlines) => to
                .iter()
                .map(|_| Err(RegistryError::with("copy blob", &subject, failure.clone())))
                .collect(),
        }
    }
}

/// A target's failure, named after the source when the source's bytes were at fault (their
/// digest or length), as no other target can do better.
fn from_source(e: RegistryError, subject: &str) -> RegistryError {
    match e.failure {
        Failure::DigestMismatch(_) | Failure::TooLarge(_) => RegistryError {
            action: "copy blob",
            subject: subject.to_string(),
            ..e
        },
        _ => e,
    }
}

/// `chunks`, each counted into `total` as it passes.
fn counted(chunks: Chunks, total: Arc<AtomicU64>) -> Chunks {
    chunks
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                total.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        })
        .boxed()
}

/// Reads `source` to its end, handing each chunk to every target still taking them; returns,
/// per target, why it was cut off (`None`: it got every chunk).
async fn pump(
    mut source: Chunks,
    mut senders: Vec<Option<mpsc::Sender<Chunk>>>,
    window: std::time::Duration,
) -> Vec<Option<Failure>> {
    let mut dropped: Vec<Option<Failure>> = vec![None; senders.len()];
    while let Some(chunk) = source.next().await {
        let failed = chunk.is_err();
        let sends = senders.iter().enumerate().filter_map(|(i, sender)| {
            let sender = sender.as_ref()?;
            let item = match &chunk {
                Ok(bytes) => Ok(bytes.clone()),
                Err(e) => Err(copy_of(e)),
            };
            Some(async move { (i, tokio::time::timeout(window, sender.send(item)).await) })
        });
        for (i, sent) in join_all(sends).await {
            let cut = match sent {
                Ok(Ok(())) => None,
                // The write ended (refused, or its connection broke): its own result says why.
                Ok(Err(_)) => Some(Failure::Transport("the upload ended early".to_string())),
                Err(_) => Some(Failure::Stalled {
                    waited: window,
                    what: "the target took none of the blob's bytes in time".to_string(),
                }),
            };
            if let Some(cut) = cut {
                dropped[i] = Some(cut);
                senders[i] = None;
            }
        }
        if failed || senders.iter().all(Option::is_none) {
            break;
        }
    }
    dropped
}

/// A receiver as a stream of chunks.
fn stream_of(receiver: mpsc::Receiver<Chunk>) -> Chunks {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
    .boxed()
}
