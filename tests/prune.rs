//! Exact mirrors: `prune = true` deletes the target tags a mirror no longer wants, against
//! real registries with deletes enabled and disabled, and refuses whenever the source's
//! answer could be an outage.

mod harness;

use harness::proxy::{fail_with, Endpoint};
use harness::*;

fn scheme_tag(digest: &str, suffix: &str) -> String {
    format!("sha256-{}{suffix}", digest.trim_start_matches("sha256:"))
}

/// A mirror of `app`'s `1.*` tags from `source` into `target`'s `mirror/app`, with prune,
/// and whatever `extra` adds to the `[[mirror]]`.
fn config(source: &str, target: &str, extra: &str) -> String {
    format!(
        "[[mirror]]\nsource = \"{source}/app\"\ninclude = ['1\\..*']\nprune = true\n{extra}\n\
         target = \"{target}/mirror/app\"\n"
    )
}

fn sorted(mut tags: Vec<String>) -> Vec<String> {
    tags.sort();
    tags
}

/// Pushes one image per tag into `repo`; the images, in order.
fn seed(registry: &Registry, repo: &str, tags: &[&str]) -> Vec<Image> {
    tags.iter()
        .map(|tag| {
            let image = Image::single(Flavor::Oci, 1, 256);
            image.push(registry, repo, tag);
            image
        })
        .collect()
}

#[test]
fn a_tag_deleted_upstream_is_pruned_with_its_signature_and_nothing_else_is_touched() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let images = seed(&upstream, "app", &["1.0", "1.1", "1.2"]);
    for image in &images[..2] {
        Image::artifact(128).push(&upstream, "app", &scheme_tag(image.digest(), ".sig"));
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(source.host(), target.host(), "referrers = true"));
    sandbox.regmirror().arg("--once").run().assert_success();
    // Tags prune must leave: one its rules do not name, and another repository's.
    Image::single(Flavor::Oci, 1, 64).push(&target, "mirror/app", "dev");
    Image::single(Flavor::Oci, 1, 64).push(&target, "mirror/other", "1.0");
    let before = sorted(tags(&target, "mirror/app"));
    assert_eq!(before.len(), 6, "{before:?}");

    // 1.0 withdrawn upstream (its signature left behind there, as cosign leaves it).
    assert!(delete_manifest(&upstream, "app", images[0].digest()));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("unchanged 2, pruned 2, failed 0");
    let pruned_sig = scheme_tag(images[0].digest(), ".sig");
    assert!(
        run.stdout
            .contains(&format!("pruned      {}/mirror/app:1.0", target.host())),
        "{}",
        run.output()
    );
    let mut want: Vec<String> = before
        .into_iter()
        .filter(|t| t != "1.0" && *t != pruned_sig)
        .collect();
    want.sort();
    assert_eq!(sorted(tags(&target, "mirror/app")), want);
    assert_eq!(tags(&target, "mirror/other"), ["1.0"]);

    // Nothing more to prune: no pull, nothing deleted.
    source.clear();
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("unchanged 2, failed 0");
    assert_eq!(source.manifest_gets(), 0, "{:#?}", source.requests());
}

#[test]
fn latest_n_keeps_n_and_prunes_what_falls_out() {
    let upstream = Registry::start();
    let target = Registry::start();
    seed(&upstream, "app", &["1.0.0", "1.0.1", "1.0.2", "1.0.3"]);
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(upstream.host(), target.host(), "latest = 4"));
    sandbox.regmirror().arg("--once").run().assert_success();
    sandbox.write_config(&config(upstream.host(), target.host(), "latest = 2"));

    let dry = sandbox.regmirror().args(["--once", "--dry-run"]).run();
    dry.assert_success();
    assert!(dry.stdout.contains("would prune"), "{}", dry.output());
    assert_eq!(
        tags(&target, "mirror/app").len(),
        4,
        "a dry run deletes nothing"
    );

    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("pruned 2, failed 0");
    assert_eq!(sorted(tags(&target, "mirror/app")), ["1.0.2", "1.0.3"]);
}

