//! Depth first, everything a manifest references: an image's blobs (placed the cheapest way,
//! [`super::blobs`]), an index's children (each pulled once and pushed by digest once per
//! pass per repository, [`super::manifests`]), a few at a time and only as their turn comes,
//! so a hostile index of thousands costs little and stops at the first failure of every
//! target.

use futures_util::future::join_all;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{stream, FutureExt, StreamExt};

use super::blobs::{Placed, MAX_BLOB_TRANSFERS};
use super::manifests::{Done, Turn};
use super::{CopyError, CopyStats, PassContext, CHILD_MANIFESTS_AT_ONCE, MAX_INDEX_DEPTH};
use crate::manifest::{Descriptor, Manifest};
use crate::reference::Repository;
use crate::registry::waiting::Waiter;

/// Copies everything `manifest` references into every repository of `to`, so that it can be
/// pushed there; the work done for each, in order. `depth` is how many indexes enclose it.
pub(super) fn copy_references<'a>(
    ctx: &'a PassContext,
    waiter: &'a Waiter,
    from: &'a Repository,
    to: &'a [Repository],
    manifest: &'a Manifest,
    depth: usize,
) -> BoxFuture<'a, Vec<Result<CopyStats, CopyError>>> {
    async move {
        type Work<'a> = BoxFuture<'a, Vec<Result<CopyStats, CopyError>>>;
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
        let mut total: Vec<Result<CopyStats, CopyError>> =
            to.iter().map(|_| Ok(CopyStats::default())).collect();
        let mut work = work.buffer_unordered(at_once);
        while let Some(part) = work.next().await {
            for (sum, part) in total.iter_mut().zip(part) {
                // A target's first failure is its result; its other work is not counted.
                if let Ok(stats) = sum {
                    match part {
                        Ok(part) => *stats += part,
                        Err(e) => *sum = Err(e),
                    }
                }
            }
            // Once every target has failed, the rest is not started: a missing child of an
            // index of thousands costs the few fetched with it, not all of them.
            if total.iter().all(Result::is_err) {
                break;
            }
        }
        total
    }
    .boxed()
}

async fn place_blob(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    to: &[Repository],
    blob: &Descriptor,
) -> Vec<Result<CopyStats, CopyError>> {
    ctx.ledger
        .place_all(&ctx.stores, from, to, blob, waiter)
        .await
        .into_iter()
        .map(|placed| {
            let mut stats = CopyStats::default();
            match placed? {
                Placed::AlreadyThere => stats.blobs_present += 1,
                Placed::Mounted => stats.blobs_mounted += 1,
                Placed::Copied(bytes) => {
                    stats.blobs_copied += 1;
                    stats.bytes_copied += bytes;
                }
            }
            Ok(stats)
        })
        .collect()
}

/// Copies one child manifest of an index (and all it references) into every repository of
/// `to`, pushed by digest: pulled once, and once per pass per repository whatever number of
/// indexes name it. `depth` is how many indexes enclose it.
pub(super) async fn copy_child(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    to: &[Repository],
    child: &Descriptor,
    depth: usize,
) -> Vec<Result<CopyStats, CopyError>> {
    ctx.manifests
        .settle_all(to, &child.digest, |mine| {
            copy_child_once(ctx, waiter, from, mine, child, depth)
        })
        .await
        .into_iter()
        .map(|turn| {
            Ok(match turn? {
                Turn::Mine(stats) => stats,
                Turn::Theirs(_) => CopyStats::default(),
            })
        })
        .collect()
}

async fn copy_child_once(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    to: Vec<Repository>,
    child: &Descriptor,
    depth: usize,
) -> Vec<Result<(Done, CopyStats), CopyError>> {
    let (digest, declared_type) = (child.digest.as_str(), child.media_type.as_str());
    let stores = &ctx.stores;
    // A store only holds a manifest whose references it holds: one that has it is done.
    let held = join_all(to.iter().map(|repository| async move {
        stores
            .of(&repository.registry)
            .manifest_digest(&repository.at_digest(digest), waiter)
            .await
            .map(|found| found.is_some())
    }))
    .await;
    let mut results: Vec<Option<Result<(Done, CopyStats), CopyError>>> = Vec::new();
    let mut missing = Vec::new();
    for (i, held) in held.into_iter().enumerate() {
        results.push(match held {
            Ok(true) => Some(Ok((Done::Stored(digest.to_string()), CopyStats::default()))),
            Ok(false) => {
                missing.push(i);
                None
            }
            Err(e) => Some(Err(e.into())),
        });
    }
    if !missing.is_empty() {
        let repositories: Vec<Repository> = missing.iter().map(|&i| to[i].clone()).collect();
        let source = from.at_digest(digest);
        let pulled = stores
            .of(&source.registry)
            .pull_manifest(&source, waiter)
            .await
            .map_err(CopyError::from)
            .and_then(|(body, _)| {
                let manifest = Manifest::parse(&body, Some(declared_type)).map_err(|e| {
                    CopyError::Manifest {
                        image: source.to_string(),
                        source: e,
                    }
                })?;
                if matches!(manifest, Manifest::Index { .. }) && depth >= MAX_INDEX_DEPTH {
                    return Err(CopyError::NestedTooDeep {
                        image: source.to_string(),
                    });
                }
                Ok((body, manifest))
            });
        let copied: Vec<Result<CopyStats, CopyError>> = match pulled {
            Err(e) => repositories.iter().map(|_| Err(e.clone())).collect(),
            Ok((body, manifest)) => {
                let references =
                    copy_references(ctx, waiter, from, &repositories, &manifest, depth).await;
                let pushes = repositories.iter().zip(references).enumerate().map(
                    |(n, (repository, copied))| {
                        let body = body.clone();
                        let manifest = &manifest;
                        async move {
                            let mut stats = copied?;
                            stats.pulls += u64::from(n == 0);
                            stores
                                .of(&repository.registry)
                                .push_manifest(
                                    &repository.at_digest(digest),
                                    body,
                                    manifest.media_type(),
                                    waiter,
                                )
                                .await?;
                            stats.manifests_pushed += 1;
                            Ok(stats)
                        }
                    },
                );
                join_all(pushes).await
            }
        };
        for (&i, copied) in missing.iter().zip(copied) {
            results[i] = Some(copied.map(|stats| (Done::Stored(digest.to_string()), stats)));
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every repository has a result"))
        .collect()
}
