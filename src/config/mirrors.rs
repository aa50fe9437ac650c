//! What to mirror: the `images` list and the `[[mirror]]` entries, each a [`Mirror`] with its
//! schedule and jobs; the targets (`[defaults]`'s prefixes under a layout, or a mirror's own),
//! tag rules, platforms. A target is taken once: two sources landing on one are refused, the
//! same image listed twice is mirrored once.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::ops::Range;

use chrono_tz::Tz;
use toml::Spanned;

use super::expand::Resolver;
use super::file::{RawConfig, RawDefaults, RawMirror};
use super::{
    ssm_mirror_name, ConfigError, CopyChoice, DefaultTarget, Job, Mirror, Overrides, Prune,
    RegistrySettings, TagSelection,
};
use crate::aws::ssm::SsmSettings;
use crate::manifest::{Platform, Platforms};
use crate::reference::{ImageRef, Layout, Repository};
use crate::schedule::Schedule;
use crate::selection::{parse_range, Pattern, TagRules};

/// When the mirrors of the file run, unless a `[[mirror]]` says otherwise: from `[defaults]`.
pub(super) struct When<'a> {
    zone: Tz,
    schedule: Option<&'a Spanned<String>>,
    /// `defaults.schedule` in `defaults.timezone`: the `images` mirrors' and the SSM one's.
    default_schedule: Option<Schedule>,
    run_on_start: bool,
    /// `defaults.platforms` and `defaults.referrers`.
    choice: CopyChoice,
    /// `defaults.prune`, and the limits `defaults.prune_max_*` set for every mirror.
    prune: bool,
    prune_limits: Prune,
}

impl When<'_> {
    /// The prune of the `images` mirrors and the SSM one: `defaults.prune`.
    fn prune(&self) -> Option<Prune> {
        self.prune.then_some(self.prune_limits)
    }
}

