//! What a mirror's `verify` demands of an image's signatures: a key's, or (keyless) a
//! certificate Fulcio issued to an identity through an OIDC issuer, chained to a trusted root.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use p256::ecdsa::VerifyingKey;
use sigstore_verify::trust_root::{TrustedRoot, SIGSTORE_PRODUCTION_TRUSTED_ROOT};
use sigstore_verify::Verifier;

/// `verify`: whose signature an image must carry to be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// `verify = { key = "cosign.pub" }`.
    Key(VerifyKey),
    /// `verify = { issuer = …, identity = … }`.
    Keyless(Keyless),
}

impl fmt::Display for Verify {
    /// What an image must carry, as `check` says it: "signed with the key cosign.pub".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::Key(key) => write!(f, "signed with the key {}", key.path.display()),
            Verify::Keyless(keyless) => write!(
                f,
                "signed keyless by {} through {}, under {}",
                keyless.identity, keyless.issuer, keyless.root.name
            ),
        }
    }
}

/// The key an image's cosign signature must verify with.
#[derive(Clone)]
pub struct VerifyKey {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    pub key: VerifyingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for VerifyKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for VerifyKey {}

impl Hash for VerifyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.to_encoded_point(true).as_bytes().hash(state);
    }
}

/// A keyless signer: who (the certificate's subject alternative name), vouched for by which
/// OIDC issuer, under which trusted root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Keyless {
    /// The OIDC issuer the certificate names, exactly (`https://token.actions.githubusercontent.com`).
    pub issuer: String,
    pub identity: Identity,
    pub root: Arc<TrustRoot>,
}

/// The signer's identity: the certificate's SAN (a workflow URI, an e-mail address).
#[derive(Debug, Clone)]
pub enum Identity {
    /// `identity`: exactly this.
    Exact(String),
    /// `identity_regexp`: the whole SAN matches this pattern.
    Pattern(regex::Regex),
}

impl Identity {
    /// Whether the certificate's SAN `found` is this identity.
    pub fn admits(&self, found: &str) -> bool {
        match self {
            Identity::Exact(expected) => expected == found,
            Identity::Pattern(pattern) => pattern.is_match(found),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Exact(expected) => f.write_str(expected),
            Identity::Pattern(pattern) => write!(f, "one matching {}", pattern.as_str()),
        }
    }
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Identity::Exact(a), Identity::Exact(b)) => a == b,
            (Identity::Pattern(a), Identity::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for Identity {}

impl Hash for Identity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Identity::Exact(text) => (0u8, text).hash(state),
            Identity::Pattern(pattern) => (1u8, pattern.as_str()).hash(state),
        }
    }
}

/// A Sigstore trusted root (Fulcio's certificates, the transparency logs' and CT logs' keys)
/// made ready to verify with.
pub struct TrustRoot {
    /// Where it came from, for messages: a file, or the public-good instance's, built in.
    pub name: String,
    /// The SHA-256 of its JSON, which tells two roots apart.
    pub digest: String,
    pub verifier: Verifier,
}

impl TrustRoot {
    /// The Sigstore public-good instance's root (Fulcio, Rekor at sigstore.dev), as the
    /// `sigstore-trust-root` crate embeds it.
    /// Built once per process and shared.
    pub fn public_good() -> Result<Arc<Self>, String> {
        static ROOT: OnceLock<Result<Arc<TrustRoot>, String>> = OnceLock::new();
        ROOT.get_or_init(|| {
            Self::from_json(
                "Sigstore's public-good trusted root",
                SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            )
            .map(Arc::new)
        })
        .clone()
    }

    /// A trusted root in Sigstore's JSON form (`trusted_root.json`, as `cosign trusted-root
    /// create` or a TUF repository gives it).
    pub fn from_json(name: &str, json: &str) -> Result<Self, String> {
        let root = TrustedRoot::from_json(json).map_err(|e| e.to_string())?;
        if !root
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(format!(
                "its mediaType is {:?}, not application/vnd.dev.sigstore.trustedroot+json",
                crate::untrusted::line(&root.media_type, 100)
            ));
        }
        // Keyless signatures need all three: a CA for the certificate, a CT log for its SCT,
        // a transparency log (or a timestamp authority) for when it signed.
        if root.certificate_authorities.is_empty() {
            return Err("it names no certificate authority (certificateAuthorities)".into());
        }
        if root.ctlogs.is_empty() {
            return Err("it names no certificate-transparency log (ctlogs)".into());
        }
        if root.tlogs.is_empty() && root.timestamp_authorities.is_empty() {
            return Err("it names no transparency log (tlogs) nor timestamp authority".into());
        }
        let verifier = Verifier::new(&root).map_err(|e| e.to_string())?;
        Ok(TrustRoot {
            name: name.to_string(),
            digest: crate::digest::of(crate::digest::Algorithm::Sha256, json.as_bytes()),
            verifier,
        })
    }
}

impl fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustRoot")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl PartialEq for TrustRoot {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for TrustRoot {}

impl Hash for TrustRoot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}
