//! Fuzz-style properties of the parsers that read what others wrote: the manifest parser (any
//! registry), the rate-limit header parser (any registry), the tags-list parser and its `Link`
//! headers (any registry) and the config loader (any edit). Random bytes, truncated and
//! mutated valid inputs, and structured garbage: never a panic, and what comes out is bounded
//! by what went in.

use std::path::Path;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use regmirror::config::{Config, Overrides};
use regmirror::manifest::{Manifest, MAX_REFERENCES};
use regmirror::registry::ratelimit::RateLimitInfo;
use regmirror::registry::tags::{next_link, parse_tags, MAX_TAGS};
use reqwest::Url;

/// A valid index or image manifest with `n` descriptors, as bytes.
fn manifest_bytes(index: bool, n: usize, seed: u8) -> Vec<u8> {
    let descriptor = |i: usize| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{:064x}","size":{},"annotations":{{"k":"v"}}}}"#,
            i * 7919 + seed as usize,
            100 + i
        )
    };
    let list: Vec<String> = (0..n).map(descriptor).collect();
    let body = if index {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            list.join(",")
        )
    } else {
        format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[{}]}}"#,
            descriptor(9999),
            list.join(",")
        )
    };
    body.into_bytes()
}

/// What a parsed manifest holds, to check it against its input.
fn held(manifest: &Manifest) -> (usize, usize) {
    let descriptors = match manifest {
        Manifest::Index { children, .. } => children,
        Manifest::Image { blobs, .. } => blobs,
    };
    let bytes = descriptors
        .iter()
        .map(|d| {
            d.digest.len() + d.media_type.len() + d.urls.iter().map(String::len).sum::<usize>()
        })
        .sum();
    (descriptors.len(), bytes)
}

/// JSON values a hostile registry might send, nested a little.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[ -~]{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("sha256:../../x")),
        Just(serde_json::Value::from(2)),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "schemaVersion",
                        "mediaType",
                        "manifests",
                        "config",
                        "layers",
                        "digest",
                        "size",
                        "urls",
                        "platform",
                        "x",
                    ]),
                    inner
                ),
                0..8
            )
            .prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_manifest_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048),
                                           content_type in proptest::option::of("[ -~]{0,40}")) {
        if let Ok(manifest) = Manifest::parse(&bytes, content_type.as_deref()) {
            let (descriptors, held) = held(&manifest);
            prop_assert!(descriptors <= MAX_REFERENCES);
            prop_assert!(held <= bytes.len());
        }
    }

    #[test]
    fn the_manifest_parser_takes_truncated_and_mutated_manifests(
        index in any::<bool>(),
        n in 0usize..40,
        seed in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let whole = manifest_bytes(index, n, seed);
        let parsed = Manifest::parse(&whole, None).expect("the unmutated manifest is valid");
        prop_assert_eq!(held(&parsed).0, if index { n } else { n + 1 });
        let truncated = &whole[..cut.index(whole.len())];
        if let Ok(manifest) = Manifest::parse(truncated, None) {
            prop_assert!(held(&manifest).1 <= truncated.len());
        }
        let mut mutated = whole.clone();
        for (at, byte) in flips {
            let at = at.index(mutated.len());
            mutated[at] = byte;
        }
        if let Ok(manifest) = Manifest::parse(&mutated, None) {
            prop_assert!(held(&manifest).1 <= mutated.len());
        }
    }

    #[test]
    fn the_manifest_parser_takes_any_json(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(manifest) = Manifest::parse(&bytes, None) {
            prop_assert!(held(&manifest).1 <= bytes.len());
        }
    }

    #[test]
    fn the_rate_limit_parser_takes_any_headers(
        headers in prop::collection::vec((
            prop::sample::select(vec![
                "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit",
                "ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining",
                "x-ratelimit-reset", "retry-after",
            ]),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..80),
                "[0-9;=, wqrt\"a-z-]{0,40}".prop_map(String::into_bytes),
                any::<u64>().prop_map(|n| n.to_string().into_bytes()),
            ],
        ), 0..12),
        now in 0u64..=u64::from(u32::MAX) * 4,
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                map.append(HeaderName::from_static(name), value);
            }
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        let info = RateLimitInfo::from_headers(&map, now);
        let day = Duration::from_secs(24 * 60 * 60);
        prop_assert!(info.reset.is_none_or(|r| r <= day));
        prop_assert!(info.retry_after.is_none_or(|r| r <= day));
        // What the budget does with it: instants a reset away must be representable.
        if let Some(reset) = info.reset {
            prop_assert!(std::time::Instant::now().checked_add(reset).is_some());
        }
    }
}

/// A valid config using most keys, secrets included.
const CONFIG: &str = r#"images = ["nginx:1", "ghcr.io/org/app:v1"]
[defaults]
target = "registry.example.com/mirror"
concurrency = 4
schedule = "0 3 * * *"
timezone = "Europe/Berlin"
[registries."registry.example.com"]
username = "me"
password = "p4ss-w0rd"
[rate_limit]
reserve = 2
max_wait = "1h"
[server]
listen = "127.0.0.1:9090"
sync_token = "t0ken"
[[mirror]]
source = "quay.io/org/tool"
tags = ["v1", "v2"]
target = "registry.example.com/tools/tool"
"#;

