//! GitHub's `package` webhook: which mirrors a published container image concerns.
//!
//! GHCR tells a webhook about a new version of a container package with `X-GitHub-Event:
//! package` and a JSON body whose `package` names the image. `POST /sync` without
//! `?mirror=` runs the mirrors whose source is that repository (a mirror with tag rules lists
//! it and picks the new tag up at once). The body is read only after its signature has been
//! checked, and only the fields below.

use serde::Deserialize;

use crate::config::Config;
use crate::reference::{canonical_registry, ImageRef};

/// The package actions that mean new content.
const NEW_CONTENT: &[&str] = &["published", "updated"];

/// What a `package` event asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run these mirrors.
    Run(Vec<String>),
    /// Nothing to do, and why (an action that brings no new content).
    Ignore(String),
    /// No mirror's source is the package, or the package is not a container image: why.
    NoMatch(String),
    /// The body is not a package event.
    Malformed(String),
}

#[derive(Deserialize)]
struct Event {
    action: String,
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    package_type: Option<String>,
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(default)]
    package_version: Option<PackageVersion>,
    #[serde(default)]
    registry: Option<Registry>,
}

#[derive(Deserialize)]
struct Owner {
    login: String,
}

#[derive(Deserialize)]
struct PackageVersion {
    #[serde(default)]
    package_url: Option<String>,
}

#[derive(Deserialize)]
struct Registry {
    #[serde(default)]
    url: Option<String>,
}

/// The mirrors of `config` a `package` event `body` concerns.
pub fn package_event(config: &Config, body: &[u8]) -> Verdict {
    let event: Event = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(e) => return Verdict::Malformed(format!("not a GitHub package event: {e}")),
    };
    if !NEW_CONTENT.contains(&event.action.as_str()) {
        return Verdict::Ignore(format!(
            "action {:?} brings no new content (only {} do)",
            event.action,
            NEW_CONTENT.join(" and ")
        ));
    }
    let package = event.package;
    if let Some(kind) = &package.package_type {
        if !kind.eq_ignore_ascii_case("container") && !kind.eq_ignore_ascii_case("docker") {
            return Verdict::NoMatch(format!(
                "package {:?} is a {kind} package, not a container image",
                package.name
            ));
        }
    }
    let Some((registry, repository)) = repository_of(&package) else {
        return Verdict::NoMatch(format!(
            "package {:?} names no registry and owner to match mirrors against",
            package.name
        ));
    };
    let registry = canonical_registry(&registry).to_string();
    let matches = |source: &ImageRef| {
        canonical_registry(&source.registry) == registry
            && source.repository.eq_ignore_ascii_case(&repository)
    };
    let mut names: Vec<String> = config
        .mirrors
        .iter()
        .enumerate()
        .filter(|(index, mirror)| {
            mirror
                .selection
                .as_ref()
                .is_some_and(|s| matches(&s.source))
                || config
                    .jobs
                    .iter()
                    .any(|job| job.mirror == *index && matches(&job.source))
        })
        .map(|(_, mirror)| mirror.name.clone())
        .collect();
    names.dedup();
    if names.is_empty() {
        return Verdict::NoMatch(format!("no mirror's source is {registry}/{repository}"));
    }
    Verdict::Run(names)
}

/// `(registry, repository)` of a package: from the version's `package_url`
/// (`ghcr.io/org/app:v1`), else from the registry's URL, the namespace (or owner) and name.
fn repository_of(package: &Package) -> Option<(String, String)> {
    let from_url = package
        .package_version
        .as_ref()
        .and_then(|v| v.package_url.as_deref())
        .and_then(|url| ImageRef::parse(url.trim()).ok())
        .map(|image| (image.registry, image.repository));
    if from_url.is_some() {
        return from_url;
    }
    let host = package
        .registry
        .as_ref()
        .and_then(|r| r.url.as_deref())
        .map(|url| {
            let bare = url.split_once("://").map_or(url, |(_, rest)| rest);
            bare.trim_end_matches('/').to_string()
        })?;
    let owner = package
        .namespace
        .clone()
        .or_else(|| package.owner.as_ref().map(|o| o.login.clone()))?;
    let written = format!("{host}/{owner}/{}", package.name).to_ascii_lowercase();
    ImageRef::parse(&written)
        .ok()
        .map(|image| (image.registry, image.repository))
}
