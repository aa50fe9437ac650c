//! Sigstore bundles among an image's referrers: what cosign 3 writes by default (an OCI
//! artifact whose `subject` is the image and whose one layer is the bundle's JSON). The
//! bundle binds the image's digest either as the subject of a DSSE-wrapped in-toto statement
//! (`cosign sign`) or as the digest of a message signature; the verifier checks that binding
//! with the rest.

use p256::pkcs8::EncodePublicKey;
use sigstore_verify::types::{Bundle, DerPublicKey, Sha256Hash};
use sigstore_verify::PublicKeyVerificationPolicy;

use super::{keyless_policy, refused, signer, TrustRoot, Unverified, Verify, VerifyKey};

/// The artifact types (and layer media types) of Sigstore bundles.
pub const BUNDLE_MEDIA_TYPES: &[&str] = &[
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

/// Whether the bundle `json` vouches for `digest` as `verify` demands. `at`: where it was
/// found, for messages.
pub fn check_bundle(
    verify: &Verify,
    json: &[u8],
    digest: &str,
    at: &str,
) -> Result<(), Unverified> {
    let bad = |detail: String| Unverified::BadSignature {
        at: at.to_string(),
        detail,
    };
    let bundle = std::str::from_utf8(json)
        .map_err(|e| e.to_string())
        .and_then(|text| Bundle::from_json(text).map_err(|e| e.to_string()))
        .map_err(|e| bad(format!("not a Sigstore bundle: {e}")))?;
    let artifact = digest
        .strip_prefix("sha256:")
        .and_then(|hex| Sha256Hash::from_hex(hex).ok())
        .ok_or_else(|| bad(format!("{digest} is not a SHA-256 digest")))?;
    match verify {
        Verify::Keyless(keyless) => {
            let verified = keyless
                .root
                .verifier
                .verify(artifact, &bundle, &keyless_policy(keyless))
                .map_err(|failed| refused(failed, at, Some(digest)))?;
            signer(keyless, verified.identity(), at)
        }
        Verify::Key(key) => {
            let policy = key_policy(key).map_err(bad)?;
            // A bundle signed with a key is judged by the key alone, as cosign's `.sig`
            // signatures are: its log entry, if any, is not required.
            let policy = policy.skip_tlog_unsafe();
            TrustRoot::public_good()
                .map_err(bad)?
                .verifier
                .verify(artifact, &bundle, &policy)
                .map(|_| ())
                .map_err(|failed| refused(failed, at, Some(digest)))
        }
    }
}

/// The verifier's policy for bundles signed with `key`.
fn key_policy(key: &VerifyKey) -> Result<PublicKeyVerificationPolicy, String> {
    let der = key
        .key
        .to_public_key_der()
        .map_err(|e| format!("{}: {e}", key.path.display()))?;
    Ok(PublicKeyVerificationPolicy::new(DerPublicKey::new(
        der.as_bytes().to_vec(),
    )))
}
