//! The distribution spec's reference grammar, checked by hand.
//!
//! oci-client would check it with oci-spec's one regular expression, but compiling that
//! expression (Unicode classes, nested repetitions) costs 17 MiB at its peak and leaves 7 MiB
//! resident for the life of the process: more than the rest of an idle daemon. The grammar is
//! small, so it is spelt out here; a test holds it to oci-spec's verdict on a corpus and on
//! random input.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] component ( "/" component )*     (255 characters at most)
//! domain     := host [ ":" port ]         host := label ( "." label )*   label := [a-zA-Z0-9] ([a-zA-Z0-9-]* [a-zA-Z0-9])?
//! component  := [a-z0-9]+ ( separator [a-z0-9]+ )*             separator := "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" [0-9a-fA-F]{32,}                  algorithm := [A-Za-z][A-Za-z0-9]* ( [-_+.] [A-Za-z][A-Za-z0-9]* )*
//! ```
//!
//! As Docker does, a first component is the domain when it holds a `.` or `:` or is
//! `localhost`; otherwise the registry is Docker Hub, where a one-component name is an official
//! image under `library/`. Tags are ASCII, as the distribution spec has them (oci-spec's `\w`
//! would also take other Unicode letters, which registries refuse).

/// The longest repository name, registry excluded.
const NAME_MAX: usize = 255;
/// The longest tag.
pub const TAG_MAX: usize = 128;

/// A reference split and checked: registry and full repository (Docker Hub normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checked {
    pub registry: String,
    pub repository: String,
}

/// Checks `name[:tag][@digest]`, already split; says what is wrong when it is not valid.
pub(super) fn check(
    name: &str,
    tag: Option<&str>,
    digest: Option<&str>,
) -> Result<Checked, String> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if is_domain_like(first) => {
            // As in Docker's parser, a name that is valid as a path is valid whatever its
            // first component, which then names the registry (`my_host.io/app`).
            if !is_component(first) {
                domain(first)?;
            }
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    repository_path(path)?;
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let registry = match registry {
        "index.docker.io" => "docker.io",
        other => other,
    };
    let repository = if registry == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if repository.len() > NAME_MAX {
        return Err(format!(
            "repository name is {} characters long; the limit is {NAME_MAX}",
            repository.len()
        ));
    }
    Ok(Checked {
        registry: registry.to_string(),
        repository,
    })
}

/// Docker's rule for whether the first component names a registry.
pub(super) fn is_domain_like(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

/// A registry named on its own (a target with no path): `host[:port]` or `[ipv6][:port]`.
pub(super) fn check_registry(name: &str) -> Result<(), String> {
    if let Some(v6) = name.strip_prefix('[') {
        let bad = || format!("registry {name:?} is not `[IPv6 address]` with an optional port");
        let (address, port) = v6.split_once(']').ok_or_else(bad)?;
        let port_ok = port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if address.parse::<std::net::Ipv6Addr>().is_err() || !port_ok {
            return Err(bad());
        }
        return Ok(());
    }
    if is_component(name) {
        return Ok(());
    }
    domain(name)
}

/// `host[:port]`.
fn domain(domain: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry {domain:?} {why}"));
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return bad("has a port that is not a number");
        }
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    if !host.split('.').all(label_ok) {
        return bad("is not a valid host name (letters, digits, `-` and `.`)");
    }
    Ok(())
}

/// A repository path alone, with no registry in front (a name inside an OCI image layout):
/// its components and its length.
pub(super) fn check_path(path: &str) -> Result<(), String> {
    repository_path(path)?;
    if path.len() > NAME_MAX {
        return Err(format!(
            "repository name is {} characters long; the limit is {NAME_MAX}",
            path.len()
        ));
    }
    Ok(())
}

