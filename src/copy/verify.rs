//! `verify`: an image is copied only when a signature its publisher made vouches for its
//! digest, by the mirror's key or (keyless) by its named signer. The checks are
//! [`crate::signature`]'s; this reads what they check, as cheaply as a careful client can.
//!
//! Both homes of an image's signatures are looked in: cosign's `sha256-<hex>.sig` tag first
//! (HEADed, free: none costs no pull), then, when it is missing or vouches for nothing, the
//! Sigstore bundles among the image's referrers (the referrers API, or the fallback tag
//! `sha256-<hex>` HEADed first). Manifests and payloads are read as bounded blobs, checked
//! against their digests like any other.
//!
//! Only images about to be copied are checked (an unchanged one costs nothing), after they
//! take their copy slot: a signature manifest's GET is a pull on Docker Hub. A verdict is
//! remembered for the life of the process by image digest, the signatures' digests and the
//! policy ([`Verdicts`]), so an image refused once is not pulled again until its signatures
//! change.

use super::{CopyError, PassContext};
use crate::manifest::{Descriptor, Manifest, OCI_INDEX};
use crate::reference::{ImageRef, Repository};
use crate::registry::waiting::Waiter;
use crate::signature::{
    check_bundle, check_layer, Unverified, Verify, BUNDLE_MEDIA_TYPES, SIGNATURE,
};
use crate::store::Store;

/// The most layers (signatures) of one signature manifest read.
const MAX_SIGNATURES: usize = 16;
/// The most Sigstore bundles of one image read.
const MAX_BUNDLES: usize = 16;
/// The most a simple signing payload may weigh (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: usize = 64 << 10;
/// The most a bundle may weigh (cosign's are a few KiB: a certificate, a log entry, a proof).
const MAX_BUNDLE_BYTES: usize = 1 << 20;

/// Verdicts already reached, by (image digest, signatures' digests, policy), for the life of
/// the process; bounded, the oldest forgotten first.
#[derive(Debug, Default)]
pub struct Verdicts(std::sync::Mutex<std::collections::VecDeque<(Key, Result<(), Unverified>)>>);

type Key = (String, String, Verify);

/// Verdicts remembered at most.
const MAX_VERDICTS: usize = 10_000;

impl Verdicts {
    fn get(&self, key: &Key) -> Option<Result<(), Unverified>> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn keep(&self, key: Key, verdict: Result<(), Unverified>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() >= MAX_VERDICTS {
            held.pop_front();
        }
        held.push_back((key, verdict));
    }

    /// The verdict on `key`, reached by `judge` unless remembered. A registry's failure is
    /// no verdict: it is tried again next time.
    async fn judged(
        &self,
        key: Key,
        judge: impl std::future::Future<Output = Result<Result<(), Unverified>, CopyError>>,
    ) -> Result<Result<(), Unverified>, CopyError> {
        if let Some(verdict) = self.get(&key) {
            return Ok(verdict);
        }
        let verdict = judge.await?;
        self.keep(key, verdict.clone());
        Ok(verdict)
    }
}

/// Checks that a signature in `source`'s repository vouches for `digest` as `verify` demands.
pub(super) async fn verified(
    ctx: &PassContext,
    waiter: &Waiter,
    source: &ImageRef,
    digest: &str,
    verify: &Verify,
) -> Result<(), CopyError> {
    let repository = source.repo();
    let store = ctx.stores.of(&source.registry);
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    let sig_tag = tagged(&repository, &format!("sha256-{hex}.sig"))?;
    let mut refusal = None;
    if let Some(signed) = store.manifest_digest(&sig_tag, waiter).await? {
        let key = (digest.to_string(), signed.clone(), verify.clone());
        let pinned = sig_tag.pinned(&signed);
        let judge = sig_tag_verdict(store, waiter, &pinned, digest, verify);
        match ctx.verdicts.judged(key, judge).await? {
            Ok(()) => return Ok(()),
            Err(refused) => refusal = Some(refused),
        }
    }
    let bundles = bundles(store, waiter, &repository, digest, hex).await?;
    if !bundles.is_empty() {
        let digests: Vec<&str> = bundles.iter().map(|d| d.digest.as_str()).collect();
        let key = (digest.to_string(), digests.join(","), verify.clone());
        let judge = bundles_verdict(store, waiter, &repository, &bundles, digest, verify);
        match ctx.verdicts.judged(key, judge).await? {
            Ok(()) => return Ok(()),
            Err(refused) => refusal = best(refusal, refused),
        }
    }
    Err(CopyError::Unverified(refusal.unwrap_or_else(|| {
        Unverified::NoSignature {
            looked: format!("{sig_tag} does not exist, nor does a Sigstore bundle refer to it"),
        }
    })))
}

/// Of two refusals, the one whose signature got further.
fn best(held: Option<Unverified>, new: Unverified) -> Option<Unverified> {
    match held {
        Some(held) if held.rank() >= new.rank() => Some(held),
        _ => Some(new),
    }
}