#[test]
fn a_failed_or_empty_listing_prunes_nothing() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    seed(&upstream, "app", &["1.0", "1.1"]);
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(source.host(), target.host(), ""));
    sandbox.regmirror().arg("--once").run().assert_success();

    source.add_rule(fail_with(|r| r.endpoint() == Endpoint::Tags, 403));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert_eq!(tags(&target, "mirror/app").len(), 2, "{}", run.output());

    source.clear_rules();
    source.add_rule(|r: &RequestInfo| {
        (r.endpoint() == Endpoint::Tags).then(|| Action::Respond {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"name":"app","tags":[]}"#.to_vec(),
        })
    });
    let run = sandbox.regmirror().arg("--once").run();
    assert_eq!(tags(&target, "mirror/app").len(), 2, "{}", run.output());
    assert!(!run.stdout.contains("pruned"), "{}", run.output());
}

#[test]
fn a_prune_over_its_limits_deletes_nothing_names_the_tags_and_exits_1() {
    let upstream = Registry::start();
    let target = Registry::start();
    let images = seed(
        &upstream,
        "app",
        &["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"],
    );
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(upstream.host(), target.host(), ""));
    sandbox.regmirror().arg("--once").run().assert_success();
    for image in &images[..4] {
        assert!(delete_manifest(&upstream, "app", image.digest()));
    }
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(run.stdout.contains("prune held back"), "{}", run.output());
    assert!(run.stdout.contains("4 of the 6 tags"), "{}", run.output());
    assert!(
        run.stdout.contains("1.0, 1.1, 1.2, 1.3"),
        "{}",
        run.output()
    );
    assert_eq!(tags(&target, "mirror/app").len(), 6);

    // Raised on purpose, it goes through.
    sandbox.write_config(&config(
        upstream.host(),
        target.host(),
        "prune_max_percent = 100",
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    assert_eq!(sorted(tags(&target, "mirror/app")), ["1.4", "1.5"]);
}

#[test]
fn a_registry_without_deletes_is_named_once_and_keeps_every_tag() {
    let upstream = Registry::start();
    let target = Registry::start_with(RegistryOptions {
        no_deletes: true,
        ..RegistryOptions::default()
    });
    let images = seed(&upstream, "app", &["1.0", "1.1", "1.2", "1.3"]);
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(upstream.host(), target.host(), ""));
    sandbox.regmirror().arg("--once").run().assert_success();
    for image in &images[..2] {
        assert!(delete_manifest(&upstream, "app", image.digest()));
    }
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    let named = run.stdout.matches("does not allow deletes").count();
    assert_eq!(named, 1, "{}", run.output());
    assert!(run.stdout.contains("2 tag(s)"), "{}", run.output());
    assert_eq!(tags(&target, "mirror/app").len(), 4);
}

#[test]
fn content_another_tag_names_is_kept_where_the_registry_deletes_only_by_digest() {
    let upstream = Registry::start();
    let target = Registry::start();
    let images = seed(&upstream, "app", &["1.0", "1.1"]);
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(upstream.host(), target.host(), ""));
    sandbox.regmirror().arg("--once").run().assert_success();
    // `stable` in the target names 1.0's content; distribution 2.8 deletes by digest only.
    images[0].tag(&target, "mirror/app", "stable");
    assert!(delete_manifest(&upstream, "app", images[0].digest()));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(run.stdout.contains("another tag names"), "{}", run.output());
    assert_eq!(
        sorted(tags(&target, "mirror/app")),
        ["1.0", "1.1", "stable"]
    );
}

#[test]
fn an_exact_tag_gone_upstream_is_pruned_and_a_tag_dropped_from_the_list_is_not() {
    let upstream = Registry::start();
    let target = Registry::start();
    let images = seed(&upstream, "app", &["1.0", "1.1", "2.0"]);
    let exact = |tags: &str| {
        format!(
            "[[mirror]]\nsource = \"{}/app\"\ntags = [{tags}]\nprune = true\ntarget = \"{}/mirror/app\"\n",
            upstream.host(),
            target.host()
        )
    };
    let sandbox = Sandbox::new();
    sandbox.write_config(&exact("\"1.0\", \"1.1\", \"2.0\""));
    sandbox.regmirror().arg("--once").run().assert_success();
    // 2.0 dropped from the list: kept. 1.0 withdrawn upstream: pruned (and its image fails).
    sandbox.write_config(&exact("\"1.0\", \"1.1\""));
    assert!(delete_manifest(&upstream, "app", images[0].digest()));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(run.stdout.contains("does not exist"), "{}", run.output());
    assert_eq!(
        sorted(tags(&target, "mirror/app")),
        ["1.1", "2.0"],
        "{}",
        run.output()
    );
}

