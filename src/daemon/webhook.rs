//! GitHub's package webhooks: which mirrors a published container image concerns.
//!
//! GitHub tells a webhook about a new version of a container package twice over: as a
//! `package` event (`X-GitHub-Event: package`, the fields under `package`) and as a
//! `registry_package` event (the same fields under `registry_package`); a hook receives the
//! ones its owner ticked. `POST /sync` without `?mirror=` runs the mirrors whose source is
//! that repository (a mirror with tag rules lists it and picks the new tag up at once). The
//! body is read only after its signature has been checked, and only the fields below.
//!
//! How GitHub writes the image, and so how it is read here:
//! - `package_version.package_url` names it, `ghcr.io/<owner>/<name>:<tag>`, with the tag
//!   empty (`ghcr.io/Codertocat/hello-world:`) for an untagged version, and the owner as the
//!   login is spelled (`Codertocat`). GHCR's repository names are lower case, so the
//!   repository is read in lower case.
//! - Without it, `registry.url` gives the host (`https://CONTAINER.pkg.github.com/<owner>`,
//!   GitHub's name for GHCR, read as `ghcr.io`), and `namespace` (else the owner's login,
//!   else the URL's path) and `name` the repository; `name` may itself hold a `/`.
//! - Whether it is a container at all is said by `package_type`, `ecosystem` or
//!   `registry.type` (GitHub's examples disagree among them: one says `npm` and `docker` and
//!   `CONTAINER` at once), so any of them saying container or docker is enough.

use serde::Deserialize;

use crate::config::Config;
use crate::reference::{canonical_registry, ImageRef};

/// The package actions that mean new content.
const NEW_CONTENT: &[&str] = &["published", "updated"];

/// The GitHub events that carry a package, each with its fields under the key of its name.
pub const PACKAGE_EVENTS: &[&str] = &["package", "registry_package"];

/// The host GitHub names in a container package's `registry.url` for GHCR.
const GHCR_IN_EVENTS: &str = "container.pkg.github.com";
const GHCR: &str = "ghcr.io";

