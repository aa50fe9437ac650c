//! Mirroring one image into its targets: compare by HEAD, then copy in the one order that
//! keeps a tag honest.
//!
//! 1. HEAD the source once and each target (free on Docker Hub). A target whose tag has the
//!    source's digest is done, with no GET.
//! 2. GET the source manifest once, by the digest just seen, so a tag moving meanwhile cannot
//!    mix two versions, whatever number of targets need it.
//! 3. Depth first: every blob of an image, then the image manifest by digest; every child of
//!    an index, then the index. The tag is pushed last, so at every instant it points either
//!    at its old content or at complete new content. A process killed anywhere leaves at worst
//!    unreferenced blobs and manifests, which the next run reuses.
//!
//! A target that refuses to move a tag (ECR's `IMMUTABLE` repositories, Harbor's immutability
//! rules) is never asked to rewrite an unchanged one, since nothing is written to a target that
//! has the source's digest. When upstream moved, the refusal is the image's own outcome,
//! [`Outcome::Immutable`], not a failure to retry.
//!
//! Several targets share the source's reads: each manifest is pulled once and each blob read
//! once for all the targets that lack it ([`blobs`]). A target that fails (refuses, times out,
//! is full) fails alone; the others finish.
//!
//! An index from a hostile registry cannot take the process with it: indexes nest at most
//! [`MAX_INDEX_DEPTH`] deep (real images nest one or two), and an index's children are
//! fetched a few at a time, each one's work made only when its turn comes.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;

pub mod blobs;
mod ledger;
pub mod listed;
pub mod manifests;
mod price;
mod references;
mod referrers;
#[cfg(test)]
mod tests;
mod verify;

use self::blobs::BlobLedger;
use self::manifests::{Done, ManifestLedger, Turn};
pub use self::price::Price;
use self::references::{copy_child, copy_references};
pub use self::verify::Verdicts;
use crate::config::CopyChoice;
use crate::digest;
use crate::manifest::{platform, Manifest, ManifestError, Platform, Platforms};
use crate::reason::Reason;
use crate::reference::{ImageRef, Repository};
use crate::registry::waiting::{Overdue, WaitRefused, Waiter};
use crate::registry::{Head, RegistryError};
use crate::store::Stores;

/// Child manifests of one index fetched at once (each GET is a pull on Docker Hub).
const CHILD_MANIFESTS_AT_ONCE: usize = 4;
/// The most an image's config may weigh when it is read for its platform.
const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Levels of index above an image: an index of images is one, an index of indexes two.
pub const MAX_INDEX_DEPTH: usize = 4;

/// What is shared by every image of one pass.
#[derive(Debug, Clone)]
pub struct PassContext {
    /// Every store images are read from or written to.
    pub stores: Arc<Stores>,
    pub ledger: Arc<BlobLedger>,
    /// Manifests pushed so far, so each goes once into each target repository.
    pub manifests: Arc<ManifestLedger>,
    /// Source repositories' tags, listed once per pass, where referrers are mirrored.
    pub listings: Arc<referrers::TagListings>,
    /// Compare only: report what would be copied and copy nothing.
    pub dry_run: bool,
    /// `verify`'s verdicts, kept for the life of the process.
    pub verdicts: Arc<verify::Verdicts>,
    /// Source digests a tag API listed: a target holding its tag's is unchanged, unHEADed.
    pub listed: Arc<listed::ListedDigests>,
    /// How source tags were compared, counted for the report.
    pub comparisons: Arc<listed::Comparisons>,
}

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target tag already points at the source digest.
    Unchanged { digest: String },
    /// Copied; the target now points at `digest` (the source's, or for a choice of platforms
    /// the index made of it).
    Mirrored { digest: String, stats: CopyStats },
    /// Dry run: the target differs (`target` is what it points at now, if anything), and
    /// copying would cost its source `price` in pulls.
    WouldCopy {
        digest: String,
        target: Option<String>,
        price: Price,
    },
    /// Not mirrored, and rightly so: none of its platforms is wanted.
    Skipped { reason: String },
    /// Not mirrored: upstream's tag moved from `was` to `upstream`, and the target refuses to
    /// move its tag (immutable), which still holds what it was copied from `was`. The new
    /// content is stored there by digest, so the next pass reads it from the target, not the
    /// source.
    Immutable { was: String, upstream: String },
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
    /// Signatures, attestations and SBOMs copied (tags and manifests).
    pub referrers: u64,
}

