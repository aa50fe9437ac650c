//! One blob read once from the source and streamed to several targets at the same time.
//!
//! The source's bytes are checked once ([`super::blobs`]' counting and hashing, the last
//! chunk held back until the digest is known good) and handed to each target's upload
//! through a bounded buffer of [`BUFFER_CHUNKS`] chunks, so memory stays a few chunks per
//! target however large the blob. A mismatch reaches every upload as an error before its last
//! bytes, so no target commits the blob. A target that refuses its upload, or takes none of
//! the bytes for a whole transfer window, is dropped alone: the others go on at the source's
//! pace. A target dropped for a reason that may pass (a stall, a broken connection) is tried
//! again on its own afterwards, within `max_wait`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::limits::stalled;
use super::waiting::Waiter;
use super::{Failure, Registries, RegistryError};
use crate::reference::Repository;

/// Chunks of a blob buffered for each target: what a slower target may lag behind.
const BUFFER_CHUNKS: usize = 4;

type Chunk = std::io::Result<Bytes>;

impl Registries {
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

    /// One try at every target: their uploads started, the source read once into all.
    async fn fan_out(
        &self,
        from: &Repository,
        to: &[Repository],
        digest: &str,
        size: u64,
    ) -> Vec<Result<u64, RegistryError>> {
        let locations = join_all(to.iter().map(|t| self.start_upload(t, digest))).await;
        if locations.iter().all(Result::is_err) {
            return locations.into_iter().map(|l| l.map(|_| 0)).collect();
        }
        let moved = Arc::new(AtomicU64::new(0));
        let source = match self.download(from, digest, size, moved.clone()).await {
            Ok(source) => source,
            Err(e) => return to.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut senders = Vec::new();
        let mut uploads = Vec::new();
        for (target, location) in to.iter().zip(locations) {
            let (sender, receiver) = mpsc::channel::<Chunk>(BUFFER_CHUNKS);
            let upload = async move {
                let location = location?;
                let body = reqwest::Body::wrap_stream(stream_of(receiver));
                self.upload(from, target, digest, size, location, body)
                    .await
            };
            senders.push(Some(sender));
            uploads.push(upload);
        }
        let both = async {
            tokio::join!(
                pump(source, senders, self.deadlines.window),
                join_all(uploads)
            )
        };
        let subject = format!("{from}@{digest}");
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

/// Reads `source` to its end, handing each chunk to every target still taking them; returns,
/// per target, why it was cut off (`None`: it got every chunk).
async fn pump(
    mut source: impl futures_util::Stream<Item = Chunk> + Unpin,
    mut senders: Vec<Option<mpsc::Sender<Chunk>>>,
    window: std::time::Duration,
) -> Vec<Option<Failure>> {
    let mut dropped: Vec<Option<Failure>> = vec![None; senders.len()];
    while let Some(chunk) = source.next().await {
        let failed = chunk.is_err();
        let message = chunk.as_ref().err().map(ToString::to_string);
        let sends = senders.iter().enumerate().filter_map(|(i, sender)| {
            let sender = sender.as_ref()?;
            let item = match &chunk {
                Ok(bytes) => Ok(bytes.clone()),
                Err(_) => Err(std::io::Error::other(message.clone().unwrap_or_default())),
            };
            Some(async move { (i, tokio::time::timeout(window, sender.send(item)).await) })
        });
        for (i, sent) in join_all(sends).await {
            let cut = match sent {
                Ok(Ok(())) => None,
                // The upload ended (refused, or its connection broke): its own result says why.
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
fn stream_of(
    receiver: mpsc::Receiver<Chunk>,
) -> impl futures_util::Stream<Item = Chunk> + Send + 'static {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    })
}