fn tagged(repository: &Repository, tag: &str) -> Result<ImageRef, CopyError> {
    repository.tagged(tag).map_err(|e| CopyError::Manifest {
        image: repository.to_string(),
        source: crate::manifest::ManifestError::Malformed(e.to_string()),
    })
}

/// The verdict of cosign's signature manifest `signatures` (pinned to its digest): one layer
/// that vouches for `digest` is enough.
async fn sig_tag_verdict(
    store: &dyn Store,
    waiter: &Waiter,
    signatures: &ImageRef,
    digest: &str,
    verify: &Verify,
) -> Result<Result<(), Unverified>, CopyError> {
    let repository = signatures.repo();
    let at = signatures.named().to_string();
    let no_signature = || {
        Ok(Err(Unverified::NoSignature {
            looked: format!("{at} holds no signature"),
        }))
    };
    let body = match store.pull_manifest(signatures, waiter).await {
        Ok((body, _)) => body,
        Err(e) if e.is_not_found() => return no_signature(),
        Err(e) => return Err(e.into()),
    };
    let layers = match Manifest::parse(&body, None) {
        Ok(Manifest::Image { blobs, .. }) => blobs.into_iter().skip(1).take(MAX_SIGNATURES),
        Ok(Manifest::Index { .. }) | Err(_) => return no_signature(),
    };
    let mut refusal = None;
    for layer in layers.filter(|layer| layer.annotations.contains_key(SIGNATURE)) {
        let payload = store
            .read_blob(&repository, &layer.digest, MAX_PAYLOAD_BYTES, waiter)
            .await?;
        match check_layer(verify, &payload, &layer.annotations, digest, &at) {
            Ok(()) => return Ok(Ok(())),
            Err(refused) => refusal = best(refusal, refused),
        }
    }
    match refusal {
        Some(refused) => Ok(Err(refused)),
        None => no_signature(),
    }
}

/// The Sigstore bundles that refer to `digest` in `repository`: by the referrers API, or
/// where the registry has none, by the fallback tag `sha256-<hex>` (HEADed first).
async fn bundles(
    store: &dyn Store,
    waiter: &Waiter,
    repository: &Repository,
    digest: &str,
    hex: &str,
) -> Result<Vec<Descriptor>, CopyError> {
    let listed = match store.referrers(repository, digest, waiter).await? {
        Some(listed) => listed,
        None => {
            let tag = tagged(repository, &format!("sha256-{hex}"))?;
            let Some(index) = store.manifest_digest(&tag, waiter).await? else {
                return Ok(Vec::new());
            };
            let body = match store.pull_manifest(&tag.pinned(&index), waiter).await {
                Ok((body, _)) => body,
                Err(e) if e.is_not_found() => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            match Manifest::parse(&body, Some(OCI_INDEX)) {
                Ok(Manifest::Index { children, .. }) => children,
                _ => Vec::new(),
            }
        }
    };
    let mut bundles: Vec<Descriptor> = listed
        .into_iter()
        .filter(|d| {
            d.artifact_type
                .as_deref()
                .is_some_and(|t| BUNDLE_MEDIA_TYPES.contains(&t))
        })
        .take(MAX_BUNDLES)
        .collect();
    bundles.sort_by(|a, b| a.digest.cmp(&b.digest));
    bundles.dedup_by(|a, b| a.digest == b.digest);
    Ok(bundles)
}

/// The verdict of the bundles `listed`: one that vouches for `digest` is enough.
async fn bundles_verdict(
    store: &dyn Store,
    waiter: &Waiter,
    repository: &Repository,
    listed: &[Descriptor],
    digest: &str,
    verify: &Verify,
) -> Result<Result<(), Unverified>, CopyError> {
    let mut refusal = None;
    for descriptor in listed {
        let artifact = repository.at_digest(&descriptor.digest);
        let at = format!("the Sigstore bundle {artifact}");
        let body = match store.pull_manifest(&artifact, waiter).await {
            Ok((body, _)) => body,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let layer = match Manifest::parse(&body, None) {
            Ok(Manifest::Image { blobs, .. }) => blobs.into_iter().nth(1),
            _ => None,
        };
        let Some(layer) = layer else {
            let detail = "its manifest has no layer".to_string();
            refusal = best(refusal, Unverified::BadSignature { at, detail });
            continue;
        };
        let json = store
            .read_blob(repository, &layer.digest, MAX_BUNDLE_BYTES, waiter)
            .await?;
        match check_bundle(verify, &json, digest, &at) {
            Ok(()) => return Ok(Ok(())),
            Err(refused) => refusal = best(refusal, refused),
        }
    }
    Ok(Err(refusal.unwrap_or_else(|| Unverified::NoSignature {
        looked: "the Sigstore bundles that refer to it are gone".to_string(),
    })))
}