/// The tags of a `tags/list` body, every one a valid tag.
fn tags_of(body: &[u8]) -> Result<Vec<String>, regmirror::registry::tags::PageError> {
    let (tags, _) = parse_tags(body, MAX_TAGS)?;
    assert!(
        tags.iter().all(|t| regmirror::reference::is_tag(t)),
        "{tags:?}"
    );
    Ok(tags)
}

/// A valid `tags/list` body of `n` tags.
fn tag_list_bytes(n: usize, seed: u8) -> Vec<u8> {
    let tags: Vec<String> = (0..n).map(|i| format!("\"v{seed}.{i}\"")).collect();
    format!(r#"{{"name":"org/app","tags":[{}]}}"#, tags.join(",")).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_tags_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(tags) = tags_of(&bytes) {
            prop_assert!(tags.iter().map(String::len).sum::<usize>() <= bytes.len());
        }
    }

    #[test]
    fn the_tags_parser_takes_truncated_and_mutated_lists(
        n in 0usize..60,
        seed in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let whole = tag_list_bytes(n, seed);
        prop_assert_eq!(tags_of(&whole).expect("the unmutated list is valid").len(), n);
        let truncated = &whole[..cut.index(whole.len())];
        if let Ok(tags) = tags_of(truncated) {
            prop_assert!(tags.len() <= n);
        }
        let mut mutated = whole.clone();
        for (at, byte) in flips {
            let at = at.index(mutated.len());
            mutated[at] = byte;
        }
        if let Ok(tags) = tags_of(&mutated) {
            prop_assert!(tags.iter().map(String::len).sum::<usize>() <= mutated.len());
        }
    }

    #[test]
    fn the_tags_parser_takes_any_json(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(tags) = tags_of(&bytes) {
            prop_assert!(tags.iter().map(String::len).sum::<usize>() <= bytes.len());
        }
    }

    #[test]
    fn link_headers_take_anything(values in prop::collection::vec("[ -~]{0,80}", 0..4)) {
        let base = Url::parse("https://r.io/v2/org/app/tags/list?n=1000").unwrap();
        let mut headers = HeaderMap::new();
        for value in &values {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.append(reqwest::header::LINK, value);
            }
        }
        let _ = next_link(&headers, &base);
    }

    #[test]
    fn a_relative_next_link_stays_on_the_registry(
        path in "/[a-zA-Z0-9/?=&%._-]{0,60}",
        others in prop::collection::vec("<[ -;=?-~]{0,30}>; rel=\"?(prev|last|first)\"?", 0..3),
        quoted in any::<bool>(),
    ) {
        let base = Url::parse("https://r.io/v2/org/app/tags/list?n=1000").unwrap();
        let rel = if quoted { "\"next\"" } else { "next" };
        let mut links = others.clone();
        links.push(format!("<{path}>; rel={rel}"));
        let mut headers = HeaderMap::new();
        headers.append(reqwest::header::LINK, HeaderValue::from_str(&links.join(", ")).unwrap());
        let next = next_link(&headers, &base);
        // `//host/…` is a network-path reference: another host, which the listing refuses.
        if !path.starts_with("//") {
            let next = next.expect("a next link was given");
            prop_assert_eq!(next.host_str(), Some("r.io"));
            prop_assert_eq!(next.scheme(), "https");
        }
    }
}

/// Loads `text` as mirrors.toml; an error must render without panicking and, while the keys
/// of [`CONFIG`] are intact (`keys_intact`), never show its secrets.
fn load(text: &[u8], keys_intact: bool) -> Result<(), TestCaseError> {
    let loaded = Config::from_bytes(Path::new("mirrors.toml"), text, &Overrides::default());
    if let Err(e) = loaded {
        let shown = e.to_string();
        for secret in ["p4ss-w0rd", "t0ken"] {
            prop_assert!(!keys_intact || !shown.contains(secret), "{}", shown);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_config_loader_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        load(&bytes, false)?;
    }

    #[test]
    fn the_config_loader_takes_truncated_and_mutated_configs(
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), "[ -~\n]"), 0..6),
    ) {
        let truncated = &CONFIG.as_bytes()[..cut.index(CONFIG.len())];
        load(truncated, true)?;
        let mut mutated = CONFIG.to_string().into_bytes();
        for (at, text) in flips {
            let at = at.index(mutated.len());
            mutated.splice(at..at + 1, text.into_bytes());
        }
        load(&mutated, false)?;
    }

    #[test]
    fn the_config_loader_takes_toml_ish_lines(
        lines in prop::collection::vec(
            prop_oneof![
                "[a-z_]{1,12} = \"[ -~]{0,20}\"",
                "[a-z_]{1,12} = [0-9]{1,25}",
                "\\[[a-z_.\"]{1,20}\\]",
                "(password|sync_token|webhook_secret|passwrod) = [\"']?[ -~]{0,20}",
                "\\[\\[mirror\\]\\]",
                "[ -~]{0,40}",
            ],
            0..12,
        ),
    ) {
        load(lines.join("\n").as_bytes(), false)?;
    }
}
