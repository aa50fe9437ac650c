//! `verify = { key = … }`: an image is copied only when a cosign signature made with the
//! mirror's key vouches for its digest.
//!
//! cosign keeps an image's signatures in the same repository under the tag
//! `sha256-<hex>.sig`: a manifest whose layers are *simple signing* payloads (JSON naming the
//! signed digest under `critical.image.docker-manifest-digest`), each with its signature in
//! the layer's `dev.cosignproject.cosign/signature` annotation (base64 of an ASN.1 ECDSA
//! signature over the payload's bytes). One layer whose signature verifies with the key and
//! whose payload names the image's digest is enough. The payloads are read as blobs, bounded
//! and checked against their digests like any other.
//!
//! Only images about to be copied are checked (an unchanged one costs nothing), after they
//! take their copy slot: the signature manifest's GET is a pull on Docker Hub. Its tag is
//! HEADed first (free): no signature costs no pull, and a verdict is remembered for the life of
//! the process by image digest, signature manifest digest and key ([`Verdicts`]), so an image
//! refused once is not pulled again until its signatures change.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
use serde::Deserialize;

use super::{CopyError, PassContext};
use crate::config::VerifyKey;
use crate::manifest::Manifest;
use crate::reference::ImageRef;
use crate::registry::waiting::Waiter;

/// The annotation holding a layer's signature.
const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// The most layers (signatures) of one signature manifest read.
const MAX_SIGNATURES: usize = 16;
/// The most a simple signing payload may weigh (cosign's are a few hundred bytes).
const MAX_PAYLOAD_BYTES: usize = 64 << 10;

/// Why an image's signatures did not vouch for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("not copied: no cosign signature ({tag} does not exist)")]
    NoSignature { tag: String },
    #[error("not copied: no signature in {tag} verifies with {key}")]
    BadSignature { tag: String, key: String },
    #[error("not copied: the signatures in {tag} that verify with {key} sign another digest, not {digest}")]
    OtherDigest {
        tag: String,
        key: String,
        digest: String,
    },
}

/// Verdicts already reached, by (image digest, signature manifest digest, key), for the life
/// of the process; bounded, the oldest forgotten first.
#[derive(Debug, Default)]
pub struct Verdicts(std::sync::Mutex<std::collections::VecDeque<(Key, Result<(), Unverified>)>>);

type Key = (String, String, VerifyKey);

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
}

/// Checks that a signature in `source`'s repository made with `key` vouches for `digest`.
pub(super) async fn verified(
    ctx: &PassContext,
    waiter: &Waiter,
    source: &ImageRef,
    digest: &str,
    key: &VerifyKey,
) -> Result<(), CopyError> {
    let tag = digest.replacen(':', "-", 1) + ".sig";
    let signatures = source
        .repo()
        .tagged(&tag)
        .map_err(|e| CopyError::Manifest {
            image: source.to_string(),
            source: crate::manifest::ManifestError::Malformed(e.to_string()),
        })?;
    let store = ctx.stores.of(&source.registry);
    let Some(signed) = store.manifest_digest(&signatures, waiter).await? else {
        let tag = signatures.to_string();
        return Err(CopyError::Unverified(Unverified::NoSignature { tag }));
    };
    let remembered = (digest.to_string(), signed.clone(), key.clone());
    if let Some(verdict) = ctx.verdicts.get(&remembered) {
        return verdict.map_err(CopyError::Unverified);
    }
    let verdict = check(ctx, waiter, &signatures.pinned(&signed), digest, key).await;
    match verdict {
        Err(CopyError::Unverified(refused)) => {
            ctx.verdicts.keep(remembered, Err(refused.clone()));
            Err(CopyError::Unverified(refused))
        }
        Ok(()) => {
            ctx.verdicts.keep(remembered, Ok(()));
            Ok(())
        }
        // A registry's failure is no verdict: tried again next time.
        Err(e) => Err(e),
    }
}

