//! A registry kept in memory, for unit tests of the copy core: it answers as a registry does
//! (a manifest is refused until everything it references is in its repository; a blob's
//! bytes are checked before they are kept), counts what it is asked, keeps the order in which
//! things were stored, and fails the operations a test tells it to.
//!
//! Every repository of every registry name the test gives it lives in one `Memory`; its
//! blobs are kept once and linked into repositories, as a registry's are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{BlobWriter, Chunks, Store};
use crate::digest::{self, Algorithm};
use crate::manifest::{Descriptor, Manifest};
use crate::reference::{ImageRef, Repository};
use crate::registry::tags::{LeftOut, Listing};
use crate::registry::verify::checked;
use crate::registry::waiting::Waiter;
use crate::registry::{Deleted, Failure, RegistryError};

/// A blob is handed out in chunks of this many bytes, so streams have more than one.
const CHUNK: usize = 4;

/// The operations a test can count or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Head,
    Pull,
    Push,
    Delete,
    BlobExists,
    ReadBlob,
    Mount,
    OpenBlob,
    CreateBlob,
    WriteBlob,
    ListTags,
    Referrers,
    PreparePush,
}

/// Something stored, in the order it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Blob { repository: String, digest: String },
    Manifest { repository: String, digest: String },
    Tag { repository: String, tag: String },
}

#[derive(Debug, Default)]
struct Repo {
    tags: BTreeMap<String, String>,
    /// Manifests by digest: bytes and media type.
    manifests: BTreeMap<String, (Bytes, String)>,
    blobs: BTreeSet<String>,
}

/// A fault a test has set: `op` fails with `failure` whenever its subject (`repo@digest`,
/// `repo:tag`) contains `matching`.
#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    matching: String,
    failure: Failure,
}

#[derive(Debug, Default)]
struct State {
    /// By `registry/repository`.
    repos: BTreeMap<String, Repo>,
    /// Every blob's bytes, by digest.
    blobs: BTreeMap<String, Bytes>,
    faults: Vec<Fault>,
    /// Blobs whose bytes are handed out wrong (the last byte flipped).
    corrupt: BTreeSet<String>,
    counts: BTreeMap<Op, u64>,
    stored: Vec<Stored>,
}

/// A registry in memory; see the module header.
#[derive(Debug)]
pub struct Memory {
    state: Mutex<State>,
    /// Whether it answers the referrers API (else clients keep a `sha256-<hex>` tag).
    referrers_api: bool,
}

