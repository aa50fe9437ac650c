//! Getting a blob into target repositories the cheapest way, each blob moved once per pass
//! into each target registry.
//!
//! In order of preference: it is already there (HEAD); the target registry can mount it from a
//! repository that has it (the source repository when source and target share a registry, or
//! a target repository this pass already filled); or its bytes stream from the source, read
//! once for every target that needs them ([`Stores::copy_blob_to_all`]). A
//! [`BlobLedger`] shared by every image of a pass remembers where each blob landed in each
//! target registry, so a layer shared by ten images crosses the network once and is mounted
//! nine times; concurrent images wanting the same blob wait for the one transfer instead of
//! racing. A transfer that fails is not remembered: the next image to want the blob tries.

use futures_util::future::join_all;
use tokio::sync::Semaphore;

use super::ledger::{Claim, Ledger, Promise};
use crate::manifest::Descriptor;
use crate::reference::Repository;
use crate::registry::waiting::Waiter;
use crate::registry::RegistryError;
use crate::store::Stores;

/// Blob transfers under way at once across the whole pass (a transfer to several targets
/// counts once): enough to fill a link, few enough not to look like a flood to the registry.
pub const MAX_BLOB_TRANSFERS: usize = 8;

/// How a blob reached a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    AlreadyThere,
    Mounted,
    /// Streamed from the source: this many bytes.
    Copied(u64),
}

type Key = (String, String);

/// Where each blob already is in each target registry, for the length of one pass.
#[derive(Debug)]
pub struct BlobLedger {
    /// (target registry, digest) → the target repository its one transfer went to.
    landed: Ledger<Key, Repository>,
    transfers: Semaphore,
}

impl Default for BlobLedger {
    fn default() -> Self {
        BlobLedger {
            landed: Ledger::default(),
            transfers: Semaphore::new(MAX_BLOB_TRANSFERS),
        }
    }
}

impl BlobLedger {
    /// Makes sure every repository of `to` holds the blob `blob` of `from`; the result of
    /// each, in order.
    pub async fn place_all(
        &self,
        stores: &Stores,
        from: &Repository,
        to: &[Repository],
        blob: &Descriptor,
        waiter: &Waiter,
    ) -> Vec<Result<Placed, RegistryError>> {
        let digest = blob.digest.as_str();
        // What each target can do alone: it has the blob, or mounts it from the source.
        let cheap = join_all(to.iter().map(|target| async move {
            let store = stores.of(&target.registry);
            if store.blob_exists(target, digest, waiter).await? {
                return Ok(Some(Placed::AlreadyThere));
            }
            if from.registry == target.registry && store.mount_blob(target, from, digest).await {
                return Ok(Some(Placed::Mounted));
            }
            Ok(None)
        }))
        .await;
        let mut results: Vec<Option<Result<Placed, RegistryError>>> = Vec::new();
        let mut mine: Vec<(usize, Promise<Key, Repository>)> = Vec::new();
        let mut later = Vec::new();
        for (i, placed) in cheap.into_iter().enumerate() {
            results.push(match placed {
                Ok(Some(placed)) => Some(Ok(placed)),
                Err(e) => Some(Err(e)),
                Ok(None) => {
                    let key = (to[i].registry.clone(), digest.to_string());
                    // One claim per registry in this call: a second target in the same
                    // registry mounts from the first once it is there.
                    match self.landed.claim(key) {
                        Claim::Mine(promise) => mine.push((i, promise)),
                        _ => later.push(i),
                    }
                    None
                }
            });
        }
        if !mine.is_empty() {
            let targets: Vec<Repository> = mine.iter().map(|(i, _)| to[*i].clone()).collect();
            let copied = {
                let _permit = self.transfers.acquire().await.expect("never closed");
                stores
                    .copy_blob_to_all(from, &targets, digest, blob.size, waiter)
                    .await
            };
            for ((i, promise), result) in mine.into_iter().zip(copied) {
                if result.is_ok() {
                    promise.keep(to[i].clone());
                }
                results[i] = Some(result.map(Placed::Copied));
            }
        }
        for i in later {
            results[i] = Some(self.place_after(stores, from, &to[i], blob, waiter).await);
        }
        results
            .into_iter()
            .map(|r| r.expect("every target is placed"))
            .collect()
    }

    /// For a target whose registry another image (or target) is filling: wait for that, then
    /// mount from where it landed, or transfer it here if that image gave up.
    async fn place_after(
        &self,
        stores: &Stores,
        from: &Repository,
        to: &Repository,
        blob: &Descriptor,
        waiter: &Waiter,
    ) -> Result<Placed, RegistryError> {
        let digest = blob.digest.as_str();
        let home = match self
            .landed
            .settle((to.registry.clone(), digest.to_string()))
            .await
        {
            Claim::Done(home) => home,
            Claim::Mine(promise) => {
                let copied = self.transfer(stores, from, to, blob, waiter).await?;
                promise.keep(to.clone());
                return Ok(Placed::Copied(copied));
            }
            Claim::Pending(_) => unreachable!("settle waits until it is not pending"),
        };
        if &home == to {
            return Ok(Placed::AlreadyThere); // another image of this pass put it here
        }
        if stores.of(&to.registry).mount_blob(to, &home, digest).await {
            return Ok(Placed::Mounted);
        }
        // The registry would not mount it (some refuse cross-repository mounts): move it anyway.
        Ok(Placed::Copied(
            self.transfer(stores, from, to, blob, waiter).await?,
        ))
    }

    async fn transfer(
        &self,
        stores: &Stores,
        from: &Repository,
        to: &Repository,
        blob: &Descriptor,
        waiter: &Waiter,
    ) -> Result<u64, RegistryError> {
        let _permit = self.transfers.acquire().await.expect("never closed");
        stores
            .copy_blob(from, to, &blob.digest, blob.size, waiter)
            .await
    }
}