/// Reads the signature manifest `signatures` (pinned to its digest) and checks its layers.
async fn check(
    ctx: &PassContext,
    waiter: &Waiter,
    signatures: &ImageRef,
    digest: &str,
    key: &VerifyKey,
) -> Result<(), CopyError> {
    let repository = signatures.repo();
    let store = ctx.stores.of(&signatures.registry);
    let shown_tag = signatures.named().to_string();
    let body = match store.pull_manifest(signatures, waiter).await {
        Ok((body, _)) => body,
        Err(e) if e.is_not_found() => {
            return Err(CopyError::Unverified(Unverified::NoSignature {
                tag: shown_tag,
            }))
        }
        Err(e) => return Err(e.into()),
    };
    let layers = match Manifest::parse(&body, None) {
        Ok(Manifest::Image { blobs, .. }) => blobs.into_iter().skip(1).take(MAX_SIGNATURES),
        Ok(Manifest::Index { .. }) | Err(_) => {
            return Err(CopyError::Unverified(Unverified::NoSignature {
                tag: shown_tag,
            }))
        }
    };
    let mut signed_other = false;
    for layer in layers {
        let Some(signature) = layer.annotations.get(SIGNATURE) else {
            continue;
        };
        let payload = store
            .read_blob(&repository, &layer.digest, MAX_PAYLOAD_BYTES, waiter)
            .await?;
        if !signs(&key.key, &payload, signature) {
            continue;
        }
        match signed_digest(&payload) {
            Some(signed) if signed == digest => return Ok(()),
            _ => signed_other = true,
        }
    }
    let key = key.path.display().to_string();
    Err(CopyError::Unverified(match signed_other {
        true => Unverified::OtherDigest {
            tag: shown_tag,
            key,
            digest: digest.to_string(),
        },
        false => Unverified::BadSignature {
            tag: shown_tag,
            key,
        },
    }))
}

/// Whether `signature` (base64 of an ASN.1 DER ECDSA signature) is `key`'s over `payload`.
fn signs(key: &p256::ecdsa::VerifyingKey, payload: &[u8], signature: &str) -> bool {
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(signature) = Signature::from_der(&der) else {
        return false;
    };
    key.verify(payload, &signature).is_ok()
}

/// The digest a simple signing payload vouches for.
fn signed_digest(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        image: Image,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    serde_json::from_slice::<Payload>(payload)
        .ok()
        .map(|p| p.critical.image.digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;

    fn payload(digest: &str) -> Vec<u8> {
        serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "example.com/app"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_over_its_own_bytes() {
        let signer = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let body = payload("sha256:aa");
        let signature: Signature = signer.sign(&body);
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
        assert!(signs(signer.verifying_key(), &body, &encoded));
        assert!(!signs(other.verifying_key(), &body, &encoded));
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(!signs(signer.verifying_key(), &tampered, &encoded));
        assert!(!signs(signer.verifying_key(), &body, "not base64!"));
        assert_eq!(signed_digest(&body).as_deref(), Some("sha256:aa"));
        assert_eq!(signed_digest(b"{}"), None);
    }

    #[test]
    fn a_signature_real_cosign_made_verifies_and_one_changed_byte_fails_it() {
        use p256::pkcs8::DecodePublicKey;
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cosign/");
        let read = |name: &str| std::fs::read(format!("{fixtures}{name}")).unwrap();
        let pem = String::from_utf8(read("cosign.pub")).unwrap();
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim()).unwrap();
        let payload = read("payload.json");
        let signature = String::from_utf8(read("signature.b64")).unwrap();
        assert!(signs(&key, &payload, &signature));
        let manifest = crate::digest::of(crate::digest::Algorithm::Sha256, &read("manifest.json"));
        assert_eq!(signed_digest(&payload), Some(manifest));
        let mut changed = payload.clone();
        let last = changed.len() - 2;
        changed[last] ^= 1;
        assert!(!signs(&key, &changed, &signature));
    }
}
