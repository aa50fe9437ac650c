//! Stage two of the config: from what the user typed to the validated [`Config`].

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use chrono_tz::Tz;

use super::file::{RawConfig, RawCreate, RawMirror, RawRegistry, RawServer};
use super::{
    ssm_mirror_name, Config, ConfigError, CopyChoice, DefaultTarget, Endpoint, Job, Mirror,
    Overrides, RateLimitSettings, RegistrySettings, ServerSettings, TagSelection,
    DEFAULT_CONCURRENCY, DEFAULT_MAX_WAIT, DEFAULT_SHUTDOWN_GRACE,
};
use crate::aws::ecr::{EcrHost, EcrSettings, RepositoryCreation, ENCRYPTIONS, TAG_MUTABILITIES};
use crate::aws::ssm::SsmSettings;
use crate::credentials::{Credentials, DockerConfig, DockerLogin, Secret};
use crate::manifest::{Platform, Platforms};
use crate::reference::{canonical_registry, is_loopback, ImageRef, Layout, Repository};
use crate::schedule::Schedule;
use crate::selection::{parse_range, Pattern, TagRules};

/// The most images one process copies at once; beyond it a registry sees a flood.
const MAX_CONCURRENCY: i64 = 64;

/// Validates `text` (the contents of `path`), reading `${VAR}`s through `env`.
pub(super) fn resolve(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    docker: &DockerConfig,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace("unknown field", "unknown key");
        ConfigError::at(path, text, e.span().unwrap_or(0..0), message)
    })?;
    let r = Resolver {
        path,
        text,
        env,
        line_starts: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
    };

    let target_prefixes = match &overrides.target {
        Some(flag) => vec![
            Repository::parse(flag, false).map_err(|e| ConfigError::Whole {
                path: path.to_path_buf(),
                message: format!("--target: {e}"),
            })?,
        ],
        None => r.targets(
            raw.defaults.target.as_ref(),
            raw.defaults.targets.as_ref(),
            "defaults",
            false,
        )?,
    };
    let ssm = match (&overrides.ssm_parameter, &raw.ssm) {
        (Some(parameter), raw_ssm) => Some(SsmSettings {
            parameter: parameter.clone(),
            region: match raw_ssm.as_ref().and_then(|s| s.region.as_ref()) {
                Some(region) => Some(r.expand(region, "ssm.region")?),
                None => None,
            },
        }),
        (None, Some(raw_ssm)) => Some(SsmSettings {
            parameter: r.expand(&raw_ssm.parameter, "ssm.parameter")?,
            region: match &raw_ssm.region {
                Some(region) => Some(r.expand(region, "ssm.region")?),
                None => None,
            },
        }),
        (None, None) => None,
    };
    if let Some(ssm) = &ssm {
        if !ssm.parameter.starts_with('/') && ssm.parameter.contains('/') {
            let message = format!(
                "SSM parameter {:?}: a name with `/` in it starts with `/`",
                ssm.parameter
            );
            // At its place in the file, which takes back what a `${VAR}` expanded to.
            return Err(match (&overrides.ssm_parameter, &raw.ssm) {
                (None, Some(raw_ssm)) => r.at(raw_ssm.parameter.span(), message),
                _ => ConfigError::Whole {
                    path: path.to_path_buf(),
                    message,
                },
            });
        }
    }
    let concurrency = match &raw.defaults.concurrency {
        None => DEFAULT_CONCURRENCY,
        Some(n) if (1..=MAX_CONCURRENCY).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return Err(r.at(
                n.span(),
                format!(
                    "defaults.concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
                    n.get_ref()
                ),
            ))
        }
    };

    let rate_limit = RateLimitSettings {
        reserve: match &raw.rate_limit.reserve {
            Some(n) => r.count(n, "rate_limit.reserve")?,
            None => 0,
        },
        max_wait: match &raw.rate_limit.max_wait {
            Some(text) => r.duration(text, "rate_limit.max_wait")?,
            None => DEFAULT_MAX_WAIT,
        },
    };
    let shutdown_grace = match &raw.defaults.shutdown_grace {
        Some(text) => r.duration(text, "defaults.shutdown_grace")?,
        None => DEFAULT_SHUTDOWN_GRACE,
    };
    let when = When {
        zone: match &raw.defaults.timezone {
            Some(name) => r.zone(name, "defaults.timezone")?,
            None => Tz::UTC,
        },
        schedule: raw.defaults.schedule.as_ref(),
        run_on_start: raw.defaults.run_on_start.unwrap_or(true),
        choice: CopyChoice {
            platforms: match &raw.defaults.platforms {
                Some(list) => Some(r.platforms(list, "defaults.platforms")?),
                None => None,
            },
            referrers: raw.defaults.referrers.unwrap_or(false),
        },
    };
    // Parsed here even if every mirror has its own, so a typo in it is never dormant; the
    // `images` mirrors and the SSM one share this one parse.
    let default_schedule = match when.schedule {
        Some(expression) => Some(r.schedule(expression, when.zone, "defaults.schedule")?),
        None => None,
    };
    let server = match &raw.server {
        Some(server) => Some(r.server(server)?),
        None => None,
    };

    let mut registries = BTreeMap::new();
    for (name, settings) in &raw.registries {
        let key = canonical_registry(name.get_ref()).to_string();
        let settings = r.registry_settings(name, settings)?;
        registries.insert(key, settings);
    }
    let layout = match &raw.defaults.layout {
        Some(written) => {
            let expanded = r.expand(written, "defaults.layout")?;
            Layout::parse(&expanded).ok_or_else(|| {
                r.at(
                    written.span(),
                    format!("defaults.layout is {expanded:?}; expected \"path\" (the default) or \"registry\""),
                )
            })?
        }
        None => Layout::Path,
    };
    if layout != Layout::Registry {
        if let Some((name, span)) = raw.registries.iter().find_map(|(name, settings)| {
            settings
                .mirror_prefix
                .as_ref()
                .map(|p| (name.get_ref(), p.span()))
        }) {
            return Err(r.at(
                span,
                format!("registries.{name:?}.mirror_prefix names the registry's path in the registry layout: set defaults.layout = \"registry\", or drop it"),
            ));
        }
    }
    let default_target = (!target_prefixes.is_empty()).then(|| DefaultTarget {
        prefixes: target_prefixes,
        layout,
        registry_dirs: registries
            .iter()
            .filter_map(|(name, s)| s.mirror_prefix.clone().map(|p| (name.clone(), p)))
            .collect(),
    });

    let mut jobs = Jobs::default();
    for image in &raw.images {
        let written = r.expand(image, "images")?;
        if jobs.from_images.contains(&written) {
            continue; // the same reference listed twice is one mirror
        }
        let source = ImageRef::parse(&written).map_err(|e| r.at(image.span(), e.to_string()))?;
        let targets = r.default_target_for(&source, default_target.as_ref(), image.span())?;
        let schedule = default_schedule.clone();
        let mirror = jobs.mirror(
            &r,
            written.clone(),
            image.span(),
            schedule,
            when.run_on_start,
            when.choice.clone(),
        )?;
        jobs.from_images.insert(written);
        for target in targets {
            jobs.add(&r, source.clone(), target, image.span(), mirror)?;
        }
    }
    for mirror in &raw.mirror {
        r.mirror_jobs(mirror, default_target.as_ref(), &when, &mut jobs)?;
    }
    let (jobs, mut mirrors) = jobs.finish();
    if let Some(ssm) = &ssm {
        // The parameter's images are one mirror, on the default schedule.
        mirrors.push(Mirror {
            name: ssm_mirror_name(&ssm.parameter),
            schedule: default_schedule.clone(),
            run_on_start: when.run_on_start,
            line: 0,
            selection: None,
            choice: when.choice.clone(),
        });
    }
    if jobs.is_empty() && ssm.is_none() && mirrors.iter().all(|m| m.selection.is_none()) {
        return Err(ConfigError::Whole {
            path: path.to_path_buf(),
            message:
                "nothing to mirror: list references in `images = [...]` or add [[mirror]] entries"
                    .to_string(),
        });
    }

    let in_use = jobs
        .iter()
        .flat_map(|job| [&job.source.registry, &job.target.registry])
        .chain(
            mirrors
                .iter()
                .filter_map(|m| m.selection.as_ref())
                .flat_map(|s| {
                    std::iter::once(&s.source.registry).chain(s.targets.iter().map(|t| &t.registry))
                }),
        );
    settle_registries(path, &mut registries, in_use, docker)?;

    Ok(Config {
        path: path.to_path_buf(),
        jobs,
        mirrors,
        concurrency,
        registries,
        rate_limit,
        shutdown_grace,
        server,
        default_target,
        ssm,
    })
}

