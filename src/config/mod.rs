//! mirrors.toml: what to mirror, where to, and how to reach each registry.
//!
//! Read in two stages, as ripgrep and static-web-server do: [`file`] is a plain serde mirror of
//! what the user typed; [`resolve`] turns it into the [`Config`] below, with `${VAR}`s
//! expanded, references parsed, targets named and credentials found. Nothing downstream
//! re-parses a string from the file. Every refusal is a [`ConfigError`] that names the file
//! and, where there is one, the line and column.
//!
//! (The style guide suggests calling this module `manifest`; in a registry tool that word
//! means an OCI manifest, so mirrors.toml lives in `config` and OCI manifests in `manifest`.)

mod error;
mod expand;
mod file;
mod mirrors;
pub(crate) mod pem;
mod process;
mod registries;
mod resolve;
mod tag_api;
mod verify;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;

use crate::aws::ecr::{EcrHost, EcrSettings};
use crate::aws::ssm::SsmSettings;
use crate::credentials::{Credentials, DockerConfig, Helper, Secret};
use crate::manifest::Platforms;
use crate::reference::{
    canonical_registry, is_layout, is_loopback, registry_component, target_under, ImageRef, Layout,
    Repository,
};
use crate::schedule::Schedule;
use crate::selection::TagRules;

/// Images copied at once unless `defaults.concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// How long one image may wait for budget or retries unless `rate_limit.max_wait` says.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(6 * 60 * 60);
/// How long in-flight copies get to finish on shutdown unless `defaults.shutdown_grace` says.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The validated configuration: everything a pass needs, nothing left to parse.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    /// Every image to mirror, each once, in the order the file lists them.
    pub jobs: Vec<Job>,
    /// The entries jobs came from (an `images` reference or a `[[mirror]]`), each with its
    /// schedule; `Job::mirror` indexes this.
    pub mirrors: Vec<Mirror>,
    /// How many images are copied at once.
    pub concurrency: usize,
    /// Settings of every registry a job reads or writes, by canonical name.
    pub registries: BTreeMap<String, RegistrySettings>,
    /// How pulls are paced.
    pub rate_limit: RateLimitSettings,
    /// How long in-flight copies may run on after SIGTERM before they are abandoned.
    pub shutdown_grace: Duration,
    /// The daemon's HTTP endpoint, if `[server]` asks for one.
    pub server: Option<ServerSettings>,
    /// Where images without a target of their own go (`defaults.target` or `--target`), and
    /// how they are named there (`defaults.layout`).
    pub default_target: Option<DefaultTarget>,
    /// An SSM parameter listing more images, if `[ssm]` or `--ssm-parameter` names one.
    pub ssm: Option<SsmSettings>,
}

/// `defaults.target` (or `targets`) with `defaults.layout`: where an image without a target of
/// its own goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultTarget {
    /// `host[:port][/prefix]`, one per target; never empty.
    pub prefixes: Vec<Repository>,
    pub layout: Layout,
    /// `mirror_prefix` of each registry that sets one, by canonical name: the path standing
    /// for that registry in the registry layout (empty: none).
    pub registry_dirs: BTreeMap<String, String>,
}

impl DefaultTarget {
    /// The path standing for `registry` in the registry layout.
    pub fn registry_dir(&self, registry: &str) -> Result<String, String> {
        let name = canonical_registry(registry);
        if let Some(dir) = self.registry_dirs.get(name) {
            return Ok(dir.clone());
        }
        registry_component(name).ok_or_else(|| {
            format!("the registry layout cannot write {name} in a repository path: set mirror_prefix in [registries.\"{name}\"]")
        })
    }

    /// The target repository of `source` under `prefix`.
    pub fn repository_under(
        &self,
        prefix: &Repository,
        source: &ImageRef,
    ) -> Result<Repository, String> {
        let dir = match self.layout {
            // A layout's names are kept as they are (see `target_under`).
            Layout::Registry if !source.is_layout() => self.registry_dir(&source.registry)?,
            Layout::Registry | Layout::Path => String::new(),
        };
        target_under(prefix, source, self.layout, &dir).map_err(|e| e.to_string())
    }

