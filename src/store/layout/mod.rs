//! An OCI image layout on disk as a [`Store`]: images carried across an air gap on a disk or
//! a synced folder, read and written as skopeo, oras and containerd read them.
//!
//! One layout holds any number of repositories. Each image is an `index.json` entry whose
//! `org.opencontainers.image.ref.name` is `<repository>:<tag>` ([`index`]); every manifest and
//! blob is stored once under `blobs/<algorithm>/<hex>`, whichever images share it; child
//! manifests live only there. A manifest with a `subject` (an OCI 1.1 referrer: a signature,
//! an SBOM) also gets an entry with no name, as oras keeps them, and [`Store::referrers`]
//! answers from those entries' manifests, so a layout regmirror wrote is a source with the
//! referrers API. A layout written by a tool that keeps referrers under the fallback tag
//! `sha256-<hex>` (regclient) is read through that tag like any other.
//!
//! **Valid at every instant.** A blob is written under `.regmirror/tmp/`, checked against its
//! digest as it streams (the source's bytes come through
//! [`crate::registry::verify::checked`]; a wrong byte ends the stream in an error and nothing
//! is renamed), flushed and renamed into `blobs/`; a manifest is stored only once everything
//! it references is; `index.json` is replaced whole, last, for each manifest push that names
//! a tag or a referrer, and not at all when nothing changed. A process killed at any instant
//! leaves the layout as it was after its last completed image, plus files in
//! `.regmirror/tmp/` that the next writer clears. One process writes a layout at a time
//! ([`lock`]); readers need no lock.
//!
//! **Hostile input.** A layout from untrusted media is read as a registry's answers are:
//! `index.json` at most [`MAX_INDEX_BYTES`] and [`MAX_ENTRIES`] entries, manifests at most
//! [`MAX_MANIFEST_BYTES`], every digest parsed before it becomes a path, no link followed
//! ([`files`]), every blob checked against its digest as it is read.

mod files;
mod index;
mod lock;
mod push;

pub use index::{MAX_ENTRIES, MAX_INDEX_BYTES};

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use self::files::Files;
use self::index::Index;
use super::{BlobWriter, Chunks, Store};
use crate::digest;
use crate::manifest::Descriptor;
use crate::reference::layout::layout_dir;
use crate::reference::{is_tag, ref_name, ImageRef, Repository};
use crate::registry::limits::MAX_MANIFEST_BYTES;
use crate::registry::tags::{LeftOut, Listing};
use crate::registry::verify::checked;
use crate::registry::waiting::Waiter;
use crate::registry::{Deleted, Failure, RegistryError};

/// Bytes read from a blob file at a time.
const READ_CHUNK: usize = 256 * 1024;

/// Layouts this process has open for writing, so a reloaded config or a second runner shares
/// the one lock instead of being refused by its own process.
static WRITERS: Mutex<BTreeMap<PathBuf, Weak<OciLayout>>> = Mutex::new(BTreeMap::new());

/// An OCI image layout directory, open for reading or for writing.
pub struct OciLayout {
    /// What file-system work (done off the async threads) needs.
    shared: Arc<Shared>,
    /// Held while open for writing; `None`: open for reading only.
    lock: Option<lock::Held>,
    /// Held while `index.json` is read, changed and replaced.
    writing: tokio::sync::Mutex<()>,
}

/// The state of a layout that its file-system work reads and keeps.
struct Shared {
    /// `oci:/DIR`: the registry name references give it.
    name: String,
    files: Files,
    /// The index last read, with the identity of the file it came from: read again only when
    /// the file was replaced.
    index: Mutex<Option<(Stamp, Arc<Index>)>>,
    /// What each referrer manifest read so far refers to (content never changes under its
    /// digest): its subject's digest and its descriptor as the referrers API lists it.
    subjects: Mutex<HashMap<String, Option<(String, Descriptor)>>>,
}

/// Which `index.json` was read: its size, modification time and inode.
type Stamp = (u64, Option<std::time::SystemTime>, u64);

