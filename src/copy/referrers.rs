//! Signatures, attestations and SBOMs travel with the image (`referrers = true`).
//!
//! What refers to a manifest is found two ways, and copied the way each is kept:
//!
//! - **Tags** next to the image: cosign's `sha256-<hex>.sig`, `.att` and `.sbom`, and the OCI
//!   referrers fallback tag `sha256-<hex>` (an index of the referrers). The source repository's
//!   tag listing, read once per pass, finds them; each is mirrored as a tag like any image
//!   (compared by HEAD, so an unchanged signature costs no pull), the fallback index with the
//!   referrers it lists.
//! - **The referrers API** (`GET /v2/<name>/referrers/<digest>`) where the source has it. Each
//!   referrer missing from the target is copied (pulled once, pushed by digest, its `subject`
//!   intact), and made findable there: a target with the API indexes it from its `subject`;
//!   for one without, regmirror keeps the fallback tag `sha256-<hex>` an index of them, as the
//!   distribution spec says clients do.
//!
//! The manifests looked at are the image's own and, when it was copied this pass, its
//! children's (only the chosen platforms' with `platforms`).

use futures_util::future::{join_all, BoxFuture};
use futures_util::FutureExt;

use std::sync::Arc;

use super::ledger::{Claim, Ledger};
use super::{copy_child, CopyChoice, CopyError, Outcome, PassContext};
use crate::manifest::{Descriptor, Manifest, OCI_INDEX};
use crate::reference::{ImageRef, Repository};
use crate::registry::waiting::Waiter;
use crate::registry::RegistryError;

/// Each source repository's tags, listed once per pass (for the tag scheme).
#[derive(Debug, Default)]
pub struct TagListings(Ledger<Repository, Result<Arc<Vec<String>>, RegistryError>>);

/// Cosign's tag suffixes and the fallback tag, for a digest's hex.
fn tag_scheme(hex: &str, tag: &str) -> bool {
    tag.strip_prefix("sha256-")
        .and_then(|rest| rest.strip_prefix(hex))
        .is_some_and(|rest| rest.is_empty() || (rest.starts_with('.') && rest.len() > 1))
}

/// Copies into every repository of `to` what refers to each of `subjects` in `from`; per
/// target, how many referrers it received, or why it could not.
pub(super) fn mirror_referrers<'a>(
    ctx: &'a PassContext,
    waiter: &'a Waiter,
    from: &'a Repository,
    to: &'a [Repository],
    subjects: &'a [String],
) -> BoxFuture<'a, Vec<Result<u64, CopyError>>> {
    async move {
        let mut totals: Vec<Result<u64, CopyError>> = to.iter().map(|_| Ok(0)).collect();
        let tags = match listing(ctx, waiter, from).await {
            Ok(tags) => tags,
            Err(e) => return to.iter().map(|_| Err(e.clone())).collect(),
        };
        for subject in subjects {
            let Some(hex) = subject.strip_prefix("sha256:") else {
                continue;
            };
            // Tags: mirrored like any image, compared by HEAD.
            for tag in tags.iter().filter(|t| tag_scheme(hex, t)) {
                let source = match from.tagged(tag) {
                    Ok(source) => source,
                    Err(_) => continue,
                };
                let targets: Vec<ImageRef> = to.iter().map(|r| r.image_for(&source)).collect();
                let outcomes =
                    super::mirror(ctx, &source, &targets, &CopyChoice::default(), waiter).await;
                add(
                    &mut totals,
                    outcomes
                        .into_iter()
                        .map(|o| o.map(|o| u64::from(matches!(o, Outcome::Mirrored { .. })))),
                );
            }
            // The API, where the source has it.
            let store = ctx.stores.of(&from.registry);
            let listed = match store.referrers(from, subject, waiter).await {
                Ok(Some(listed)) => listed,
                Ok(None) => continue,
                Err(e) => {
                    add(&mut totals, to.iter().map(|_| Err(e.clone().into())));
                    continue;
                }
            };
            if listed.is_empty() {
                continue;
            }
            let copied =
                join_all(to.iter().map(|target| {
                    referrers_into(ctx, waiter, from, target, subject, hex, &listed)
                }))
                .await;
            add(&mut totals, copied);
        }
        totals
    }
    .boxed()
}

