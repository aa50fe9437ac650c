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
    // At most one pull per content per target repository (other tags of the same content are
    // read back from the target), and fewer where one tag's pull serves several targets.
    let most: usize = expected
        .values()
        .map(|want| {
            want.iter()
                .map(|t| image_of[t.as_str()])
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum();
    let pulls = source.manifest_gets();
    assert!(
        (images.len()..=most).contains(&pulls),
        "{pulls} pulls at the source: between one per content ({}) and one per content per repository ({most})",
        images.len()
    );
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
    // One HEAD per selected source tag, however many mirrors (targets) select it.
    let distinct: BTreeSet<&String> = expected.values().flatten().collect();
    assert_eq!(
        source.manifest_heads(),
        distinct.len(),
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

/// A small repository: `count` release tags `1.0.N`, all one image.
fn small_repository(registry: &Registry, repo: &str, count: u32) -> Image {
    let image = Image::single(Flavor::Docker, 1, 256);
    image.push(registry, repo, "1.0.0");
    for n in 1..count {
        image.tag(registry, repo, &format!("1.0.{n}"));
    }
    image
}

fn tag_list_requests(proxy: &Proxy) -> usize {
    proxy.count(|r| r.method == "GET" && r.endpoint() == harness::proxy::Endpoint::Tags)
}

#[test]
fn listings_are_followed_through_every_paging_style_and_a_dry_run_spends_no_pull() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    small_repository(&upstream, "team/app", 95);
    let sandbox = Sandbox::new();
    let (src, dst) = (source.host(), target.host());
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{src}/team/app\"\ninclude = [\".*\"]\ntarget = \"{dst}/app\"\n"
    ));
    // (rule, tag-list requests expected): the registry's own one-page answer; pages of 10 for
    // each way of writing the link; pages of 7 whatever `n` asks for; a reversed order.
    /// A paging style: its name, the proxy rule that imposes it, and the requests it takes.
    type Style = (&'static str, Option<Box<dyn Rule>>, usize);
    let styles: Vec<Style> = vec![
        ("distribution's single page", None, 1),
        (
            "relative links",
            Some(Box::new(paged_tags(
                Paging {
                    page: 10,
                    ignore_n: false,
                    style: LinkStyle::Relative,
                },
                src,
            ))),
            10,
        ),
        (
            "absolute links with an opaque last",
            Some(Box::new(paged_tags(
                Paging {
                    page: 10,
                    ignore_n: false,
                    style: LinkStyle::Absolute,
                },
                src,
            ))),
            10,
        ),
        (
            "links relative to the path, opaque query",
            Some(Box::new(paged_tags(
                Paging {
                    page: 10,
                    ignore_n: false,
                    style: LinkStyle::Opaque,
                },
                src,
            ))),
            10,
        ),
        (
            "n ignored, pages shorter than asked",
            Some(Box::new(paged_tags(
                Paging {
                    page: 7,
                    ignore_n: true,
                    style: LinkStyle::Relative,
                },
                src,
            ))),
            14,
        ),
        ("one unsorted page", Some(Box::new(unsorted_tags())), 1),
    ];
    for (style, rule, requests) in styles {
        source.clear_rules();
        source.clear();
        if let Some(mut rule) = rule {
            source.add_rule(move |request: &RequestInfo| rule.decide(request));
        }
        let run = sandbox.regmirror().args(["--once", "--dry-run"]).run();
        run.assert_success();
        assert_eq!(
            run.stdout.matches("would copy  ").count(),
            95,
            "{style}: every tag listed\n{}",
            run.output()
        );
        assert_eq!(tag_list_requests(&source), requests, "{style}: requests");
        assert_eq!(
            source.manifest_gets(),
            0,
            "{style}: a dry run spends no pull"
        );
        let asked = source.requests();
        let first = asked
            .iter()
            .find(|r| r.endpoint() == harness::proxy::Endpoint::Tags)
            .expect("a listing");
        assert!(
            first.path.ends_with("/tags/list?n=1000"),
            "{style}: {}",
            first.path
        );
    }
    assert!(tags(&target, "app").is_empty(), "a dry run copies nothing");
}

#[test]
fn a_listing_refused_with_429_waits_and_is_counted() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    small_repository(&upstream, "team/app", 3);
    source.add_rule(harness::proxy::times(1, |request: &RequestInfo| {
        (request.endpoint() == harness::proxy::Endpoint::Tags).then(|| Action::Respond {
            status: 429,
            headers: vec![("retry-after".into(), "2".into())],
            body: br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_vec(),
        })
    }));
    let sandbox = Sandbox::new();
    let (src, dst) = (source.host(), target.host());
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{src}/team/app\"\nsemver = \"1.0.*\"\ntarget = \"{dst}/app\"\n"
    ));
    let started = std::time::Instant::now();
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 3, unchanged 0, failed 0");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "Retry-After is a floor"
    );
    assert_eq!(tag_list_requests(&source), 2);
    assert!(
        run.stdout.contains(&format!(
            "{src}: 1 pulls, 0 refused (HTTP 429), paused 0.0 s, 2 tag list requests"
        )),
        "{}",
        run.output()
    );
    assert!(run.stderr.contains("will retry"), "{}", run.output());
}