impl Memory {
    pub fn new(referrers_api: bool) -> Arc<Memory> {
        Arc::new(Memory {
            state: Mutex::default(),
            referrers_api,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a blob into `repository` directly (a test's seed); its digest.
    pub fn put_blob(&self, repository: &Repository, bytes: &[u8]) -> String {
        let digest = digest::of(Algorithm::Sha256, bytes);
        let mut state = self.state();
        state
            .blobs
            .insert(digest.clone(), Bytes::copy_from_slice(bytes));
        repo(&mut state, repository).blobs.insert(digest.clone());
        digest
    }

    /// Puts a manifest into `repository` directly, tagged `tag` if given; its digest.
    pub fn put_manifest(
        &self,
        repository: &Repository,
        body: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> String {
        let digest = digest::of(Algorithm::Sha256, body);
        let mut state = self.state();
        let repo = repo(&mut state, repository);
        repo.manifests.insert(
            digest.clone(),
            (Bytes::copy_from_slice(body), media_type.to_string()),
        );
        if let Some(tag) = tag {
            repo.tags.insert(tag.to_string(), digest.clone());
        }
        digest
    }

    /// Makes `op` fail with `failure` on every subject containing `matching`.
    pub fn fail(&self, op: Op, matching: &str, failure: Failure) {
        self.state().faults.push(Fault {
            op,
            matching: matching.to_string(),
            failure,
        });
    }

    /// Makes the blob `digest` come out of this store with a wrong byte.
    pub fn corrupt(&self, digest: &str) {
        self.state().corrupt.insert(digest.to_string());
    }

    /// How many times `op` was asked (failed ones included).
    pub fn count(&self, op: Op) -> u64 {
        self.state().counts.get(&op).copied().unwrap_or_default()
    }

    /// What was stored, in order (seeds not included).
    pub fn stored(&self) -> Vec<Stored> {
        self.state().stored.clone()
    }

    /// What `repository`'s tag points at.
    pub fn tag(&self, repository: &Repository, tag: &str) -> Option<String> {
        self.state()
            .repos
            .get(&repository.to_string())?
            .tags
            .get(tag)
            .cloned()
    }

    /// The manifest `digest` in `repository`, if it holds it.
    pub fn manifest(&self, repository: &Repository, digest: &str) -> Option<Bytes> {
        let state = self.state();
        let repo = state.repos.get(&repository.to_string())?;
        repo.manifests.get(digest).map(|(body, _)| body.clone())
    }

    /// Whether `repository` holds the blob `digest`.
    pub fn has_blob(&self, repository: &Repository, digest: &str) -> bool {
        self.state()
            .repos
            .get(&repository.to_string())
            .is_some_and(|r| r.blobs.contains(digest))
    }

    /// Counts `op` on `subject`, and fails it if a fault says so.
    fn ask(&self, op: Op, action: &'static str, subject: &str) -> Result<(), RegistryError> {
        let mut state = self.state();
        *state.counts.entry(op).or_default() += 1;
        let fault = state
            .faults
            .iter()
            .find(|f| f.op == op && subject.contains(&f.matching));
        match fault {
            Some(fault) => Err(RegistryError::with(action, subject, fault.failure.clone())),
            None => Ok(()),
        }
    }
}

fn repo<'a>(state: &'a mut State, repository: &Repository) -> &'a mut Repo {
    state.repos.entry(repository.to_string()).or_default()
}

/// `image`'s tag, or else its digest: what a registry's URL would name.
fn name(image: &ImageRef) -> (&str, bool) {
    match (&image.digest, &image.tag) {
        (Some(digest), _) => (digest, false),
        (None, Some(tag)) => (tag, true),
        (None, None) => ("latest", true),
    }
}

fn not_found(action: &'static str, subject: &str) -> RegistryError {
    RegistryError::with(action, subject, Failure::NotFound)
}

#[async_trait]
impl Store for Memory {
    async fn manifest_digest(
        &self,
        image: &ImageRef,
        _: &Waiter,
    ) -> Result<Option<String>, RegistryError> {
        self.ask(Op::Head, "HEAD manifest", &image.to_string())?;
        let state = self.state();
        let Some(repo) = state.repos.get(&image.repo().to_string()) else {
            return Ok(None);
        };
        Ok(match name(image) {
            (tag, true) => repo.tags.get(tag).cloned(),
            (digest, false) => repo
                .manifests
                .contains_key(digest)
                .then(|| digest.to_string()),
        })
    }

    async fn pull_manifest(
        &self,
        image: &ImageRef,
        _: &Waiter,
    ) -> Result<(Bytes, String), RegistryError> {
        let subject = image.to_string();
        self.ask(Op::Pull, "pull manifest", &subject)?;
        let state = self.state();
        let repo = state
            .repos
            .get(&image.repo().to_string())
            .ok_or_else(|| not_found("pull manifest", &subject))?;
        let digest = match name(image) {
            (tag, true) => repo.tags.get(tag).cloned(),
            (digest, false) => Some(digest.to_string()),
        };
        let digest = digest.ok_or_else(|| not_found("pull manifest", &subject))?;
        let (body, _) = repo
            .manifests
            .get(&digest)
            .ok_or_else(|| not_found("pull manifest", &subject))?;
        Ok((body.clone(), digest))
    }

    async fn push_manifest(
        &self,
        image: &ImageRef,
        body: Bytes,
        media_type: &str,
        _: &Waiter,
    ) -> Result<(), RegistryError> {
        let subject = image.to_string();
        self.ask(Op::Push, "push manifest", &subject)?;
        let manifest = Manifest::parse(&body, Some(media_type)).map_err(|e| {
            RegistryError::with("push manifest", &subject, Failure::Protocol(e.to_string()))
        })?;
        let digest = digest::of(Algorithm::Sha256, &body);
        if let (_, false) = name(image) {
            if image.digest.as_deref() != Some(digest.as_str()) {
                let failure = Failure::DigestMismatch(format!("pushed as {subject}, is {digest}"));
                return Err(RegistryError::with("push manifest", &subject, failure));
            }
        }
        let mut state = self.state();
        let repository = image.repo();
        let repo = repo(&mut state, &repository);
        // As distribution does: what the manifest references must be here first.
        let missing: Vec<&Descriptor> = match &manifest {
            Manifest::Image { blobs, .. } => blobs
                .iter()
                .filter(|b| !b.is_foreign() && !repo.blobs.contains(&b.digest))
                .collect(),
            Manifest::Index { children, .. } => children
                .iter()
                .filter(|c| !repo.manifests.contains_key(&c.digest))
                .collect(),
        };
        if let Some(first) = missing.first() {
            let failure = Failure::ReferencesMissing(format!("{} is not here", first.digest));
            return Err(RegistryError::with("push manifest", &subject, failure));
        }
        repo.manifests
            .insert(digest.clone(), (body, media_type.to_string()));
        let tag = image.digest.is_none().then(|| name(image).0.to_string());
        if let Some(tag) = &tag {
            repo.tags.insert(tag.clone(), digest.clone());
        }
        let repository = repository.to_string();
        state.stored.push(Stored::Manifest {
            repository: repository.clone(),
            digest,
        });
        if let Some(tag) = tag {
            state.stored.push(Stored::Tag { repository, tag });
        }
        Ok(())
    }

    async fn delete_tag(
        &self,
        image: &ImageRef,
        _: bool,
        _: &Waiter,
    ) -> Result<Deleted, RegistryError> {
        self.ask(Op::Delete, "delete tag", &image.to_string())?;
        let mut state = self.state();
        let tag = name(&image.named()).0.to_string();
        let removed = repo(&mut state, &image.repo()).tags.remove(&tag);
        Ok(match removed {
            Some(_) => Deleted::Tag,
            None => Deleted::Absent,
        })
    }

    async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
        _: &Waiter,
    ) -> Result<bool, RegistryError> {
        self.ask(
            Op::BlobExists,
            "HEAD blob",
            &format!("{repository}@{digest}"),
        )?;
        Ok(self.has_blob(repository, digest))
    }

    async fn read_blob(
        &self,
        repository: &Repository,
        digest: &str,
        cap: usize,
        _: &Waiter,
    ) -> Result<Bytes, RegistryError> {
        let subject = format!("{repository}@{digest}");
        self.ask(Op::ReadBlob, "pull blob", &subject)?;
        let bytes = self.bytes_of(repository, digest, "pull blob")?;
        if bytes.len() > cap {
            let failure = Failure::TooLarge(format!("{} bytes", bytes.len()));
            return Err(RegistryError::with("pull blob", &subject, failure));
        }
        if digest::of(Algorithm::Sha256, &bytes) != digest {
            let failure = Failure::DigestMismatch(subject.clone());
            return Err(RegistryError::with("pull blob", &subject, failure));
        }
        Ok(bytes)
    }

    async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool {
        if self
            .ask(Op::Mount, "mount blob", &format!("{to}@{digest}"))
            .is_err()
            || !self.has_blob(from, digest)
        {
            return false;
        }
        let mut state = self.state();
        repo(&mut state, to).blobs.insert(digest.to_string());
        true
    }

    async fn open_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<Chunks, RegistryError> {
        self.ask(Op::OpenBlob, "pull blob", &format!("{repository}@{digest}"))?;
        let bytes = self.bytes_of(repository, digest, "pull blob")?;
        let chunks: Vec<std::io::Result<Bytes>> = bytes
            .chunks(CHUNK)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let algorithm = digest::parse(digest).map_err(|e| {
            RegistryError::with("pull blob", digest, Failure::Protocol(e.to_string()))
        })?;
        let stream = futures_util::stream::iter(chunks).boxed();
        Ok(checked(stream, algorithm, digest, size, moved))
    }

    async fn create_blob<'a>(
        &'a self,
        repository: &Repository,
        digest: &str,
        _: u64,
    ) -> Result<Box<dyn BlobWriter + 'a>, RegistryError> {
        self.ask(
            Op::CreateBlob,
            "push blob",
            &format!("{repository}@{digest}"),
        )?;
        Ok(Box::new(Writer {
            memory: self,
            repository: repository.clone(),
            digest: digest.to_string(),
        }))
    }

