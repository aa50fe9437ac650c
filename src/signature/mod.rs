//! Whether an image's signatures vouch for it, as a mirror's `verify` demands: the checks
//! themselves, on bytes already read (the reading, bounded and paced, is the copy's:
//! `copy/verify.rs`).
//!
//! Signatures live in two homes, and both are checked:
//!
//! - **cosign's `sha256-<hex>.sig` tag** ([`simple`]): a manifest whose layers are *simple
//!   signing* payloads naming the signed digest, each layer's signature in an annotation; a
//!   keyless one carries its Fulcio certificate and its Rekor entry (the signed entry
//!   timestamp) in annotations too.
//! - **Sigstore bundles** ([`bundle`]) among the image's referrers (OCI 1.1, what cosign 3
//!   writes by default): one JSON document with the signature, the certificate or key hint
//!   and the transparency-log entry with its inclusion proof.
//!
//! Certificates, SCTs, log promises and inclusion proofs are checked by the Sigstore project's
//! own verifier (`sigstore-verify`), offline, against a trusted root ([`TrustRoot`]).

mod bundle;
mod policy;
mod simple;

pub use bundle::{check_bundle, BUNDLE_MEDIA_TYPES};
pub use policy::{Identity, Keyless, TrustRoot, Verify, VerifyKey};
pub use simple::{check_layer, SIGNATURE};

use sigstore_verify::Error as Failed;

use crate::untrusted;

/// Why an image's signatures did not vouch for it: the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// Nothing signs it: no `.sig` tag, no bundle among its referrers.
    #[error("not copied: no signature ({looked})")]
    NoSignature { looked: String },
    /// A signature does not verify over its payload with its key or certificate (tampered,
    /// another key's, malformed).
    #[error("not copied: bad signature in {at}: {detail}")]
    BadSignature { at: String, detail: String },
    /// A good signature, of another image.
    #[error("not copied: the signature in {at} signs another digest, not {digest}")]
    OtherDigest { at: String, digest: String },
    /// Keyless: signed by someone else.
    #[error("not copied: the signature in {at} was made by {found}, not {expected}")]
    WrongIdentity {
        at: String,
        expected: String,
        found: String,
    },
    /// Keyless: the certificate was vouched for by another OIDC issuer.
    #[error(
        "not copied: the signing certificate in {at} names the issuer {found}, not {expected}"
    )]
    WrongIssuer {
        at: String,
        expected: String,
        found: String,
    },
    /// Keyless: the certificate does not chain to the trusted root at signing time (another
    /// CA, expired or not yet valid then, no valid SCT).
    #[error("not copied: the signing certificate in {at} is not trusted: {detail}")]
    UntrustedChain { at: String, detail: String },
    /// Keyless: no proof the signature is in the transparency log (no entry, a promise or
    /// proof that does not verify with the log's key, an entry of something else).
    #[error(
        "not copied: the signature in {at} is not proven to be in the transparency log: {detail}"
    )]
    NotInLog { at: String, detail: String },
}

impl Unverified {
    /// How far a signature got before it failed: of several signatures that all fail, the
    /// one that got furthest says the most.
    pub fn rank(&self) -> u8 {
        match self {
            Unverified::NoSignature { .. } => 0,
            Unverified::BadSignature { .. } => 1,
            Unverified::UntrustedChain { .. } => 2,
            Unverified::NotInLog { .. } => 3,
            Unverified::OtherDigest { .. } => 4,
            Unverified::WrongIssuer { .. } => 5,
            Unverified::WrongIdentity { .. } => 6,
        }
    }

    /// The check that failed, as one word (for logs and reports).
    pub fn check(&self) -> &'static str {
        match self {
            Unverified::NoSignature { .. } => "no signature",
            Unverified::BadSignature { .. } => "bad signature",
            Unverified::OtherDigest { .. } => "digest mismatch",
            Unverified::WrongIdentity { .. } => "wrong identity",
            Unverified::WrongIssuer { .. } => "wrong issuer",
            Unverified::UntrustedChain { .. } => "untrusted chain",
            Unverified::NotInLog { .. } => "not in the log",
        }
    }
}

/// The most characters of a verifier's or certificate's words in a message.
const DETAIL: usize = 300;

/// What the verifier's `failed` means for the signature at `at`. `other_digest`: whether a
/// mismatch between the signed artifact and the one given means another image (a bundle over
/// the image's digest) rather than a tampered payload.
fn refused(failed: Failed, at: &str, other_digest: Option<&str>) -> Unverified {
    let at = at.to_string();
    let detail = |text: String| untrusted::line(&text, DETAIL);
    match failed {
        Failed::IssuerMismatch { expected, actual } => Unverified::WrongIssuer {
            at,
            expected,
            found: detail(actual.unwrap_or_else(|| "none".to_string())),
        },
        Failed::IdentityMismatch { expected, actual } => Unverified::WrongIdentity {
            at,
            expected: expected.to_string(),
            found: detail(actual.map_or_else(|| "none".to_string(), |a| a.to_string())),
        },
        Failed::Certificate(e) => {
            use sigstore_verify::CertificateError as Chain;
            let text = e.to_string();
            let expired = match &e {
                Chain::Expired { .. } | Chain::NotYetValid { .. } => true,
                Chain::ChainInvalid(why) => {
                    why.contains("CertExpired") || why.contains("NotValidYet")
                }
                _ => false,
            };
            Unverified::UntrustedChain {
                at,
                detail: detail(match expired {
                    true => format!("it was not valid when the signature was made ({text})"),
                    false => text,
                }),
            }
        }
        Failed::TransparencyLog(e) => Unverified::NotInLog {
            at,
            detail: detail(e.to_string()),
        },
        Failed::Timestamp(e) => Unverified::NotInLog {
            at,
            detail: detail(e.to_string()),
        },
        Failed::Bundle(e) => {
            use sigstore_verify::bundle::error::Error as Shape;
            match e {
                Shape::MissingInclusionPromise(_)
                | Shape::MissingInclusionProof(_)
                | Shape::MissingSigningTimeEvidence
                | Shape::MissingCheckpoint => Unverified::NotInLog {
                    at,
                    detail: detail(e.to_string()),
                },
                other => Unverified::BadSignature {
                    at,
                    detail: detail(other.to_string()),
                },
            }
        }
        Failed::ArtifactMismatch(text) => match other_digest {
            Some(digest) => Unverified::OtherDigest {
                at,
                digest: digest.to_string(),
            },
            None => Unverified::BadSignature {
                at,
                detail: detail(format!("the payload is not what was signed ({text})")),
            },
        },
        other => Unverified::BadSignature {
            at,
            detail: detail(other.to_string()),
        },
    }
}

/// After the verifier accepted a keyless signature: is its signer the one `keyless` names?
fn signer(
    keyless: &Keyless,
    found: Option<&sigstore_verify::SubjectAltName>,
    at: &str,
) -> Result<(), Unverified> {
    match found {
        Some(san) if keyless.identity.admits(san.as_str()) => Ok(()),
        found => Err(Unverified::WrongIdentity {
            at: at.to_string(),
            expected: keyless.identity.to_string(),
            found: untrusted::line(found.map_or("none", |san| san.as_str()), DETAIL),
        }),
    }
}

/// The verifier's policy for `keyless`: its issuer, exactly, and any identity (checked after,
/// by [`signer`], so a pattern can match it too).
fn keyless_policy(keyless: &Keyless) -> sigstore_verify::VerificationPolicy {
    sigstore_verify::VerificationPolicy::any_identity().require_issuer(keyless.issuer.clone())
}

#[cfg(test)]
mod tests;
