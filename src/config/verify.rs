//! `verify = { key = "cosign.pub" }`: the public key whose cosign signature an image must carry
//! to be mirrored, read and parsed when the config loads, so a missing or wrong key file is a
//! config error with its line, never a failure found at the first copy.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigError;
use super::expand::Resolver;

/// `verify = { … }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// A PEM public key (cosign's `cosign.pub`), relative to mirrors.toml.
    pub key: Spanned<String>,
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

impl Resolver<'_> {
    /// `section.verify`: its key file, relative to mirrors.toml, read and parsed now.
    pub(super) fn verify(
        &self,
        raw: &Spanned<RawVerify>,
        section: &str,
    ) -> Result<VerifyKey, ConfigError> {
        let file = &raw.get_ref().key;
        let field = format!("{section}.verify.key");
        let written = PathBuf::from(self.expand(file, &field)?);
        let path = match self.path.parent() {
            Some(dir) if written.is_relative() => dir.join(&written),
            _ => written,
        };
        let problem =
            |what: String| self.at(file.span(), format!("{field}: {} {what}", path.display()));
        let pem = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => problem("no such file".to_string()),
            _ => problem("cannot be read".to_string()),
        })?;
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| {
            problem(
                "is not an ECDSA P-256 public key in PEM (cosign's cosign.pub: \
                 -----BEGIN PUBLIC KEY-----)"
                    .to_string(),
            )
        })?;
        Ok(VerifyKey { path, key })
    }
}