/// What a package event asks for.
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
    #[serde(default)]
    package: Option<Package>,
    #[serde(default)]
    registry_package: Option<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    package_type: Option<String>,
    #[serde(default)]
    ecosystem: Option<String>,
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
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// The mirrors of `config` a package event concerns: `event` is the `X-GitHub-Event` header
/// (one of [`PACKAGE_EVENTS`]), `body` the delivery.
pub fn package_event(config: &Config, event: &str, body: &[u8]) -> Verdict {
    let parsed: Event = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => return Verdict::Malformed(format!("not a GitHub {event} event: {e}")),
    };
    let package = match event {
        "registry_package" => parsed.registry_package,
        _ => parsed.package,
    };
    let Some(package) = package else {
        return Verdict::Malformed(format!(
            "a GitHub {event} event without its `{event}` object"
        ));
    };
    if !NEW_CONTENT.contains(&parsed.action.as_str()) {
        return Verdict::Ignore(format!(
            "action {:?} brings no new content (only {} do)",
            parsed.action,
            NEW_CONTENT.join(" and ")
        ));
    }
    if let Some(kind) = not_a_container(&package) {
        return Verdict::NoMatch(format!(
            "package {:?} is a {kind} package, not a container image",
            package.name
        ));
    }
    let Some((registry, repository)) = repository_of(&package) else {
        return Verdict::NoMatch(format!(
            "package {:?} names no registry and owner to match mirrors against",
            package.name
        ));
    };
    let matches = |source: &ImageRef| {
        canonical_registry(&source.registry).eq_ignore_ascii_case(&registry)
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

/// The kind a package says it is when none of its kinds is a container image; `None` when
/// one is, or when it says nothing.
fn not_a_container(package: &Package) -> Option<String> {
    let kinds: Vec<&str> = [
        package.package_type.as_deref(),
        package.ecosystem.as_deref(),
        package.registry.as_ref().and_then(|r| r.kind.as_deref()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let container =
        |kind: &&str| kind.eq_ignore_ascii_case("container") || kind.eq_ignore_ascii_case("docker");
    match kinds.first() {
        Some(first) if !kinds.iter().any(container) => Some(first.to_string()),
        _ => None,
    }
}

/// `(registry, repository)` of a package, both in their normalised form (the registry as
/// regmirror names it, the repository in lower case): from the version's `package_url`,
/// else from the registry's URL, the namespace (or owner) and the name.
fn repository_of(package: &Package) -> Option<(String, String)> {
    let from_url = package
        .package_version
        .as_ref()
        .and_then(|v| v.package_url.as_deref())
        .and_then(|url| image_of(without_tag(url.trim())));
    if from_url.is_some() {
        return from_url;
    }
    let url = package.registry.as_ref()?.url.as_deref()?;
    let bare = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, path) = bare.split_once('/').unwrap_or((bare, ""));
    let owner = package
        .namespace
        .as_deref()
        .or_else(|| package.owner.as_ref().map(|o| o.login.as_str()))
        .or_else(|| Some(path.trim_matches('/')).filter(|p| !p.is_empty()))?;
    image_of(&format!("{host}/{owner}/{}", package.name))
}

/// `name` without the `:tag` (empty or not) or `@digest` that may follow its path.
fn without_tag(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(path, _)| path);
    let last_slash = name.rfind('/').unwrap_or(0);
    match name[last_slash..].rfind(':') {
        Some(colon) => &name[..last_slash + colon],
        None => name,
    }
}

/// The normalised `(registry, repository)` of `host/path` as GitHub writes it: GitHub's
/// name for GHCR read as `ghcr.io`, the path in lower case.
fn image_of(written: &str) -> Option<(String, String)> {
    let (host, path) = written.split_once('/')?;
    let host = host.to_ascii_lowercase();
    let host = if host == GHCR_IN_EVENTS { GHCR } else { &host };
    let image = ImageRef::parse(&format!("{host}/{}", path.to_ascii_lowercase())).ok()?;
    Some((
        canonical_registry(&image.registry).to_string(),
        image.repository,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Overrides;

    /// GitHub's example deliveries (tests/fixtures/github/README.md says where from).
    const PACKAGE: &[u8] =
        include_bytes!("../../tests/fixtures/github/package.published.docker.json");
    const REGISTRY_PACKAGE: &[u8] =
        include_bytes!("../../tests/fixtures/github/registry_package.published.docker.json");

    fn config(sources: &[(&str, &str)]) -> Config {
        let mut text = String::from("[defaults]\ntarget = \"mirror.example:5000/m\"\n");
        for (name, source) in sources {
            text.push_str(&format!(
                "\n[[mirror]]\nname = \"{name}\"\nsource = \"{source}\"\ninclude = [\".*\"]\n"
            ));
        }
        Config::from_bytes(
            Path::new("mirrors.toml"),
            text.as_bytes(),
            &Overrides::default(),
        )
        .unwrap()
    }

    fn run(names: &[&str]) -> Verdict {
        Verdict::Run(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn githubs_example_deliveries_start_the_mirror_of_the_lower_case_image() {
        let config = config(&[
            ("hello", "ghcr.io/codertocat/hello-world"),
            ("other", "ghcr.io/codertocat/other"),
        ]);
        assert_eq!(package_event(&config, "package", PACKAGE), run(&["hello"]));
        assert_eq!(
            package_event(&config, "registry_package", REGISTRY_PACKAGE),
            run(&["hello"])
        );
    }

    #[test]
    fn each_event_reads_its_own_object() {
        let config = config(&[("hello", "ghcr.io/codertocat/hello-world")]);
        let Verdict::Malformed(why) = package_event(&config, "package", REGISTRY_PACKAGE) else {
            panic!("a registry_package body read as a package event");
        };
        assert!(why.contains("without its `package` object"), "{why}");
    }

    #[test]
    fn without_package_url_the_registry_url_means_ghcr_and_the_owner_is_lower_cased() {
        let config = config(&[("front", "ghcr.io/someorg/repositoryname/frontend")]);
        // The shape of a real GHCR push: a nested name, the namespace as written in the URL.
        let event = |fields: &str| {
            format!(
                r#"{{"action":"published","registry_package":{{"name":"repositoryname/frontend",{fields}"package_type":"CONTAINER","ecosystem":"CONTAINER","registry":{{"type":"CONTAINER","url":"https://CONTAINER.pkg.github.com/SomeOrg"}}}}}}"#
            )
        };
        for fields in [
            r#""namespace":"SomeOrg","#,
            r#""owner":{"login":"SomeOrg"},"#,
            "", // the owner from the registry URL's path
        ] {
            assert_eq!(
                package_event(&config, "registry_package", event(fields).as_bytes()),
                run(&["front"]),
                "{fields}"
            );
        }
    }

    #[test]
    fn package_urls_with_an_empty_tag_a_tag_or_a_digest_name_the_same_repository() {
        let config = config(&[("app", "ghcr.io/org/app")]);
        for url in [
            "ghcr.io/Org/App:",
            "ghcr.io/org/app:v1.2",
            "ghcr.io/org/app",
            "ghcr.io/org/app@sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
            " ghcr.io/org/app:latest ",
        ] {
            let body = format!(
                r#"{{"action":"updated","package":{{"name":"app","package_version":{{"package_url":"{url}"}}}}}}"#
            );
            assert_eq!(
                package_event(&config, "package", body.as_bytes()),
                run(&["app"]),
                "{url}"
            );
        }
    }

    #[test]
    fn a_package_that_matches_nothing_says_what_was_looked_for_in_normalised_form() {
        let config = config(&[("other", "ghcr.io/codertocat/other")]);
        assert_eq!(
            package_event(&config, "package", PACKAGE),
            Verdict::NoMatch("no mirror's source is ghcr.io/codertocat/hello-world".into())
        );
    }

    #[test]
    fn only_a_package_none_of_whose_kinds_is_a_container_is_refused() {
        let config = config(&[("app", "ghcr.io/org/app")]);
        let npm = br#"{"action":"published","package":{"name":"lib","namespace":"org","package_type":"npm","ecosystem":"npm","registry":{"type":"npm","url":"https://npm.pkg.github.com/org"}}}"#;
        assert_eq!(
            package_event(&config, "package", npm),
            Verdict::NoMatch("package \"lib\" is a npm package, not a container image".into())
        );
        let deleted = br#"{"action":"deleted","package":{"name":"app","namespace":"org"}}"#;
        assert!(matches!(
            package_event(&config, "package", deleted),
            Verdict::Ignore(_)
        ));
    }

    #[test]
    fn without_tag_keeps_a_port_and_drops_tags_and_digests() {
        assert_eq!(
            without_tag("127.0.0.1:5000/org/app"),
            "127.0.0.1:5000/org/app"
        );
        assert_eq!(
            without_tag("127.0.0.1:5000/org/app:v1"),
            "127.0.0.1:5000/org/app"
        );
        assert_eq!(without_tag("ghcr.io/o/a:"), "ghcr.io/o/a");
        assert_eq!(without_tag("ghcr.io/o/a@sha256:00"), "ghcr.io/o/a");
    }
}