    /// The target repositories of `source`, one per target.
    pub fn repositories_for(&self, source: &ImageRef) -> Result<Vec<Repository>, String> {
        self.prefixes
            .iter()
            .map(|prefix| self.repository_under(prefix, source))
            .collect()
    }
}

/// What the command line sets over the file (the flags win).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--target`: `defaults.target`.
    pub target: Option<String>,
    /// `--ssm-parameter`: `ssm.parameter`.
    pub ssm_parameter: Option<String>,
}

/// The name of the mirror made of an SSM parameter's images, in logs, metrics and `/sync`.
pub fn ssm_mirror_name(parameter: &str) -> String {
    format!("ssm:{parameter}")
}

/// One entry of mirrors.toml as the daemon schedules it: an `images` reference or a
/// `[[mirror]]` with its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `name` if given, else the source as written; unique. Used by `POST /sync?mirror=`,
    /// metrics labels and logs.
    pub name: String,
    /// When it runs in the daemon; `None` means only at start and on `POST /sync`.
    pub schedule: Option<Schedule>,
    /// Whether the daemon runs it once as soon as it starts (or as soon as a reload adds it).
    pub run_on_start: bool,
    /// Where it is in mirrors.toml.
    pub line: usize,
    /// Set when it selects tags by rules: its repository is listed at every run.
    pub selection: Option<TagSelection>,
    /// What of each image it copies.
    pub choice: CopyChoice,
    /// Whether, and within what limits, the target tags it no longer selects are deleted.
    pub prune: Option<Prune>,
}

/// `prune = true`: after a pass whose listings succeeded, the target tags a mirror's rules
/// name but no longer select (or its exact tags gone upstream) are deleted, unless there are
/// more of them than these limits allow, in which case none is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// `prune_max_tags`: the most tags one mirror's prune deletes in a pass.
    pub max_tags: usize,
    /// `prune_max_percent`: the most of the mirror's managed tags (those in the target its
    /// rules name) one prune deletes, in percent; one tag is always allowed.
    pub max_percent: u8,
}

impl Default for Prune {
    fn default() -> Self {
        Prune {
            max_tags: 20,
            max_percent: 50,
        }
    }
}

impl Prune {
    /// Whether deleting `deleting` of `managed` tags is within the limits.
    pub fn allows(&self, deleting: usize, managed: usize) -> bool {
        let share = managed * usize::from(self.max_percent) / 100;
        deleting <= self.max_tags && deleting <= share.max(1)
    }
}

/// A `[[mirror]]` with tag rules: which repository to list, which tags to take from it, and
/// where they go. Its exact `tags`, if any, are ordinary jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSelection {
    /// The source repository; each selected tag becomes [`ImageRef::with_tag`] of it.
    pub source: ImageRef,
    /// The target repositories (one, or one per `targets`); a selected tag keeps its name
    /// in each.
    pub targets: Vec<Repository>,
    pub rules: TagRules,
}

impl TagSelection {
    /// The jobs (one per target) for one selected tag of mirror `mirror`, or why the tag
    /// cannot be mirrored (a tag the reference grammar refuses).
    pub fn jobs(
        &self,
        tag: &str,
        mirror: usize,
        line: usize,
        choice: &CopyChoice,
    ) -> Result<Vec<Job>, String> {
        let source = self.source.with_tag(tag).map_err(|e| e.to_string())?;
        Ok(self
            .targets
            .iter()
            .map(|target| Job {
                target: target.image_for(&source),
                source: source.clone(),
                line,
                listed_in: None,
                mirror,
                choice: choice.clone(),
            })
            .collect())
    }

