//! Where images are kept, behind one interface: [`Store`].
//!
//! The copy core ([`crate::copy`]) and the pass ([`crate::run`]) read and write images only
//! through a [`Store`], so what they do (HEAD before GET, blobs before the manifests that
//! reference them, the tag last) holds the same for every kind of store, and can be tested on
//! one kept in memory. A registry is one kind ([`registry`], over
//! [`crate::registry::Registries`], whose manners stay below: pacing, budgets, retries and
//! bounds); an OCI image layout on disk another ([`layout`], named `oci:/DIR` where a
//! reference names a registry).
//!
//! [`Stores`] finds the store behind a reference's registry name, and copies a blob from one
//! store into others, reading it once ([`transfer`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub mod layout;
#[cfg(test)]
pub(crate) mod memory;
mod registry;
mod transfer;

use crate::manifest::Descriptor;
use crate::reference::{ImageRef, Repository};
use crate::registry::limits::Deadlines;
use crate::registry::tags::Listing;
pub use crate::registry::verify::Chunks;
use crate::registry::waiting::Waiter;
use crate::registry::{Deleted, Head, RegistryError};

/// A place images are kept: a registry, or anything that holds repositories of manifests,
/// blobs and tags the same way.
///
/// Every operation that may wait (a registry's budget, its retries) waits within `waiter`'s
/// allowance. Whatever a store reads from outside is bounded as a registry's answers are.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The digest of the manifest `image` names (its tag, or else its digest) now; `None` if
    /// there is none. For a registry, a HEAD: free where pulls are counted.
    async fn manifest_digest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<Option<String>, RegistryError>;

    /// What the store tells of the manifest `image` names without reading it: its digest,
    /// and its media type when the store says it (a registry's HEAD, free where pulls are
    /// counted). The pass prices a dry run with it.
    async fn manifest_head(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<Option<Head>, RegistryError> {
        let digest = self.manifest_digest(image, waiter).await?;
        Ok(digest.map(|digest| Head {
            digest,
            media_type: None,
        }))
    }

    /// A manifest's bytes and their digest, checked against the digest `image` is pinned to
    /// (or the one the store gives). For a registry, a pull.
    async fn pull_manifest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<(Bytes, String), RegistryError>;

    /// Stores a manifest byte for byte, under `image`'s tag, or under its digest alone when
    /// it has no tag. What it references must be in the store already.
    async fn push_manifest(
        &self,
        image: &ImageRef,
        body: Bytes,
        media_type: &str,
        waiter: &Waiter,
    ) -> Result<(), RegistryError>;

    /// Deletes `image`'s tag and nothing else; `image` is pinned to the digest the tag points
    /// at. `alone`: no other tag of the repository names that digest, so a store that can only
    /// delete by digest may.
    async fn delete_tag(
        &self,
        image: &ImageRef,
        alone: bool,
        waiter: &Waiter,
    ) -> Result<Deleted, RegistryError>;

    /// Whether `repository` holds the blob `digest`.
    async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<bool, RegistryError>;

    /// A small blob (an image's config) whole: at most `cap` bytes, checked against its
    /// digest.
    async fn read_blob(
        &self,
        repository: &Repository,
        digest: &str,
        cap: usize,
        waiter: &Waiter,
    ) -> Result<Bytes, RegistryError>;

    /// Links a blob that `from`, in this same store, holds into `to` without moving its bytes;
    /// `false` when the store declines (the bytes must then be copied).
    async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool;

    /// Opens blob `digest` (`size` bytes) for reading, once: its bytes checked as they pass
    /// ([`crate::registry::verify::checked`]), each counted into `moved`.
    async fn open_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<Chunks, RegistryError>;

    /// Starts writing blob `digest` (`size` bytes) into `repository`, once: the writer takes
    /// its bytes, and commits the blob only if they end cleanly.
    async fn create_blob<'a>(
        &'a self,
        repository: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<Box<dyn BlobWriter + 'a>, RegistryError>;

    /// Every tag of `repository`.
    async fn list_tags(
        &self,
        repository: &Repository,
        waiter: &Waiter,
    ) -> Result<Listing, RegistryError>;

    /// What refers to manifest `digest` in `repository` (signatures, attestations, SBOMs);
    /// `None` when the store cannot say (a registry without the referrers API, whose clients
    /// keep a `sha256-<hex>` tag instead).
    async fn referrers(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError>;

    /// Readies `repository` to receive a push (on ECR, creates it).
    async fn prepare_push(&self, repository: &Repository) -> Result<(), RegistryError>;
}

/// One blob being written into a store ([`Store::create_blob`]).
#[async_trait]
pub trait BlobWriter: Send {
    /// Writes `chunks` to their end and commits the blob; a stream that ends in an error
    /// leaves nothing behind. The bytes written.
    async fn write(self: Box<Self>, chunks: Chunks) -> Result<u64, RegistryError>;
}

/// Every store of a pass, by the registry name references give them: the registries, and
/// stores named otherwise.
pub struct Stores {
    /// The store of every name not in `named`.
    default: Arc<dyn Store>,
    named: BTreeMap<String, Arc<dyn Store>>,
    /// How long one stalled transfer may take.
    deadlines: Deadlines,
    /// Blob bytes streamed so far, by every transfer (a blob sent to several targets counts
    /// once).
    transferred: Arc<AtomicU64>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("default", &self.default)
            .field("named", &self.named.keys())
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// `default` serves every registry name; a transfer that stops moving for `deadlines`'
    /// window is dropped.
    pub fn new(default: Arc<dyn Store>, deadlines: Deadlines) -> Self {
        Stores {
            default,
            named: BTreeMap::new(),
            deadlines,
            transferred: Arc::default(),
        }
    }

    /// The same, with `store` serving the registry name `name`.
    pub fn with(mut self, name: impl Into<String>, store: Arc<dyn Store>) -> Self {
        self.named.insert(name.into(), store);
        self
    }

    /// The store that serves `registry` (a reference's registry name).
    pub fn of(&self, registry: &str) -> &dyn Store {
        self.named.get(registry).unwrap_or(&self.default).as_ref()
    }

    /// Blob bytes streamed from sources so far (a blob sent to several targets counts once).
    pub fn bytes_transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }
}
