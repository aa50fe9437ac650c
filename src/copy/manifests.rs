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
//! (target repository, digest) and the others wait for it: a child manifest is pushed by
//! digest once, and of several tags of one content the first copies it (one pull) and pushes
//! its tag, while the others push only their tag, reading the manifest back from the target,
//! which costs no pull at the source. A failure is remembered too, so fifty tags of one broken
//! image fail with one set of retries, not fifty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::reference::Repository;

use super::CopyError;

/// What happened to one (target repository, digest) this pass: stored, or why not.
type Settled = Result<(), String>;

type Slot = Arc<OnceCell<Settled>>;

/// Manifests already stored (or that failed) in each target repository, for one pass.
#[derive(Debug, Default)]
pub struct ManifestLedger {
    slots: Mutex<HashMap<(Repository, String), Slot>>,
}

/// Who did the work for a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn<T> {
    /// This caller did it, and this is what its work returned.
    Mine(T),
    /// Another image of the pass did, and it succeeded.
    Theirs,
}

impl ManifestLedger {
    /// Runs `work` for `digest` in `to` unless another image of this pass already has (or is
    /// doing so now, in which case this waits for it). A failure is kept: later callers get
    /// [`CopyError::FailedBefore`] without trying again.
    pub async fn settle<T, F, Fut>(
        &self,
        to: &Repository,
        digest: &str,
        work: F,
    ) -> Result<Turn<T>, CopyError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, CopyError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry((to.clone(), digest.to_string()))
                .or_default()
                .clone()
        };
        let mut mine = None;
        let settled = slot
            .get_or_init(|| async {
                match work().await {
                    Ok(value) => {
                        mine = Some(Ok(value));
                        Ok(())
                    }
                    Err(e) => {
                        let message = e.to_string();
                        mine = Some(Err(e));
                        Err(message)
                    }
                }
            })
            .await;
        match (mine, settled) {
            (Some(Ok(value)), _) => Ok(Turn::Mine(value)),
            (Some(Err(e)), _) => Err(e),
            (None, Ok(())) => Ok(Turn::Theirs),
            (None, Err(message)) => Err(CopyError::FailedBefore {
                digest: digest.to_string(),
                message: message.clone(),
            }),
        }
    }
}