    /// The target repositories, as `check` and logs show them.
    pub fn targets_shown(&self) -> String {
        self.targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `[server]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// `POST /sync` accepts `Authorization: Bearer <this>`.
    pub sync_token: Option<Secret>,
    /// `POST /sync` accepts a body signed with this (`X-Hub-Signature-256`, as GitHub sends).
    pub webhook_secret: Option<Secret>,
}

/// `[rate_limit]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Pulls per registry left unspent for people sharing the IP (a registry may override it).
    pub reserve: u64,
    /// The longest one image waits for budget or retries before it fails.
    pub max_wait: Duration,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            reserve: 0,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// One image to mirror: a source reference and the reference it becomes in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub source: ImageRef,
    pub target: ImageRef,
    /// The line of mirrors.toml that asked for it, so messages can point there (0 when it came
    /// from `listed_in`).
    pub line: usize,
    /// The SSM parameter that listed it, if it did not come from the file.
    pub listed_in: Option<String>,
    /// Index of the [`Mirror`] it belongs to in [`Config::mirrors`].
    pub mirror: usize,
    /// What of the image is copied: its mirror's `platforms` and `referrers`.
    pub choice: CopyChoice,
}

/// What of an image a mirror copies, beyond the image itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CopyChoice {
    /// Only these platforms of an index (`platforms`); `None`: every one.
    pub platforms: Option<Platforms>,
    /// Signatures, attestations and SBOMs that refer to the image too (`referrers`).
    pub referrers: bool,
    /// `verify`: copied only when a signature by this key or signer vouches for it.
    pub verify: Option<crate::signature::Verify>,
}

/// How to reach one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// From mirrors.toml, else Docker's config.json; `None` means anonymous (or `helper`).
    pub credentials: Option<Credentials>,
    /// The credential helper Docker's config.json names for it, asked when it is first used.
    pub helper: Option<Helper>,
    /// Plain HTTP: set by `insecure = true`, and the default for loopback registries without
    /// a `ca_file`.
    pub plain_http: bool,
    /// Extra CA certificate (PEM) to trust for this registry's TLS.
    pub ca_file: Option<PathBuf>,
    /// This registry's own `reserve`, overriding `[rate_limit]`'s.
    pub reserve: Option<u64>,
    /// Set when the registry is Amazon ECR: credentials then come from GetAuthorizationToken.
    pub ecr: Option<EcrSettings>,
    /// `mirror_prefix`: the path standing for this registry in the registry layout, instead of
    /// its name (`docker-hub` for `docker.io`, as ECR pull-through cache names it).
    pub mirror_prefix: Option<String>,
    /// `endpoint`: another host (and path) this registry's requests go to, such as a company
    /// proxy registry; names, credentials and budgets stay the registry's own.
    pub endpoint: Option<Endpoint>,
    /// `endpoint_gets_docker_login`: the endpoint is sent the login Docker's config.json (or
    /// its credential helper) holds for this registry. Off, an endpoint gets only the
    /// credentials written in this registry's own section: a login for Docker Hub is not
    /// handed to whatever proxy stands in front of it.
    pub endpoint_gets_docker_login: bool,
    /// `requests_per_second`: every request to it spread so no second holds more; `None`, no
    /// cap. Docker Hub's is [`DOCKER_HUB_REQUESTS_PER_SECOND`] unless set.
    pub requests_per_second: Option<u32>,
    /// `tag_api`: a tag API that lists tags with their digests, read to skip the HEADs of
    /// tags whose digest the target already has. On for Docker Hub unless set (or unless it
    /// has an `endpoint`); `None`, off.
    pub tag_api: Option<TagApi>,
}

/// Docker Hub's tag API (`GET <base>/v2/namespaces/<ns>/repositories/<repo>/tags`), as a
/// registry's section sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagApi {
    /// `scheme://host[:port][/path]`, no trailing slash: `https://hub.docker.com`.
    pub base: String,
    /// `head_every`: a pass HEADs every tag of a repository at least this often, so a tag
    /// the API shows with a stale digest is seen within it.
    pub head_every: Duration,
}

/// Docker Hub's own tag API.
pub const DOCKER_HUB_TAG_API: &str = "https://hub.docker.com";
/// `head_every` unless set.
pub const DEFAULT_HEAD_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The tag API a registry gets when its section says nothing of it: Docker Hub's own, for
/// Docker Hub reached at its own host.
fn default_tag_api(name: &str) -> Option<TagApi> {
    (crate::reference::canonical_registry(name) == crate::reference::DOCKER_HUB).then(|| TagApi {
        base: DOCKER_HUB_TAG_API.to_string(),
        head_every: DEFAULT_HEAD_EVERY,
    })
}

