//! What a dry run says a copy would cost its source in pulls, learnt without a pull.
//!
//! The source's HEAD (free on Docker Hub) gives the manifest's media type: a single image
//! costs one pull, exactly. An index costs one, plus one per child the target lacks, and only
//! a GET of the index (a pull) lists its children; so an index is priced by the platforms
//! chosen, or by the index the target holds now (read from the user's own registry, free),
//! and otherwise as "at least one". Signatures and attestations (`referrers`) are mirrored as
//! they are found, so with them every price is a lower bound.

use super::{Manifest, PassContext};
use crate::config::CopyChoice;
use crate::manifest::{DOCKER_MANIFEST, OCI_MANIFEST};
use crate::reference::ImageRef;
use crate::registry::waiting::Waiter;

/// A copy's cost in pulls at its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Price {
    /// Exactly this many: a single image.
    Exact(u64),
    /// About this many: an index priced by the platforms chosen, or by the index the target
    /// holds now (a child the target holds already costs nothing).
    About(u64),
    /// At least this many: the rest only a pull could count.
    AtLeast(u64),
}

impl Price {
    pub fn pulls(self) -> u64 {
        match self {
            Price::Exact(n) | Price::About(n) | Price::AtLeast(n) => n,
        }
    }

    /// `exact`, `about` or `at_least`, as the report file writes it.
    pub fn kind(self) -> &'static str {
        match self {
            Price::Exact(_) => "exact",
            Price::About(_) => "about",
            Price::AtLeast(_) => "at_least",
        }
    }
}

/// The price of copying the source manifest of `media_type` (`None`: the store did not say)
/// with `choice`; `now` is a target that differs and what its tag points at now, if anything.
pub(super) async fn price(
    ctx: &PassContext,
    waiter: &Waiter,
    media_type: Option<&str>,
    choice: &CopyChoice,
    now: Option<(&ImageRef, &str)>,
) -> Price {
    let price = match media_type {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Price::Exact(1),
        // An index (or a type only a read would tell).
        Some(_) => match &choice.platforms {
            Some(platforms) => {
                let per_platform = if choice.referrers { 2 } else { 1 };
                Price::About(1 + per_platform * platforms.len() as u64)
            }
            None => match now {
                Some((target, current)) => children_held(ctx, waiter, target, current)
                    .await
                    .map_or(Price::AtLeast(1), |n| Price::About(1 + n)),
                None => Price::AtLeast(1),
            },
        },
        None => Price::AtLeast(1),
    };
    match (price, choice.referrers) {
        (Price::Exact(n) | Price::About(n), true) => Price::AtLeast(n),
        (price, _) => price,
    }
}

/// How many children the index `current` the target's tag points at has: the upstream
/// index's next version usually has as many.
async fn children_held(
    ctx: &PassContext,
    waiter: &Waiter,
    target: &ImageRef,
    current: &str,
) -> Option<u64> {
    let store = ctx.stores.of(&target.registry);
    let (body, _) = store
        .pull_manifest(&target.named().pinned(current), waiter)
        .await
        .ok()?;
    match Manifest::parse(&body, None).ok()? {
        Manifest::Index { children, .. } => Some(children.len() as u64),
        Manifest::Image { .. } => None,
    }
}
