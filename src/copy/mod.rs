//! Mirroring one image: compare by HEAD, then copy in the one order that keeps a tag honest.
//!
//! 1. HEAD the source and the target (free on Docker Hub). Equal digests: done, no GET.
//! 2. GET the source manifest by the digest just seen, so a tag moving meanwhile cannot mix
//!    two versions.
//! 3. Depth first: every blob of an image, then the image manifest by digest; every child of
//!    an index, then the index. The tag is pushed last, so at every instant it points either
//!    at its old content or at complete new content. A process killed anywhere leaves at worst
//!    unreferenced blobs and manifests, which the next run reuses.
//!
//! An index from a hostile registry cannot take the process with it: indexes nest at most
//! [`MAX_INDEX_DEPTH`] deep (real images nest one or two), and an index's children are
//! fetched a few at a time, each one's work made only when its turn comes.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{stream, FutureExt, StreamExt, TryStreamExt};

pub mod blobs;
pub mod manifests;

use self::blobs::{BlobLedger, Placed, MAX_BLOB_TRANSFERS};
use self::manifests::{ManifestLedger, Turn};
use crate::config::Job;
use crate::manifest::{Descriptor, Manifest, ManifestError};
use crate::reference::Repository;
use crate::registry::waiting::{WaitRefused, Waiter};
use crate::registry::{Registries, RegistryError};

/// Child manifests of one index fetched at once (each GET is a pull on Docker Hub).
const CHILD_MANIFESTS_AT_ONCE: usize = 4;
/// Levels of index above an image: an index of images is one, an index of indexes two.
pub const MAX_INDEX_DEPTH: usize = 4;

/// What is shared by every image of one pass.
#[derive(Debug, Clone)]
pub struct PassContext {
    pub registries: Arc<Registries>,
    pub ledger: Arc<BlobLedger>,
    /// Manifests pushed so far, so each goes once into each target repository.
    pub manifests: Arc<ManifestLedger>,
    /// Compare only: report what would be copied and copy nothing.
    pub dry_run: bool,
}

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target tag already points at the source digest.
    Unchanged { digest: String },
    /// Copied; the target now points at `digest`.
    Mirrored { digest: String, stats: CopyStats },
    /// Dry run: the target differs (`target` is what it points at now, if anything).
    WouldCopy {
        digest: String,
        target: Option<String>,
    },
}

/// Work done for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Manifest GETs sent to the source: Docker Hub's unit of rate limiting.
    pub pulls: u64,
    pub manifests_pushed: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
    pub bytes_copied: u64,
}

impl std::ops::AddAssign for CopyStats {
    fn add_assign(&mut self, o: Self) {
        self.pulls += o.pulls;
        self.manifests_pushed += o.manifests_pushed;
        self.blobs_copied += o.blobs_copied;
        self.blobs_mounted += o.blobs_mounted;
        self.blobs_present += o.blobs_present;
        self.bytes_copied += o.bytes_copied;
    }
}

/// Why an image was not mirrored.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("source {0} does not exist")]
    SourceMissing(String),
    #[error("not started: {0}")]
    NotStarted(WaitRefused),
    /// Another image of the pass tried this manifest and failed; its reason.
    #[error("{digest}: failed for another tag of this pass: {message}")]
    FailedBefore { digest: String, message: String },
    #[error("{image} {source}")]
    Manifest {
        image: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "{image} is an index nested more than {MAX_INDEX_DEPTH} levels deep, regmirror's limit"
    )]
    NestedTooDeep { image: String },
}

/// Mirrors one image, or in a dry run says whether it would.
///
/// Comparing takes no concurrency slot (the registry layer bounds HEADs per registry); an
/// image that must be copied takes one before its first pull.
pub async fn mirror(ctx: &PassContext, job: &Job, waiter: &Waiter) -> Result<Outcome, CopyError> {
    let registries = &ctx.registries;
    let source_side = async {
        match &job.source.digest {
            Some(pinned) => Ok(Some(pinned.clone())),
            None => registries.manifest_digest(&job.source, waiter).await,
        }
    };
    let target_tag = job.target.named();
    let target_side = registries.manifest_digest(&target_tag, waiter);
    let (source_digest, target_digest) = futures_util::try_join!(source_side, target_side)?;
    let source_digest =
        source_digest.ok_or_else(|| CopyError::SourceMissing(job.source.to_string()))?;
    if target_digest.as_deref() == Some(source_digest.as_str()) {
        return Ok(Outcome::Unchanged {
            digest: source_digest,
        });
    }
    if ctx.dry_run {
        return Ok(Outcome::WouldCopy {
            digest: source_digest,
            target: target_digest,
        });
    }

    waiter.take_slot().await.map_err(CopyError::NotStarted)?;
    // Before the first pull: a target that cannot take the push costs no pull.
    registries.prepare_push(&job.target.repo()).await?;
    let to = job.target.repo();
    let turn = ctx
        .manifests
        .settle(&to, &source_digest, || {
            copy_tagged(ctx, waiter, job, &source_digest)
        })
        .await?;
    let stats = match turn {
        Turn::Mine(stats) => stats,
        // Another tag of this pass brought the same content: point this tag at it too.
        Turn::Theirs => retag(ctx, waiter, job, &source_digest).await?,
    };
    Ok(Outcome::Mirrored {
        digest: source_digest,
        stats,
    })
}