/// Gives every registry in use settings: loopback speaks plain HTTP, and credentials the file
/// does not give come from Docker's config.json (for a registry with an `endpoint`, only with
/// `endpoint_gets_docker_login`).
pub(super) fn settle_registries<'a>(
    path: &Path,
    registries: &mut BTreeMap<String, RegistrySettings>,
    in_use: impl IntoIterator<Item = &'a String>,
    docker: &DockerConfig,
) -> Result<(), ConfigError> {
    for registry in in_use {
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

/// The names of the `${VAR}`s in `written` (`$$` is a literal `$`, not a variable).
fn variables(written: &str) -> impl Iterator<Item = &str> {
    let mut rest = written;
    std::iter::from_fn(move || loop {
        let i = rest.find('$')?;
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            rest = after;
        } else if let Some((name, after)) = rest
            .strip_prefix("${")
            .and_then(|after| after.split_once('}'))
        {
            rest = after;
            return Some(name);
        } else {
            rest = &rest[1..];
        }
    })
}

/// When the mirrors of the file run, unless a `[[mirror]]` says otherwise: from `[defaults]`.
struct When<'a> {
    zone: Tz,
    schedule: Option<&'a Spanned<String>>,
    run_on_start: bool,
    /// `defaults.platforms` and `defaults.referrers`.
    choice: CopyChoice,
}

