//! Each registry's settings: credentials, `ca_file`, `endpoint`, Amazon ECR, `mirror_prefix`,
//! its own `reserve`; and, once the images are known, settings for every registry in use
//! (loopback speaks plain HTTP, Docker's config.json fills in missing credentials).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::expand::Resolver;
use super::file::{RawCreate, RawRegistry};
use super::{ConfigError, Endpoint, RegistrySettings};
use crate::aws::ecr::{EcrHost, EcrSettings, RepositoryCreation, ENCRYPTIONS, TAG_MUTABILITIES};
use crate::credentials::{Credentials, DockerConfig, DockerLogin, Secret};
use crate::reference::{canonical_registry, is_layout, is_loopback, Repository};

/// Gives every registry in use settings: loopback speaks plain HTTP, and credentials the file
/// does not give come from Docker's config.json (for a registry with an `endpoint`, only with
/// `endpoint_gets_docker_login`).
pub(super) fn settle_registries<'a>(
    path: &Path,
    registries: &mut BTreeMap<String, RegistrySettings>,
    in_use: impl IntoIterator<Item = &'a String>,
    docker: &DockerConfig,
) -> Result<(), ConfigError> {
    // A layout is a directory: no credentials, plain HTTP or ECR, so no settings.
    for registry in in_use.into_iter().filter(|r| !is_layout(r)) {
        let settings = registries
            .entry(canonical_registry(registry).to_string())
            .or_insert_with(|| RegistrySettings::implicit(registry));
        // An endpoint is another host: Docker's login for the registry goes there only when
        // the registry's section says so.
        let docker_login_goes = settings.endpoint.is_none() || settings.endpoint_gets_docker_login;
        if settings.credentials.is_none() && settings.ecr.is_none() && docker_login_goes {
            let login = docker.login(registry).map_err(|e| ConfigError::Whole {
                path: path.to_path_buf(),
                message: format!("cannot use Docker's credentials for {registry}: {e}"),
            })?;
            match login {
                Some(DockerLogin::Stored(credentials)) => settings.credentials = Some(credentials),
                Some(DockerLogin::Helper(helper)) => settings.helper = Some(helper),
                None => {}
            }
        }
    }
    Ok(())
}

/// `registries."host".field`, as messages name a key.
fn key_of(name: &Spanned<String>, field: &str) -> String {
    format!("registries.{:?}.{field}", name.get_ref())
}

