//! `verify`: whose signature an image must carry to be mirrored, read when the config loads,
//! so a missing key file, a bad pattern or an unreadable trusted root is a config error with
//! its line, never a failure found at the first copy.
//!
//! - `verify = { key = "cosign.pub" }`: signed with this key;
//! - `verify = { issuer = "…", identity = "…" }` (or `identity_regexp`): keyless, signed with a
//!   certificate Fulcio issued to that identity through that OIDC issuer, checked against
//!   Sigstore's public-good trusted root, or `trusted_root = "file.json"`.

use std::path::PathBuf;
use std::sync::Arc;

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use toml::Spanned;

use super::error::ConfigError;
use super::expand::Resolver;
use crate::signature::{Identity, Keyless, TrustRoot, Verify, VerifyKey};

/// `verify = { … }` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// A PEM public key (cosign's `cosign.pub`), relative to mirrors.toml.
    pub key: Option<Spanned<String>>,
    /// Keyless: the OIDC issuer the signing certificate must name.
    pub issuer: Option<Spanned<String>>,
    /// Keyless: the certificate's identity (SAN), exactly.
    pub identity: Option<Spanned<String>>,
    /// Keyless: a pattern the whole identity matches.
    pub identity_regexp: Option<Spanned<String>>,
    /// Keyless: a Sigstore trusted root (JSON) instead of the public-good one.
    pub trusted_root: Option<Spanned<String>>,
}

/// The longest `identity_regexp` accepted.
const MAX_PATTERN: usize = 1024;

impl Resolver<'_> {
    /// `section.verify`, its files read relative to mirrors.toml and parsed now.
    pub(super) fn verify(
        &self,
        raw: &Spanned<RawVerify>,
        section: &str,
    ) -> Result<Verify, ConfigError> {
        let written = raw.get_ref();
        let field = format!("{section}.verify");
        let keyless = written.issuer.is_some()
            || written.identity.is_some()
            || written.identity_regexp.is_some()
            || written.trusted_root.is_some();
        match (&written.key, keyless) {
            (Some(key), false) => Ok(Verify::Key(self.verify_key(key, &field)?)),
            (Some(_), true) => Err(self.at(
                raw.span(),
                format!("{field}: either `key` or `issuer` with `identity` (keyless), not both"),
            )),
            (None, false) => Err(self.at(
                raw.span(),
                format!(
                    "{field}: say whose signature: `key = \"cosign.pub\"`, or keyless \
                     `issuer = \"…\"` with `identity = \"…\"` or `identity_regexp = \"…\"`"
                ),
            )),
            (None, true) => Ok(Verify::Keyless(self.keyless(raw, &field)?)),
        }
    }

    /// A file named in `field`, relative to mirrors.toml.
    fn beside(&self, file: &Spanned<String>, field: &str) -> Result<PathBuf, ConfigError> {
        let written = PathBuf::from(self.expand(file, field)?);
        Ok(match self.path.parent() {
            Some(dir) if written.is_relative() => dir.join(&written),
            _ => written,
        })
    }

    /// The text of the file named in `field`.
    fn read_beside(
        &self,
        file: &Spanned<String>,
        field: &str,
    ) -> Result<(PathBuf, String), ConfigError> {
        let path = self.beside(file, field)?;
        let problem =
            |what: &str| self.at(file.span(), format!("{field}: {} {what}", path.display()));
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => problem("no such file"),
            _ => problem("cannot be read"),
        })?;
        Ok((path, text))
    }

    fn verify_key(&self, file: &Spanned<String>, field: &str) -> Result<VerifyKey, ConfigError> {
        let field = format!("{field}.key");
        let (path, pem) = self.read_beside(file, &field)?;
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|_| {
            self.at(
                file.span(),
                format!(
                    "{field}: {} is not an ECDSA P-256 public key in PEM (cosign's \
                     cosign.pub: -----BEGIN PUBLIC KEY-----)",
                    path.display()
                ),
            )
        })?;
        Ok(VerifyKey { path, key })
    }

    fn keyless(&self, raw: &Spanned<RawVerify>, field: &str) -> Result<Keyless, ConfigError> {
        let written = raw.get_ref();
        let Some(issuer) = &written.issuer else {
            return Err(self.at(
                raw.span(),
                format!(
                    "{field}: keyless needs `issuer`, the OIDC issuer the certificate names \
                     (GitHub Actions: \"https://token.actions.githubusercontent.com\")"
                ),
            ));
        };
        let issuer_text = self.expand(issuer, &format!("{field}.issuer"))?;
        if issuer_text.trim().is_empty() {
            return Err(self.at(issuer.span(), format!("{field}.issuer: is empty")));
        }
        let identity = match (&written.identity, &written.identity_regexp) {
            (Some(exact), None) => {
                let text = self.expand(exact, &format!("{field}.identity"))?;
                if text.trim().is_empty() {
                    return Err(self.at(exact.span(), format!("{field}.identity: is empty")));
                }
                Identity::Exact(text)
            }
            (None, Some(pattern)) => {
                let name = format!("{field}.identity_regexp");
                let text = self.expand(pattern, &name)?;
                if text.len() > MAX_PATTERN {
                    return Err(self.at(
                        pattern.span(),
                        format!("{name}: longer than {MAX_PATTERN} characters"),
                    ));
                }
                // The whole identity must match, so `…@refs/tags/v.*` cannot be satisfied by
                // a workflow of another repository that merely contains it.
                let anchored = format!("^(?:{text})$");
                let compiled = regex::Regex::new(&anchored).map_err(|e| {
                    self.at(
                        pattern.span(),
                        format!("{name}: not a regular expression: {e}"),
                    )
                })?;
                Identity::Pattern(compiled)
            }
            (Some(_), Some(_)) => {
                return Err(self.at(
                    raw.span(),
                    format!("{field}: `identity` or `identity_regexp`, not both"),
                ))
            }
            (None, None) => {
                return Err(self.at(
                    raw.span(),
                    format!(
                        "{field}: keyless needs `identity` (the certificate's identity, e.g. \
                         the release workflow's URL) or `identity_regexp`"
                    ),
                ))
            }
        };
        let root = match &written.trusted_root {
            None => TrustRoot::public_good()
                .map_err(|e| self.at(raw.span(), format!("{field}: {e}")))?,
            Some(file) => {
                let name = format!("{field}.trusted_root");
                let (path, json) = self.read_beside(file, &name)?;
                let shown = path.display().to_string();
                let root = TrustRoot::from_json(&shown, &json).map_err(|e| {
                    self.at(
                        file.span(),
                        format!("{name}: {shown} is not a Sigstore trusted root: {e}"),
                    )
                })?;
                Arc::new(root)
            }
        };
        Ok(Keyless {
            issuer: issuer_text,
            identity,
            root,
        })
    }
}
