//! Each manifest pushed once per pass into each target repository.
//!
//! Upstream, many tags share one content (`1.27`, `1.27.3`, `stable` and `latest` are often
//! one index), so a mirror of a whole repository meets the same manifests many times at once.
//! Pushing the same manifest concurrently is not harmless: distribution (before 3.0, on
//! filesystem storage) rewrites a manifest's link file in place on every identical push, and a
//! concurrent push that verifies its references reads it half-written and is refused
//! (`MANIFEST_BLOB_UNKNOWN`, distribution#4478); registries on eventually consistent storage
//! answer the same for a moment after an upload.
//!
//! So a [`ManifestLedger`] shared by every image of a pass lets one image do the work for a
//! (target repository, content) and the others wait for it: a child manifest is pushed by
//! digest once, and of several tags of one content the first copies it (one pull) and pushes
//! its tag, while the others push only their tag, reading the manifest back from the target,
//! which costs no pull at the source. A failure is remembered too, so fifty tags of one broken
//! image fail with one set of retries, not fifty. One image with several targets claims the
//! content in each and does the work for all the targets it got at once.

use std::future::Future;

use super::ledger::{Claim, Ledger};
use super::CopyError;
use crate::reason::Reason;
use crate::reference::Repository;

/// What was done for a (target repository, content): stored there, skipped, or why not.
/// A content's fate in a repository: where it landed, or why the image that tried failed
/// (its class and message).
type Settled = Result<Done, (Reason, String)>;

/// What a content came to in a target repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Stored there under this digest (a filtered index's own, for a choice of platforms).
    Stored(String),
    /// Not mirrored, and why: no platform of it is wanted.
    Skipped(String),
}

/// A claimed (target repository, content), by the index of its target.
type Claimed = (usize, super::ledger::Promise<(Repository, String), Settled>);

/// Manifests already stored (or that failed) in each target repository, for one pass.
#[derive(Debug, Default)]
pub struct ManifestLedger {
    ledger: Ledger<(Repository, String), Settled>,
}

/// Who did the work for a manifest in one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn<T> {
    /// This caller did it, and this is what its work returned.
    Mine(T),
    /// Another image of the pass did, and this is what it came to.
    Theirs(Done),
}

impl ManifestLedger {
    /// Settles `content` (a digest, or a digest and a platform choice) in every repository of
    /// `targets`: where nobody has done it yet, by one call of `work` with those targets (it
    /// returns, per target, what the content came to and its own result); where another image
    /// is doing it, by waiting for that. The results are in `targets`' order.
    pub async fn settle_all<T, F, Fut>(
        &self,
        targets: &[Repository],
        content: &str,
        work: F,
    ) -> Vec<Result<Turn<T>, CopyError>>
    where
        F: Fn(Vec<Repository>) -> Fut,
        Fut: Future<Output = Vec<Result<(Done, T), CopyError>>>,
    {
        let mut results: Vec<Option<Result<Turn<T>, CopyError>>> =
            targets.iter().map(|_| None).collect();
        let mut mine = Vec::new();
        let mut waiting = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            match self.ledger.claim((target.clone(), content.to_string())) {
                Claim::Mine(promise) => mine.push((i, promise)),
                Claim::Done(settled) => results[i] = Some(turn_of(settled, content)),
                Claim::Pending(_) => waiting.push(i),
            }
        }
        self.run(&mut results, targets, mine, &work).await;
        for i in waiting {
            let key = (targets[i].clone(), content.to_string());
            match self.ledger.settle(key).await {
                Claim::Done(settled) => results[i] = Some(turn_of(settled, content)),
                Claim::Mine(promise) => {
                    // Whoever had it gave up: this target's work is this caller's after all.
                    self.run(&mut results, targets, vec![(i, promise)], &work)
                        .await;
                }
                Claim::Pending(_) => unreachable!("settle waits until it is not pending"),
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every target is settled"))
            .collect()
    }

    /// Runs `work` for the targets at `claimed`, keeping each promise with its result.
    async fn run<T, F, Fut>(
        &self,
        results: &mut [Option<Result<Turn<T>, CopyError>>],
        targets: &[Repository],
        claimed: Vec<Claimed>,
        work: &F,
    ) where
        F: Fn(Vec<Repository>) -> Fut,
        Fut: Future<Output = Vec<Result<(Done, T), CopyError>>>,
    {
        if claimed.is_empty() {
            return;
        }
        let repositories = claimed.iter().map(|(i, _)| targets[*i].clone()).collect();
        let done = work(repositories).await;
        for ((i, promise), result) in claimed.into_iter().zip(done) {
            match result {
                Ok((done, value)) => {
                    promise.keep(Ok(done));
                    results[i] = Some(Ok(Turn::Mine(value)));
                }
                Err(e) => {
                    promise.keep(Err((e.reason(), e.to_string())));
                    results[i] = Some(Err(e));
                }
            }
        }
    }
}

fn turn_of<T>(settled: Settled, content: &str) -> Result<Turn<T>, CopyError> {
    match settled {
        Ok(done) => Ok(Turn::Theirs(done)),
        Err((reason, message)) => Err(CopyError::FailedBefore {
            digest: content.to_string(),
            reason,
            message,
        }),
    }
}
