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
    auths: BTreeMap<String, Credentials>,
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
        Self::parse(&text).map_err(|err| match err {
            ParseError::Json(e) => unreadable(format!("not valid JSON: {e}")),
            ParseError::BadAuth(registry) => DockerConfigError::BadAuth {
                path: path.to_path_buf(),
                registry,
            },
        })
    }

    fn parse(text: &str) -> Result<Self, ParseError> {
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
        let file: File = serde_json::from_str(text).map_err(ParseError::Json)?;
        let mut auths = BTreeMap::new();
        for (key, entry) in file.auths {
            let registry = registry_of_auths_key(&key);
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    decode_auth(&auth).ok_or_else(|| ParseError::BadAuth(key.clone()))?
                }
                (_, Some(username), Some(password)) => Credentials {
                    username,
                    password: Secret::new(password),
                },
                // Entries filled by a credential helper carry no secret here.
                _ => continue,
            };
            auths.insert(registry, credentials);
        }
        Ok(DockerConfig { auths })
    }

    /// Credentials for a registry, under any of the names Docker files it by.
    pub fn credentials(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(canonical_registry(registry))
    }
}

enum ParseError {
    Json(serde_json::Error),
    BadAuth(String),
}

/// `https://index.docker.io/v1/` → `docker.io`; `https://host:5000` → `host:5000`.
fn registry_of_auths_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    canonical_registry(host).to_string()
}

fn decode_auth(auth: &str) -> Option<Credentials> {
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
        let config = DockerConfig::parse(&text).ok().unwrap();
        let hub = config.credentials("docker.io").unwrap();
        assert_eq!(hub.username, "bob");
        assert_eq!(hub.password.expose(), "s3cret");
        assert!(config.credentials("registry-1.docker.io").is_some());
        assert_eq!(
            config
                .credentials("registry.internal:5000")
                .unwrap()
                .username,
            "ci"
        );
        assert!(config.credentials("helper.example.com").is_none());
    }

    #[test]
    fn a_broken_auth_entry_is_named() {
        let err = DockerConfig::parse(r#"{"auths": {"x.io": {"auth": "!!!"}}}"#).err();
        assert!(matches!(err, Some(ParseError::BadAuth(k)) if k == "x.io"));
    }
}