#[test]
fn a_missing_repository_and_rules_that_select_nothing_fail_their_mirror_alone() {
    let upstream = Registry::start();
    let target = Registry::start();
    small_repository(&upstream, "team/app", 4);
    let sandbox = Sandbox::new();
    let (src, dst) = (upstream.host(), target.host());
    sandbox.write_config(&format!(
        r#"[defaults]
target = "{dst}/m"

[[mirror]]
name = "gone"
source = "{src}/team/gone"
include = [".*"]

[[mirror]]
name = "none"
source = "{src}/team/app"
semver = ">=2"
exclude = ['.*-rc.*']

[[mirror]]
name = "good"
source = "{src}/team/app"
latest = 2
"#
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 2, unchanged 0, failed 2 in");
    let failed = run.failed_lines();
    assert_eq!(failed.len(), 2, "{}", run.output());
    assert!(
        failed.iter().any(|l| l.contains("mirror gone (line 5)")
            && l.contains(&format!("repository {src}/team/gone does not exist"))),
        "{}",
        run.output()
    );
    assert!(
        failed.iter().any(|l| l.contains("mirror none (line 10)")
            && l.contains("the rules (exclude .*-rc.*; semver >=2) select none of the 4 tags")),
        "{}",
        run.output()
    );
    assert_eq!(tags(&target, "m/team/app"), ["1.0.2", "1.0.3"]);
}

#[test]
fn two_mirrors_selecting_one_target_tag_from_different_sources_skip_it_and_name_both() {
    let upstream = Registry::start();
    let target = Registry::start();
    small_repository(&upstream, "one/app", 3); // 1.0.0 1.0.1 1.0.2
    let other = Image::single(Flavor::Oci, 1, 256);
    other.push(&upstream, "two/app", "1.0.2");
    other.tag(&upstream, "two/app", "2.0.0");
    let sandbox = Sandbox::new();
    let (src, dst) = (upstream.host(), target.host());
    sandbox.write_config(&format!(
        r#"[[mirror]]
name = "one"
source = "{src}/one/app"
include = [".*"]
target = "{dst}/app"

[[mirror]]
name = "two"
source = "{src}/two/app"
include = [".*"]
target = "{dst}/app"
"#
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 3, unchanged 0, failed 1 in");
    let failed = run.failed_lines();
    assert_eq!(failed.len(), 1, "{}", run.output());
    assert!(
        failed[0].contains(&format!("{dst}/app:1.0.2"))
            && failed[0].contains("mirror one (line 2)")
            && failed[0].contains("mirror two (line 8)"),
        "{}",
        run.output()
    );
    assert_eq!(tags(&target, "app"), ["1.0.0", "1.0.1", "2.0.0"]);
}

#[test]
fn many_tags_of_one_content_push_each_manifest_once_at_high_concurrency() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let registry = Registry::start();
    let target = Proxy::start(registry.host());
    let image = Image::multi_arch(Flavor::Docker, &["linux/amd64", "linux/arm64"], 1, 512);
    image.push(&upstream, "team/app", "t0");
    for n in 1..200 {
        image.tag(&upstream, "team/app", &format!("t{n}"));
    }
    let sandbox = Sandbox::new();
    let (src, dst) = (source.host(), target.host());
    sandbox.write_config(&format!(
        "[defaults]\nconcurrency = 16\n[[mirror]]\nsource = \"{src}/team/app\"\ninclude = [\"t.*\"]\ntarget = \"{dst}/app\"\n"
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 200, unchanged 0, failed 0 in");
    assert_eq!(
        source.manifest_gets(),
        3,
        "the index and its two children are pulled once"
    );
    let children = image.children().len();
    assert_eq!(children, 2);
    let child_puts = target.count(|r| r.is_manifest_put() && r.reference().starts_with("sha256:"));
    assert_eq!(child_puts, 2, "each child manifest is pushed once");
    assert_eq!(target.manifest_puts(), 2 + 200, "and one PUT per tag");
    for n in [0, 99, 199] {
        assert_eq!(
            head_manifest(&registry, "app", &format!("t{n}")).as_deref(),
            Some(image.digest())
        );
    }
    check_complete(&registry, "app", "t150").unwrap();
}