impl std::ops::AddAssign for CopyStats {
    fn add_assign(&mut self, o: Self) {
        self.pulls += o.pulls;
        self.manifests_pushed += o.manifests_pushed;
        self.blobs_copied += o.blobs_copied;
        self.blobs_mounted += o.blobs_mounted;
        self.blobs_present += o.blobs_present;
        self.bytes_copied += o.bytes_copied;
        self.referrers += o.referrers;
    }
}

/// Why an image was not mirrored (to one target).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("source {0} does not exist")]
    SourceMissing(String),
    #[error("not started: {0}")]
    NotStarted(WaitRefused),
    /// The image passed its overall deadline (see `registry::limits`).
    #[error("{0}")]
    Overdue(Overdue),
    /// Another image of the pass tried this manifest and failed; its reason.
    #[error("{digest}: failed for another tag of this pass: {message}")]
    FailedBefore {
        digest: String,
        reason: Reason,
        message: String,
    },
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
    /// `verify`: no signature by the mirror's key or signer vouches for the image.
    #[error("{0}")]
    Unverified(crate::signature::Unverified),
    /// What refers to the image (signatures, attestations, SBOMs) could not be mirrored.
    #[error("referrers: {0}")]
    Referrers(String),
}

impl CopyError {
    /// The class of this failure, for reports, metrics and alerts.
    pub fn reason(&self) -> Reason {
        match self {
            CopyError::Registry(e) => e.reason(),
            CopyError::SourceMissing(_) => Reason::NotFound,
            CopyError::NotStarted(WaitRefused::ShuttingDown) => Reason::Stopped,
            CopyError::NotStarted(WaitRefused::TooLong { .. }) | CopyError::Overdue(_) => {
                Reason::Timeout
            }
            CopyError::FailedBefore { reason, .. } => *reason,
            CopyError::Manifest { .. } | CopyError::NestedTooDeep { .. } => Reason::InvalidUpstream,
            CopyError::Referrers(_) => Reason::InvalidUpstream,
            CopyError::Unverified(_) => Reason::Unverified,
        }
    }
}