impl Resolver<'_> {
    /// `--target`, else `defaults.target` or `defaults.targets`: the prefixes images without a
    /// target of their own go under (none when neither is given).
    pub(super) fn target_prefixes(
        &self,
        raw: &RawConfig,
        overrides: &Overrides,
    ) -> Result<Vec<Repository>, ConfigError> {
        match &overrides.target {
            Some(flag) => Ok(vec![Repository::parse(flag, false).map_err(|e| {
                ConfigError::Whole {
                    path: self.path.to_path_buf(),
                    message: format!("--target: {e}"),
                }
            })?]),
            None => self.targets(
                raw.defaults.target.as_ref(),
                raw.defaults.targets.as_ref(),
                "defaults",
                false,
            ),
        }
    }

    /// `[defaults]`' schedule, time zone, `run_on_start`, platforms and referrers.
    pub(super) fn when<'a>(&self, defaults: &'a RawDefaults) -> Result<When<'a>, ConfigError> {
        let zone = match &defaults.timezone {
            Some(name) => self.zone(name, "defaults.timezone")?,
            None => Tz::UTC,
        };
        let choice = CopyChoice {
            platforms: match &defaults.platforms {
                Some(list) => Some(self.platforms(list, "defaults.platforms")?),
                None => None,
            },
            referrers: defaults.referrers.unwrap_or(false),
            verify: match &defaults.verify {
                Some(verify) => Some(self.verify(verify, "defaults")?),
                None => None,
            },
        };
        // What is verified travels with its signatures, so the far side can verify again.
        let choice = CopyChoice {
            referrers: choice.referrers || choice.verify.is_some(),
            ..choice
        };
        // Parsed here even if every mirror has its own, so a typo in it is never dormant; the
        // `images` mirrors and the SSM one share this one parse.
        let default_schedule = match &defaults.schedule {
            Some(expression) => Some(self.schedule(expression, zone, "defaults.schedule")?),
            None => None,
        };
        let prune_limits = self.prune_limits(
            Prune::default(),
            &defaults.prune_max_tags,
            &defaults.prune_max_percent,
            "defaults",
        )?;
        Ok(When {
            zone,
            schedule: defaults.schedule.as_ref(),
            default_schedule,
            run_on_start: defaults.run_on_start.unwrap_or(true),
            choice,
            prune: defaults.prune.unwrap_or(false),
            prune_limits,
        })
    }

    /// `base` with the limits `prune_max_tags` and `prune_max_percent` of `section` set.
    fn prune_limits(
        &self,
        base: Prune,
        max_tags: &Option<Spanned<i64>>,
        max_percent: &Option<Spanned<i64>>,
        section: &str,
    ) -> Result<Prune, ConfigError> {
        let mut limits = base;
        if let Some(n) = max_tags {
            limits.max_tags = usize::try_from(*n.get_ref())
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    self.at(
                        n.span(),
                        format!(
                            "{section}.prune_max_tags must be at least 1, not {}",
                            n.get_ref()
                        ),
                    )
                })?;
        }
        if let Some(n) = max_percent {
            limits.max_percent = u8::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    self.at(
                        n.span(),
                        format!(
                            "{section}.prune_max_percent must be between 1 and 100, not {}",
                            n.get_ref()
                        ),
                    )
                })?;
        }
        Ok(limits)
    }

    /// A `[[mirror]]`'s prune: its own `prune` over `defaults.prune`, its limits over the
    /// defaults'; limits without prune are refused, as they would do nothing.
    fn mirror_prune(
        &self,
        m: &RawMirror,
        defaults: &When<'_>,
    ) -> Result<Option<Prune>, ConfigError> {
        let limits = self.prune_limits(
            defaults.prune_limits,
            &m.prune_max_tags,
            &m.prune_max_percent,
            "mirror",
        )?;
        if m.prune.unwrap_or(defaults.prune) {
            return Ok(Some(limits));
        }
        match m.prune_max_tags.as_ref().or(m.prune_max_percent.as_ref()) {
            Some(set) => Err(self.at(
                set.span(),
                "mirror.prune_max_tags and prune_max_percent limit prune, which is off for this mirror: set prune = true",
            )),
            None => Ok(None),
        }
    }

    /// Where images without a target of their own go: `prefixes` under `defaults.layout`
    /// (`None` without prefixes). A registry's `mirror_prefix` needs the registry layout.
    pub(super) fn default_target(
        &self,
        raw: &RawConfig,
        prefixes: Vec<Repository>,
        registries: &BTreeMap<String, RegistrySettings>,
    ) -> Result<Option<DefaultTarget>, ConfigError> {
        let layout = match &raw.defaults.layout {
            Some(written) => {
                let expanded = self.expand(written, "defaults.layout")?;
                Layout::parse(&expanded).ok_or_else(|| {
                    self.at(
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
                return Err(self.at(
                    span,
                    format!("registries.{name:?}.mirror_prefix names the registry's path in the registry layout: set defaults.layout = \"registry\", or drop it"),
                ));
            }
        }
        Ok((!prefixes.is_empty()).then(|| DefaultTarget {
            prefixes,
            layout,
            registry_dirs: registries
                .iter()
                .filter_map(|(name, s)| s.mirror_prefix.clone().map(|p| (name.clone(), p)))
                .collect(),
        }))
    }

    /// The jobs and mirrors of `images`, the `[[mirror]]` entries and the SSM parameter (one
    /// mirror of its own, on the default schedule). A mirror every image of which another
    /// already lists is dropped; a file with nothing to mirror is refused.
    pub(super) fn mirrors(
        &self,
        raw: &RawConfig,
        default_target: Option<&DefaultTarget>,
        when: &When<'_>,
        ssm: Option<&SsmSettings>,
    ) -> Result<(Vec<Job>, Vec<Mirror>), ConfigError> {
        let mut jobs = Jobs::default();
        for image in &raw.images {
            self.image_jobs(image, default_target, when, &mut jobs)?;
        }
        for mirror in &raw.mirror {
            self.mirror_jobs(mirror, default_target, when, &mut jobs)?;
        }
        let (jobs, mut mirrors) = jobs.finish();
        if let Some(ssm) = ssm {
            mirrors.push(Mirror {
                name: ssm_mirror_name(&ssm.parameter),
                schedule: when.default_schedule.clone(),
                run_on_start: when.run_on_start,
                line: 0,
                selection: None,
                choice: when.choice.clone(),
                prune: when.prune(),
            });
        }
        if jobs.is_empty() && ssm.is_none() && mirrors.iter().all(|m| m.selection.is_none()) {
            return Err(ConfigError::Whole {
                path: self.path.to_path_buf(),
                message:
                    "nothing to mirror: list references in `images = [...]` or add [[mirror]] entries"
                        .to_string(),
            });
        }
        Ok((jobs, mirrors))
    }

    /// One reference of `images`: a mirror of its own (unless listed before), under the
    /// default target.
    fn image_jobs(
        &self,
        image: &Spanned<String>,
        default_target: Option<&DefaultTarget>,
        when: &When<'_>,
        jobs: &mut Jobs,
    ) -> Result<(), ConfigError> {
        let written = self.expand(image, "images")?;
        if jobs.from_images.contains(&written) {
            return Ok(()); // the same reference listed twice is one mirror
        }
        let source = ImageRef::parse(&written).map_err(|e| self.at(image.span(), e.to_string()))?;
        let targets = self.default_target_for(&source, default_target, image.span())?;
        let schedule = when.default_schedule.clone();
        let mirror = jobs.mirror(
            self,
            written.clone(),
            image.span(),
            schedule,
            when.run_on_start,
            (when.choice.clone(), when.prune()),
        )?;
        jobs.from_images.insert(written);
        for target in targets {
            jobs.add(self, source.clone(), target, image.span(), mirror)?;
        }
        Ok(())
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

    /// One `[[mirror]]`: its fixed tags as jobs, its tag rules as a selection listed at each
    /// pass.
    fn mirror_jobs(
        &self,
        mirror: &Spanned<RawMirror>,
        default_target: Option<&DefaultTarget>,
        defaults: &When<'_>,
        jobs: &mut Jobs,
    ) -> Result<(), ConfigError> {
        let m = mirror.get_ref();
        let written = self.expand(&m.source, "mirror.source")?;
        let index = self.mirror_entry(m, &written, defaults, jobs)?;
        let rules = self.tag_rules(m)?;
        let sources = self.mirror_sources(m, &written, rules.as_ref())?;
        let own_targets = self.targets(m.target.as_ref(), m.targets.as_ref(), "mirror", true)?;
        if let Some(rules) = rules {
            let selection = self.selection(m, &written, rules, &own_targets, default_target)?;
            jobs.mirrors[index].selection = Some(selection);
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

    /// The [`Mirror`] of a `[[mirror]]`: its name, schedule and what it copies of each image;
    /// returns its index.
    fn mirror_entry(
        &self,
        m: &RawMirror,
        written: &str,
        defaults: &When<'_>,
        jobs: &mut Jobs,
    ) -> Result<usize, ConfigError> {
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
            None => (written.to_string(), m.source.span()),
        };
        let choice = CopyChoice {
            platforms: match &m.platforms {
                Some(list) => Some(self.platforms(list, "mirror.platforms")?),
                None => defaults.choice.platforms.clone(),
            },
            referrers: m.referrers.unwrap_or(defaults.choice.referrers),
            verify: match &m.verify {
                Some(verify) => Some(self.verify(verify, "mirror")?),
                None => defaults.choice.verify.clone(),
            },
        };
        let choice = CopyChoice {
            referrers: choice.referrers || choice.verify.is_some(),
            ..choice
        };
        let prune = self.mirror_prune(m, defaults)?;
        jobs.mirror(
            self,
            name,
            name_span,
            schedule,
            m.run_on_start.unwrap_or(defaults.run_on_start),
            (choice, prune),
        )
    }

    /// The images a `[[mirror]]` names: its source if that names a tag, or each of `tags`
    /// (none dropped by its `exclude`), each with where it was written.
    fn mirror_sources(
        &self,
        m: &RawMirror,
        written: &str,
        rules: Option<&TagRules>,
    ) -> Result<Vec<(ImageRef, Range<usize>)>, ConfigError> {
        Ok(match (&m.tags, rules) {
            (Some(tags), _) if tags.is_empty() => {
                return Err(self.at(m.source.span(), "mirror.tags is empty: list at least one tag, or leave `tags` out and name the tag in `source`"))
            }
            (None, None) => {
                let source = ImageRef::parse(written)
                    .map_err(|e| self.at(m.source.span(), e.to_string()))?;
                if !crate::reference::names_tag_or_digest(written) {
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
                let repo = ImageRef::parse_repository(written).map_err(|e| {
                    let e = match (rules, e) {
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
        })
    }

    /// The selection of a `[[mirror]]` with tag rules: its repository, listed at each pass,
    /// and where the tags go (its own targets, else under the default target).
    fn selection(
        &self,
        m: &RawMirror,
        written: &str,
        rules: TagRules,
        own_targets: &[Repository],
        default_target: Option<&DefaultTarget>,
    ) -> Result<TagSelection, ConfigError> {
        let source = ImageRef::parse_repository(written)
            .map_err(|e| self.at(m.source.span(), e.to_string()))?;
        let targets = match own_targets.is_empty() {
            false => own_targets.to_vec(),
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
        Ok(TagSelection {
            source,
            targets,
            rules,
        })
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
        (choice, prune): (CopyChoice, Option<Prune>),
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
            prune,
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
    use super::super::resolve::tests::{resolve_with, targets};
    use super::super::DEFAULT_SHUTDOWN_GRACE;

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
