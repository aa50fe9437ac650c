//! Registry credentials: where they come from, and how they are kept out of every log.
//!
//! Credentials come from mirrors.toml (`[registries."host"]`, after `${VAR}` expansion) or,
//! failing that, from Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), the way Docker reads it: a credential helper named for the
//! registry in `credHelpers` first, then the registry's `auths` entry, then the helper of
//! every registry, `credsStore`. Helpers are run when a registry is first used ([`helpers`]),
//! not when the config is read. Secrets live in [`Secret`], whose `Debug` and `Display` print
//! `<redacted>`; the only way to the value is [`Secret::expose`], called where a request is
//! given its `Authorization`.

pub mod helpers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

pub use self::helpers::{Helper, HelperError, HelperLogins};
use crate::reference::canonical_registry;

/// The username Docker uses to say that the secret is an identity (refresh) token, to be
/// exchanged at the registry's token realm (OAuth2 `grant_type=refresh_token`).
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A password or token. Prints as `<redacted>` however it is formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: for the one place that sends it to a registry.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A username and password for one registry; a username of [`IDENTITY_TOKEN_USER`] makes the
/// password an identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    /// The identity (refresh) token, when these credentials are one rather than a password.
    pub fn identity_token(&self) -> Option<&Secret> {
        (self.username == IDENTITY_TOKEN_USER).then_some(&self.password)
    }
}

/// What Docker's config.json says about one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerLogin {
    /// Credentials kept in the file itself (`auths`).
    Stored(Credentials),
    /// Credentials kept by a helper program, asked when the registry is first used.
    Helper(Helper),
}

/// Why Docker's config.json could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path}: the `auths` entry for {registry:?} is not valid base64 `user:password`")]
    BadAuth { path: PathBuf, registry: String },
    #[error("{path}: credential helper name {name:?} (in {key}) is not a program name")]
    BadHelper {
        path: PathBuf,
        key: &'static str,
        name: String,
    },
}

/// What Docker's config.json holds, by canonical registry name.
#[derive(Debug, Default)]
pub struct DockerConfig {
    /// Where it was read from, for messages.
    path: PathBuf,
    auths: BTreeMap<String, Credentials>,
    /// Registries with an `auths` entry that holds no secret: logged in through a helper.
    placeholders: std::collections::BTreeSet<String>,
    /// Registries whose entry cannot be decoded: an error only if a job needs them.
    broken: BTreeMap<String, String>,
    /// `credHelpers`: the helper of each registry named there.
    helpers: BTreeMap<String, String>,
    /// `credsStore`: the helper of every other registry.
    store: Option<String>,
}