/// Docker Hub's request cap when mirrors.toml sets none: well under the thousands of
/// requests a minute from one address that its abuse protection answers with a bare 429.
pub const DOCKER_HUB_REQUESTS_PER_SECOND: u32 = 30;

/// The cap a registry gets when mirrors.toml says nothing of it.
fn default_requests_per_second(name: &str) -> Option<u32> {
    (crate::reference::canonical_registry(name) == crate::reference::DOCKER_HUB)
        .then_some(DOCKER_HUB_REQUESTS_PER_SECOND)
}

/// Where a registry's API is reached when it is not at its own host: `endpoint =
/// "https://artifactory.example.com/docker-remote"` sends `GET /v2/library/nginx/manifests/1`
/// as `GET https://artifactory.example.com/v2/docker-remote/library/nginx/manifests/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// Repository path prefix after `/v2/`, without slashes at either end; empty for none.
    pub prefix: String,
}

impl Endpoint {
    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.origin())?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl RegistrySettings {
    /// Settings of a registry mirrors.toml does not list: loopback speaks plain HTTP, and a
    /// host named like ECR is ECR.
    pub fn implicit(name: &str) -> RegistrySettings {
        RegistrySettings {
            plain_http: is_loopback(name),
            ecr: EcrHost::parse(name).as_ref().map(EcrSettings::for_host),
            requests_per_second: default_requests_per_second(name),
            tag_api: default_tag_api(name),
            ..RegistrySettings::default()
        }
    }
}

impl Job {
    /// Where it was asked for, for messages: `line 12`, or `SSM parameter /mirror/images`.
    pub fn origin(&self) -> String {
        match &self.listed_in {
            Some(parameter) => format!("SSM parameter {parameter}"),
            None => format!("line {}", self.line),
        }
    }
}

