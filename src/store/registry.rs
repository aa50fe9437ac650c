//! A registry as a [`Store`]: each operation is the [`Registries`] request that does it, with
//! its pacing, budgets, retries and bounds.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Url;

use super::{BlobWriter, Chunks, Store};
use crate::manifest::Descriptor;
use crate::reference::{ImageRef, Repository};
use crate::registry::tags::Listing;
use crate::registry::waiting::Waiter;
use crate::registry::{Deleted, Head, Registries, RegistryError};

#[async_trait]
impl Store for Registries {
    async fn manifest_digest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<Option<String>, RegistryError> {
        Registries::manifest_digest(self, image, waiter).await
    }

    async fn manifest_head(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<Option<Head>, RegistryError> {
        Registries::manifest_head(self, image, waiter).await
    }

    async fn pull_manifest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<(Bytes, String), RegistryError> {
        Registries::pull_manifest(self, image, waiter).await
    }

    async fn push_manifest(
        &self,
        image: &ImageRef,
        body: Bytes,
        media_type: &str,
        waiter: &Waiter,
    ) -> Result<(), RegistryError> {
        Registries::push_manifest(self, image, body, media_type, waiter).await
    }

    async fn delete_tag(
        &self,
        image: &ImageRef,
        alone: bool,
        waiter: &Waiter,
    ) -> Result<Deleted, RegistryError> {
        Registries::delete_tag(self, image, alone, waiter).await
    }

    async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<bool, RegistryError> {
        Registries::blob_exists(self, repository, digest, waiter).await
    }

    async fn read_blob(
        &self,
        repository: &Repository,
        digest: &str,
        cap: usize,
        waiter: &Waiter,
    ) -> Result<Bytes, RegistryError> {
        Registries::read_blob(self, repository, digest, cap, waiter).await
    }

    async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool {
        Registries::mount_blob(self, to, from, digest).await
    }

    async fn open_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<Chunks, RegistryError> {
        self.download(repository, digest, size, moved).await
    }

    async fn create_blob<'a>(
        &'a self,
        repository: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<Box<dyn BlobWriter + 'a>, RegistryError> {
        let location = self.start_upload(repository, digest).await?;
        Ok(Box::new(Upload {
            registries: self,
            to: repository.clone(),
            digest: digest.to_string(),
            size,
            location,
        }))
    }

    async fn list_tags(
        &self,
        repository: &Repository,
        waiter: &Waiter,
    ) -> Result<Listing, RegistryError> {
        Registries::list_tags(self, repository, waiter).await
    }

    async fn referrers(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        Registries::referrers(self, repository, digest, waiter).await
    }

    async fn prepare_push(&self, repository: &Repository) -> Result<(), RegistryError> {
        Registries::prepare_push(self, repository).await
    }
}

/// A blob upload the registry has started: its bytes go in one PUT to `location`.
struct Upload<'a> {
    registries: &'a Registries,
    to: Repository,
    digest: String,
    size: u64,
    location: Url,
}

#[async_trait]
impl BlobWriter for Upload<'_> {
    async fn write(self: Box<Self>, chunks: Chunks) -> Result<u64, RegistryError> {
        self.registries
            .upload(&self.to, &self.digest, self.size, self.location, chunks)
            .await
    }
}