impl std::fmt::Debug for OciLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciLayout")
            .field("name", &self.shared.name)
            .field("writing", &self.lock.is_some())
            .finish_non_exhaustive()
    }
}

impl OciLayout {
    /// The layout named `registry` (`oci:/DIR`). For reading, nothing is touched until it is
    /// used (a missing disk fails its images, not the pass). For writing, the directory is
    /// made a layout if it is not one, and locked for as long as the store lives; a layout
    /// another process writes is refused, saying which process.
    pub fn open(registry: &str, write: bool) -> Result<Arc<OciLayout>, String> {
        let dir = layout_dir(registry)
            .ok_or_else(|| format!("{registry} is not an OCI image layout"))?
            .to_path_buf();
        if !write {
            return Ok(Arc::new(OciLayout::new(registry, dir, None)));
        }
        let mut writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = writers.get(&dir).and_then(Weak::upgrade) {
            return Ok(open);
        }
        let layout = Arc::new(OciLayout::create(registry, dir.clone())?);
        writers.retain(|_, open| open.strong_count() > 0);
        writers.insert(dir, Arc::downgrade(&layout));
        Ok(layout)
    }

    fn new(registry: &str, dir: PathBuf, lock: Option<lock::Held>) -> Self {
        OciLayout {
            shared: Arc::new(Shared {
                name: registry.to_string(),
                files: Files::new(dir),
                index: Mutex::new(None),
                subjects: Mutex::new(HashMap::new()),
            }),
            lock,
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens `dir` for writing: locked, its directories made, an empty index and the
    /// `oci-layout` marker written where missing, the index it has checked.
    fn create(registry: &str, dir: PathBuf) -> Result<OciLayout, String> {
        let shown = dir.display().to_string();
        let cannot =
            |e: std::io::Error| format!("OCI image layout {shown}: cannot write there: {e}");
        let files = Files::new(dir.clone());
        std::fs::create_dir_all(dir.join(files::OWN_DIR)).map_err(cannot)?;
        let held = lock::take(&files.lock()).map_err(|refused| match refused {
            lock::Refused::Busy(holder) => format!(
                "OCI image layout {shown} is being written by another process ({holder}; its \
                 lock is {}): wait for it to finish, or give this mirror another layout",
                files.lock().display()
            ),
            lock::Refused::Io(e) => cannot(e),
        })?;
        files.prepare().map_err(cannot)?;
        if !files.holds(&files.marker()) {
            files
                .replace(&files.marker(), br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(cannot)?;
        }
        if !files.holds(&files.index()) {
            files
                .replace(&files.index(), &Index::default().to_bytes())
                .map_err(cannot)?;
        }
        let layout = OciLayout::new(registry, dir, Some(held));
        layout
            .shared
            .read_index()
            .map_err(|e| format!("OCI image layout {shown}: {e}"))?;
        Ok(layout)
    }

    /// The index as the file now holds it (read again only if it was replaced).
    async fn index(&self) -> Result<Arc<Index>, RegistryError> {
        let shared = self.shared.clone();
        blocking(move || shared.read_index()).await
    }

    /// Changes the index with `change` and replaces `index.json` if it says it changed
    /// anything; one change at a time.
    async fn change_index(
        &self,
        change: impl FnOnce(&mut Index) -> bool,
    ) -> Result<(), RegistryError> {
        let _writing = self.writing.lock().await;
        let mut index = (*self.index().await?).clone();
        if !change(&mut index) {
            return Ok(());
        }
        if index.len() > MAX_ENTRIES {
            // An index regmirror could not read back is never written.
            return Err(RegistryError::with(
                "replace the layout's index",
                self.shared.files.index().display(),
                Failure::TooLarge(format!("it would list more than {MAX_ENTRIES} entries")),
            ));
        }
        let shared = self.shared.clone();
        blocking(move || shared.replace_index(index)).await
    }

    /// Refuses to change a layout opened for reading.
    fn writable(&self, action: &'static str, subject: impl ToString) -> Result<(), RegistryError> {
        match self.lock {
            Some(_) => Ok(()),
            None => Err(RegistryError::with(
                action,
                subject,
                Failure::Refused(format!("{} is open for reading only", self.shared.name)),
            )),
        }
    }

    /// The digest of the manifest `image` names: its pinned digest, else its name's entry.
    async fn resolve(
        &self,
        image: &ImageRef,
        action: &'static str,
    ) -> Result<Option<String>, RegistryError> {
        let tag = match (&image.digest, &image.tag) {
            (Some(digest), _) => return Ok(Some(digest.clone())),
            (None, Some(tag)) => tag,
            (None, None) => unreachable!("ImageRef always has a tag or a digest"),
        };
        let index = self.index().await?;
        let Some(entry) = index.named(&ref_name(&image.repository, tag)) else {
            return Ok(None);
        };
        digest::parse(&entry.digest).map_err(|e| {
            RegistryError::with(
                action,
                image,
                Failure::Protocol(format!("index.json names it with {e}")),
            )
        })?;
        Ok(Some(entry.digest.clone()))
    }

    /// Whether blob (or manifest) `digest` is stored.
    async fn holds(&self, action: &'static str, digest: &str) -> Result<bool, RegistryError> {
        let path = self.shared.blob_path(action, digest)?;
        let shared = self.shared.clone();
        Ok(blocking(move || shared.files.holds(&path)).await)
    }

    /// Blob `digest` whole, at most `cap` bytes, checked against its digest.
    async fn read_checked(
        &self,
        action: &'static str,
        subject: String,
        digest: &str,
        cap: usize,
    ) -> Result<Bytes, RegistryError> {
        let (shared, digest) = (self.shared.clone(), digest.to_string());
        blocking(move || shared.read_checked(action, &subject, &digest, cap)).await
    }
}

impl Shared {
    /// The index as the file now holds it (read again only if it was replaced).
    fn read_index(&self) -> Result<Arc<Index>, RegistryError> {
        let path = self.files.index();
        let failed =
            |failure| RegistryError::with("read the layout's index", path.display(), failure);
        let stamp = stamp(&path).map_err(|e| {
            failed(Failure::FileSystem(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "{} is not an OCI image layout: it has no index.json",
                    self.files.root().display()
                ),
                _ => e.to_string(),
            }))
        })?;
        let mut cached = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, index)) = cached.as_ref() {
            if *seen == stamp {
                return Ok(index.clone());
            }
        }
        let bytes = self
            .files
            .read(&path, MAX_INDEX_BYTES)
            .map_err(|e| failed(Failure::FileSystem(e.to_string())))?
            .ok_or_else(|| {
                failed(Failure::TooLarge(format!(
                    "more than {MAX_INDEX_BYTES} bytes"
                )))
            })?;
        let index = Arc::new(Index::parse(&bytes).map_err(|e| failed(Failure::Protocol(e)))?);
        *cached = Some((stamp, index.clone()));
        Ok(index)
    }

    /// Replaces `index.json` with `index`, and remembers it as the file's.
    fn replace_index(&self, index: Index) -> Result<(), RegistryError> {
        let path = self.files.index();
        let replaced = self
            .files
            .replace(&path, &index.to_bytes())
            .and_then(|()| stamp(&path));
        let stamp = replaced.map_err(|e| {
            RegistryError::with(
                "replace the layout's index",
                path.display(),
                Failure::FileSystem(e.to_string()),
            )
        })?;
        *self.index.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, Arc::new(index)));
        Ok(())
    }

    /// The path of blob `digest`, or why the digest cannot name one.
    fn blob_path(&self, action: &'static str, digest: &str) -> Result<PathBuf, RegistryError> {
        self.files.blob(digest).map_err(|e| {
            RegistryError::with(
                action,
                format!("{}@{}", self.name, crate::untrusted::clip(digest, 150)),
                Failure::Protocol(e),
            )
        })
    }

    /// Blob `digest` whole, at most `cap` bytes, checked against its digest.
    fn read_checked(
        &self,
        action: &'static str,
        subject: &str,
        digest: &str,
        cap: usize,
    ) -> Result<Bytes, RegistryError> {
        let failed = |failure| RegistryError::with(action, subject, failure);
        let path = self.blob_path(action, digest)?;
        let bytes = match self.files.read(&path, cap) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(failed(Failure::TooLarge(format!(
                    "{} holds more than {cap} bytes",
                    path.display()
                ))))
            }
            Err(e) => return Err(failed(file_failure(&path, e))),
        };
        let algorithm = digest::parse(digest).expect("a blob path's digest parses");
        let actual = digest::of(algorithm, &bytes);
        if actual != digest {
            return Err(failed(Failure::DigestMismatch(format!(
                "{} holds {actual}",
                path.display()
            ))));
        }
        Ok(Bytes::from(bytes))
    }

    /// What manifest `entry` refers to, read once per process.
    fn subject_of(&self, entry: &Descriptor) -> Option<(String, Descriptor)> {
        let known = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = known.get(&entry.digest) {
            return known.clone();
        }
        drop(known);
        let found = self
            .read_checked(
                "read referrer",
                &self.name,
                &entry.digest,
                MAX_MANIFEST_BYTES,
            )
            .ok()
            .and_then(|body| referrer(&body, entry));
        self.subjects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.digest.clone(), found.clone());
        found
    }
}