impl Config {
    /// Reads and validates a config file, taking `${VAR}`s from the process environment and
    /// missing credentials from Docker's config.json.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read(path).map_err(|e| ConfigError::unreadable(path, e))?;
        Config::from_bytes(path, &text, overrides)
    }

    /// Validates `text`, the contents of `path` read by the caller (the daemon compares it
    /// with what it last loaded). Empty text with `--ssm-parameter` is a run with no file.
    pub fn from_bytes(
        path: &Path,
        text: &[u8],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let text = std::str::from_utf8(text).map_err(|e| ConfigError::Whole {
            path: path.to_path_buf(),
            message: format!(
                "not UTF-8 text (byte {}); save it as UTF-8",
                e.valid_up_to()
            ),
        })?;
        let docker = DockerConfig::load_default().map_err(|e| ConfigError::Whole {
            path: path.to_path_buf(),
            message: format!("cannot use Docker's credentials: {e}"),
        })?;
        resolve::resolve(
            path,
            text,
            &|name| std::env::var(name).ok(),
            &docker,
            overrides,
        )
    }

    /// Jobs for image references listed in the SSM parameter, under the default target,
    /// belonging to mirror `mirror`. Entries that are invalid, or that would land on a target
    /// another image already has, come back as problems naming the entry; the same image
    /// listed twice (or also in the file) is mirrored once.
    pub fn listed_jobs(&self, entries: &[String], mirror: usize) -> (Vec<Job>, Vec<String>) {
        let parameter = self.ssm.as_ref().map(|s| s.parameter.clone());
        let mut taken: BTreeMap<String, ImageRef> = self
            .jobs
            .iter()
            .map(|j| (j.target.to_string(), j.source.clone()))
            .collect();
        let (mut jobs, mut problems) = (Vec::new(), Vec::new());
        for entry in entries {
            let source = match ImageRef::parse(entry) {
                Ok(source) if source.is_layout() => {
                    problems.push(format!(
                        "{entry:?}: an OCI image layout is named in mirrors.toml, not in the SSM parameter"
                    ));
                    continue;
                }
                Ok(source) => source,
                Err(e) => {
                    problems.push(format!("{entry:?}: {e}"));
                    continue;
                }
            };
            let Some(default_target) = &self.default_target else {
                problems.push(format!(
                    "{entry:?}: no target: set --target (REGMIRROR_TARGET) or defaults.target"
                ));
                continue;
            };
            let targets = match default_target.repositories_for(&source) {
                Ok(repositories) => repositories,
                Err(e) => {
                    problems.push(format!("{entry:?}: {e}"));
                    continue;
                }
            };
            for repository in targets {
                let target = repository.image_for(&source);
                match taken.get(&target.to_string()) {
                    Some(earlier) if *earlier == source => continue,
                    Some(earlier) => {
                        problems.push(format!(
                            "{entry:?}: would land on {target}, which {earlier} is mirrored to"
                        ));
                        continue;
                    }
                    None => {}
                }
                taken.insert(target.to_string(), source.clone());
                jobs.push(Job {
                    source: source.clone(),
                    target,
                    line: 0,
                    listed_in: parameter.clone(),
                    mirror,
                    choice: self.mirrors[mirror].choice.clone(),
                });
            }
        }
        (jobs, problems)
    }

    /// This config with the SSM parameter's `entries` added as jobs of its mirror, and the
    /// problems of entries that could not be (see [`Config::listed_jobs`]).
    pub fn with_listed(&self, entries: &[String]) -> Result<(Config, Vec<String>), ConfigError> {
        let Some(ssm) = &self.ssm else {
            return Ok((self.clone(), Vec::new()));
        };
        let name = ssm_mirror_name(&ssm.parameter);
        let mirror = self
            .mirrors
            .iter()
            .position(|m| m.name == name)
            .expect("a config with [ssm] has its mirror");
        let (jobs, problems) = self.listed_jobs(entries, mirror);
        let mut config = self.clone();
        let docker = DockerConfig::load_default().map_err(|e| ConfigError::Whole {
            path: self.path.clone(),
            message: format!("cannot use Docker's credentials: {e}"),
        })?;
        let in_use = jobs
            .iter()
            .flat_map(|job| [&job.source.registry, &job.target.registry]);
        registries::settle_registries(&self.path, &mut config.registries, in_use, &docker)?;
        config.jobs.extend(jobs);
        Ok((config, problems))
    }

    /// The OCI image layouts the config reads or writes, by registry name (`oci:/DIR`), each
    /// with whether it is written (a target of some image).
    pub fn layouts(&self) -> BTreeMap<String, bool> {
        let mut layouts = BTreeMap::new();
        let sources = self.jobs.iter().map(|j| &j.source.registry).chain(
            self.mirrors
                .iter()
                .filter_map(|m| m.selection.as_ref())
                .map(|s| &s.source.registry),
        );
        for source in sources.filter(|r| is_layout(r)) {
            layouts.entry(source.clone()).or_insert(false);
        }
        let targets = self
            .jobs
            .iter()
            .map(|j| &j.target.registry)
            .chain(
                self.mirrors
                    .iter()
                    .filter_map(|m| m.selection.as_ref())
                    .flat_map(|s| s.targets.iter().map(|t| &t.registry)),
            )
            .chain(
                self.default_target
                    .iter()
                    .flat_map(|d| d.prefixes.iter().map(|p| &p.registry)),
            );
        for target in targets.filter(|r| is_layout(r)) {
            layouts.insert(target.clone(), true);
        }
        layouts
    }

    /// Pulls to leave unspent at a registry.
    pub fn reserve(&self, registry: &str) -> u64 {
        self.registry(registry)
            .reserve
            .unwrap_or(self.rate_limit.reserve)
    }

    /// Settings for a registry, by any of its names; loopback registries default to plain HTTP.
    pub fn registry(&self, name: &str) -> RegistrySettings {
        let name = canonical_registry(name);
        self.registries
            .get(name)
            .cloned()
            .unwrap_or_else(|| RegistrySettings::implicit(name))
    }
}