/// Brings the content `digest` of `job`'s source into the target and pushes the tag: from
/// the target itself when it already holds that content under another name (no pull), else
/// from the source, everything it references first.
async fn copy_tagged(
    ctx: &PassContext,
    waiter: &Waiter,
    job: &Job,
    digest: &str,
) -> Result<CopyStats, CopyError> {
    let registries = &ctx.registries;
    let to = job.target.repo();
    if registries
        .manifest_digest(&to.at_digest(digest), waiter)
        .await?
        .is_some()
    {
        return retag(ctx, waiter, job, digest).await;
    }
    let source = job.source.pinned(digest);
    let (body, _) = registries.pull_manifest(&source, waiter).await?;
    let mut stats = CopyStats {
        pulls: 1,
        ..CopyStats::default()
    };
    let manifest = Manifest::parse(&body, None).map_err(|source_err| CopyError::Manifest {
        image: source.to_string(),
        source: source_err,
    })?;
    stats += copy_references(ctx, waiter, &job.source.repo(), &to, &manifest, 0).await?;
    registries
        .push_manifest(&job.target, body, manifest.media_type(), waiter)
        .await?;
    stats.manifests_pushed += 1;
    Ok(stats)
}

/// Pushes `job`'s tag onto content `digest` the target already holds, read back from the
/// target: a request to the user's own registry, not a pull at the source.
async fn retag(
    ctx: &PassContext,
    waiter: &Waiter,
    job: &Job,
    digest: &str,
) -> Result<CopyStats, CopyError> {
    let stored = job.target.repo().at_digest(digest);
    let (body, _) = ctx.registries.pull_manifest(&stored, waiter).await?;
    let manifest = Manifest::parse(&body, None).map_err(|e| CopyError::Manifest {
        image: stored.to_string(),
        source: e,
    })?;
    ctx.registries
        .push_manifest(&job.target, body, manifest.media_type(), waiter)
        .await?;
    Ok(CopyStats {
        manifests_pushed: 1,
        ..CopyStats::default()
    })
}

/// Copies everything `manifest` references into `to`, so that it can be pushed there.
/// `depth` is how many indexes enclose it.
fn copy_references<'a>(
    ctx: &'a PassContext,
    waiter: &'a Waiter,
    from: &'a Repository,
    to: &'a Repository,
    manifest: &'a Manifest,
    depth: usize,
) -> BoxFuture<'a, Result<CopyStats, CopyError>> {
    async move {
        type Work<'a> = BoxFuture<'a, Result<CopyStats, CopyError>>;
        // Futures are made as `buffer_unordered` asks for them, not all up front.
        let (work, at_once): (BoxStream<'a, Work<'a>>, usize) = match manifest {
            Manifest::Image { blobs, .. } => (
                stream::iter(blobs)
                    .map(move |blob| place_blob(ctx, waiter, from, to, blob).boxed())
                    .boxed(),
                MAX_BLOB_TRANSFERS,
            ),
            Manifest::Index { children, .. } => (
                stream::iter(children)
                    .map(move |child| copy_child(ctx, waiter, from, to, child, depth + 1).boxed())
                    .boxed(),
                CHILD_MANIFESTS_AT_ONCE,
            ),
        };
        work.buffer_unordered(at_once)
            .try_fold(CopyStats::default(), |mut total, s| async move {
                total += s;
                Ok(total)
            })
            .await
    }
    .boxed()
}

async fn place_blob(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    to: &Repository,
    blob: &Descriptor,
) -> Result<CopyStats, CopyError> {
    let mut stats = CopyStats::default();
    match ctx
        .ledger
        .place(&ctx.registries, from, to, blob, waiter)
        .await?
    {
        Placed::AlreadyThere => stats.blobs_present += 1,
        Placed::Mounted => stats.blobs_mounted += 1,
        Placed::Copied(bytes) => {
            stats.blobs_copied += 1;
            stats.bytes_copied += bytes;
        }
    }
    Ok(stats)
}

/// Copies one child manifest of an index (and all it references), pushed by digest, once per
/// pass whatever number of indexes name it; `depth` is how many indexes enclose it.
async fn copy_child(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    to: &Repository,
    child: &Descriptor,
    depth: usize,
) -> Result<CopyStats, CopyError> {
    let turn = ctx
        .manifests
        .settle(to, &child.digest, || {
            copy_child_once(ctx, waiter, from, to, child, depth)
        })
        .await?;
    Ok(match turn {
        Turn::Mine(stats) => stats,
        Turn::Theirs => CopyStats::default(),
    })
}

async fn copy_child_once(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    to: &Repository,
    child: &Descriptor,
    depth: usize,
) -> Result<CopyStats, CopyError> {
    let (digest, declared_type) = (child.digest.as_str(), child.media_type.as_str());
    let target = to.at_digest(digest);
    let mut stats = CopyStats::default();
    if ctx
        .registries
        .manifest_digest(&target, waiter)
        .await?
        .is_some()
    {
        return Ok(stats); // a registry only stores a manifest whose references it holds
    }
    let source = from.at_digest(digest);
    let (body, _) = ctx.registries.pull_manifest(&source, waiter).await?;
    stats.pulls += 1;
    let manifest =
        Manifest::parse(&body, Some(declared_type)).map_err(|e| CopyError::Manifest {
            image: source.to_string(),
            source: e,
        })?;
    if matches!(manifest, Manifest::Index { .. }) && depth >= MAX_INDEX_DEPTH {
        return Err(CopyError::NestedTooDeep {
            image: source.to_string(),
        });
    }
    stats += copy_references(ctx, waiter, from, to, &manifest, depth).await?;
    ctx.registries
        .push_manifest(&target, body, manifest.media_type(), waiter)
        .await?;
    stats.manifests_pushed += 1;
    Ok(stats)
}