/// Mirrors `source` into every image of `targets` (each a tag or digest in a target
/// repository), as `choice` says (platforms, referrers), or in a dry run says whether it
/// would; the outcome of each target, in order.
///
/// Comparing takes no concurrency slot (the registry layer bounds HEADs per registry); an
/// image that must be copied takes one before its first pull.
pub async fn mirror(
    ctx: &PassContext,
    source: &ImageRef,
    targets: &[ImageRef],
    choice: &CopyChoice,
    waiter: &Waiter,
) -> Vec<Result<Outcome, CopyError>> {
    let stores = &ctx.stores;
    let source_side = async {
        match &source.digest {
            Some(pinned) => Ok(Some(Head {
                digest: pinned.clone(),
                media_type: None,
            })),
            None => {
                let store = stores.of(&source.registry);
                store.manifest_head(source, waiter).await
            }
        }
    };
    let target_side = join_all(targets.iter().map(|target| async move {
        let store = stores.of(&target.registry);
        store.manifest_digest(&target.named(), waiter).await
    }));
    // A tag whose digest a tag API listed: the targets first, and the source only if one
    // of them differs from it. Otherwise both sides at once.
    let listed = ctx.listed.of(source);
    if source.digest.is_none() {
        ctx.comparisons.compared(listed.is_some());
    }
    let (source_digest, target_digests) = match listed {
        Some(listed) => {
            let target_digests = target_side.await;
            let compared = listed::unchanged(ctx, waiter, listed, targets, &target_digests, choice);
            if let Some(unchanged) = compared.await {
                return unchanged;
            }
            ctx.comparisons.headed_after_listing();
            (source_side.await, target_digests)
        }
        None => futures_util::join!(source_side, target_side),
    };
    let (source_digest, source_type) = match source_digest {
        Ok(Some(head)) => (head.digest, head.media_type),
        Ok(None) => return every(targets, CopyError::SourceMissing(source.to_string())),
        Err(e) => return every(targets, CopyError::Registry(e)),
    };
    let compared =
        join_all(targets.iter().zip(target_digests).map(|(target, current)| {
            compare(ctx, waiter, target, &source_digest, current, choice)
        }))
        .await;
    let mut outcomes: Vec<Option<Result<Outcome, CopyError>>> = Vec::new();
    let mut changed = Vec::new();
    // What upstream held when each changed target was last mirrored, if it holds anything.
    let mut moved_from: Vec<Option<String>> = vec![None; targets.len()];
    for (i, compared) in compared.into_iter().enumerate() {
        outcomes.push(match compared {
            Err(e) => Some(Err(e)),
            Ok(Compared::Same(digest)) => Some(Ok(Outcome::Unchanged { digest })),
            Ok(Compared::Differs { current, .. }) if ctx.dry_run => {
                let now = current.as_deref().map(|current| (&targets[i], current));
                let price = price::price(ctx, waiter, source_type.as_deref(), choice, now).await;
                Some(Ok(Outcome::WouldCopy {
                    digest: source_digest.clone(),
                    target: current,
                    price,
                }))
            }
            Ok(Compared::Differs { was, .. }) => {
                moved_from[i] = was;
                changed.push(i);
                None
            }
        });
    }
    if ctx.dry_run {
        return finished(outcomes);
    }
    if !changed.is_empty() {
        if let Err(refused) = waiter.take_slot().await {
            for &i in &changed {
                outcomes[i] = Some(Err(CopyError::NotStarted(refused.clone())));
            }
            return finished(outcomes);
        }
        // Nothing of an image its publisher did not sign enters a target.
        if let Some(policy) = &choice.verify {
            if let Err(e) = verify::verified(ctx, waiter, source, &source_digest, policy).await {
                for &i in &changed {
                    outcomes[i] = Some(Err(e.clone()));
                }
                return finished(outcomes);
            }
        }
    }
    // Before the first pull: a target that cannot take the push costs no pull.
    let prepared = join_all(changed.iter().map(|&i| async move {
        stores
            .of(&targets[i].registry)
            .prepare_push(&targets[i].repo())
            .await
    }))
    .await;
    let mut ready = Vec::new();
    for (i, prepared) in changed.into_iter().zip(prepared) {
        match prepared {
            Ok(()) => ready.push(i),
            Err(e) => outcomes[i] = Some(Err(e.into())),
        }
    }
    let repositories: Vec<Repository> = ready.iter().map(|&i| targets[i].repo()).collect();
    // A choice of platforms makes a content of its own: the same index, other children.
    let content = match &choice.platforms {
        Some(platforms) => format!("{source_digest} for {platforms}"),
        None => source_digest.clone(),
    };
    let settled = ctx
        .manifests
        .settle_all(&repositories, &content, |mine| {
            copy_tagged(ctx, waiter, source, &source_digest, choice, mine)
        })
        .await;
    // Tags are pushed once the content is settled in each repository: by this image (its
    // tag already pushed), or by another, whose stored content this tag is pointed at.
    let subjects_of_children = std::sync::Mutex::new(Vec::new());
    let subjects_of_children = &subjects_of_children;
    let source_digest = &source_digest;
    let tagging = ready.iter().zip(settled).map(|(&i, settled)| async move {
        let target = &targets[i];
        let (stored, stats) = match settled? {
            Turn::Mine(Copied::Pushed(stored, stats, children)) => {
                subjects_of_children
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(children);
                (stored, stats)
            }
            Turn::Mine(Copied::Refused(_, refused)) => return Err(CopyError::Registry(refused)),
            Turn::Mine(Copied::Held) => (
                source_digest.clone(),
                retag(ctx, waiter, target, source_digest).await?,
            ),
            Turn::Theirs(Done::Stored(stored)) => {
                let stats = retag(ctx, waiter, target, &stored).await?;
                (stored, stats)
            }
            Turn::Mine(Copied::Skipped(reason)) | Turn::Theirs(Done::Skipped(reason)) => {
                return Ok(Outcome::Skipped { reason })
            }
        };
        Ok(Outcome::Mirrored {
            digest: stored,
            stats,
        })
    });
    for (&i, outcome) in ready.iter().zip(join_all(tagging).await) {
        outcomes[i] = Some(refused_move(outcome, moved_from[i].take(), source_digest));
    }
    if choice.referrers {
        let mut subjects = vec![source_digest.clone()];
        let mut children = subjects_of_children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        children.sort();
        children.dedup();
        subjects.extend(children);
        with_referrers(ctx, waiter, source, targets, &subjects, &mut outcomes).await;
    }
    finished(outcomes)
}

