//! How the process runs, as mirrors.toml says: images copied at once, pulls paced, the grace
//! given at shutdown, the daemon's HTTP endpoint, and the SSM parameter listing more images.

use toml::Spanned;

use super::expand::Resolver;
use super::file::{RawConfig, RawDefaults, RawRateLimit, RawServer};
use super::{
    ConfigError, Overrides, RateLimitSettings, ServerSettings, DEFAULT_CONCURRENCY,
    DEFAULT_MAX_WAIT, DEFAULT_SHUTDOWN_GRACE,
};
use crate::aws::ssm::SsmSettings;
use crate::credentials::Secret;

/// The most images one process copies at once; beyond it a registry sees a flood.
const MAX_CONCURRENCY: i64 = 64;

impl Resolver<'_> {
    /// `[ssm]`, or `--ssm-parameter` over it.
    pub(super) fn ssm(
        &self,
        raw: &RawConfig,
        overrides: &Overrides,
    ) -> Result<Option<SsmSettings>, ConfigError> {
        let region = |region: Option<&Spanned<String>>| match region {
            Some(region) => self.expand(region, "ssm.region").map(Some),
            None => Ok(None),
        };
        let ssm = match (&overrides.ssm_parameter, &raw.ssm) {
            (Some(parameter), raw_ssm) => SsmSettings {
                parameter: parameter.clone(),
                region: region(raw_ssm.as_ref().and_then(|s| s.region.as_ref()))?,
            },
            (None, Some(raw_ssm)) => SsmSettings {
                parameter: self.expand(&raw_ssm.parameter, "ssm.parameter")?,
                region: region(raw_ssm.region.as_ref())?,
            },
            (None, None) => return Ok(None),
        };
        if !ssm.parameter.starts_with('/') && ssm.parameter.contains('/') {
            let message = format!(
                "SSM parameter {:?}: a name with `/` in it starts with `/`",
                ssm.parameter
            );
            // At its place in the file, which takes back what a `${VAR}` expanded to.
            return Err(match (&overrides.ssm_parameter, &raw.ssm) {
                (None, Some(raw_ssm)) => self.at(raw_ssm.parameter.span(), message),
                _ => ConfigError::Whole {
                    path: self.path.to_path_buf(),
                    message,
                },
            });
        }
        Ok(Some(ssm))
    }

    /// `defaults.concurrency`: images copied at once.
    pub(super) fn concurrency(&self, defaults: &RawDefaults) -> Result<usize, ConfigError> {
        match &defaults.concurrency {
            None => Ok(DEFAULT_CONCURRENCY),
            Some(n) if (1..=MAX_CONCURRENCY).contains(n.get_ref()) => Ok(*n.get_ref() as usize),
            Some(n) => Err(self.at(
                n.span(),
                format!(
                    "defaults.concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
                    n.get_ref()
                ),
            )),
        }
    }

    /// `[rate_limit]`.
    pub(super) fn rate_limit(&self, raw: &RawRateLimit) -> Result<RateLimitSettings, ConfigError> {
        Ok(RateLimitSettings {
            reserve: match &raw.reserve {
                Some(n) => self.count(n, "rate_limit.reserve")?,
                None => 0,
            },
            max_wait: match &raw.max_wait {
                Some(text) => self.duration(text, "rate_limit.max_wait")?,
                None => DEFAULT_MAX_WAIT,
            },
        })
    }

    /// `defaults.shutdown_grace`.
    pub(super) fn shutdown_grace(
        &self,
        defaults: &RawDefaults,
    ) -> Result<std::time::Duration, ConfigError> {
        match &defaults.shutdown_grace {
            Some(text) => self.duration(text, "defaults.shutdown_grace"),
            None => Ok(DEFAULT_SHUTDOWN_GRACE),
        }
    }

    pub(super) fn server(&self, raw: &RawServer) -> Result<ServerSettings, ConfigError> {
        let written = self.expand(&raw.listen, "server.listen")?;
        let listen = written.parse().map_err(|_| {
            self.at(
                raw.listen.span(),
                format!("server.listen: {written:?} is not an address and port; write it like \"127.0.0.1:9090\", \"[::1]:9090\" or \"0.0.0.0:9090\""),
            )
        })?;
        let secret =
            |value: &Option<Spanned<String>>, key: &str| -> Result<Option<Secret>, ConfigError> {
                let Some(value) = value else { return Ok(None) };
                let expanded = self.expand(value, key)?;
                if expanded.trim().is_empty() {
                    return Err(self.at(
                        value.span(),
                        format!("{key} is empty; leave it out to turn it off"),
                    ));
                }
                Ok(Some(Secret::new(expanded)))
            };
        Ok(ServerSettings {
            listen,
            sync_token: secret(&raw.sync_token, "server.sync_token")?,
            webhook_secret: secret(&raw.webhook_secret, "server.webhook_secret")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::resolve::tests::resolve_with;
    use super::*;

    #[test]
    fn rate_limit_settings_resolve_with_defaults_and_overrides() {
        let base = "images = [\"a\"]\n[defaults]\ntarget = \"r.io\"\n";
        let config = resolve_with(base, &[]).unwrap();
        assert_eq!(config.rate_limit, RateLimitSettings::default());
        assert_eq!(config.rate_limit.max_wait, DEFAULT_MAX_WAIT);
        let text = format!("{base}[rate_limit]\nreserve = 2\nmax_wait = \"1h 30m\"\n[registries.\"docker.io\"]\nreserve = 10\n");
        let config = resolve_with(&text, &[]).unwrap();
        assert_eq!(
            config.rate_limit.max_wait,
            std::time::Duration::from_secs(5400)
        );
        assert_eq!(config.reserve("registry-1.docker.io"), 10);
        assert_eq!(config.reserve("ghcr.io"), 2);
        for (bad, expected) in [
            (
                "[rate_limit]\nmax_wait = \"soon\"\n",
                "mirrors.toml:5:12: rate_limit.max_wait:",
            ),
            (
                "[rate_limit]\nreserve = -1\n",
                "mirrors.toml:5:11: rate_limit.reserve cannot be negative",
            ),
            ("[rate_limit]\nreserv = 1\n", "unknown key `reserv`"),
            (
                "[registries.\"x.io\"]\nreserve = -3\n",
                "registries.\"x.io\".reserve cannot be negative",
            ),
        ] {
            let err = resolve_with(&format!("{base}{bad}"), &[]).unwrap_err();
            assert!(err.contains(expected), "{bad:?}\n{err}");
        }
    }
}