struct Resolver<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Byte offset of each line's start, so a line number costs a binary search, not a scan
    /// (a file of 10,000 images asks 20,000 times).
    line_starts: Vec<usize>,
}

impl Resolver<'_> {
    /// The 1-based line a span starts on.
    fn line(&self, span: &Range<usize>) -> usize {
        self.line_starts
            .partition_point(|&start| start <= span.start)
    }

    /// An error at `span`. A message about a value never quotes what its `${VAR}`s expanded
    /// to (a variable may hold `https://user:secret@proxy`, and errors reach the log and
    /// `/healthz`): see [`Resolver::unexpanded`].
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let message = self.unexpanded(&span, message.into());
        ConfigError::at(self.path, self.text, span, message)
    }

    /// `message` with the value of every `${VAR}` written in `span` taken out again: where a
    /// value stands whole the message names its variable (`${PROXY_URL}`), and a quoted part
    /// of one (a parser quoting the URL's path) becomes `<redacted>`.
    fn unexpanded(&self, span: &Range<usize>, mut message: String) -> String {
        let written = self.text.get(span.clone()).unwrap_or_default();
        for name in variables(written) {
            let Some(value) = (self.env)(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let named = format!("${{{name}}}");
            // As it is, and as `{:?}` quotes it.
            message = message.replace(&value, &named);
            message = message.replace(&value.escape_debug().to_string(), &named);
            message = super::error::scrub(&message, &value);
        }
        message
    }

    /// Expands `${VAR}` from the environment (`$$` is a literal `$`); an unset variable is an
    /// error naming it and the key that used it.
    fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let raw = value.get_ref();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if let Some(after) = rest.strip_prefix("$$") {
                out.push('$');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    return Err(
                        self.at(value.span(), format!("{key}: `${{` without a closing `}}`"))
                    );
                };
                let name = &after[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(self.at(
                        value.span(),
                        format!("{key}: {name:?} is not an environment variable name"),
                    ));
                }
                match (self.env)(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(self.at(
                            value.span(),
                            format!("{key}: environment variable {name} is not set"),
                        ))
                    }
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A duration written like `30s` or `1h 30m`.
    fn duration(
        &self,
        text: &Spanned<String>,
        key: &str,
    ) -> Result<std::time::Duration, ConfigError> {
        let written = self.expand(text, key)?;
        humantime::parse_duration(&written).map_err(|e| {
            self.at(
                text.span(),
                format!("{key}: {e} (write it like \"30s\", \"30m\" or \"1h 30m\")"),
            )
        })
    }

    fn zone(&self, name: &Spanned<String>, key: &str) -> Result<Tz, ConfigError> {
        let written = self.expand(name, key)?;
        Schedule::zone(&written).map_err(|e| self.at(name.span(), format!("{key}: {e}")))
    }

    fn schedule(
        &self,
        expression: &Spanned<String>,
        zone: Tz,
        key: &str,
    ) -> Result<Schedule, ConfigError> {
        let written = self.expand(expression, key)?;
        Schedule::parse(&written, zone)
            .map_err(|e| self.at(expression.span(), format!("{key}: {e}")))
    }

    fn server(&self, raw: &RawServer) -> Result<ServerSettings, ConfigError> {
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

    /// A count that cannot be negative, such as a reserve of pulls.
    fn count(&self, n: &Spanned<i64>, key: &str) -> Result<u64, ConfigError> {
        u64::try_from(*n.get_ref()).map_err(|_| {
            self.at(
                n.span(),
                format!("{key} cannot be negative, it is {}", n.get_ref()),
            )
        })
    }

    /// Where `source` goes under the default target(s): one image per target.
    fn default_target_for(
        &self,
        source: &ImageRef,
        default_target: Option<&DefaultTarget>,
        span: Range<usize>,
    ) -> Result<Vec<ImageRef>, ConfigError> {
        match default_target {
            Some(default_target) => default_target
                .repositories_for(source)
                .map(|repositories| repositories.iter().map(|r| r.image_for(source)).collect())
                .map_err(|e| self.at(span, format!("{source}: {e}"))),
            None => Err(self.at(
                span,
                format!("no target for {source}: set `target` in [defaults], or give this image a [[mirror]] entry with its own `target`"),
            )),
        }
    }

    fn mirror_jobs(
        &self,
        mirror: &Spanned<RawMirror>,
        default_target: Option<&DefaultTarget>,
        defaults: &When<'_>,
        jobs: &mut Jobs,
    ) -> Result<(), ConfigError> {
        let m = mirror.get_ref();
        let written = self.expand(&m.source, "mirror.source")?;
        let zone = match &m.timezone {
            Some(name) => self.zone(name, "mirror.timezone")?,
            None => defaults.zone,
        };
        let schedule = match &m.schedule {
            Some(expression) => Some(self.schedule(expression, zone, "mirror.schedule")?),
            None => match defaults.schedule {
                Some(expression) => Some(self.schedule(expression, zone, "defaults.schedule")?),
                None => None,
            },
        };
        let (name, name_span) = match &m.name {
            Some(name) => {
                let expanded = self.expand(name, "mirror.name")?;
                if expanded.trim().is_empty() {
                    return Err(self.at(name.span(), "mirror.name is empty"));
                }
                (expanded, name.span())
            }
            None => (written.clone(), m.source.span()),
        };
        let choice = CopyChoice {
            platforms: match &m.platforms {
                Some(list) => Some(self.platforms(list, "mirror.platforms")?),
                None => defaults.choice.platforms.clone(),
            },
            referrers: m.referrers.unwrap_or(defaults.choice.referrers),
        };
        let index = jobs.mirror(
            self,
            name,
            name_span,
            schedule,
            m.run_on_start.unwrap_or(defaults.run_on_start),
            choice,
        )?;
        let rules = self.tag_rules(m)?;
        let sources = match (&m.tags, &rules) {
            (Some(tags), _) if tags.is_empty() => {
                return Err(self.at(m.source.span(), "mirror.tags is empty: list at least one tag, or leave `tags` out and name the tag in `source`"))
            }
            (None, None) => {
                let source = ImageRef::parse(&written)
                    .map_err(|e| self.at(m.source.span(), e.to_string()))?;
                if !crate::reference::names_tag_or_digest(&written) {
                    return Err(self.at(
                        m.source.span(),
                        format!(
                            "mirror.source {written:?} is a repository: say which tags with \
                             `tags`, or rules (`include`, `exclude`, `semver`, `latest`); \
                             `include = [\".*\"]` mirrors every tag, `{written}:latest` only latest"
                        ),
                    ));
                }
                vec![(source, m.source.span())]
            }
            (tags, _) => {
                let repo = ImageRef::parse_repository(&written).map_err(|e| {
                    let e = match (&rules, e) {
                        (Some(_), crate::reference::ReferenceError::Invalid { written, .. }) => {
                            format!("invalid image reference {written:?}: names a tag or digest, but tag rules select the tags of a repository; drop the tag")
                        }
                        (_, e) => e.to_string(),
                    };
                    self.at(m.source.span(), e)
                })?;
                let mut sources = Vec::new();
                for tag in tags.iter().flatten() {
                    let name = self.expand(tag, "mirror.tags")?;
                    let source = repo.with_tag(&name).map_err(|e| self.at(tag.span(), e.to_string()))?;
                    let excluded_by = rules
                        .iter()
                        .flat_map(|r| &r.exclude)
                        .find(|pattern| pattern.matches(&name));
                    if let Some(pattern) = excluded_by {
                        return Err(self.at(
                            tag.span(),
                            format!(
                                "tag {name:?} is listed in mirror.tags and dropped by mirror.exclude {:?}: remove one of them",
                                pattern.as_str()
                            ),
                        ));
                    }
                    sources.push((source, tag.span()));
                }
                sources
            }
        };
        let own_targets = self.targets(m.target.as_ref(), m.targets.as_ref(), "mirror", true)?;
        if let Some(rules) = rules {
            let source = ImageRef::parse_repository(&written)
                .map_err(|e| self.at(m.source.span(), e.to_string()))?;
            let targets = match own_targets.is_empty() {
                false => own_targets.clone(),
                true => match default_target {
                    Some(default_target) => default_target
                        .repositories_for(&source)
                        .map_err(|e| self.at(m.source.span(), format!("{}: {e}", source.repo())))?,
                    None => {
                        return Err(self.at(
                            m.source.span(),
                            format!(
                            "no target for {}: set `target` in [defaults] or in this [[mirror]]",
                            source.repo()
                        ),
                        ))
                    }
                },
            };
            jobs.mirrors[index].selection = Some(TagSelection {
                source,
                targets,
                rules,
            });
        }
        for (source, span) in sources {
            let targets = match own_targets.is_empty() {
                false => own_targets.iter().map(|r| r.image_for(&source)).collect(),
                true => self.default_target_for(&source, default_target, span.clone())?,
            };
            for target in targets {
                jobs.add(self, source.clone(), target, span.clone(), index)?;
            }
        }
        Ok(())
    }

    /// A `platforms` list: each `os/architecture[/variant]`, at least one.
    fn platforms(
        &self,
        list: &Spanned<Vec<Spanned<String>>>,
        key: &str,
    ) -> Result<Platforms, ConfigError> {
        let mut parsed = Vec::new();
        for written in list.get_ref() {
            let expanded = self.expand(written, key)?;
            parsed.push(
                Platform::parse(&expanded)
                    .map_err(|e| self.at(written.span(), format!("{key}: {e}")))?,
            );
        }
        Platforms::new(parsed).ok_or_else(|| {
            self.at(
                list.span(),
                format!("{key} is empty: list at least one platform, or leave it out for all"),
            )
        })
    }

    /// `target` or `targets` of `[defaults]` (prefixes) or a `[[mirror]]` (full repositories,
    /// `require_path`): one or the other, each a registry and path, none twice. Empty when
    /// neither is given.
    fn targets(
        &self,
        one: Option<&Spanned<String>>,
        many: Option<&Spanned<Vec<Spanned<String>>>>,
        table: &str,
        require_path: bool,
    ) -> Result<Vec<Repository>, ConfigError> {
        let written: Vec<(&Spanned<String>, String)> = match (one, many) {
            (Some(_), Some(many)) => {
                return Err(self.at(
                    many.span(),
                    format!("{table}.target and {table}.targets are both set: keep one (targets takes a list)"),
                ))
            }
            (Some(one), None) => vec![(one, format!("{table}.target"))],
            (None, Some(many)) if many.get_ref().is_empty() => {
                return Err(self.at(
                    many.span(),
                    format!("{table}.targets is empty: list at least one, or leave it out"),
                ))
            }
            (None, Some(many)) => many
                .get_ref()
                .iter()
                .map(|t| (t, format!("{table}.targets")))
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut targets: Vec<Repository> = Vec::new();
        for (target, key) in written {
            let expanded = self.expand(target, &key)?;
            let repository = Repository::parse(&expanded, require_path)
                .map_err(|e| self.at(target.span(), e.to_string()))?;
            if targets.contains(&repository) {
                return Err(self.at(target.span(), format!("{key} lists {repository} twice")));
            }
            targets.push(repository);
        }
        Ok(targets)
    }

    /// `include`, `exclude`, `semver` and `latest` of a `[[mirror]]`, checked; `None` when it
    /// gives none of them.
    fn tag_rules(&self, m: &RawMirror) -> Result<Option<TagRules>, ConfigError> {
        if m.include.is_none() && m.exclude.is_none() && m.semver.is_none() && m.latest.is_none() {
            return Ok(None);
        }
        let patterns = |list: &Option<Spanned<Vec<Spanned<String>>>>,
                        key: &str|
         -> Result<Vec<Pattern>, ConfigError> {
            let Some(list) = list else {
                return Ok(Vec::new());
            };
            if list.get_ref().is_empty() {
                return Err(self.at(
                    list.span(),
                    format!("{key} is empty: give at least one pattern, or leave it out"),
                ));
            }
            list.get_ref()
                .iter()
                .map(|written| {
                    let expanded = self.expand(written, key)?;
                    Pattern::new(&expanded)
                        .map_err(|e| self.at(written.span(), format!("{key}: {e}")))
                })
                .collect()
        };
        let include = patterns(&m.include, "mirror.include")?;
        let exclude = patterns(&m.exclude, "mirror.exclude")?;
        let semver = match &m.semver {
            Some(written) => {
                let expanded = self.expand(written, "mirror.semver")?;
                Some(
                    parse_range(&expanded)
                        .map_err(|e| self.at(written.span(), format!("mirror.semver: {e}")))?,
                )
            }
            None => None,
        };
        let latest = match &m.latest {
            Some(n) => Some(
                usize::try_from(*n.get_ref())
                    .ok()
                    .and_then(NonZeroUsize::new)
                    .ok_or_else(|| {
                        self.at(
                            n.span(),
                            format!(
                                "mirror.latest must be at least 1, not {}: it keeps that many of the highest versions",
                                n.get_ref()
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        if include.is_empty() && semver.is_none() && latest.is_none() {
            let span = m.exclude.as_ref().map_or(0..0, |e| e.span());
            return Err(self.at(
                span,
                "mirror.exclude alone would select every other tag of the repository: add `include = [\".*\"]` to say so, or `include`, `semver` or `latest` to choose",
            ));
        }
        Ok(Some(TagRules {
            include,
            exclude,
            semver,
            latest,
        }))
    }

    fn registry_settings(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
    ) -> Result<RegistrySettings, ConfigError> {
        let key = |field: &str| format!("registries.{:?}.{field}", name.get_ref());
        let credentials = match (&raw.username, &raw.password) {
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
        };
        let ca_file = match &raw.ca_file {
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
        };
        let reserve = match &raw.reserve {
            Some(n) => Some(self.count(n, &key("reserve"))?),
            None => None,
        };
        let mirror_prefix = match &raw.mirror_prefix {
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
        };
        let endpoint = match &raw.endpoint {
            Some(written) => Some(self.endpoint(written, &key("endpoint"), raw.insecure)?),
            None => None,
        };
        let endpoint_gets_docker_login = match &raw.endpoint_gets_docker_login {
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
        };
        let ecr = self.ecr_settings(name, raw)?;
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
        let key = |field: &str| format!("registries.{:?}.{field}", name.get_ref());
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

/// The job list under construction: each target once, each mirror name once.
#[derive(Default)]
struct Jobs {
    list: Vec<Job>,
    /// Target reference → index in `list`, to catch two sources landing on one target.
    by_target: BTreeMap<String, usize>,
    mirrors: Vec<Mirror>,
    /// Mirror name → index in `mirrors`.
    names: std::collections::HashMap<String, usize>,
    /// `images` references already seen, as written.
    from_images: std::collections::BTreeSet<String>,
}

impl Jobs {
    /// Adds a mirror and returns its index; its name must be new.
    fn mirror(
        &mut self,
        r: &Resolver<'_>,
        name: String,
        span: Range<usize>,
        schedule: Option<Schedule>,
        run_on_start: bool,
        choice: CopyChoice,
    ) -> Result<usize, ConfigError> {
        if let Some(earlier) = self.names.get(&name).map(|&i| &self.mirrors[i]) {
            return Err(r.at(
                span,
                format!(
                    "two mirrors are named {name:?} (the other is on line {}); give this [[mirror]] its own `name`",
                    earlier.line
                ),
            ));
        }
        self.names.insert(name.clone(), self.mirrors.len());
        self.mirrors.push(Mirror {
            name,
            schedule,
            run_on_start,
            line: r.line(&span),
            selection: None,
            choice,
        });
        Ok(self.mirrors.len() - 1)
    }

    /// The jobs and the mirrors that kept at least one (a mirror whose every image another
    /// already lists has none).
    fn finish(self) -> (Vec<Job>, Vec<Mirror>) {
        let mut used: Vec<bool> = self.mirrors.iter().map(|m| m.selection.is_some()).collect();
        for job in &self.list {
            used[job.mirror] = true;
        }
        let mut renumbered = vec![None; self.mirrors.len()];
        let mut mirrors = Vec::new();
        for (i, mirror) in self.mirrors.into_iter().enumerate() {
            if used[i] {
                renumbered[i] = Some(mirrors.len());
                mirrors.push(mirror);
            }
        }
        let jobs = self
            .list
            .into_iter()
            .map(|job| Job {
                mirror: renumbered[job.mirror].expect("every job's mirror is kept"),
                ..job
            })
            .collect();
        (jobs, mirrors)
    }

    fn add(
        &mut self,
        r: &Resolver<'_>,
        source: ImageRef,
        target: ImageRef,
        span: Range<usize>,
        mirror: usize,
    ) -> Result<(), ConfigError> {
        let line = r.line(&span);
        let key = target.to_string();
        if let Some(&first) = self.by_target.get(&key) {
            let earlier = &self.list[first];
            if earlier.source == source {
                return Ok(()); // the same image listed twice is mirrored once
            }
            return Err(r.at(
                span,
                format!(
                    "{source} and {} (line {}) would both be mirrored to {key}",
                    earlier.source, earlier.line
                ),
            ));
        }
        self.by_target.insert(key, self.list.len());
        let choice = self.mirrors[mirror].choice.clone();
        self.list.push(Job {
            source,
            target,
            line,
            listed_in: None,
            mirror,
            choice,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_of_a_value_are_found_as_expand_reads_them() {
        let names: Vec<&str> = variables("\"$${NOT} ${A}x${B_2}$$ ${open\"").collect();
        assert_eq!(names, ["A", "B_2"]);
    }

    fn resolve_with(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(
            Path::new("mirrors.toml"),
            text,
            &|name| env.get(name).cloned(),
            &DockerConfig::default(),
            &Overrides::default(),
        )
        .map_err(|e| e.to_string())
    }

    fn targets(config: &Config) -> Vec<String> {
        config.jobs.iter().map(|j| j.target.to_string()).collect()
    }

    #[test]
    fn the_issue_example_resolves() {
        let text = r#"
images = ["nginx:stable", "ghcr.io/org/app:v1"]
[defaults]
target = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror"
concurrency = 4
[registries."docker.io"]
username = "${DOCKERHUB_USERNAME}"
password = "${DOCKERHUB_TOKEN}"
[registries."registry.internal:5000"]
insecure = true
[[mirror]]
source = "ghcr.io/org/tool"
tags = ["v1.2.0", "v1.3.0"]
target = "registry.internal:5000/tools/tool"
"#;
        let config = resolve_with(
            text,
            &[("DOCKERHUB_USERNAME", "me"), ("DOCKERHUB_TOKEN", "tok")],
        )
        .unwrap();
        let ecr = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror";
        assert_eq!(
            targets(&config),
            [
                format!("{ecr}/nginx:stable"),
                format!("{ecr}/org/app:v1"),
                "registry.internal:5000/tools/tool:v1.2.0".to_string(),
                "registry.internal:5000/tools/tool:v1.3.0".to_string(),
            ]
        );
        let hub = config.registry("registry-1.docker.io");
        assert_eq!(hub.credentials.unwrap().password.expose(), "tok");
        assert!(config.registry("registry.internal:5000").plain_http);
        assert!(!config.registry("ghcr.io").plain_http);
        assert!(config.registry("127.0.0.1:5000").plain_http);
        assert_eq!(config.jobs[0].line, 2);
        assert_eq!(config.jobs[3].line, 13);
    }

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
    fn refusals_point_at_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("images = [\"a\"\n", "mirrors.toml:1:"),
            ("[defaults]\nconcurrensy = 4\n", "mirrors.toml:2:1: unknown key `concurrensy`"),
            ("images = [\"Nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n", "mirrors.toml:1:11: invalid image reference \"Nginx:1\""),
            ("images = [\"nginx\"]\n", "mirrors.toml:1:11: no target for docker.io/library/nginx:latest"),
            (
                "images = [\"nginx:1\", \"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n",
                "",
            ),
            (
                "images = [\"nginx:1\", \"quay.io/x/nginx:1\"]\n[[mirror]]\nsource = \"ghcr.io/nginx\"\ntags = [\"1\"]\ntarget = \"r.io/m/nginx\"\n[defaults]\ntarget = \"r.io/m\"\n",
                "mirrors.toml:4:9: ghcr.io/nginx:1 and docker.io/library/nginx:1 (line 1) would both be mirrored to r.io/m/nginx:1",
            ),
            ("[registries.\"x.io\"]\nusername = \"u\"\npassword = \"${NOPE}\"\n", "mirrors.toml:3:12: registries.\"x.io\".password: environment variable NOPE is not set"),
            ("[registries.\"x.io\"]\npassword = \"p\"\n", "mirrors.toml:2:12: registries.\"x.io\".password is set but registries.\"x.io\".username is not"),
            ("images = [\"a\"]\n[defaults]\ntarget = \"mirror\"\n", "mirrors.toml:3:10: invalid target \"mirror\""),
            ("images = [\"a\"]\n[defaults]\ntarget = \"r.io\"\nconcurrency = 0\n", "mirrors.toml:4:15: defaults.concurrency must be between 1 and 64"),
            ("", "nothing to mirror"),
            ("[[mirror]]\nsource = \"x.io/a:1\"\ntags = [\"2\"]\ntarget = \"r.io/a\"\n", "mirrors.toml:2:10: invalid image reference \"x.io/a:1\": names a tag"),
        ];
        for (text, expected) in cases {
            match resolve_with(text, &[]) {
                Ok(config) if expected.is_empty() => {
                    assert_eq!(config.jobs.len(), 1, "duplicates collapse")
                }
                Ok(_) => panic!("accepted {text:?}"),
                Err(err) => assert!(err.contains(expected), "{text:?}\n{err}"),
            }
        }
    }

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

    #[test]
    fn mirrors_carry_names_schedules_and_zones() {
        let text = r#"
images = ["nginx:1", "nginx:1", "redis:7"]
[defaults]
target = "r.io/m"
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
shutdown_grace = "10s"
[[mirror]]
source = "ghcr.io/org/tool"
tags = ["v1", "v2"]
schedule = "*/30 * * * * *"
run_on_start = false
[[mirror]]
name = "tool-utc"
source = "ghcr.io/org/tool:v3"
timezone = "UTC"
[[mirror]]
name = "again"
source = "redis:7"
"#;
        let config = resolve_with(text, &[]).unwrap();
        let names: Vec<_> = config.mirrors.iter().map(|m| m.name.as_str()).collect();
        // The last [[mirror]] only repeats redis:7, so it has no image of its own left.
        assert_eq!(
            names,
            ["nginx:1", "redis:7", "ghcr.io/org/tool", "tool-utc"]
        );
        let shown: Vec<_> = config
            .mirrors
            .iter()
            .map(|m| format!("{} {}", m.schedule.as_ref().unwrap(), m.run_on_start))
            .collect();
        assert_eq!(
            shown,
            [
                "\"0 3 * * *\" (Europe/Berlin) true",
                "\"0 3 * * *\" (Europe/Berlin) true",
                "\"*/30 * * * * *\" (Europe/Berlin) false",
                "\"0 3 * * *\" (UTC) true",
            ]
        );
        let jobs_of = |name: &str| {
            config
                .jobs
                .iter()
                .filter(|job| config.mirrors[job.mirror].name == name)
                .count()
        };
        assert_eq!(jobs_of("ghcr.io/org/tool"), 2);
        assert_eq!(jobs_of("tool-utc"), 1);
        assert_eq!(config.jobs.iter().filter(|j| j.mirror == 1).count(), 1);
        assert_eq!(config.shutdown_grace, std::time::Duration::from_secs(10));
        assert!(config.server.is_none());

        let unscheduled =
            resolve_with("images = [\"a\"]\n[defaults]\ntarget = \"r.io\"\n", &[]).unwrap();
        assert_eq!(unscheduled.mirrors[0].schedule, None);
        assert!(unscheduled.mirrors[0].run_on_start);
        assert_eq!(unscheduled.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    }

    #[test]
    fn schedule_name_and_server_refusals_point_at_the_value() {
        let base = "[defaults]\ntarget = \"r.io\"\n";
        let image = "[[mirror]]\nsource = \"z:1\"\n";
        for (bad, expected) in [
            ("schedule = \"0 3 * *\"\n", "mirrors.toml:3:12: defaults.schedule: schedule \"0 3 * *\" has 4 fields"),
            ("timezone = \"Berlin\"\n", "mirrors.toml:3:12: defaults.timezone: unknown time zone \"Berlin\""),
            ("shutdown_grace = \"soon\"\n", "mirrors.toml:3:18: defaults.shutdown_grace:"),
            ("[[mirror]]\nsource = \"a:1\"\nschedule = \"@sometimes\"\n", "mirrors.toml:5:12: mirror.schedule: schedule \"@sometimes\" is not a valid cron expression"),
            ("[[mirror]]\nsource = \"a:1\"\n[[mirror]]\nsource = \"a:1\"\ntarget = \"q.io/a\"\n", "mirrors.toml:6:10: two mirrors are named \"a:1\" (the other is on line 4)"),
            ("[server]\nlisten = \"localhost\"\n", "mirrors.toml:4:10: server.listen: \"localhost\" is not an address and port"),
            ("[server]\nlisten = \"127.0.0.1:9090\"\nsync_token = \"${EMPTY}\"\n", "mirrors.toml:5:14: server.sync_token is empty"),
            ("[server]\nlisten = \"127.0.0.1:9090\"\nport = 1\n", "unknown key `port`"),
        ] {
            let err = resolve_with(&format!("{base}{bad}{image}"), &[("EMPTY", "")]).unwrap_err();
            assert!(err.contains(expected), "{bad:?}\n{err}");
        }
        let text = format!(
            "{base}[server]\nlisten = \"127.0.0.1:9090\"\nwebhook_secret = \"${{HOOK}}\"\n{image}"
        );
        let config = resolve_with(&text, &[("HOOK", "s3cret")]).unwrap();
        let server = config.server.unwrap();
        assert_eq!(server.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(server.webhook_secret.unwrap().expose(), "s3cret");
        assert!(server.sync_token.is_none());
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

    #[test]
    fn a_mirror_with_tag_rules_lists_its_repository_and_keeps_its_exact_tags_as_jobs() {
        let config = resolve_with(
            r#"
[defaults]
target = "r.io/mirror"
[[mirror]]
source = "ghcr.io/org/app"
tags = ["edge"]
include = ['v1\..*']
exclude = ['.*-rc.*']
latest = 3
[[mirror]]
source = "quay.io/org/tool"
semver = "^2"
target = "r.io/tools/tool"
"#,
            &[],
        )
        .unwrap();
        assert_eq!(targets(&config), ["r.io/mirror/org/app:edge"]);
        let first = config.mirrors[0].selection.as_ref().unwrap();
        assert_eq!(first.source.repo().to_string(), "ghcr.io/org/app");
        assert_eq!(first.targets_shown(), "r.io/mirror/org/app");
        assert_eq!(
            first.rules.to_string(),
            "include v1\\..*; exclude .*-rc.*; latest 3"
        );
        let jobs = first.jobs("v1.2.0", 0, 3, &Default::default()).unwrap();
        assert_eq!(jobs[0].target.to_string(), "r.io/mirror/org/app:v1.2.0");
        assert!(first.jobs("bad tag", 0, 3, &Default::default()).is_err());
        let second = config.mirrors[1].selection.as_ref().unwrap();
        assert_eq!(second.targets_shown(), "r.io/tools/tool");
        // Both repositories' registries are known, for plain HTTP and credentials.
        assert!(config.registries.contains_key("quay.io"));
    }

    #[test]
    fn the_registry_layout_names_targets_by_registry_and_full_repository() {
        let config = resolve_with(
            r#"
images = ["nginx:stable", "ghcr.io/org/app:v1", "127.0.0.1:5001/team/app:1.0", "quay.io/p/prom:v2", "Registry.Example.com:443/a:1"]
[defaults]
target = "r.io/mirror"
layout = "registry"
[registries."quay.io"]
mirror_prefix = "quay"
[[mirror]]
source = "docker.io/grafana/grafana"
latest = 2
"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            targets(&config),
            [
                "r.io/mirror/docker.io/library/nginx:stable",
                "r.io/mirror/ghcr.io/org/app:v1",
                "r.io/mirror/127.0.0.1-5001/team/app:1.0",
                "r.io/mirror/quay/p/prom:v2",
                "r.io/mirror/registry.example.com-443/a:1",
            ]
        );
        let selection = config.mirrors[5].selection.as_ref().unwrap();
        assert_eq!(
            selection.targets_shown(),
            "r.io/mirror/docker.io/grafana/grafana"
        );
        // The SSM list follows the layout too.
        let (jobs, problems) = config.listed_jobs(&["alpine:3".to_string()], 0);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            jobs[0].target.to_string(),
            "r.io/mirror/docker.io/library/alpine:3"
        );
    }
}