/// Mirrors what refers to `subjects` into every target whose image is in place (mirrored or
/// unchanged); a target that receives some counts as mirrored, one that cannot fails.
async fn with_referrers(
    ctx: &PassContext,
    waiter: &Waiter,
    source: &ImageRef,
    targets: &[ImageRef],
    subjects: &[String],
    outcomes: &mut [Option<Result<Outcome, CopyError>>],
) {
    let placed: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            matches!(
                outcomes[i],
                Some(Ok(Outcome::Mirrored { .. } | Outcome::Unchanged { .. }))
            )
        })
        .collect();
    if placed.is_empty() {
        return;
    }
    let repositories: Vec<Repository> = placed.iter().map(|&i| targets[i].repo()).collect();
    let copied =
        referrers::mirror_referrers(ctx, waiter, &source.repo(), &repositories, subjects).await;
    for (&i, copied) in placed.iter().zip(copied) {
        let outcome = outcomes[i].take().expect("placed targets have an outcome");
        outcomes[i] = Some(match (outcome, copied) {
            (_, Err(e)) => Err(e),
            (outcome, Ok(0)) => outcome,
            (Ok(Outcome::Unchanged { digest }), Ok(n)) => Ok(Outcome::Mirrored {
                digest,
                stats: CopyStats {
                    referrers: n,
                    ..CopyStats::default()
                },
            }),
            (Ok(Outcome::Mirrored { digest, mut stats }), Ok(n)) => {
                stats.referrers += n;
                Ok(Outcome::Mirrored { digest, stats })
            }
            (other, Ok(_)) => other,
        });
    }
}

/// The outcome of a target whose tag refused to move from what upstream held before (`was`)
/// to `upstream`: [`Outcome::Immutable`]. A refusal where the target held nothing under the
/// tag is no move and stays the failure it is.
fn refused_move(
    outcome: Result<Outcome, CopyError>,
    was: Option<String>,
    upstream: &str,
) -> Result<Outcome, CopyError> {
    match (outcome, was) {
        (Err(CopyError::Registry(e)), Some(was)) if e.is_immutable() => Ok(Outcome::Immutable {
            was,
            upstream: upstream.to_string(),
        }),
        (outcome, _) => outcome,
    }
}

