//! Image references as users write them, and where each one is mirrored to.
//!
//! The reference grammar and Docker's normalisation (`nginx` is `docker.io/library/nginx`)
//! are checked in [`grammar`]. This module adds the two things a mirror needs on top:
//! the repository path *as the user wrote it* (target names are built from it, so
//! `nginx:stable` lands at `<prefix>/nginx`, not `<prefix>/library/nginx`), and the host that
//! actually serves a registry's API (`docker.io` is served by `registry-1.docker.io`).
//!
//! An OCI image layout on disk stands where a registry does, named as skopeo names it
//! (`oci:/mnt/transfer:mirror/nginx:1.27`, see [`layout`]): its registry name is `oci:/DIR`,
//! and references print back in skopeo's form.

mod grammar;
pub mod layout;

pub use grammar::{is_tag, TAG_MAX};
pub use layout::{is_layout, ref_name, split_ref_name};

use std::fmt;

use oci_client::Reference;

/// The registry name users write for Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Why a reference or target could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {written:?}: {reason}")]
    Invalid { written: String, reason: String },
    #[error("invalid target {written:?}: {reason}")]
    InvalidTarget { written: String, reason: String },
}

/// A source image: a repository on a registry, pinned by tag, digest or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry as users name it (`docker.io`, `ghcr.io`, `127.0.0.1:5001`).
    pub registry: String,
    /// The full repository on that registry (`library/nginx`).
    pub repository: String,
    /// The repository path as written, registry host dropped (`nginx`); targets are named after it.
    pub written_path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference such as `nginx:stable`, `ghcr.io/org/app:v1` or `repo@sha256:…`.
    ///
    /// A reference with neither tag nor digest means `:latest`, as it does for Docker.
    pub fn parse(written: &str) -> Result<Self, ReferenceError> {
        if is_layout(written) {
            return parse_in_layout(written);
        }
        let (path, tag, digest) = split_written(written)?;
        let parsed =
            grammar::check(path, tag, digest).map_err(|reason| ReferenceError::Invalid {
                written: written.to_string(),
                reason,
            })?;
        let written_path = match path.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => rest.to_string(),
            _ => path.to_string(),
        };
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(ImageRef {
            registry: parsed.registry,
            repository: parsed.repository,
            written_path,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// Parses a repository with no tag or digest (a `[[mirror]]` source that lists `tags`).
    pub fn parse_repository(written: &str) -> Result<Self, ReferenceError> {
        if is_layout(written) {
            let invalid = |reason: String| ReferenceError::Invalid {
                written: written.to_string(),
                reason,
            };
            let repository = layout_repository(written).map_err(invalid)?;
            return Ok(ImageRef {
                written_path: repository.repository.clone(),
                registry: repository.registry,
                repository: repository.repository,
                tag: None,
                digest: None,
            });
        }
        let (_, tag, digest) = split_written(written)?;
        if tag.is_some() || digest.is_some() {
            return Err(ReferenceError::Invalid {
                written: written.to_string(),
                reason: "names a tag or digest and also lists `tags`; use one or the other"
                    .to_string(),
            });
        }
        Self::parse(written)
    }

    /// The same repository pinned to another tag (the repository was checked when it was
    /// parsed: only the tag is).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        let tagged = self.repo().tagged(tag)?;
        Ok(ImageRef {
            tag: tagged.tag,
            digest: None,
            ..self.clone()
        })
    }

    /// Whether it names an image in an OCI image layout rather than a registry.
    pub fn is_layout(&self) -> bool {
        is_layout(&self.registry)
    }

    /// The repository this image lives in.
    pub fn repo(&self) -> Repository {
        Repository {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
        }
    }

    /// The same image pinned to `digest`, its tag kept for messages and pushes.
    pub fn pinned(&self, digest: &str) -> Self {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The name a HEAD should check: the tag when there is one (a tag is what must point at
    /// the right content), else the digest.
    pub fn named(&self) -> Self {
        match &self.tag {
            Some(_) => ImageRef {
                digest: None,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// What the registry API is asked for: the digest when pinned, else the tag.
    pub fn api_reference(&self) -> Reference {
        let host = api_host(&self.registry).to_string();
        match (&self.tag, &self.digest) {
            (_, Some(digest)) => {
                Reference::with_digest(host, self.repository.clone(), digest.clone())
            }
            (Some(tag), None) => Reference::with_tag(host, self.repository.clone(), tag.clone()),
            (None, None) => unreachable!("ImageRef always has a tag or a digest"),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_layout() {
            // skopeo's `oci:DIR:NAME`, NAME being the layout's ref.name.
            write!(f, "{}:", self.registry)?;
            match &self.tag {
                Some(tag) => f.write_str(&ref_name(&self.repository, tag))?,
                None => f.write_str(&self.repository)?,
            }
            if let Some(digest) = &self.digest {
                write!(f, "@{digest}")?;
            }
            return Ok(());
        }
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A repository in the registry the user controls: `host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    pub registry: String,
    pub repository: String,
}

impl Repository {
    /// Parses `host[:port][/path]`, as written for `defaults.target` (a prefix, which may be
    /// the bare host) or a `[[mirror]]` `target` (a full repository).
    ///
    /// A layout (`oci:DIR` or `oci:DIR:path`) may name no path even as a full repository: its
    /// images are then named by their bare tags, as oras and skopeo name a layout's one image.
    pub fn parse(written: &str, require_path: bool) -> Result<Self, ReferenceError> {
        let invalid = |reason: &str| ReferenceError::InvalidTarget {
            written: written.to_string(),
            reason: reason.to_string(),
        };
        if is_layout(written) {
            return layout_repository(written).map_err(|e| invalid(&e));
        }
        if let Some((scheme, rest)) = written.split_once("://") {
            return Err(invalid(&format!(
                "takes no {scheme}:// scheme: write `{rest}`"
            )));
        }
        let trimmed = written.trim_end_matches('/');
        let (host, path) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if let Some((_, after)) = host.rsplit_once('@') {
            // Never echoed: whatever comes before `@` may be a password.
            return Err(ReferenceError::InvalidTarget {
                written: format!("<redacted>@{after}{}", &written[host.len()..]),
                reason: "holds credentials (`user:password@`): give them in \
                         [registries.\"host\"] or Docker's config.json"
                    .to_string(),
            });
        }
        if !looks_like_host(host) {
            return Err(invalid(
                "must start with a registry host, such as `registry.example.com/mirror` or `127.0.0.1:5000`",
            ));
        }
        // Checked on its own too: without a path, nothing below would look at it.
        grammar::check_registry(host).map_err(|e| invalid(&e))?;
        if require_path && path.is_empty() {
            return Err(invalid("names a registry but no repository"));
        }
        if path.contains(['@', ':']) {
            return Err(invalid("is a repository: it takes no tag or digest"));
        }
        if !path.is_empty() {
            // The reference grammar judges the host and path (lower case, separators, length).
            grammar::check(&format!("{host}/{path}"), None, None).map_err(|e| invalid(&e))?;
        }
        Ok(Repository {
            registry: host.to_string(),
            repository: path.to_string(),
        })
    }

    /// `prefix/<path>`: where a source is mirrored under a `defaults.target` prefix.
    pub fn join(&self, path: &str) -> Repository {
        let repository = if self.repository.is_empty() {
            path.to_string()
        } else if path.is_empty() {
            self.repository.clone()
        } else {
            format!("{}/{path}", self.repository)
        };
        Repository {
            registry: self.registry.clone(),
            repository,
        }
    }

    /// The manifest `digest` in this repository, with no tag.
    pub fn at_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            written_path: self.repository.clone(),
            tag: None,
            digest: Some(digest.to_string()),
        }
    }

    /// The image tagged `tag` in this repository; only the tag is checked (the repository was
    /// when it was parsed).
    pub fn tagged(&self, tag: &str) -> Result<ImageRef, ReferenceError> {
        grammar::check_tag(tag).map_err(|reason| ReferenceError::Invalid {
            written: format!("{self}:{tag}"),
            reason,
        })?;
        Ok(ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            written_path: self.repository.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// Whether it is a repository in an OCI image layout rather than a registry.
    pub fn is_layout(&self) -> bool {
        is_layout(&self.registry)
    }

    /// The image `source` becomes in this repository: same tag, same digest.
    pub fn image_for(&self, source: &ImageRef) -> ImageRef {
        ImageRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            written_path: self.repository.clone(),
            tag: source.tag.clone(),
            digest: source.digest.clone(),
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_layout(), self.repository.is_empty()) {
            (true, true) => f.write_str(&self.registry),
            (true, false) => write!(f, "{}:{}", self.registry, self.repository),
            (false, _) => write!(f, "{}/{}", self.registry, self.repository),
        }
    }
}

/// How images are named under a target prefix (`defaults.target`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// The path as written, registry dropped: `nginx:stable` → `<prefix>/nginx:stable`.
    #[default]
    Path,
    /// The source registry, then the full repository: `nginx:stable` →
    /// `<prefix>/docker.io/library/nginx:stable`, the naming container runtimes' mirror
    /// settings can map an upstream name to.
    Registry,
}

impl Layout {
    /// `path` or `registry`, as mirrors.toml writes it.
    pub fn parse(written: &str) -> Option<Layout> {
        match written {
            "path" => Some(Layout::Path),
            "registry" => Some(Layout::Registry),
            _ => None,
        }
    }
}

/// The path component that stands for `registry` in the registry layout: its canonical name
/// in lower case (host names are case-insensitive, repository paths are lower case), with a
/// port's `:` written `-` (`127.0.0.1:5001` → `127.0.0.1-5001`), since a repository path
/// cannot hold a colon. `None` for a name no path component can hold.
pub fn registry_component(registry: &str) -> Option<String> {
    let component = canonical_registry(registry)
        .to_ascii_lowercase()
        .replace(':', "-");
    grammar::check(&format!("r.io/{component}"), None, None)
        .ok()
        .map(|_| component)
}

/// Where `source` goes under `prefix` in `layout`. `registry_dir` is the path standing for the
/// source's registry in the registry layout (its [`registry_component`], or a
/// `mirror_prefix`; empty for none). Fails when the name passes the grammar's limits.
pub fn target_under(
    prefix: &Repository,
    source: &ImageRef,
    layout: Layout,
    registry_dir: &str,
) -> Result<Repository, ReferenceError> {
    let path = match layout {
        // A layout's names are already paths a mirror chose: kept whichever the layout.
        _ if source.is_layout() => source.repository.clone(),
        Layout::Path => source.written_path.clone(),
        Layout::Registry if registry_dir.is_empty() => source.repository.clone(),
        Layout::Registry => format!("{registry_dir}/{}", source.repository),
    };
    let target = prefix.join(&path);
    let checked = match target.is_layout() {
        true if target.repository.is_empty() => Ok(()),
        true => grammar::check_path(&target.repository),
        false => grammar::check(&target.to_string(), None, None).map(|_| ()),
    };
    checked.map_err(|reason| ReferenceError::InvalidTarget {
        written: target.to_string(),
        reason,
    })?;
    Ok(target)
}

/// The host that serves a registry's API.
pub fn api_host(registry: &str) -> &str {
    match registry {
        DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB_API,
        other => other,
    }
}

/// The one name regmirror uses for a registry, whichever alias a user wrote.
pub fn canonical_registry(name: &str) -> &str {
    match name {
        "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
        other => other,
    }
}

/// Whether a registry is reached over loopback, where Docker itself speaks plain HTTP.
pub fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a reference as written names a tag or a digest (`nginx:1`, `app@sha256:…`), rather
/// than leaving it to the `latest` default (`nginx`).
pub fn names_tag_or_digest(written: &str) -> bool {
    if is_layout(written) {
        return layout::split(written).is_ok_and(|(_, name)| name.is_some());
    }
    split_written(written).is_ok_and(|(_, tag, digest)| tag.is_some() || digest.is_some())
}

/// `oci:DIR:NAME` as a source image: NAME is the layout's ref.name, split into repository and
/// tag ([`split_ref_name`]), or `path@digest`.
fn parse_in_layout(written: &str) -> Result<ImageRef, ReferenceError> {
    let invalid = |reason: String| ReferenceError::Invalid {
        written: written.to_string(),
        reason,
    };
    let (registry, name) = layout::split(written).map_err(invalid)?;
    let name = name.ok_or_else(|| {
        invalid("names a layout but no image in it: write oci:DIR:NAME, NAME as the layout's index.json names it (such as mirror/nginx:1.27)".to_string())
    })?;
    let (repository, tag, digest) = match name.split_once('@') {
        Some((named, digest)) => {
            grammar::check_digest(digest).map_err(invalid)?;
            let (repository, tag) = match split_ref_name(named) {
                ("", path) => (path, None),
                (repository, tag) => (repository, Some(tag)),
            };
            (repository, tag, Some(digest))
        }
        None => {
            let (repository, tag) = split_ref_name(name);
            (repository, Some(tag), None)
        }
    };
    if !repository.is_empty() {
        grammar::check_path(repository).map_err(invalid)?;
    }
    if let Some(tag) = tag {
        grammar::check_tag(tag).map_err(invalid)?;
    }
    Ok(ImageRef {
        registry,
        repository: repository.to_string(),
        written_path: repository.to_string(),
        tag: tag.map(str::to_string),
        digest: digest.map(str::to_string),
    })
}

/// `oci:DIR[:path]` as a repository: the path must be one (or empty), with no tag or digest.
fn layout_repository(written: &str) -> Result<Repository, String> {
    let (registry, name) = layout::split(written)?;
    let path = name.unwrap_or_default();
    if path.contains('@') || !split_ref_name(path).0.is_empty() {
        return Err("is a repository: it takes no tag or digest".to_string());
    }
    if !path.is_empty() {
        grammar::check_path(path)?;
    }
    Ok(Repository {
        registry,
        repository: path.to_string(),
    })
}

/// Docker's rule: the first path component is a host when it has a dot or a port, or is
/// `localhost`.
fn looks_like_host(component: &str) -> bool {
    grammar::is_domain_like(component) || component.starts_with('[')
}

/// Splits `name[:tag][@digest]` as written, keeping the name's spelling.
fn split_written(written: &str) -> Result<(&str, Option<&str>, Option<&str>), ReferenceError> {
    if written.trim() != written || written.is_empty() {
        return Err(ReferenceError::Invalid {
            written: written.to_string(),
            reason: "empty or surrounded by spaces".to_string(),
        });
    }
    let (name, digest) = match written.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (written, None),
    };
    // A colon after the last slash starts the tag; one before it is a registry port.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].find(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    Ok((path, tag, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn target_of(prefix: &str, source: &str) -> String {
        let source = ImageRef::parse(source).unwrap();
        let target = Repository::parse(prefix, false)
            .unwrap()
            .join(&source.written_path);
        target.image_for(&source).to_string()
    }

    #[test]
    fn docker_hub_short_names_expand_but_keep_their_written_path() {
        let r = ImageRef::parse("nginx:stable").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/nginx");
        assert_eq!(r.written_path, "nginx");
        assert_eq!(r.api_reference().resolve_registry(), "registry-1.docker.io");
        assert_eq!(r.api_reference().repository(), "library/nginx");
    }

    #[test]
    fn targets_are_named_after_the_path_as_written() {
        let t = "123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror";
        assert_eq!(target_of(t, "nginx:stable"), format!("{t}/nginx:stable"));
        assert_eq!(
            target_of(t, "library/alpine:3.19"),
            format!("{t}/library/alpine:3.19")
        );
        assert_eq!(
            target_of(t, "ghcr.io/org/app:v1"),
            format!("{t}/org/app:v1")
        );
        assert_eq!(
            target_of(t, "127.0.0.1:5001/team/app:1.0"),
            format!("{t}/team/app:1.0")
        );
        assert_eq!(
            target_of("localhost:5000", "nginx"),
            "localhost:5000/nginx:latest"
        );
    }

    #[test]
    fn digest_references_are_pushed_by_digest() {
        let source = format!("quay.io/prometheus/prometheus@{DIGEST}");
        assert_eq!(
            target_of("reg.example.com/m", &source),
            format!("reg.example.com/m/prometheus/prometheus@{DIGEST}")
        );
        let r = ImageRef::parse(&source).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.api_reference().digest(), Some(DIGEST));
    }

    #[test]
    fn a_registry_port_is_not_a_tag() {
        let r = ImageRef::parse("127.0.0.1:5001/team/app").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5001");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn bad_references_are_refused_with_the_reference_named() {
        for bad in [
            "",
            "Nginx:1",
            "nginx:",
            "a b",
            "nginx@sha256:short",
            " nginx",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn a_mirror_source_with_tags_must_not_name_one_itself() {
        assert!(ImageRef::parse_repository("ghcr.io/org/tool").is_ok());
        assert!(ImageRef::parse_repository("ghcr.io/org/tool:v1").is_err());
        let tagged = ImageRef::parse_repository("ghcr.io/org/tool")
            .unwrap()
            .with_tag("v1.2.0");
        assert_eq!(tagged.unwrap().to_string(), "ghcr.io/org/tool:v1.2.0");
        assert!(ImageRef::parse_repository("x.io/t")
            .unwrap()
            .with_tag("bad tag")
            .is_err());
    }

    #[test]
    fn targets_must_start_with_a_host() {
        assert!(Repository::parse("mirror/foo", false).is_err());
        let scheme = Repository::parse("https://r.io/m", false).unwrap_err();
        assert!(scheme.to_string().contains("write `r.io/m`"), "{scheme}");
        assert!(Repository::parse("reg.example.com", true).is_err());
        assert!(Repository::parse("reg.example.com/a:b", true).is_err());
        assert!(Repository::parse("reg.example.com/UPPER", true).is_err());
        // A bare host is judged as strictly as one with a path.
        for bad in [
            "registry.example.com@127.0.0.1:5000",
            "u:s3cr3t@registry.example.com",
            "reg.example.com:port",
            "reg..example.com",
            "[::1",
            "[nonsense]:5000",
        ] {
            let err = Repository::parse(bad, false).unwrap_err().to_string();
            assert!(!err.contains("s3cr3t"), "{err}");
        }
        let credentials = Repository::parse("u:s3cr3t@reg.example.com/m", false).unwrap_err();
        assert!(
            credentials
                .to_string()
                .contains("\"<redacted>@reg.example.com/m\""),
            "{credentials}"
        );
        for good in [
            "reg.example.com",
            "localhost:5000",
            "[::1]:5000",
            "my_host.io",
        ] {
            assert!(Repository::parse(good, false).is_ok(), "{good}");
        }
        let r = Repository::parse("registry.internal:5000/tools/tool", true).unwrap();
        assert_eq!(r.registry, "registry.internal:5000");
        assert_eq!(r.repository, "tools/tool");
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for host in [
            "localhost:5000",
            "127.0.0.1:5001",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.internal:5000",
            "[::2]:1",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
