//! cosign's signatures under the `sha256-<hex>.sig` tag: each layer a *simple signing*
//! payload (JSON naming the signed digest under `critical.image.docker-manifest-digest`), its
//! signature (base64 of an ASN.1 ECDSA signature over the payload's bytes) in the layer's
//! `dev.cosignproject.cosign/signature` annotation.
//!
//! A keyless layer also carries its Fulcio certificate (`dev.sigstore.cosign/certificate`,
//! PEM) and its Rekor entry with the log's signed entry timestamp
//! (`dev.sigstore.cosign/bundle`). Those are put in the shape of a Sigstore bundle of the
//! first version (a signature over the payload, the certificate, the entry with its promise),
//! and that bundle checked like any other: the payload is the artifact.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::Signature;
use serde::Deserialize;
use serde_json::json;
use sigstore_verify::types::{Bundle, DerCertificate};

use super::{keyless_policy, refused, signer, Keyless, Unverified, Verify, VerifyKey};

/// The annotation holding a layer's signature.
pub const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// A keyless layer's signing certificate (PEM).
const CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// A keyless layer's Rekor entry and signed entry timestamp (JSON).
const REKOR_BUNDLE: &str = "dev.sigstore.cosign/bundle";
/// The most a certificate or an entry annotation may weigh (cosign's are a few KiB).
const MAX_ANNOTATION: usize = 64 << 10;

/// Whether one layer of a `.sig` manifest, `payload` its bytes, vouches for `digest` as
/// `verify` demands. `at`: the signature tag, for messages.
pub fn check_layer(
    verify: &Verify,
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
    digest: &str,
    at: &str,
) -> Result<(), Unverified> {
    let bad = |detail: &str| Unverified::BadSignature {
        at: at.to_string(),
        detail: detail.to_string(),
    };
    let signature = annotations
        .get(SIGNATURE)
        .ok_or_else(|| bad("a layer carries no signature"))?;
    match verify {
        Verify::Key(key) => {
            if !signs(key, payload, signature) {
                let shown = key.path.display();
                return Err(bad(&format!("no signature verifies with {shown}")));
            }
        }
        Verify::Keyless(keyless) => keyless_layer(keyless, payload, annotations, signature, at)?,
    }
    match signed_digest(payload) {
        Some(signed) if signed == digest => Ok(()),
        Some(_) => Err(Unverified::OtherDigest {
            at: at.to_string(),
            digest: digest.to_string(),
        }),
        None => Err(bad("the payload names no image digest")),
    }
}

/// Whether `signature` (base64 of an ASN.1 DER ECDSA signature) is `key`'s over `payload`.
fn signs(key: &VerifyKey, payload: &[u8], signature: &str) -> bool {
    let Ok(der) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(signature) = Signature::from_der(&der) else {
        return false;
    };
    key.key.verify(payload, &signature).is_ok()
}

/// A keyless layer: its certificate chains to the trusted root, its Rekor entry is promised
/// by the log, its signature is the certificate's over `payload`, and the certificate names
/// the expected issuer and identity.
fn keyless_layer(
    keyless: &Keyless,
    payload: &[u8],
    annotations: &BTreeMap<String, String>,
    signature: &str,
    at: &str,
) -> Result<(), Unverified> {
    let annotation = |name: &str| {
        annotations
            .get(name)
            .filter(|value| value.len() <= MAX_ANNOTATION)
    };
    let Some(certificate) = annotation(CERTIFICATE) else {
        return Err(Unverified::UntrustedChain {
            at: at.to_string(),
            detail: "the signature carries no certificate (made with a key?)".to_string(),
        });
    };
    let Some(entry) = annotation(REKOR_BUNDLE) else {
        return Err(Unverified::NotInLog {
            at: at.to_string(),
            detail: format!("the signature carries no log entry ({REKOR_BUNDLE})"),
        });
    };
    let bundle = as_bundle(payload, certificate, entry, signature).map_err(|detail| {
        Unverified::BadSignature {
            at: at.to_string(),
            detail,
        }
    })?;
    let verified = keyless
        .root
        .verifier
        .verify(payload, &bundle, &keyless_policy(keyless))
        .map_err(|failed| refused(failed, at, None))?;
    signer(keyless, verified.identity(), at)
}

/// The layer's parts as a Sigstore bundle of the first version, whose shape the verifier
/// knows: a message signature over `payload`, the leaf certificate, the Rekor entry with its
/// signed entry timestamp.
fn as_bundle(
    payload: &[u8],
    certificate: &str,
    entry: &str,
    signature: &str,
) -> Result<Bundle, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        signed_entry_timestamp: String,
        payload: Logged,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Logged {
        body: String,
        integrated_time: i64,
        log_index: i64,
        #[serde(rename = "logID")]
        log_id: String,
    }
    #[derive(Deserialize)]
    struct Body {
        kind: String,
        #[serde(rename = "apiVersion")]
        api_version: String,
    }
    let entry: Entry = serde_json::from_str(entry)
        .map_err(|e| format!("its log entry ({REKOR_BUNDLE}) is malformed: {e}"))?;
    let body = STANDARD
        .decode(&entry.payload.body)
        .ok()
        .and_then(|json| serde_json::from_slice::<Body>(&json).ok())
        .ok_or("its log entry's body is not a Rekor entry")?;
    let log_id = hex::decode(&entry.payload.log_id).map_err(|_| "its log ID is not hex")?;
    let leaf = DerCertificate::from_pem(certificate)
        .map_err(|e| format!("its certificate is not a PEM certificate: {e}"))?;
    let digest = crate::digest::of(crate::digest::Algorithm::Sha256, payload);
    let digest = hex::decode(digest.trim_start_matches("sha256:")).unwrap_or_default();
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "x509CertificateChain": {"certificates": [{"rawBytes": STANDARD.encode(leaf.as_bytes())}]},
            "tlogEntries": [{
                "logIndex": entry.payload.log_index.to_string(),
                "logId": {"keyId": STANDARD.encode(log_id)},
                "kindVersion": {"kind": body.kind, "version": body.api_version},
                "integratedTime": entry.payload.integrated_time.to_string(),
                "inclusionPromise": {"signedEntryTimestamp": entry.signed_entry_timestamp},
                "canonicalizedBody": entry.payload.body,
            }],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(digest)},
            "signature": signature.trim(),
        },
    });
    Bundle::from_json(&bundle.to_string()).map_err(|e| format!("its parts make no bundle: {e}"))
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