    async fn list_tags(
        &self,
        repository: &Repository,
        _: &Waiter,
    ) -> Result<Listing, RegistryError> {
        self.ask(Op::ListTags, "list tags", &repository.to_string())?;
        let state = self.state();
        let tags = state
            .repos
            .get(&repository.to_string())
            .map(|r| r.tags.keys().cloned().collect())
            .ok_or_else(|| not_found("list tags", &repository.to_string()))?;
        Ok(Listing {
            tags,
            left_out: LeftOut::default(),
            requests: 1,
        })
    }

    async fn referrers(
        &self,
        repository: &Repository,
        digest: &str,
        _: &Waiter,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let subject = format!("{repository}@{digest}");
        self.ask(Op::Referrers, "list referrers", &subject)?;
        if !self.referrers_api {
            return Ok(None);
        }
        let state = self.state();
        let Some(repo) = state.repos.get(&repository.to_string()) else {
            return Ok(Some(Vec::new()));
        };
        let referring = repo.manifests.iter().filter_map(|(d, (body, media_type))| {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            (value["subject"]["digest"].as_str() == Some(digest)).then(|| Descriptor {
                media_type: media_type.clone(),
                digest: d.clone(),
                size: body.len() as u64,
                urls: Vec::new(),
                platform: None,
                annotations: BTreeMap::new(),
                artifact_type: value["artifactType"].as_str().map(str::to_string),
            })
        });
        Ok(Some(referring.collect()))
    }

