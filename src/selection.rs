//! Which tags of a repository a mirror takes: exact tags, and rules over the tags a listing
//! returns.
//!
//! A mirror selects its exact `tags`, plus every listed tag that passes *every* rule it gives:
//!
//! - `include`: regular expressions, any of which must match the whole tag (as if written
//!   `^(?:…)$`, like regsync), so a typo selects nothing rather than everything;
//! - `exclude`: regular expressions, none of which may match the whole tag; an exclusion beats
//!   whatever selected the tag;
//! - `semver`: a version range in Cargo's syntax (`>=1.27.0, <2`), matched by tags that are
//!   versions (an optional `v` before `MAJOR.MINOR.PATCH`); a pre-release matches only a range
//!   that names a pre-release of the same version, so `*` means every release;
//! - `latest`: of the tags left, the N highest by semver precedence (pre-releases rank below
//!   their release). Tags that are not versions never count toward it and are not selected
//!   when it is set.
//!
//! Tags of the `sha256-<hex>` form (cosign's `.sig`/`.att`/`.sbom` and the OCI referrers
//! fallback index) are never selected by rules: they describe other manifests rather than
//! being images to run.
//!
//! Everything here is checked when the config loads ([`Pattern::new`], [`parse_range`]), so a
//! bad rule is a config error with a line and column, never a failure found at the first run.

use std::cmp::Ordering;
use std::fmt;
use std::num::NonZeroUsize;

use regex::Regex;
use semver::{Version, VersionReq};

/// The compiled size a user's regular expression may reach; beyond it the expression is
/// refused at load. regex runs in linear time, so size is the only cost to bound.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A regular expression matched against whole tags, and how the user wrote it.
#[derive(Debug, Clone)]
pub struct Pattern {
    written: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `written`, anchored at both ends.
    pub fn new(written: &str) -> Result<Pattern, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{written})$"))
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::Syntax(detail) => {
                    // The message quotes the anchored form; show only the user's part.
                    let first = detail.lines().last().unwrap_or_default().trim();
                    format!("{written:?} is not a regular expression: {first}")
                }
                regex::Error::CompiledTooBig(_) => {
                    format!("{written:?} is too large a regular expression")
                }
                other => format!("{written:?} is not a regular expression: {other}"),
            })?;
        Ok(Pattern {
            written: written.to_string(),
            regex,
        })
    }

    /// Whether the whole of `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Eq for Pattern {}

/// A version range, and how the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    written: String,
    req: VersionReq,
}

/// Parses a `semver` range such as `>=1.27.0, <2` or `~1.27`.
pub fn parse_range(written: &str) -> Result<Range, String> {
    let req = VersionReq::parse(written).map_err(|e| {
        format!("{written:?} is not a version range: {e} (write it like \">=1.27.0, <2\", \"~1.27\" or \"1.*\")")
    })?;
    Ok(Range {
        written: written.to_string(),
        req,
    })
}

/// The rules of one mirror. At least one of `include`, `semver` and `latest` is set: a
/// mirror never takes every tag of a repository unless it says so (`include = [".*"]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagRules {
    pub include: Vec<Pattern>,
    pub exclude: Vec<Pattern>,
    pub semver: Option<Range>,
    pub latest: Option<NonZeroUsize>,
}

impl TagRules {
    /// Whether a listed tag passes every rule but `latest`.
    fn admits(&self, tag: &str) -> bool {
        if is_referrer_tag(tag) {
            return false;
        }
        if !self.include.is_empty() && !self.include.iter().any(|p| p.matches(tag)) {
            return false;
        }
        if self.exclude.iter().any(|p| p.matches(tag)) {
            return false;
        }
        match &self.semver {
            Some(range) => version_of(tag).is_some_and(|v| range.req.matches(&v)),
            None => true,
        }
    }

    /// Whether these rules name `tag`: it passes every rule, and is a version when `latest`
    /// is set, so that only the count of `latest` can leave it out. A tag they do not name
    /// is never theirs to delete.
    pub fn names(&self, tag: &str) -> bool {
        self.admits(tag) && (self.latest.is_none() || version_of(tag).is_some())
    }

