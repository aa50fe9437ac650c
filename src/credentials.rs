//! Registry credentials: where they come from, and how they are kept out of every log.
//!
//! Credentials come from mirrors.toml (`[registries."host"]`, after `${VAR}` expansion) or,
//! failing that, from the `auths` of Docker's `config.json` (`$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`). Secrets live in [`Secret`], whose `Debug` and `Display`
//! print `<redacted>`; the only way to the value is [`Secret::expose`], called where the
//! registry client is handed its auth.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::reference::canonical_registry;

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

/// A username and password for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Why Docker's config.json could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path}: the `auths` entry for {registry:?} is not valid base64 `user:password`")]
    BadAuth { path: PathBuf, registry: String },
}

/// The `auths` section of Docker's config.json, by canonical registry name.
#[derive(Debug, Default)]
pub struct DockerConfig {
    /// Where it was read from, for messages.
    path: PathBuf,
    auths: BTreeMap<String, Credentials>,
    /// Registries whose entry cannot be decoded: an error only if a job needs them.
    broken: BTreeMap<String, String>,
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
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
        }
        let file: File = serde_json::from_str(text)?;
        let mut auths = BTreeMap::new();
        let mut broken = BTreeMap::new();
        for (key, entry) in file.auths {
            let registry = registry_of_auths_key(&key);
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => match decode_auth(&auth) {
                    Some(credentials) => credentials,
                    None => {
                        broken.insert(registry, key);
                        continue;
                    }
                },
                (_, Some(username), Some(password)) => Credentials {
                    username,
                    password: Secret::new(password),
                },
                // Entries filled by a credential helper carry no secret here.
                _ => continue,
            };
            auths.insert(registry, credentials);
        }
        Ok(DockerConfig {
            path: PathBuf::new(),
            auths,
            broken,
        })
    }

    /// Credentials for a registry, under any of the names Docker files it by. An entry for it
    /// that cannot be decoded is an error (an unrelated broken entry is not).
    pub fn credentials(&self, registry: &str) -> Result<Option<&Credentials>, DockerConfigError> {
        let registry = canonical_registry(registry);
        if let Some(key) = self.broken.get(registry) {
            return Err(DockerConfigError::BadAuth {
                path: self.path.clone(),
                registry: key.clone(),
            });
        }
        Ok(self.auths.get(registry))
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
        let hub = config.credentials("docker.io").unwrap().unwrap();
        assert_eq!(hub.username, "bob");
        assert_eq!(hub.password.expose(), "s3cret");
        assert!(config
            .credentials("registry-1.docker.io")
            .unwrap()
            .is_some());
        let internal = config
            .credentials("registry.internal:5000")
            .unwrap()
            .unwrap();
        assert_eq!(internal.username, "ci");
        assert!(config.credentials("helper.example.com").unwrap().is_none());
    }

    #[test]
    fn a_broken_auth_entry_is_an_error_only_for_its_own_registry() {
        let config =
            DockerConfig::parse(r#"{"auths": {"https://x.io": {"auth": "!!!"}}}"#).unwrap();
        let err = config.credentials("x.io").unwrap_err().to_string();
        assert!(err.contains("\"https://x.io\""), "{err}");
        assert!(config.credentials("y.io").unwrap().is_none());
    }
}