/// Adds each target's `part` to its total; a target's first error is its result.
fn add(
    totals: &mut [Result<u64, CopyError>],
    parts: impl IntoIterator<Item = Result<u64, CopyError>>,
) {
    for (total, part) in totals.iter_mut().zip(parts) {
        if let Ok(sum) = total {
            match part {
                Ok(n) => *sum += n,
                Err(e) => *total = Err(e),
            }
        }
    }
}

/// The source repository's tags, listed once per pass.
async fn listing(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
) -> Result<Arc<Vec<String>>, CopyError> {
    match ctx.listings.0.settle(from.clone()).await {
        Claim::Done(listed) => listed.map_err(CopyError::Registry),
        Claim::Mine(promise) => {
            let listed = ctx
                .stores
                .of(&from.registry)
                .list_tags(from, waiter)
                .await
                .map(|listing| Arc::new(listing.tags));
            promise.keep(listed.clone());
            listed.map_err(CopyError::Registry)
        }
        Claim::Pending(_) => unreachable!("settle waits until it is not pending"),
    }
}

/// Brings the referrers `listed` (the source API's answer for `subject`) into `target`: each
/// one it lacks copied, and all of them findable there. Returns how many were copied.
async fn referrers_into(
    ctx: &PassContext,
    waiter: &Waiter,
    from: &Repository,
    target: &Repository,
    subject: &str,
    hex: &str,
    listed: &[Descriptor],
) -> Result<u64, CopyError> {
    let store = ctx.stores.of(&target.registry);
    // What the target already knows of: its API's answer, or its fallback index.
    let (api, known) = match store.referrers(target, subject, waiter).await? {
        Some(known) => (true, known),
        None => (false, fallback_index(ctx, waiter, target, hex).await?),
    };
    let missing: Vec<&Descriptor> = listed
        .iter()
        .filter(|d| !known.iter().any(|k| k.digest == d.digest))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let single = std::slice::from_ref(target);
    for descriptor in &missing {
        // A referrer is a manifest pushed by digest (its `subject` intact), like an index's
        // child: once per pass per repository.
        for copied in copy_child(ctx, waiter, from, single, descriptor, 1).await {
            copied?;
        }
    }
    if !api {
        let mut merged = known;
        merged.extend(missing.iter().map(|d| (*d).clone()));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": merged,
        });
        let body = serde_json::to_vec(&index).expect("an index serialises");
        let tag = target
            .tagged(&format!("sha256-{hex}"))
            .map_err(|e| CopyError::Referrers(format!("cannot name the fallback tag: {e}")))?;
        store
            .push_manifest(&tag, body.into(), OCI_INDEX, waiter)
            .await?;
    }
    Ok(missing.len() as u64)
}

/// The referrers the target's fallback tag `sha256-<hex>` lists; none when it has none.
async fn fallback_index(
    ctx: &PassContext,
    waiter: &Waiter,
    target: &Repository,
    hex: &str,
) -> Result<Vec<Descriptor>, CopyError> {
    let tag = target
        .tagged(&format!("sha256-{hex}"))
        .map_err(|e| CopyError::Referrers(e.to_string()))?;
    let store = ctx.stores.of(&tag.registry);
    let body = match store.pull_manifest(&tag, waiter).await {
        Ok((body, _)) => body,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    match Manifest::parse(&body, Some(OCI_INDEX)) {
        Ok(Manifest::Index { children, .. }) => Ok(children),
        _ => Err(CopyError::Referrers(format!(
            "{tag} is not an index of referrers"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_scheme_is_the_digest_and_a_suffix_or_nothing() {
        let hex = "ab".repeat(32);
        assert!(tag_scheme(&hex, &format!("sha256-{hex}.sig")));
        assert!(tag_scheme(&hex, &format!("sha256-{hex}.att")));
        assert!(tag_scheme(&hex, &format!("sha256-{hex}")));
        assert!(!tag_scheme(&hex, &format!("sha256-{hex}.")));
        assert!(!tag_scheme(&hex, &format!("sha256-{hex}x")));
        assert!(!tag_scheme(&hex, "latest"));
    }
}