#[test]
fn the_daemon_prunes_at_each_run_and_reports_it_in_healthz_and_metrics() {
    use harness::daemon::{eventually, http, server_address};
    let upstream = Registry::start();
    let target = Registry::start();
    seed(&upstream, "app", &["1.0.0", "1.1.0"]);
    let sandbox = Sandbox::new();
    // Runs at start and on POST /sync only, so /healthz holds the pruning run until read.
    sandbox.write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nsync_token = \"${{SYNC_TOKEN}}\"\n\n\
         [[mirror]]\nname = \"app\"\nsource = \"{}/app\"\nsemver = \">=1.0.0\"\nlatest = 2\n\
         prune = true\ntarget = \"{}/app\"\n",
        upstream.host(),
        target.host()
    ));
    let mut daemon = sandbox.regmirror().env("SYNC_TOKEN", "t0k3n").start();
    let base = format!("http://{}", server_address(&mut daemon));
    eventually(&daemon, "the first run mirrors both releases", || {
        sorted(tags(&target, "app")) == ["1.0.0", "1.1.0"]
    });
    seed(&upstream, "app", &["1.2.0"]);
    let answer = http()
        .post(format!("{base}/sync"))
        .bearer_auth("t0k3n")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    eventually(&daemon, "/healthz says the run pruned a tag", || {
        let health: serde_json::Value = http()
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        health["mirrors"][0]["last_run"]["pruned"] == 1
    });
    assert_eq!(sorted(tags(&target, "app")), ["1.1.0", "1.2.0"]);
    let metrics = http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("regmirror_pruned_tags_total{mirror=\"app\"} 1"),
        "{metrics}"
    );
}

#[test]
fn an_ecr_target_has_its_tag_deleted_alone_through_batch_delete_image() {
    use harness::ecr::FakeEcr;
    let ecr = FakeEcr::start();
    let upstream = Registry::start();
    let images = seed(&upstream, "app", &["1.0", "1.1"]);
    let e = ecr.proxy.host();
    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&format!(
        "{}[registries.\"{e}\"]\necr = true\nregion = \"eu-west-1\"\n",
        config(upstream.host(), e, "")
    ));
    ecr.once(&sandbox, &config).assert_success();
    // What ECR's own API holds after those pushes (the stand-in's images live in the
    // registry behind it; moto is told, as ECR would know).
    for (image, tag) in images.iter().zip(["1.0", "1.1"]) {
        let top = image.top();
        let manifest = String::from_utf8(top.bytes.clone()).unwrap();
        ecr.moto
            .ecr_put_image("mirror/app", tag, &manifest, &top.media_type);
    }
    assert!(delete_manifest(&upstream, "app", images[0].digest()));
    let run = ecr.once(&sandbox, &config);
    run.assert_success();
    run.assert_summary("pruned 1");
    assert_eq!(ecr.calls.count("BatchDeleteImage"), 1);
    assert_eq!(ecr.moto.ecr_tags("mirror/app"), ["1.1"]);
}

#[test]
fn shards_judge_the_limits_on_the_whole_prune_so_none_deletes_its_share_of_too_many() {
    let upstream = Registry::start();
    let target = Registry::start();
    let images = seed(
        &upstream,
        "app",
        &["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"],
    );
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(upstream.host(), target.host(), ""));
    sandbox.regmirror().arg("--once").run().assert_success();
    for image in &images[..4] {
        assert!(delete_manifest(&upstream, "app", image.digest()));
    }
    // Alone, each shard's share (about 2 of the 6) would be within the limits.
    for shard in ["1/2", "2/2"] {
        let run = sandbox.regmirror().args(["--once", "--shard", shard]).run();
        run.assert_code(1);
        assert!(run.stdout.contains("prune held back"), "{}", run.output());
    }
    assert_eq!(tags(&target, "mirror/app").len(), 6);
}
