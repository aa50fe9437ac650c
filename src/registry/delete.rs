//! Deleting one tag, and never more than that tag.
//!
//! The distribution API deletes a tag by name where the registry allows it (OCI distribution
//! 1.1; distribution 3, Zot, Harbor). Distribution 2.8 reads the name as a digest and refuses
//! it (`400 DIGEST_INVALID`); it deletes only by digest, which removes every tag that names
//! the digest, so that is done only when the caller knows no other tag of the repository names
//! it. ECR deletes a tag through BatchDeleteImage. A registry with deletes disabled answers
//! `405 UNSUPPORTED`, which is returned as [`Failure::Unsupported`] for the caller to say once.

use reqwest::Method;

use super::retry::retrying;
use super::waiting::Waiter;
use super::{Failure, Registries, RegistryError};
use crate::reference::{api_host, ImageRef};

/// How a tag went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The tag alone.
    Tag,
    /// The manifest it named, by digest: no other tag named it.
    Manifest,
    /// It was gone already.
    Absent,
}

impl Registries {
    /// Deletes `image`'s tag, which points at `image`'s digest. `alone`: no other tag of the
    /// repository names that digest, so deleting the manifest by digest takes this tag only.
    pub async fn delete_tag(
        &self,
        image: &ImageRef,
        alone: bool,
        waiter: &Waiter,
    ) -> Result<Deleted, RegistryError> {
        let host = api_host(&image.registry);
        if self.ecr.is_ecr(host) {
            let tag = image.tag.as_deref().unwrap_or("latest");
            return match self.ecr.delete_tag(host, &image.repository, tag).await {
                Ok(true) => Ok(Deleted::Tag),
                Ok(false) => Ok(Deleted::Absent),
                Err(e) => Err(RegistryError::with(
                    "delete tag",
                    image,
                    Failure::Aws(e.to_string()),
                )),
            };
        }
        match self.delete_manifest(&image.named(), waiter).await {
            Ok(true) => return Ok(Deleted::Tag),
            Ok(false) => return Ok(Deleted::Absent),
            // The tag was read as a digest: this registry deletes by digest only.
            Err(e) if matches!(e.failure, Failure::DigestMismatch(_)) => {}
            Err(e) => return Err(e),
        }
        let Some(digest) = image.digest.as_deref() else {
            return Err(RegistryError::with(
                "delete tag",
                image,
                Failure::Refused("the registry deletes only by digest, and none is known".into()),
            ));
        };
        if !alone {
            return Err(RegistryError::with(
                "delete tag",
                image,
                Failure::Refused(format!(
                    "the registry deletes only by digest, and another tag names {digest}: \
                     deleting it would take that tag too, so this one is kept"
                )),
            ));
        }
        match self
            .delete_manifest(&image.repo().at_digest(digest), waiter)
            .await?
        {
            true => Ok(Deleted::Manifest),
            false => Ok(Deleted::Absent),
        }
    }

    /// `DELETE …/manifests/<tag or digest>`; `false` when there was nothing to delete.
    async fn delete_manifest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<bool, RegistryError> {
        retrying(waiter, || async {
            let exchange = self.manifest_request(Method::DELETE, image, None).await;
            exchange.result.map(|answer| answer.is_some())
        })
        .await
    }
}