/// The identity of the file at `path`: size, modification time, inode.
fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok((
        meta.len(),
        meta.modified().ok(),
        std::os::unix::fs::MetadataExt::ino(&meta),
    ))
}

/// How reading or writing the file at `path` failed: not there, or the file system's reason.
fn file_failure(path: &Path, e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::NotFound => Failure::NotFound,
        _ => Failure::FileSystem(format!("{}: {e}", path.display())),
    }
}

/// `body` (the manifest `entry` names) as a referrer: its subject's digest, and its
/// descriptor as the referrers API lists one (artifact type, annotations).
fn referrer(body: &[u8], entry: &Descriptor) -> Option<(String, Descriptor)> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        digest: Option<String>,
    }
    #[derive(Deserialize)]
    struct Referring {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "artifactType")]
        artifact_type: Option<String>,
        config: Option<Typed>,
        subject: Option<Typed>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let parsed: Referring = serde_json::from_slice(body).ok()?;
    let subject = parsed.subject?.digest?;
    let artifact_type = parsed
        .artifact_type
        .or_else(|| parsed.config.and_then(|c| c.media_type));
    Some((
        subject,
        Descriptor {
            media_type: parsed
                .media_type
                .unwrap_or_else(|| entry.media_type.clone()),
            digest: entry.digest.clone(),
            size: entry.size,
            urls: Vec::new(),
            platform: None,
            annotations: parsed.annotations,
            artifact_type,
        },
    ))
}