/// `component ( "/" component )*`.
fn repository_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("names no repository".to_string());
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".to_string());
    }
    for component in path.split('/') {
        if !is_component(component) {
            return Err(format!(
                "{component:?} is not a valid repository path component (lower-case letters \
                 and digits, joined by `.`, `_`, `__` or dashes)"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+ ( separator [a-z0-9]+ )*`: alternating runs, separators only between.
fn is_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return false;
        }
    }
    true
}

/// Whether `tag` is a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= TAG_MAX
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

pub(super) fn check_tag(tag: &str) -> Result<(), String> {
    if is_tag(tag) {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not valid (up to {TAG_MAX} letters, digits, `_`, `.` and `-`, \
             not starting with `.` or `-`)"
        ))
    }
}

pub(super) fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} is not `algorithm:hex`"));
    };
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphabetic()
            && bytes.iter().all(|b| b.is_ascii_alphanumeric())
    };
    let well_formed = algorithm.split(['-', '_', '+', '.']).all(component_ok)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(format!("digest {digest:?} is not `algorithm:hex`"));
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("digest algorithm {other:?} is not supported")),
    };
    if hex.len() != expected {
        return Err(format!(
            "digest {digest:?} has {} hex digits; {algorithm} has {expected}",
            hex.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use oci_client::Reference;
    use proptest::prelude::*;

    use super::*;

    /// What oci-spec says of a reference: `Some((registry, repository))` when valid. Less one
    /// known slip: its expression takes `aA/a` as domain `aA` and path `a`, then files the
    /// whole name under Docker Hub, upper case included, which Docker refuses (and so do we).
    fn oci_spec(written: &str) -> Option<(String, String)> {
        written
            .parse::<Reference>()
            .ok()
            .map(|r| (r.registry().to_string(), r.repository().to_string()))
            .filter(|(_, repository)| !repository.bytes().any(|b| b.is_ascii_uppercase()))
    }

    /// What this module says, splitting as `ImageRef::parse` does.
    fn ours(written: &str) -> Option<(String, String)> {
        let (path, tag, digest) = super::super::split_written(written).ok()?;
        check(path, tag, digest)
            .ok()
            .map(|c| (c.registry, c.repository))
    }

    const HEX64: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn agrees_with_oci_spec_on_a_corpus() {
        let long = "a".repeat(250);
        let corpus = [
            "nginx",
            "nginx:stable",
            "library/nginx:1.25",
            "docker.io/nginx",
            "index.docker.io/library/nginx",
            "ghcr.io/org/app:v1",
            "localhost/app",
            "localhost:5000/app:1",
            "127.0.0.1:5001/team/app",
            "registry.internal:5000/tools/tool:v1.2.0",
            "quay.io/prometheus/prometheus@sha256:HEX",
            "quay.io/p/p:v1@sha256:HEX",
            "a/b/c/d/e/f",
            "my-app__x.y_z---w",
            "a.b",
            "a..b",
            "a._b",
            "a___b",
            "-a",
            "a-",
            "_a",
            "Nginx",
            "ghcr.io/Org/app",
            "GHCR.IO/org/app",
            "aA/a",
            "nginx:",
            "nginx:.x",
            "nginx:-x",
            "nginx:_x",
            "nginx:a+b",
            "nginx@sha256:short",
            "nginx@sha256:HEXHEX",
            "nginx@md5:0123456789abcdef0123456789abcdef",
            "nginx@sha512:HEXHEX",
            "reg-.io/a",
            "-reg.io/a",
            "reg.io:/a",
            "reg.io:x/a",
            "reg.io/",
            "reg.io//a",
            "a b",
            "docker.io/LONG",
            "docker.io/x/LONG",
        ];
        for case in corpus {
            let written = case
                .replace("HEXHEX", &format!("{HEX64}{HEX64}"))
                .replace("HEX", HEX64)
                .replace("LONG", &long);
            assert_eq!(ours(&written), oci_spec(&written), "{written:?}");
        }
        let tag = format!("nginx:{}", "t".repeat(128));
        assert_eq!(ours(&tag), oci_spec(&tag));
        let too_long = format!("nginx:{}", "t".repeat(129));
        assert_eq!(ours(&too_long), None);
        assert_eq!(oci_spec(&too_long), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn agrees_with_oci_spec_on_random_references(
            written in "([a-zA-Z0-9.:_-]{1,12}/){0,3}[a-zA-Z0-9._-]{1,12}(:[a-zA-Z0-9._-]{1,6})?"
        ) {
            prop_assert_eq!(ours(&written), oci_spec(&written), "{:?}", written);
        }
    }
}
