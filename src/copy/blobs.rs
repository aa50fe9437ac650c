//! Getting a blob into a target repository the cheapest way, each blob moved once per pass.
//!
//! In order of preference: it is already there (HEAD); the target registry can mount it from a
//! repository that has it (the source repository when source and target share a registry, or
//! a target repository this pass already filled); or its bytes stream from source to target.
//! A [`BlobLedger`] shared by every image of a pass remembers where each blob landed, so a
//! layer shared by ten images crosses the network once and is mounted nine times; concurrent
//! images wanting the same blob wait for the one transfer instead of racing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, Semaphore};

use crate::manifest::Descriptor;
use crate::reference::Repository;
use crate::registry::waiting::Waiter;
use crate::registry::{Registries, RegistryError};

/// Blob transfers under way at once across the whole pass: enough to fill a link, few
/// enough not to look like a flood to the registry.
pub const MAX_BLOB_TRANSFERS: usize = 8;

/// How a blob reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    AlreadyThere,
    Mounted,
    /// Streamed from the source: this many bytes.
    Copied(u64),
}

/// Set once, by the one transfer of a blob into a target registry: the repository it went to.
type Landing = Arc<OnceCell<Repository>>;

/// Where each blob already is in a target registry, for the length of one pass.
#[derive(Debug)]
pub struct BlobLedger {
    /// (target registry, digest) → the target repository its one transfer went to.
    landed: Mutex<HashMap<(String, String), Landing>>,
    transfers: Semaphore,
}

impl Default for BlobLedger {
    fn default() -> Self {
        BlobLedger {
            landed: Mutex::default(),
            transfers: Semaphore::new(MAX_BLOB_TRANSFERS),
        }
    }
}

impl BlobLedger {
    /// Makes sure `to` holds the blob `blob` of `from`.
    pub async fn place(
        &self,
        registries: &Registries,
        from: &Repository,
        to: &Repository,
        blob: &Descriptor,
        waiter: &Waiter,
    ) -> Result<Placed, RegistryError> {
        let digest = blob.digest.as_str();
        if registries.blob_exists(to, digest, waiter).await? {
            return Ok(Placed::AlreadyThere);
        }
        if from.registry == to.registry && registries.mount_blob(to, from, digest).await {
            return Ok(Placed::Mounted);
        }
        let cell = {
            let mut landed = self
                .landed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            landed
                .entry((to.registry.clone(), digest.to_string()))
                .or_default()
                .clone()
        };
        let mut copied = None;
        let home = cell
            .get_or_try_init(|| async {
                let _permit = self
                    .transfers
                    .acquire()
                    .await
                    .expect("the semaphore is never closed");
                copied = Some(
                    registries
                        .copy_blob(from, to, digest, blob.size, waiter)
                        .await?,
                );
                Ok::<_, RegistryError>(to.clone())
            })
            .await?;
        if let Some(bytes) = copied {
            return Ok(Placed::Copied(bytes));
        }
        if home == to {
            return Ok(Placed::AlreadyThere); // another image of this pass put it here
        }
        if registries.mount_blob(to, home, digest).await {
            return Ok(Placed::Mounted);
        }
        // The registry would not mount it (some refuse cross-repository mounts): move it anyway.
        let _permit = self
            .transfers
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Ok(Placed::Copied(
            registries
                .copy_blob(from, to, digest, blob.size, waiter)
                .await?,
        ))
    }
}
