//! Comparing by a listed digest: when a tag API listed the source tag's digest (see
//! [`crate::registry::hub`]), a target holding that digest is unchanged without a HEAD at the
//! source. The listing may lag the registry, so it only ever spares a HEAD: a target that
//! differs from the listed digest, or a tag the listing did not have, is compared by HEAD as
//! usual, and nothing is copied on a listing's word.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::join_all;

use super::{compare, Compared, CopyError, Outcome, PassContext};
use crate::config::CopyChoice;
use crate::reference::ImageRef;
use crate::registry::waiting::Waiter;
use crate::registry::RegistryError;

/// Source digests a tag API listed for this pass, by source reference (`registry/repo:tag`).
#[derive(Debug, Default)]
pub struct ListedDigests(HashMap<String, String>);

impl ListedDigests {
    pub fn new(digests: HashMap<String, String>) -> Self {
        ListedDigests(digests)
    }

    /// The key of a source tag.
    pub fn key(source: &ImageRef) -> String {
        source.to_string()
    }

    /// The digest listed for `source`, when it is a tag the listing had.
    pub(super) fn of(&self, source: &ImageRef) -> Option<&String> {
        match source.digest {
            Some(_) => None,
            None => self.0.get(&Self::key(source)),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a pass compared its source tags: by a listed digest alone, or by a HEAD at the source.
#[derive(Debug, Default)]
pub struct Comparisons {
    /// Source tags with a listed digest, or without.
    listed: AtomicU64,
    unlisted: AtomicU64,
    /// Listed ones HEADed after all: a target differed from the listed digest.
    headed_after_listing: AtomicU64,
}

impl Comparisons {
    /// Source tags compared (by a listed digest alone, by a HEAD at the source) so far.
    pub fn counts(&self) -> (u64, u64) {
        let listed = self.listed.load(Ordering::Relaxed);
        let headed = self.headed_after_listing.load(Ordering::Relaxed);
        let unlisted = self.unlisted.load(Ordering::Relaxed);
        (listed.saturating_sub(headed), unlisted + headed)
    }

    pub(super) fn compared(&self, listed: bool) {
        let counter = if listed { &self.listed } else { &self.unlisted };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn headed_after_listing(&self) {
        self.headed_after_listing.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every target's outcome, `Unchanged`, when every target holds the `listed` digest of the
/// source tag; `None` when the source is to be HEADed.
pub(super) async fn unchanged(
    ctx: &PassContext,
    waiter: &Waiter,
    listed: &str,
    targets: &[ImageRef],
    target_digests: &[Result<Option<String>, RegistryError>],
    choice: &CopyChoice,
) -> Option<Vec<Result<Outcome, CopyError>>> {
    let compared =
        join_all(targets.iter().zip(target_digests).map(|(target, current)| {
            compare(ctx, waiter, target, listed, current.clone(), choice)
        }))
        .await;
    let mut outcomes = Vec::with_capacity(targets.len());
    for compared in compared {
        match compared {
            Ok(Compared::Same(digest)) => outcomes.push(Ok(Outcome::Unchanged { digest })),
            _ => return None,
        }
    }
    Some(outcomes)
}
