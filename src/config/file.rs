//! Stage one of the config: a plain serde mirror of mirrors.toml.
//!
//! Every struct refuses unknown keys, so a misspelt `concurrensy` is an error that names it
//! rather than a setting silently ignored. Values the second stage must point at keep their
//! byte span (`Spanned`) so its errors can give a line and column too.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Shorthand list: each reference is mirrored under `defaults.target`.
    #[serde(default)]
    pub images: Vec<Spanned<String>>,
    #[serde(default)]
    pub defaults: RawDefaults,
    /// Per-registry settings, keyed by registry host as users write it.
    #[serde(default)]
    pub registries: BTreeMap<Spanned<String>, RawRegistry>,
    /// `[[mirror]]` entries: a source repository with its tags, and optionally its own target.
    #[serde(default)]
    pub mirror: Vec<Spanned<RawMirror>>,
    #[serde(default)]
    pub rate_limit: RawRateLimit,
    /// `[server]`: the HTTP endpoint of the daemon, off unless present.
    pub server: Option<RawServer>,
    /// `[ssm]`: more images, listed in an AWS SSM parameter.
    pub ssm: Option<RawSsm>,
}

/// `[ssm]`: a parameter holding image references, read at the start of every pass.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsm {
    pub parameter: Spanned<String>,
    pub region: Option<Spanned<String>>,
}

/// `[server]`: health, metrics and the sync trigger.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Spanned<String>,
    pub sync_token: Option<Spanned<String>>,
    pub webhook_secret: Option<Spanned<String>>,
}

impl std::fmt::Debug for RawServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<Spanned<String>>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("RawServer")
            .field("listen", &self.listen)
            .field("sync_token", &redacted(&self.sync_token))
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .finish()
    }
}

/// `[rate_limit]`: how pulls are paced against a registry's budget.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub reserve: Option<Spanned<i64>>,
    pub max_wait: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub target: Option<Spanned<String>>,
    /// Several targets instead of `target`: each image goes to every one.
    pub targets: Option<Spanned<Vec<Spanned<String>>>>,
    /// `path` (the default) or `registry`.
    pub layout: Option<Spanned<String>>,
    /// Only these platforms of an index.
    pub platforms: Option<Spanned<Vec<Spanned<String>>>>,
    /// Copy signatures, attestations and SBOMs too.
    pub referrers: Option<bool>,
    /// Copy only what a cosign signature made with this key vouches for.
    pub verify: Option<Spanned<super::verify::RawVerify>>,
    /// Delete the target tags the rules name but no longer select.
    pub prune: Option<bool>,
    /// The most tags one mirror's prune may delete in a pass.
    pub prune_max_tags: Option<Spanned<i64>>,
    /// The most of a mirror's managed tags, in percent, one prune may delete.
    pub prune_max_percent: Option<Spanned<i64>>,
    pub concurrency: Option<Spanned<i64>>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub run_on_start: Option<bool>,
    pub shutdown_grace: Option<Spanned<String>>,
}

/// Settings for one registry. Its `Debug` is derived, but the password it can print is a
/// `${VAR}` reference or a literal the user chose to put in the file: it never reaches a log,
/// because only the resolved `Credentials` (with a redacting `Debug`) travel past stage two.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
    pub insecure: Option<bool>,
    pub ca_file: Option<Spanned<String>>,
    pub reserve: Option<Spanned<i64>>,
    /// Treat the host as Amazon ECR (hosts named `*.dkr.ecr.*.amazonaws.com` are by default).
    pub ecr: Option<Spanned<bool>>,
    /// ECR only: the region of its API, when the host name does not say.
    pub region: Option<Spanned<String>>,
    /// ECR only: how repositories regmirror creates are set up.
    pub create: Option<Spanned<RawCreate>>,
    /// The path standing for this registry in the registry layout.
    pub mirror_prefix: Option<Spanned<String>>,
    /// Another host (and path) that serves this registry's API.
    pub endpoint: Option<Spanned<String>>,
    /// Send the endpoint the login Docker holds for this registry, too.
    pub endpoint_gets_docker_login: Option<Spanned<bool>>,
    /// The most requests a second sent to this registry (0: no cap).
    pub requests_per_second: Option<Spanned<i64>>,
    /// Compare through Docker Hub's tag API: `false` off, `true` on (Docker Hub's own), or the
    /// URL of a server speaking it.
    pub tag_api: Option<Spanned<RawTagApi>>,
    /// With `tag_api`: a pass that HEADs every tag at least this often per repository.
    pub head_every: Option<Spanned<String>>,
}

/// `tag_api = true | false | "https://…"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawTagApi {
    Switch(bool),
    At(String),
}

/// `[registries."host".create]`: CreateRepository's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCreate {
    pub scan_on_push: Option<bool>,
    pub tag_mutability: Option<Spanned<String>>,
    pub encryption: Option<Spanned<String>>,
    pub kms_key: Option<Spanned<String>>,
    #[serde(default)]
    pub tags: BTreeMap<String, Spanned<String>>,
}

impl std::fmt::Debug for RawRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRegistry")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("insecure", &self.insecure)
            .field("ca_file", &self.ca_file)
            .field("reserve", &self.reserve)
            .field("ecr", &self.ecr)
            .field("region", &self.region)
            .field("create", &self.create)
            .field("mirror_prefix", &self.mirror_prefix)
            .field("endpoint", &self.endpoint)
            .field(
                "endpoint_gets_docker_login",
                &self.endpoint_gets_docker_login,
            )
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub name: Option<Spanned<String>>,
    pub source: Spanned<String>,
    pub tags: Option<Vec<Spanned<String>>>,
    /// Several full target repositories instead of `target`.
    pub targets: Option<Spanned<Vec<Spanned<String>>>>,
    /// Tag rules (see [`crate::selection`]): regexes any of which selects a listed tag.
    pub include: Option<Spanned<Vec<Spanned<String>>>>,
    /// Regexes any of which drops a listed tag.
    pub exclude: Option<Spanned<Vec<Spanned<String>>>>,
    /// A semver range listed tags must be in.
    pub semver: Option<Spanned<String>>,
    /// Keep only this many of the highest versions.
    pub latest: Option<Spanned<i64>>,
    /// Only these platforms of an index (over `defaults.platforms`).
    pub platforms: Option<Spanned<Vec<Spanned<String>>>>,
    /// Copy signatures, attestations and SBOMs too (over `defaults.referrers`).
    pub referrers: Option<bool>,
    /// Over `defaults.verify`.
    pub verify: Option<Spanned<super::verify::RawVerify>>,
    /// Over `defaults.prune`.
    pub prune: Option<bool>,
    pub prune_max_tags: Option<Spanned<i64>>,
    pub prune_max_percent: Option<Spanned<i64>>,
    pub target: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub run_on_start: Option<bool>,
}