/// A target against the source, by digest.
enum Compared {
    /// Holds the source's content (or, for a choice of platforms, the index regmirror made of
    /// it): its digest.
    Same(String),
    /// Differs: what its tag points at now (`current`), if anything, and the upstream digest
    /// that was copied from (`was`): `current` itself, or the source digest a filtered index
    /// records.
    Differs {
        current: Option<String>,
        was: Option<String>,
    },
}

/// Whether `target` (whose tag points at `current`) holds the source's content. With a
/// choice of platforms the target holds a filtered index of another digest, which records the
/// source digest and platforms it was made from: read from the target (the user's own
/// registry, no pull at the source).
async fn compare(
    ctx: &PassContext,
    waiter: &Waiter,
    target: &ImageRef,
    source_digest: &str,
    current: Result<Option<String>, RegistryError>,
    choice: &CopyChoice,
) -> Result<Compared, CopyError> {
    let current = current?;
    if current.as_deref() == Some(source_digest) {
        return Ok(Compared::Same(source_digest.to_string()));
    }
    let (Some(platforms), Some(current)) = (&choice.platforms, current.clone()) else {
        return Ok(Compared::Differs {
            was: current.clone(),
            current,
        });
    };
    let (body, _) = ctx
        .stores
        .of(&target.registry)
        .pull_manifest(&target.named().pinned(&current), waiter)
        .await?;
    let made_from = platform::recorded(&body);
    if made_from == Some((source_digest.to_string(), platforms.to_string())) {
        return Ok(Compared::Same(current));
    }
    Ok(Compared::Differs {
        was: Some(made_from.map_or_else(|| current.clone(), |(from, _)| from)),
        current: Some(current),
    })
}

/// What storing a content in a target repository came to, for the image that did it.
#[derive(Debug, Clone)]
enum Copied {
    /// Pushed under the tag: the digest stored, the work done, and the child manifests it
    /// references (their referrers are mirrored too).
    Pushed(String, CopyStats, Vec<String>),
    /// The repository held the content already, under another name: only the tag is to be
    /// pushed ([`retag`]).
    Held,
    /// Stored by digest (this digest), but the tag was refused: the target does not move an
    /// existing tag ([`crate::registry::Failure::Immutable`]).
    Refused(String, RegistryError),
    /// Not mirrored: none of its platforms is wanted.
    Skipped(String),
}

/// The same error for every target.
fn every(targets: &[ImageRef], e: CopyError) -> Vec<Result<Outcome, CopyError>> {
    targets.iter().map(|_| Err(e.clone())).collect()
}

fn finished(outcomes: Vec<Option<Result<Outcome, CopyError>>>) -> Vec<Result<Outcome, CopyError>> {
    outcomes
        .into_iter()
        .map(|o| o.expect("every target has an outcome"))
        .collect()
}