    async fn prepare_push(&self, repository: &Repository) -> Result<(), RegistryError> {
        self.ask(Op::PreparePush, "create", &repository.to_string())
    }
}

impl Memory {
    /// The bytes `repository` hands out for blob `digest` (a wrong byte if it is corrupt).
    fn bytes_of(
        &self,
        repository: &Repository,
        digest: &str,
        action: &'static str,
    ) -> Result<Bytes, RegistryError> {
        let subject = format!("{repository}@{digest}");
        if !self.has_blob(repository, digest) {
            return Err(not_found(action, &subject));
        }
        let state = self.state();
        let bytes = state.blobs[digest].clone();
        if !state.corrupt.contains(digest) || bytes.is_empty() {
            return Ok(bytes);
        }
        let mut wrong = BytesMut::from(&bytes[..]);
        let last = wrong.len() - 1;
        wrong[last] ^= 0xff;
        Ok(wrong.freeze())
    }
}

/// A blob being written: kept only once all its bytes came, and they are the blob's.
struct Writer<'a> {
    memory: &'a Memory,
    repository: Repository,
    digest: String,
}

#[async_trait]
impl BlobWriter for Writer<'_> {
    async fn write(self: Box<Self>, mut chunks: Chunks) -> Result<u64, RegistryError> {
        let subject = format!("{}@{}", self.repository, self.digest);
        self.memory.ask(Op::WriteBlob, "push blob", &subject)?;
        let mut bytes = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| RegistryError::from_stream("push blob", &subject, &e))?;
            bytes.extend_from_slice(&chunk);
        }
        let bytes = bytes.freeze();
        if digest::of(Algorithm::Sha256, &bytes) != self.digest {
            let failure = Failure::DigestMismatch(format!("{} bytes", bytes.len()));
            return Err(RegistryError::with("push blob", &subject, failure));
        }
        let size = bytes.len() as u64;
        let mut state = self.memory.state();
        state.blobs.insert(self.digest.clone(), bytes);
        repo(&mut state, &self.repository)
            .blobs
            .insert(self.digest.clone());
        state.stored.push(Stored::Blob {
            repository: self.repository.to_string(),
            digest: self.digest.clone(),
        });
        Ok(size)
    }
}
