//! Writing into a layout, in the order that keeps every name honest: a blob streamed into a
//! temporary file and renamed only once all its checked bytes are on disk; a manifest stored
//! only once everything it references is; `index.json` replaced last, and only when a name
//! or a referrer entry changed.

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::files::Files;
use super::{blocking, referrer, OciLayout};
use crate::digest::{self, Algorithm};
use crate::manifest::{Descriptor, Manifest};
use crate::reference::{ref_name, ImageRef};
use crate::registry::limits::MAX_MANIFEST_BYTES;
use crate::registry::{Failure, RegistryError};
use crate::store::{BlobWriter, Chunks};

/// A blob being written into a layout ([`crate::store::Store::create_blob`]).
pub(super) struct Upload {
    pub files: Files,
    /// The blob as messages name it.
    pub subject: String,
    pub size: u64,
    /// Where it goes once whole: `blobs/<algorithm>/<hex>`.
    pub path: PathBuf,
}

#[async_trait]
impl BlobWriter for Upload {
    async fn write(self: Box<Self>, chunks: Chunks) -> Result<u64, RegistryError> {
        let files = self.files.clone();
        let (temp, file) = blocking(move || files.temp())
            .await
            .map_err(|e| self.failed(Failure::FileSystem(e.to_string())))?;
        match self.fill(tokio::fs::File::from_std(file), chunks).await {
            Ok(written) => {
                let (files, path) = (self.files.clone(), self.path.clone());
                blocking(move || files.settle(&temp, &path))
                    .await
                    .map_err(|e| self.failed(Failure::FileSystem(e.to_string())))?;
                Ok(written)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }
}

impl Upload {
    /// Writes `chunks` into `file` to their clean end and flushes it to disk; the bytes
    /// written. The stream is the source's, checked as it passes: it ends in an error, never
    /// cleanly, when its bytes are not the blob's.
    async fn fill(
        &self,
        mut file: tokio::fs::File,
        mut chunks: Chunks,
    ) -> Result<u64, RegistryError> {
        let mut written = 0u64;
        while let Some(chunk) = chunks.next().await {
            let bytes =
                chunk.map_err(|e| RegistryError::from_stream("write blob", &self.subject, &e))?;
            written += bytes.len() as u64;
            if written > self.size {
                return Err(self.failed(Failure::TooLarge(format!(
                    "more than the {} bytes its manifest gives",
                    self.size
                ))));
            }
            file.write_all(&bytes)
                .await
                .map_err(|e| self.failed(Failure::FileSystem(e.to_string())))?;
        }
        if written != self.size {
            return Err(self.failed(Failure::DigestMismatch(format!(
                "{written} bytes where its manifest gives {}",
                self.size
            ))));
        }
        file.flush()
            .await
            .and(file.sync_all().await)
            .map_err(|e| self.failed(Failure::FileSystem(e.to_string())))?;
        Ok(written)
    }

    fn failed(&self, failure: Failure) -> RegistryError {
        RegistryError::with("write blob", &self.subject, failure)
    }
}

/// Stores manifest `body` in `layout` under `image`'s digest, and names it `image`'s tag (and
/// lists it as a referrer when it has a `subject`) in `index.json`.
pub(super) async fn manifest(
    layout: &OciLayout,
    image: &ImageRef,
    body: Bytes,
    media_type: &str,
) -> Result<(), RegistryError> {
    let subject = image.to_string();
    let failed = |failure| RegistryError::with("push manifest", &subject, failure);
    layout.writable("push manifest", &subject)?;
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(failed(Failure::TooLarge(format!(
            "{} bytes; a manifest may have {MAX_MANIFEST_BYTES}",
            body.len()
        ))));
    }
    let algorithm = match &image.digest {
        Some(pinned) => {
            digest::parse(pinned).map_err(|e| failed(Failure::Protocol(e.to_string())))?
        }
        None => Algorithm::Sha256,
    };
    let digest = digest::of(algorithm, &body);
    if image
        .digest
        .as_ref()
        .is_some_and(|pinned| *pinned != digest)
    {
        return Err(failed(Failure::DigestMismatch(format!(
            "its bytes are {digest}"
        ))));
    }
    let parsed = Manifest::parse(&body, Some(media_type))
        .map_err(|e| failed(Failure::Protocol(e.to_string())))?;
    store(layout, &parsed, &digest, body.clone())
        .await
        .map_err(failed)?;
    let descriptor = Descriptor {
        media_type: media_type.to_string(),
        digest,
        size: body.len() as u64,
        urls: Vec::new(),
        platform: None,
        annotations: Default::default(),
        artifact_type: None,
    };
    let referring = referrer(&body, &descriptor).map(|(_, listed)| Descriptor {
        artifact_type: listed.artifact_type,
        ..descriptor.clone()
    });
    let name = image
        .tag
        .as_ref()
        .map(|tag| ref_name(&image.repository, tag));
    if referring.is_none() && name.is_none() {
        return Ok(());
    }
    layout
        .change_index(|index| {
            let listed = referring.as_ref().is_some_and(|r| index.add_unnamed(r));
            let named = name
                .as_ref()
                .is_some_and(|n| index.set_name(n, &descriptor));
            listed || named
        })
        .await
}

/// Writes the manifest blob `digest` unless it is there, once everything `parsed`
/// references is: so a stored manifest is always complete.
async fn store(
    layout: &OciLayout,
    parsed: &Manifest,
    digest: &str,
    body: Bytes,
) -> Result<(), Failure> {
    let shared = layout.shared.clone();
    let references: Vec<String> = parsed
        .references()
        .iter()
        .map(|d| d.digest.clone())
        .collect();
    let digest = digest.to_string();
    blocking(move || {
        for reference in &references {
            let path = shared.files.blob(reference).map_err(Failure::Protocol)?;
            if !shared.files.holds(&path) {
                return Err(Failure::ReferencesMissing(format!(
                    "{reference} is not in the layout"
                )));
            }
        }
        let path = shared.files.blob(&digest).map_err(Failure::Protocol)?;
        if shared.files.holds(&path) {
            return Ok(());
        }
        shared
            .files
            .replace(&path, &body)
            .map_err(|e| Failure::FileSystem(format!("{}: {e}", path.display())))
    })
    .await
}
