//! Choosing tags by rules, against a real registry holding a few hundred tags, with its
//! listing paged by the harness proxy the ways other registries page theirs.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use harness::*;

/// A repository like nginx's: releases, variants, `v`-prefixed versions, pre-releases, short
/// and named tags, and referrer tags. Each tag points at one of four images, `tag → index`.
fn nginx_like_tags() -> Vec<(String, usize)> {
    let mut tags = Vec::new();
    for minor in 20..=29 {
        for patch in 0..=9 {
            tags.push(format!("1.{minor}.{patch}"));
            tags.push(format!("1.{minor}.{patch}-alpine"));
        }
        tags.push(format!("1.{minor}"));
        tags.push(format!("mainline-{minor}"));
    }
    for major_minor in 0..=9 {
        tags.push(format!("v2.{major_minor}.0"));
    }
    for rc in 1..=3 {
        tags.push(format!("1.30.0-rc.{rc}"));
    }
    tags.extend(
        [
            "2.0.0-beta.1",
            "1.29.10-rc.1",
            "1",
            "stable",
            "mainline",
            "latest",
            "edge",
            "alpine",
            "1.27.3.1",
        ]
        .map(String::from),
    );
    let hex = "0123456789abcdef".repeat(4);
    tags.push(format!("sha256-{hex}.sig"));
    tags.push(format!("sha256-{hex}"));
    tags.into_iter()
        .enumerate()
        .map(|(i, tag)| (tag, i % 4))
        .collect()
}

/// Pushes the four images and points every tag at its image.
fn seed(registry: &Registry, repo: &str, tags: &[(String, usize)]) -> Vec<Image> {
    let images: Vec<Image> = (0..4).map(|_| Image::single(Flavor::Oci, 1, 512)).collect();
    let mut pushed = [false; 4];
    for (tag, index) in tags {
        if pushed[*index] {
            images[*index].tag(registry, repo, tag);
        } else {
            images[*index].push(registry, repo, tag);
            pushed[*index] = true;
        }
    }
    images
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|t| t.to_string()).collect()
}

fn range(prefix: &str, numbers: std::ops::RangeInclusive<u32>, suffix: &str) -> Vec<String> {
    numbers.map(|n| format!("{prefix}{n}{suffix}")).collect()
}

#[test]
fn rules_select_exactly_the_expected_tags_digest_for_digest_and_an_unchanged_rerun_spends_no_pull()
{
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    source.add_rule(paged_tags(
        Paging {
            page: 40,
            ignore_n: false,
            style: LinkStyle::Relative,
        },
        source.host(),
    ));
    let target = Registry::start();
    let all = nginx_like_tags();
    assert!(all.len() > 200, "a few hundred tags: {}", all.len());
    let images = seed(&upstream, "library/nginx", &all);
    let image_of: BTreeMap<&str, usize> = all.iter().map(|(t, i)| (t.as_str(), *i)).collect();

    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut line127 = range("1.27.", 0..=9, "");
    line127.push("stable".into());
    expected.insert("line", line127.into_iter().collect());
    expected.insert(
        "semver",
        range("1.28.", 0..=9, "")
            .into_iter()
            .chain(range("1.29.", 0..=9, ""))
            .collect(),
    );
    // Pre-releases rank below their release, but above the release before it.
    expected.insert(
        "newest",
        names(&[
            "1.30.0-rc.3",
            "1.30.0-rc.2",
            "1.30.0-rc.1",
            "1.29.10-rc.1",
            "1.29.9",
        ]),
    );
    // `*` is every release: the three newest releases, `v` prefix and all.
    expected.insert("releases", names(&["v2.9.0", "v2.8.0", "v2.7.0"]));
    // Everything but the two referrer tags.
    expected.insert(
        "all",
        all.iter()
            .map(|(t, _)| t.clone())
            .filter(|t| !t.starts_with("sha256-"))
            .collect(),
    );

    let (src, dst) = (source.host(), target.host());
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        r#"
[defaults]
target = "{dst}/mirror"
concurrency = 16

[[mirror]]
name = "line"
source = "{src}/library/nginx"
tags = ["stable"]
include = ['1\.27\.\d+']
exclude = ['.*-rc.*']
target = "{dst}/line"

[[mirror]]
name = "semver"
source = "{src}/library/nginx"
semver = ">=1.28.0, <2"
exclude = ['.*-(alpine|bookworm)']
target = "{dst}/semver"

[[mirror]]
name = "newest"
source = "{src}/library/nginx"
include = ['1\..*']
latest = 5
target = "{dst}/newest"

[[mirror]]
name = "releases"
source = "{src}/library/nginx"
semver = "*"
latest = 3
target = "{dst}/releases"

[[mirror]]
name = "all"
source = "{src}/library/nginx"
include = [".*"]
target = "{dst}/all"
"#
    ));

    let total: usize = expected.values().map(BTreeSet::len).sum();
    let first = sandbox.regmirror().arg("--once").run();
    first.assert_success();
    first.assert_summary(&format!("mirrored {total}, unchanged 0, failed 0 in"));
    for (repo, want) in &expected {
        let got: BTreeSet<String> = tags(&target, repo).into_iter().collect();
        assert_eq!(&got, want, "tags mirrored into {repo}");
        for tag in want {
            let digest = head_manifest(&upstream, "library/nginx", tag);
            assert_eq!(
                head_manifest(&target, repo, tag),
                digest,
                "{repo}:{tag} carries the source digest"
            );
        }
    }
    // One pull per content per target repository: other tags of the same content are read
    // back from the target.
    let pulls: usize = expected
        .values()
        .map(|want| {
            want.iter()
                .map(|t| image_of[t.as_str()])
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum();
    assert_eq!(source.manifest_gets(), pulls, "pulls at the source");
    let said = format!("newest: {} tags listed, 5 selected", all.len());
    assert!(
        first.stderr.contains(&said),
        "the log says {said:?}\n{}",
        first.output()
    );
    let pages = all.len().div_ceil(40);
    let listings =
        source.count(|r| r.method == "GET" && r.endpoint() == harness::proxy::Endpoint::Tags);
    assert_eq!(
        listings,
        5 * pages,
        "each mirror lists the repository page by page"
    );
    drop(images);

    source.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    again.assert_summary(&format!("mirrored 0, unchanged {total}, failed 0 in"));
    assert_eq!(
        source.manifest_gets(),
        0,
        "an unchanged re-run spends no pull"
    );
    assert_eq!(
        source.manifest_heads(),
        total,
        "one HEAD per selected tag at the source"
    );
    assert!(
        again.stdout.contains(&format!(
            "{src}: 0 pulls, 0 refused (HTTP 429), paused 0.0 s, {} tag list requests",
            5 * pages
        )),
        "the report counts listing requests\n{}",
        again.output()
    );
}