/// Brings the content `digest` of `source` into every repository of `to` (its platforms of
/// `choice`) and pushes it under the source's tag there, pulling it once. Per repository:
/// what the content came to there, and what this image did.
async fn copy_tagged(
    ctx: &PassContext,
    waiter: &Waiter,
    source: &ImageRef,
    digest: &str,
    choice: &CopyChoice,
    to: Vec<Repository>,
) -> Vec<Result<(Done, Copied), CopyError>> {
    let stores = &ctx.stores;
    // The content may be there under another tag; a filtered index is checked by its record.
    let held = join_all(to.iter().map(|repository| async move {
        if choice.platforms.is_some() {
            return Ok(false);
        }
        stores
            .of(&repository.registry)
            .manifest_digest(&repository.at_digest(digest), waiter)
            .await
            .map(|found| found.is_some())
    }))
    .await;
    let mut results: Vec<Option<Result<(Done, Copied), CopyError>>> = Vec::new();
    let mut fresh = Vec::new();
    for (i, held) in held.into_iter().enumerate() {
        results.push(match held {
            Ok(true) => Some(Ok((Done::Stored(digest.to_string()), Copied::Held))),
            Ok(false) => {
                fresh.push(i);
                None
            }
            Err(e) => Some(Err(e.into())),
        });
    }
    if !fresh.is_empty() {
        let repositories: Vec<Repository> = fresh.iter().map(|&i| to[i].clone()).collect();
        let copied = copy_manifest(ctx, waiter, source, digest, choice, &repositories).await;
        for (&i, copied) in fresh.iter().zip(copied) {
            results[i] = Some(copied.map(|copied| match &copied {
                Copied::Pushed(stored, ..) => (Done::Stored(stored.clone()), copied),
                // Stored by digest: other tags of this content can still point at it.
                Copied::Refused(stored, _) => (Done::Stored(stored.clone()), copied),
                Copied::Skipped(reason) => (Done::Skipped(reason.clone()), copied),
                Copied::Held => (Done::Stored(digest.to_string()), copied),
            }));
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every repository has a result"))
        .collect()
}

/// Pulls `source` at `digest` once, copies everything it references into every repository of
/// `to` (only the platforms of `choice`), then pushes it under the source's tag (or its digest)
/// in each: the source's bytes, or for a choice of platforms the index made of them.
async fn copy_manifest(
    ctx: &PassContext,
    waiter: &Waiter,
    source: &ImageRef,
    digest: &str,
    choice: &CopyChoice,
    to: &[Repository],
) -> Vec<Result<Copied, CopyError>> {
    let pinned = source.pinned(digest);
    let pulled = ctx
        .stores
        .of(&pinned.registry)
        .pull_manifest(&pinned, waiter)
        .await;
    let (body, manifest) = match pulled.map_err(CopyError::from).and_then(|(body, _)| {
        let manifest = Manifest::parse(&body, None).map_err(|e| CopyError::Manifest {
            image: pinned.to_string(),
            source: e,
        })?;
        Ok((body, manifest))
    }) {
        Ok(pulled) => pulled,
        Err(e) => return to.iter().map(|_| Err(e.clone())).collect(),
    };
    let chosen = match &choice.platforms {
        None => Chosen::All,
        Some(platforms) => {
            match choose(ctx, waiter, &pinned, &body, &manifest, platforms, choice).await {
                Ok(chosen) => chosen,
                Err(e) => return to.iter().map(|_| Err(e.clone())).collect(),
            }
        }
    };
    let (body, manifest) = match chosen {
        Chosen::All => (body, manifest),
        Chosen::Filtered(filtered, manifest) => (filtered, manifest),
        Chosen::None(reason) => {
            return to
                .iter()
                .map(|_| Ok(Copied::Skipped(reason.clone())))
                .collect()
        }
    };
    let stored = digest::of(digest::Algorithm::Sha256, &body);
    let stored = if body_is_source(&choice.platforms, &manifest) {
        digest.to_string()
    } else {
        stored
    };
    let children: Vec<String> = match &manifest {
        Manifest::Index { children, .. } => children.iter().map(|c| c.digest.clone()).collect(),
        Manifest::Image { .. } => Vec::new(),
    };
    let references = copy_references(ctx, waiter, &source.repo(), to, &manifest, 0).await;
    let pushes = to
        .iter()
        .zip(references)
        .enumerate()
        .map(|(i, (repository, copied))| {
            let body = body.clone();
            let manifest = &manifest;
            let stored = stored.clone();
            let children = children.clone();
            async move {
                let mut stats = copied?;
                // The source pulled once, counted against the first target.
                stats.pulls += u64::from(i == 0);
                let named = repository.image_for(source);
                let store = ctx.stores.of(&named.registry);
                let media_type = manifest.media_type();
                match store
                    .push_manifest(&named, body.clone(), media_type, waiter)
                    .await
                {
                    Ok(()) => {}
                    // Kept by digest, so the next pass finds it there and pulls nothing.
                    Err(refused) if refused.is_immutable() => {
                        let by_digest = repository.at_digest(&stored);
                        store
                            .push_manifest(&by_digest, body, media_type, waiter)
                            .await?;
                        return Ok(Copied::Refused(stored, refused));
                    }
                    Err(e) => return Err(e.into()),
                }
                stats.manifests_pushed += 1;
                Ok(Copied::Pushed(stored, stats, children))
            }
        });
    join_all(pushes).await
}

/// Whether the bytes pushed are the source's own (no filtered index was made of them).
fn body_is_source(platforms: &Option<Platforms>, manifest: &Manifest) -> bool {
    platforms.is_none() || matches!(manifest, Manifest::Image { .. })
}

/// What of a source manifest a choice of platforms keeps.
enum Chosen {
    /// All of it, as it is: a single-platform image of a wanted platform.
    All,
    /// An index made of the wanted children: its bytes, and what it references.
    Filtered(Bytes, Manifest),
    /// Nothing: why.
    None(String),
}

/// Applies `platforms` to the source manifest `body` (of `pinned`): an index keeps the wanted
/// children (and their attestations, with referrers); a single image is kept whole if its
/// config names a wanted platform, and skipped if not.
async fn choose(
    ctx: &PassContext,
    waiter: &Waiter,
    pinned: &ImageRef,
    body: &Bytes,
    manifest: &Manifest,
    platforms: &Platforms,
    choice: &CopyChoice,
) -> Result<Chosen, CopyError> {
    match manifest {
        Manifest::Index {
            media_type,
            children,
        } => {
            let kept = platforms.choose(children, choice.referrers);
            if kept.is_empty() {
                let offered: Vec<String> = children
                    .iter()
                    .filter_map(|c| c.platform.as_ref().map(ToString::to_string))
                    .collect();
                return Ok(Chosen::None(format!(
                    "none of its platforms ({}) is in platforms = [{platforms}]",
                    offered.join(", ")
                )));
            }
            let filtered = platform::filtered_index(
                body,
                &kept,
                pinned.digest.as_deref().unwrap_or_default(),
                platforms,
            )
            .map_err(|e| CopyError::Manifest {
                image: pinned.to_string(),
                source: ManifestError::Malformed(e),
            })?;
            Ok(Chosen::Filtered(
                Bytes::from(filtered),
                Manifest::Index {
                    media_type: media_type.clone(),
                    children: kept.into_iter().cloned().collect(),
                },
            ))
        }
        Manifest::Image { blobs, .. } => {
            let Some(config) = blobs.first() else {
                return Ok(Chosen::All);
            };
            let bytes = ctx
                .stores
                .of(&pinned.registry)
                .read_blob(&pinned.repo(), &config.digest, MAX_CONFIG_BYTES, waiter)
                .await?;
            match serde_json::from_slice::<Platform>(&bytes) {
                Ok(platform) if platforms.take(&platform) => Ok(Chosen::All),
                Ok(platform) => Ok(Chosen::None(format!(
                    "a single-platform image for {platform}, not in platforms = [{platforms}]"
                ))),
                // An artifact (its config names no platform): kept as it is.
                Err(_) => Ok(Chosen::All),
            }
        }
    }
}

/// Pushes `target`'s tag onto content `digest` its repository already holds, read back from
/// there: a request to the user's own registry, not a pull at the source.
async fn retag(
    ctx: &PassContext,
    waiter: &Waiter,
    target: &ImageRef,
    digest: &str,
) -> Result<CopyStats, CopyError> {
    let stored = target.repo().at_digest(digest);
    let store = ctx.stores.of(&stored.registry);
    let (body, _) = store.pull_manifest(&stored, waiter).await?;
    let manifest = Manifest::parse(&body, None).map_err(|e| CopyError::Manifest {
        image: stored.to_string(),
        source: e,
    })?;
    store
        .push_manifest(target, body, manifest.media_type(), waiter)
        .await?;
    Ok(CopyStats {
        manifests_pushed: 1,
        ..CopyStats::default()
    })
}