impl Resolver<'_> {
    /// Every `[registries."host"]` section, by canonical name.
    pub(super) fn registries(
        &self,
        raw: &BTreeMap<Spanned<String>, RawRegistry>,
    ) -> Result<BTreeMap<String, RegistrySettings>, ConfigError> {
        let mut registries = BTreeMap::new();
        for (name, settings) in raw {
            let key = canonical_registry(name.get_ref()).to_string();
            let settings = self.registry_settings(name, settings)?;
            registries.insert(key, settings);
        }
        Ok(registries)
    }

    /// One `[registries."host"]` section.
    fn registry_settings(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
    ) -> Result<RegistrySettings, ConfigError> {
        let key = |field: &str| key_of(name, field);
        let credentials = self.credentials(name, raw)?;
        let ca_file = self.ca_file(name, raw)?;
        let reserve = match &raw.reserve {
            Some(n) => Some(self.count(n, &key("reserve"))?),
            None => None,
        };
        let mirror_prefix = self.mirror_prefix(name, raw)?;
        let endpoint = match &raw.endpoint {
            Some(written) => Some(self.endpoint(written, &key("endpoint"), raw.insecure)?),
            None => None,
        };
        let endpoint_gets_docker_login =
            self.endpoint_gets_docker_login(name, raw, endpoint.as_ref(), credentials.as_ref())?;
        let ecr = self.ecr_settings(name, raw)?;
        let tag_api = self.tag_api(name, raw, endpoint.as_ref())?;
        let requests_per_second = match &raw.requests_per_second {
            Some(n) => match u32::try_from(*n.get_ref()) {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(self.at(
                        n.span(),
                        format!(
                            "{} must be a whole number of requests, 0 for no cap, not {}",
                            key("requests_per_second"),
                            n.get_ref()
                        ),
                    ))
                }
            },
            None => super::default_requests_per_second(name.get_ref()),
        };
        if let (Some(_), Some(user)) = (&ecr, &raw.username) {
            return Err(self.at(
                user.span(),
                format!(
                    "{}: an ECR registry's credentials come from GetAuthorizationToken; \
                     drop username and password, or set {} = false",
                    key("username"),
                    key("ecr")
                ),
            ));
        }
        Ok(RegistrySettings {
            credentials,
            // An endpoint says its scheme; else a CA to trust means HTTPS, on loopback too.
            plain_http: match &endpoint {
                Some(endpoint) => endpoint.scheme == "http",
                None => raw
                    .insecure
                    .unwrap_or_else(|| ca_file.is_none() && is_loopback(name.get_ref())),
            },
            ca_file,
            reserve,
            ecr,
            mirror_prefix,
            endpoint,
            endpoint_gets_docker_login,
            helper: None,
            requests_per_second,
            tag_api,
        })
    }

    /// `username` and `password`: both or neither.
    fn credentials(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
    ) -> Result<Option<Credentials>, ConfigError> {
        let key = |field: &str| key_of(name, field);
        Ok(match (&raw.username, &raw.password) {
            (None, None) => None,
            (Some(user), Some(password)) => Some(Credentials {
                username: self.expand(user, &key("username"))?,
                password: Secret::new(self.expand(password, &key("password"))?),
            }),
            (Some(user), None) => {
                return Err(self.at(
                    user.span(),
                    format!("{} is set but {} is not", key("username"), key("password")),
                ))
            }
            (None, Some(password)) => {
                return Err(self.at(
                    password.span(),
                    format!("{} is set but {} is not", key("password"), key("username")),
                ))
            }
        })
    }

    /// `ca_file`: relative to mirrors.toml, read now, holding certificates and no key.
    fn ca_file(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let key = |field: &str| key_of(name, field);
        Ok(match &raw.ca_file {
            Some(file) if raw.insecure == Some(true) => {
                return Err(self.at(
                    file.span(),
                    format!(
                        "{} is a CA for HTTPS, but {} = true speaks plain HTTP: drop one",
                        key("ca_file"),
                        key("insecure")
                    ),
                ))
            }
            Some(file) => {
                // Relative to the config file, so the file means the same from any directory.
                let written = PathBuf::from(self.expand(file, &key("ca_file"))?);
                let path = match self.path.parent() {
                    Some(dir) if written.is_relative() => dir.join(&written),
                    _ => written,
                };
                let problem = match std::fs::read_to_string(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Some("no such file".to_string())
                    }
                    Err(_) => Some("cannot be read".to_string()),
                    // A CA bundle never needs a key, and one would be copied wherever the
                    // bundle goes (`regmirror clients`).
                    Ok(pem) => match super::pem::private_key(&pem) {
                        Some(label) => Some(format!(
                            "holds a private key ({label}): a CA file needs only the CA's certificates; take the key out of it"
                        )),
                        // TLS libraries skip what is not a certificate: a wrong file would be
                        // silently ignored, so look for one here.
                        None if super::pem::certificates(&pem).is_empty() => {
                            Some("holds no PEM certificate".to_string())
                        }
                        None => None,
                    },
                };
                if let Some(problem) = problem {
                    return Err(self.at(
                        file.span(),
                        format!("{}: {} {problem}", key("ca_file"), path.display()),
                    ));
                }
                Some(path)
            }
            None => None,
        })
    }

    /// `mirror_prefix`, without slashes at either end; judged as a repository path.
    fn mirror_prefix(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
    ) -> Result<Option<String>, ConfigError> {
        let key = |field: &str| key_of(name, field);
        Ok(match &raw.mirror_prefix {
            Some(written) => {
                let prefix = self.expand(written, &key("mirror_prefix"))?;
                let prefix = prefix.trim_matches('/').to_string();
                if !prefix.is_empty() {
                    // Judged as a repository path would be.
                    Repository::parse(&format!("r.io/{prefix}"), true).map_err(|_| {
                        self.at(
                            written.span(),
                            format!(
                                "{} {prefix:?} is not a repository path: lower case letters, digits and separators (`docker-hub`, `mirror/hub`), or \"\" for none",
                                key("mirror_prefix")
                            ),
                        )
                    })?;
                }
                Some(prefix)
            }
            None => None,
        })
    }

    /// `endpoint_gets_docker_login`: only beside an `endpoint`, and not beside this section's
    /// own credentials.
    fn endpoint_gets_docker_login(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
        endpoint: Option<&Endpoint>,
        credentials: Option<&Credentials>,
    ) -> Result<bool, ConfigError> {
        let key = |field: &str| key_of(name, field);
        Ok(match &raw.endpoint_gets_docker_login {
            Some(set) if endpoint.is_none() => {
                return Err(self.at(
                    set.span(),
                    format!(
                        "{} is set but {} is not: it says who gets Docker's login for this \
                         registry when an endpoint serves it",
                        key("endpoint_gets_docker_login"),
                        key("endpoint")
                    ),
                ))
            }
            Some(set) if *set.get_ref() && credentials.is_some() => {
                return Err(self.at(
                    set.span(),
                    format!(
                        "{}: this section's username and password are what the endpoint \
                         gets; Docker's login is never used beside them: drop one",
                        key("endpoint_gets_docker_login")
                    ),
                ))
            }
            Some(set) => *set.get_ref(),
            None => false,
        })
    }

    /// `endpoint = "https://host[:port][/path]"`: plain HTTP only with `insecure = true` or on
    /// loopback, and then `insecure` must not say otherwise.
    fn endpoint(
        &self,
        written: &Spanned<String>,
        key: &str,
        insecure: Option<bool>,
    ) -> Result<Endpoint, ConfigError> {
        let text = self.expand(written, key)?;
        let refuse = |why: String| self.at(written.span(), format!("{key} {text:?}: {why}"));
        let url = reqwest::Url::parse(&text).map_err(|e| {
            refuse(format!(
                "not a URL ({e}); write it like \"https://proxy.example.com/docker-remote\""
            ))
        })?;
        let scheme = url.scheme().to_string();
        if scheme != "http" && scheme != "https" {
            return Err(refuse(format!(
                "the scheme is {scheme}:, not https: or http:"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "holds credentials: give them as username and password of this registry".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("takes no query or fragment".into()));
        }
        let Some(host) = url.host_str() else {
            return Err(refuse("names no host".into()));
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let prefix = url.path().trim_matches('/').to_string();
        if !prefix.is_empty() && Repository::parse(&format!("r.io/{prefix}"), true).is_err() {
            return Err(refuse(format!(
                "its path {prefix:?} is not a repository path (lower case letters, digits, separators)"
            )));
        }
        match (scheme.as_str(), insecure) {
            ("http", Some(false)) => {
                return Err(refuse(
                    "is plain HTTP, but insecure = false says HTTPS".into(),
                ))
            }
            ("http", None) if !is_loopback(&authority) => {
                return Err(refuse(
                    "is plain HTTP: set insecure = true for this registry to allow it".into(),
                ))
            }
            ("https", Some(true)) => {
                return Err(refuse(
                    "is HTTPS, but insecure = true says plain HTTP: drop one".into(),
                ))
            }
            _ => {}
        }
        Ok(Endpoint {
            scheme,
            authority,
            prefix,
        })
    }

    /// `ecr`, `region` and `[create]` of a registry: ECR when its name says so or `ecr = true`.
    fn ecr_settings(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
    ) -> Result<Option<EcrSettings>, ConfigError> {
        let key = |field: &str| key_of(name, field);
        let by_name = EcrHost::parse(name.get_ref());
        let is_ecr = match &raw.ecr {
            Some(flag) => *flag.get_ref(),
            None => by_name.is_some(),
        };
        if !is_ecr {
            let only_ecr = [
                raw.region.as_ref().map(|r| (r.span(), "region")),
                raw.create.as_ref().map(|c| (c.span(), "create")),
            ];
            if let Some((span, field)) = only_ecr.into_iter().flatten().next() {
                return Err(self.at(
                    span,
                    format!(
                        "{} applies only to Amazon ECR; set {} = true if this registry is ECR",
                        key(field),
                        key("ecr")
                    ),
                ));
            }
            return Ok(None);
        }
        let mut settings = by_name
            .as_ref()
            .map(EcrSettings::for_host)
            .unwrap_or_default();
        if let Some(region) = &raw.region {
            settings.region = Some(self.expand(region, &key("region"))?);
        }
        if let Some(create) = &raw.create {
            settings.create = self.repository_creation(create.get_ref(), &key("create"))?;
        }
        Ok(Some(settings))
    }

    fn repository_creation(
        &self,
        raw: &RawCreate,
        table: &str,
    ) -> Result<RepositoryCreation, ConfigError> {
        let choice = |value: &Option<Spanned<String>>, field: &str, allowed: &[&str]| {
            let Some(value) = value else {
                return Ok(None);
            };
            let upper = value.get_ref().to_ascii_uppercase();
            if allowed.contains(&upper.as_str()) {
                Ok(Some(upper))
            } else {
                Err(self.at(
                    value.span(),
                    format!(
                        "{table}.{field} is {:?}; expected one of {}",
                        value.get_ref(),
                        allowed.join(", ")
                    ),
                ))
            }
        };
        let encryption = choice(&raw.encryption, "encryption", ENCRYPTIONS)?;
        let kms_key = match &raw.kms_key {
            Some(key) if !encryption.as_deref().is_some_and(|e| e.starts_with("KMS")) => {
                return Err(self.at(
                    key.span(),
                    format!("{table}.kms_key needs {table}.encryption = \"KMS\" or \"KMS_DSSE\""),
                ))
            }
            Some(key) => Some(self.expand(key, &format!("{table}.kms_key"))?),
            None => None,
        };
        let mut tags = BTreeMap::new();
        for (name, value) in &raw.tags {
            tags.insert(
                name.clone(),
                self.expand(value, &format!("{table}.tags.{name}"))?,
            );
        }
        Ok(RepositoryCreation {
            scan_on_push: raw.scan_on_push,
            tag_mutability: choice(&raw.tag_mutability, "tag_mutability", TAG_MUTABILITIES)?,
            encryption,
            kms_key,
            tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::resolve::tests::{resolve_with, targets};
    use super::*;

    #[test]
    fn a_ca_file_means_https_even_on_loopback_and_contradicts_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(&ca, pem).unwrap();
        let text = |insecure: &str| {
            format!(
                "images = [\"127.0.0.1:5000/app:1\"]\n[defaults]\ntarget = \"r.io/m\"\n\
                 [registries.\"127.0.0.1:5000\"]\nca_file = \"{}\"\n{insecure}",
                ca.display()
            )
        };
        let config = resolve_with(&text(""), &[]).unwrap();
        assert!(!config.registry("127.0.0.1:5000").plain_http);
        let config = resolve_with(&text("insecure = false\n"), &[]).unwrap();
        assert!(!config.registry("127.0.0.1:5000").plain_http);
        let refused = resolve_with(&text("insecure = true\n"), &[]).unwrap_err();
        assert!(
            refused.contains("mirrors.toml:5:11: registries.\"127.0.0.1:5000\".ca_file is a CA"),
            "{refused}"
        );
    }

    #[test]
    fn docker_hub_is_capped_unless_told_and_others_only_when_told() {
        let text = "images = [\"nginx:1\", \"r.io/a:1\"]\n[defaults]\ntarget = \"t.io/m\"\n";
        let config = resolve_with(text, &[]).unwrap();
        assert_eq!(
            config.registry("docker.io").requests_per_second,
            Some(crate::config::DOCKER_HUB_REQUESTS_PER_SECOND)
        );
        assert_eq!(config.registry("r.io").requests_per_second, None);
        let set = format!("{text}[registries.\"docker.io\"]\nrequests_per_second = 0\n[registries.\"r.io\"]\nrequests_per_second = 5\n");
        let config = resolve_with(&set, &[]).unwrap();
        assert_eq!(
            config.registry("docker.io").requests_per_second,
            None,
            "0: no cap"
        );
        assert_eq!(config.registry("r.io").requests_per_second, Some(5));
        let bad = format!("{text}[registries.\"r.io\"]\nrequests_per_second = -2\n");
        let refused = resolve_with(&bad, &[]).unwrap_err().to_string();
        assert!(
            refused.contains("registries.\"r.io\".requests_per_second must be a whole number"),
            "{refused}"
        );
    }

    #[test]
    fn dollar_escapes_and_literal_dollars_survive() {
        let text = "images = [\"a\"]\n[defaults]\ntarget = \"r.io/${P}\"\n[registries.\"r.io\"]\nusername = \"u\"\npassword = \"p$$w$d\"\n";
        let config = resolve_with(text, &[("P", "mirror")]).unwrap();
        assert_eq!(targets(&config), ["r.io/mirror/a:latest"]);
        let creds = config.registry("r.io").credentials.unwrap();
        assert_eq!(creds.password.expose(), "p$w$d");
    }

    #[test]
    fn ecr_registries_by_name_or_flag_with_creation_settings() {
        let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let text = format!(
            "images = [\"a\"]\n[defaults]\ntarget = \"{ecr}/m\"\n\
             [registries.\"vpce.internal\"]\necr = true\nregion = \"${{R}}\"\n\
             [registries.\"vpce.internal\".create]\nscan_on_push = true\ntag_mutability = \"Immutable\"\n\
             encryption = \"kms\"\nkms_key = \"alias/mirror\"\ntags = {{ team = \"platform\" }}\n"
        );
        let config = resolve_with(&text, &[("R", "eu-central-1")]).unwrap();
        // By name, although mirrors.toml does not list it: account and region from the host.
        assert_eq!(
            config.registry(ecr).ecr,
            Some(EcrSettings {
                region: Some("eu-west-1".into()),
                account: Some("123456789012".into()),
                create: RepositoryCreation::default(),
            })
        );
        let vpce = config.registry("vpce.internal").ecr.unwrap();
        assert_eq!(vpce.region.as_deref(), Some("eu-central-1"));
        assert_eq!(vpce.account, None);
        assert_eq!(
            vpce.create,
            RepositoryCreation {
                scan_on_push: Some(true),
                tag_mutability: Some("IMMUTABLE".into()),
                encryption: Some("KMS".into()),
                kms_key: Some("alias/mirror".into()),
                tags: [("team".to_string(), "platform".to_string())].into(),
            }
        );
        assert_eq!(config.registry("ghcr.io").ecr, None);
        // `ecr = false` turns it off for a host named like ECR.
        let off = format!("{text}[registries.\"{ecr}\"]\necr = false\n");
        assert_eq!(
            resolve_with(&off, &[("R", "x")]).unwrap().registry(ecr).ecr,
            None
        );

        let base = "images = [\"a\"]\n[defaults]\ntarget = \"r.io\"\n";
        for (bad, expected) in [
            (
                "[registries.\"x.io\"]\nregion = \"eu-west-1\"\n",
                "mirrors.toml:5:10: registries.\"x.io\".region applies only to Amazon ECR; set registries.\"x.io\".ecr = true",
            ),
            (
                "[registries.\"x.io\".create]\nscan_on_push = true\n",
                "registries.\"x.io\".create applies only to Amazon ECR",
            ),
            (
                "[registries.\"x.io\"]\necr = true\n[registries.\"x.io\".create]\ntag_mutability = \"sometimes\"\n",
                "mirrors.toml:7:18: registries.\"x.io\".create.tag_mutability is \"sometimes\"; expected one of MUTABLE, IMMUTABLE",
            ),
            (
                "[registries.\"x.io\"]\necr = true\n[registries.\"x.io\".create]\nkms_key = \"k\"\n",
                "registries.\"x.io\".create.kms_key needs registries.\"x.io\".create.encryption = \"KMS\"",
            ),
            (
                "[registries.\"x.io\"]\necr = true\n[registries.\"x.io\".create]\nscan = true\n",
                "unknown key `scan`",
            ),
            (
                "[registries.\"x.io\"]\necr = true\nusername = \"AWS\"\npassword = \"p\"\n",
                "registries.\"x.io\".username: an ECR registry's credentials come from GetAuthorizationToken",
            ),
        ] {
            let err = resolve_with(&format!("{base}{bad}"), &[]).unwrap_err();
            assert!(err.contains(expected), "{bad:?}\n{err}");
        }
    }
}