    /// The listed tags these rules select, in a stable order: highest version first when
    /// `latest` is set, else as listed.
    pub fn select<'a>(&self, listed: &'a [String]) -> Vec<&'a str> {
        let admitted = listed.iter().map(String::as_str).filter(|t| self.admits(t));
        let Some(latest) = self.latest else {
            return admitted.collect();
        };
        let mut versions: Vec<(Version, &str)> = admitted
            .filter_map(|tag| version_of(tag).map(|v| (v, tag)))
            .collect();
        // Highest first; `v1.2.3` and `1.2.3` are the same version, ordered by spelling so
        // the choice does not depend on the registry's listing order.
        versions.sort_by(|(a, ta), (b, tb)| b.cmp_precedence(a).then_with(|| ta.cmp(tb)));
        versions.truncate(latest.get());
        versions.into_iter().map(|(_, tag)| tag).collect()
    }
}

impl fmt::Display for TagRules {
    /// `include 1\.27\.\d+; exclude .*-rc.*; semver >=1.27.0, <2; latest 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let list = |patterns: &[Pattern]| {
            patterns
                .iter()
                .map(Pattern::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.include.is_empty() {
            parts.push(format!("include {}", list(&self.include)));
        }
        if !self.exclude.is_empty() {
            parts.push(format!("exclude {}", list(&self.exclude)));
        }
        if let Some(range) = &self.semver {
            parts.push(format!("semver {}", range.written));
        }
        if let Some(latest) = self.latest {
            parts.push(format!("latest {latest}"));
        }
        f.write_str(&parts.join("; "))
    }
}

/// The version a tag names: `1.2.3`, `v1.2.3`, `1.2.3-rc.1`; `None` for `1.27`, `stable` or
/// `1.2.3.4`.
pub fn version_of(tag: &str) -> Option<Version> {
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    Version::parse(bare).ok()
}

/// Whether `tag` is one of the tags that describe another manifest by its digest:
/// `sha256-<64 hex>` (the OCI referrers fallback) and `sha256-<64 hex>.<suffix>` (cosign's
/// `.sig`, `.att`, `.sbom`); the same for sha512.
pub fn is_referrer_tag(tag: &str) -> bool {
    [("sha256-", 64), ("sha512-", 128)]
        .iter()
        .any(|(prefix, hex_len)| {
            tag.strip_prefix(prefix).is_some_and(|rest| {
                rest.len() >= *hex_len
                    && rest.as_bytes()[..*hex_len]
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    && (rest.len() == *hex_len || rest.as_bytes()[*hex_len] == b'.')
            })
        })
}