/// Runs file-system work on the blocking threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[async_trait]
impl Store for OciLayout {
    async fn manifest_digest(
        &self,
        image: &ImageRef,
        _: &Waiter,
    ) -> Result<Option<String>, RegistryError> {
        let found = self.resolve(image, "HEAD manifest").await?;
        match (&image.tag, found) {
            (None, Some(digest)) => Ok(self
                .holds("HEAD manifest", &digest)
                .await?
                .then_some(digest)),
            (_, found) => Ok(found),
        }
    }

    async fn pull_manifest(
        &self,
        image: &ImageRef,
        _: &Waiter,
    ) -> Result<(Bytes, String), RegistryError> {
        let subject = image.to_string();
        let digest = self
            .resolve(image, "pull manifest")
            .await?
            .ok_or_else(|| RegistryError::with("pull manifest", &subject, Failure::NotFound))?;
        let body = self
            .read_checked("pull manifest", subject, &digest, MAX_MANIFEST_BYTES)
            .await?;
        Ok((body, digest))
    }

    async fn push_manifest(
        &self,
        image: &ImageRef,
        body: Bytes,
        media_type: &str,
        _: &Waiter,
    ) -> Result<(), RegistryError> {
        push::manifest(self, image, body, media_type).await
    }

    async fn delete_tag(
        &self,
        image: &ImageRef,
        _: bool,
        _: &Waiter,
    ) -> Result<Deleted, RegistryError> {
        self.writable("delete tag", image)?;
        let Some(tag) = image.tag.as_deref() else {
            return Ok(Deleted::Absent);
        };
        let name = ref_name(&image.repository, tag);
        let mut removed = false;
        self.change_index(|index| {
            removed = index.remove_name(&name);
            removed
        })
        .await?;
        Ok(if removed {
            Deleted::Tag
        } else {
            Deleted::Absent
        })
    }