impl DockerConfig {
    /// Reads `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. A missing file is an
    /// empty config; a file that exists but cannot be read or parsed is an error naming it.
    pub fn load_default() -> Result<Self, DockerConfigError> {
        let path = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".docker").join("config.json"),
                None => return Ok(Self::default()),
            },
        };
        if !path.exists() {
            return Ok(Self::default());
        }
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self, DockerConfigError> {
        let unreadable = |message: String| DockerConfigError::Unreadable {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let mut config =
            Self::parse(&text).map_err(|e| unreadable(format!("not valid JSON: {e}")))?;
        config.path = path.to_path_buf();
        Ok(config)
    }

    fn parse(text: &str) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            auths: BTreeMap<String, Entry>,
            #[serde(default, rename = "credHelpers")]
            cred_helpers: BTreeMap<String, String>,
            #[serde(rename = "credsStore")]
            creds_store: Option<String>,
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
            identitytoken: Option<String>,
        }
        let file: File = serde_json::from_str(text)?;
        let mut config = DockerConfig {
            helpers: file
                .cred_helpers
                .into_iter()
                .map(|(key, name)| (registry_of_auths_key(&key), name))
                .collect(),
            store: file.creds_store.filter(|name| !name.is_empty()),
            ..DockerConfig::default()
        };
        for (key, entry) in file.auths {
            let registry = registry_of_auths_key(&key);
            let credentials = match (
                entry.identitytoken,
                entry.auth,
                entry.username,
                entry.password,
            ) {
                (Some(token), _, _, _) if !token.is_empty() => Credentials {
                    username: IDENTITY_TOKEN_USER.to_string(),
                    password: Secret::new(token),
                },
                (_, Some(auth), _, _) if !auth.is_empty() => match decode_auth(&auth) {
                    Some(credentials) => credentials,
                    None => {
                        config.broken.insert(registry, key);
                        continue;
                    }
                },
                (_, _, Some(username), Some(password)) => Credentials {
                    username,
                    password: Secret::new(password),
                },
                // Entries filled by a credential helper carry no secret here.
                _ => {
                    config.placeholders.insert(registry);
                    continue;
                }
            };
            config.auths.insert(registry, credentials);
        }
        Ok(config)
    }

    /// How to get credentials for a registry, under any of the names Docker files it by, in
    /// Docker's order: `credHelpers`, `auths`, `credsStore`. An entry for it that cannot be
    /// decoded is an error (an unrelated broken entry is not); `None` is anonymous.
    pub fn login(&self, registry: &str) -> Result<Option<DockerLogin>, DockerConfigError> {
        let registry = canonical_registry(registry);
        if let Some(name) = self.helpers.get(registry) {
            return self.helper(name, "credHelpers", registry, true).map(Some);
        }
        if let Some(key) = self.broken.get(registry) {
            return Err(DockerConfigError::BadAuth {
                path: self.path.clone(),
                registry: key.clone(),
            });
        }
        if let Some(credentials) = self.auths.get(registry) {
            return Ok(Some(DockerLogin::Stored(credentials.clone())));
        }
        match &self.store {
            // A registry listed in `auths` was logged in to: the store must know it.
            Some(name) => {
                let listed = self.placeholders.contains(registry);
                self.helper(name, "credsStore", registry, listed).map(Some)
            }
            None => Ok(None),
        }
    }

    fn helper(
        &self,
        name: &str,
        key: &'static str,
        registry: &str,
        required: bool,
    ) -> Result<DockerLogin, DockerConfigError> {
        Helper::new(name, key, registry, required)
            .map(DockerLogin::Helper)
            .ok_or_else(|| DockerConfigError::BadHelper {
                path: self.path.clone(),
                key,
                name: name.to_string(),
            })
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000` → `host:5000`.
fn registry_of_auths_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    canonical_registry(host).to_string()
}

/// Base64 of `user:password`, as Docker's `auths` and ECR's authorization tokens hold them.
pub fn decode_auth(auth: &str) -> Option<Credentials> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials {
        username: username.to_string(),
        password: Secret::new(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            username: "bob".into(),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{c:?} {} {:#?}", c.password, c);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    fn stored(config: &DockerConfig, registry: &str) -> Option<Credentials> {
        match config.login(registry).unwrap()? {
            DockerLogin::Stored(credentials) => Some(credentials),
            DockerLogin::Helper(_) => None,
        }
    }

    fn helper(config: &DockerConfig, registry: &str) -> Option<Helper> {
        match config.login(registry).unwrap()? {
            DockerLogin::Helper(helper) => Some(helper),
            DockerLogin::Stored(_) => None,
        }
    }

    #[test]
    fn auths_are_read_under_every_docker_hub_alias() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "registry.internal:5000": {{"username": "ci", "password": "pw"}},
                "helper.example.com": {{}}
            }}, "credsStore": "desktop"}}"#
        );
        let config = DockerConfig::parse(&text).unwrap();
        let hub = stored(&config, "docker.io").unwrap();
        assert_eq!(hub.username, "bob");
        assert_eq!(hub.password.expose(), "s3cret");
        assert!(stored(&config, "registry-1.docker.io").is_some());
        let internal = stored(&config, "registry.internal:5000").unwrap();
        assert_eq!(internal.username, "ci");
        // Logged in through the store: the store is asked, and must know it.
        let kept = helper(&config, "helper.example.com").unwrap();
        assert_eq!(kept.program(), "docker-credential-desktop");
        assert!(kept.required);
        assert!(!helper(&config, "quay.io").unwrap().required);
    }

    #[test]
    fn cred_helpers_win_over_auths_and_the_store_and_identity_tokens_are_kept() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let text = format!(
            r#"{{"auths": {{
                "ghcr.io": {{"auth": "{b64}"}},
                "quay.io": {{"identitytoken": "refresh-me"}}
            }}, "credHelpers": {{"ghcr.io": "gh", "https://index.docker.io/v1/": "hub"}}}}"#
        );
        let config = DockerConfig::parse(&text).unwrap();
        let gh = helper(&config, "ghcr.io").unwrap();
        assert_eq!(
            (gh.program().as_str(), gh.required),
            ("docker-credential-gh", true)
        );
        assert_eq!(
            helper(&config, "docker.io").unwrap().server_url,
            "https://index.docker.io/v1/"
        );
        assert_eq!(gh.server_url, "ghcr.io");
        let quay = stored(&config, "quay.io").unwrap();
        assert_eq!(
            quay.identity_token().map(Secret::expose),
            Some("refresh-me")
        );
        assert!(
            config.login("other.io").unwrap().is_none(),
            "no store: anonymous"
        );
        let bad = DockerConfig::parse(r#"{"credsStore": "../../bin/sh"}"#).unwrap();
        assert!(matches!(
            bad.login("x.io"),
            Err(DockerConfigError::BadHelper { .. })
        ));
    }

    #[test]
    fn a_broken_auth_entry_is_an_error_only_for_its_own_registry() {
        let config =
            DockerConfig::parse(r#"{"auths": {"https://x.io": {"auth": "!!!"}}}"#).unwrap();
        let err = config.login("x.io").unwrap_err().to_string();
        assert!(err.contains("\"https://x.io\""), "{err}");
        assert!(config.login("y.io").unwrap().is_none());
    }
}
