//! Signing images as cosign does with a key, for tests of `verify`: a signature manifest under
//! `sha256-<hex>.sig` whose layer is a simple signing payload naming the signed digest, its
//! ECDSA P-256 signature (base64 of ASN.1 DER) in the layer's annotation.

use base64::Engine;
use bytes::Bytes;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::json;

use super::image::{sha256_digest, Manifest};
use super::remote::{put_manifest, upload_blob, Remote};

/// A throwaway signing key, the same for the same `seed`.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed.max(1); 32]).expect("a valid P-256 scalar")
}

/// `key`'s public half as cosign writes `cosign.pub`.
pub fn public_pem(key: &SigningKey) -> String {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("a PEM public key")
}

/// Pushes into `repo` the signature of the image `image_digest`, as cosign's `.sig` tag, made
/// with `key` over a payload that names `signed_digest` (the image's own digest, unless a
/// test forges another).
pub fn sign(
    remote: impl Into<Remote>,
    repo: &str,
    image_digest: &str,
    signed_digest: &str,
    key: &SigningKey,
) {
    let remote = remote.into();
    let payload = payload(&remote, repo, signed_digest);
    let signature: Signature = key.sign(&payload);
    let encoded = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let annotations = json!({"dev.cosignproject.cosign/signature": encoded});
    put_signature(&remote, repo, image_digest, &payload, annotations);
}

/// The simple signing payload cosign signs for `signed_digest` in `repo`.
pub fn payload(remote: &Remote, repo: &str, signed_digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{repo}", remote.host())},
            "image": {"docker-manifest-digest": signed_digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

/// Pushes cosign's `.sig` manifest for the image `image_digest` into `repo`: one layer, the
/// payload, with `annotations` (its signature, and for keyless its certificate and log entry).
pub fn put_signature(
    remote: &Remote,
    repo: &str,
    image_digest: &str,
    payload: &[u8],
    annotations: serde_json::Value,
) {
    let config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (config_digest, payload_digest) = (sha256_digest(config), sha256_digest(payload));
    upload_blob(remote, repo, &config_digest, Bytes::from_static(config));
    upload_blob(remote, repo, &payload_digest, Bytes::from(payload.to_vec()));
    let body = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": annotations
        }]
    });
    let bytes = serde_json::to_vec(&body).expect("a manifest serialises");
    let manifest = Manifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".to_string(),
        digest: sha256_digest(&bytes),
        bytes,
        platform: None,
    };
    let tag = image_digest.replacen(':', "-", 1) + ".sig";
    put_manifest(remote, repo, &tag, &manifest);
}