    async fn blob_exists(
        &self,
        _: &Repository,
        digest: &str,
        _: &Waiter,
    ) -> Result<bool, RegistryError> {
        self.holds("HEAD blob", digest).await
    }

    async fn read_blob(
        &self,
        repository: &Repository,
        digest: &str,
        cap: usize,
        _: &Waiter,
    ) -> Result<Bytes, RegistryError> {
        let subject = format!("{repository}@{digest}");
        self.read_checked("read blob", subject, digest, cap).await
    }

    async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool {
        // Blobs belong to the whole layout: one in it is in every repository of it.
        to.registry == from.registry && self.holds("mount blob", digest).await.unwrap_or(false)
    }

    async fn open_blob(
        &self,
        repository: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<Chunks, RegistryError> {
        let subject = format!("{repository}@{digest}");
        let path = self.shared.blob_path("read blob", digest)?;
        let shared = self.shared.clone();
        let opened = {
            let path = path.clone();
            blocking(move || shared.files.open(&path)).await
        };
        let file = opened
            .map_err(|e| RegistryError::with("read blob", &subject, file_failure(&path, e)))?;
        let algorithm = digest::parse(digest).expect("a blob path's digest parses");
        let file = tokio::fs::File::from_std(file);
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK).boxed();
        Ok(checked(chunks, algorithm, digest, size, moved))
    }

    async fn create_blob<'a>(
        &'a self,
        repository: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<Box<dyn BlobWriter + 'a>, RegistryError> {
        let subject = format!("{repository}@{digest}");
        self.writable("write blob", &subject)?;
        let path = self.shared.blob_path("write blob", digest)?;
        Ok(Box::new(push::Upload {
            files: self.shared.files.clone(),
            subject,
            size,
            path,
        }))
    }

    async fn list_tags(
        &self,
        repository: &Repository,
        _: &Waiter,
    ) -> Result<Listing, RegistryError> {
        let index = self.index().await?;
        let mut listing = Listing {
            tags: Vec::new(),
            left_out: LeftOut::default(),
            requests: 0,
        };
        for tag in index.tags_of(&repository.repository) {
            if is_tag(tag) {
                listing.tags.push(tag.to_string());
            } else {
                listing.left_out.add(tag);
            }
        }
        Ok(listing)
    }

    async fn referrers(
        &self,
        _: &Repository,
        digest: &str,
        _: &Waiter,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let index = self.index().await?;
        let (shared, digest) = (self.shared.clone(), digest.to_string());
        let found = blocking(move || {
            index
                .unnamed()
                .filter(|entry| digest::parse(&entry.digest).is_ok())
                .filter_map(|entry| shared.subject_of(entry))
                .filter(|(subject, _)| *subject == digest)
                .map(|(_, descriptor)| descriptor)
                .collect()
        })
        .await;
        Ok(Some(found))
    }

    async fn prepare_push(&self, repository: &Repository) -> Result<(), RegistryError> {
        self.writable("push", repository)
    }
}