/// Orders tags by version, highest first, for messages (`nginx: newest 1.27.3`).
pub fn by_version_desc(a: &str, b: &str) -> Ordering {
    match (version_of(a), version_of(b)) {
        (Some(va), Some(vb)) => vb.cmp_precedence(&va).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    fn rules(include: &[&str], exclude: &[&str], semver: Option<&str>, latest: usize) -> TagRules {
        TagRules {
            include: include.iter().map(|p| Pattern::new(p).unwrap()).collect(),
            exclude: exclude.iter().map(|p| Pattern::new(p).unwrap()).collect(),
            semver: semver.map(|r| parse_range(r).unwrap()),
            latest: NonZeroUsize::new(latest),
        }
    }

    const NGINX: &[&str] = &[
        "1.27.0",
        "1.27.1",
        "1.27.2-alpine",
        "1.27.3",
        "1.27",
        "1.28.0-rc.1",
        "1.26.2",
        "stable",
        "mainline-alpine",
        "v1.29.0",
        "1.27.1-rc.2",
        "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.sig",
    ];

    #[test]
    fn include_matches_the_whole_tag() {
        let listed = tags(NGINX);
        assert_eq!(
            rules(&[r"1\.27\.\d+"], &[], None, 0).select(&listed),
            ["1.27.0", "1.27.1", "1.27.3"]
        );
        // Unanchored, `1.27` would have matched `1.27.2-alpine` and `1.27.1-rc.2` too.
        assert_eq!(rules(&["1.27"], &[], None, 0).select(&listed), ["1.27"]);
    }

    #[test]
    fn exclude_beats_include() {
        let listed = tags(NGINX);
        assert_eq!(
            rules(&[r"1\.27.*"], &[".*-rc.*", ".*alpine.*"], None, 0).select(&listed),
            ["1.27.0", "1.27.1", "1.27.3", "1.27"]
        );
    }

    #[test]
    fn semver_ranges_skip_tags_that_are_not_versions_and_pre_releases() {
        let listed = tags(NGINX);
        assert_eq!(
            rules(&[], &[], Some(">=1.27.0, <2"), 0).select(&listed),
            ["1.27.0", "1.27.1", "1.27.3", "v1.29.0"]
        );
        // A range naming a pre-release admits that version's pre-releases.
        assert_eq!(
            rules(&[], &[], Some(">=1.28.0-rc.0, <1.29"), 0).select(&listed),
            ["1.28.0-rc.1"]
        );
    }

    #[test]
    fn latest_keeps_the_highest_versions_with_pre_releases_below_their_release() {
        let listed = tags(&[
            "1.0.0",
            "2.0.0-rc.1",
            "1.10.0",
            "1.9.0",
            "2.0.0",
            "v1.10.0",
            "edge",
        ]);
        assert_eq!(
            rules(&[], &[], None, 3).select(&listed),
            ["2.0.0", "2.0.0-rc.1", "1.10.0"]
        );
        // Both spellings of one version count, ordered by spelling.
        assert_eq!(
            rules(&[], &[], None, 4).select(&listed),
            ["2.0.0", "2.0.0-rc.1", "1.10.0", "v1.10.0"]
        );
        // `*` is every release: with it, latest counts releases only.
        assert_eq!(
            rules(&[], &[], Some("*"), 2).select(&listed),
            ["2.0.0", "1.10.0"]
        );
        // Tags that are not versions are not selected when latest is set.
        assert_eq!(rules(&[".*"], &[], None, 100).select(&listed).len(), 6);
    }

    #[test]
    fn referrer_tags_are_never_selected_by_rules() {
        let hex = "0123456789abcdef".repeat(4);
        let listed = tags(&[
            &format!("sha256-{hex}"),
            &format!("sha256-{hex}.sig"),
            &format!("sha256-{hex}.att"),
            &format!("sha512-{hex}{hex}"),
            "sha256-short",
            "app",
        ]);
        assert_eq!(
            rules(&[".*"], &[], None, 0).select(&listed),
            ["sha256-short", "app"]
        );
        assert!(!is_referrer_tag(&format!("sha256-{}", hex.to_uppercase())));
        assert!(!is_referrer_tag(&format!("sha256-{hex}x")));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let e = Pattern::new("1.27.(").unwrap_err();
        assert!(
            e.starts_with("\"1.27.(\" is not a regular expression: "),
            "{e}"
        );
        assert!(!e.contains("^(?:"), "{e}");
        let e = parse_range(">=1.27.0 <2 ||").unwrap_err();
        assert!(e.contains("is not a version range"), "{e}");
        let huge = format!("({})", "a{1000}".repeat(100));
        assert!(Pattern::new(&huge).unwrap_err().contains("too large"));
    }

    #[test]
    fn rules_print_as_written() {
        let r = rules(
            &[r"1\.27\.\d+"],
            &[".*-rc.*", ".*alpine.*"],
            Some(">=1.27.0, <2"),
            5,
        );
        assert_eq!(
            r.to_string(),
            r"include 1\.27\.\d+; exclude .*-rc.*, .*alpine.*; semver >=1.27.0, <2; latest 5"
        );
    }

    #[test]
    fn version_order_for_messages() {
        let mut list = vec!["stable", "1.2.0", "v1.10.0", "1.10.0-rc.1", "alpine"];
        list.sort_by(|a, b| by_version_desc(a, b));
        assert_eq!(
            list,
            ["v1.10.0", "1.10.0-rc.1", "1.2.0", "alpine", "stable"]
        );
    }
}
