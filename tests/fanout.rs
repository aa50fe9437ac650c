//! One pull, many targets: each target compared on its own, the source's manifests pulled and
//! its blobs read once for all the targets that lack them, a target that fails failing alone.

mod harness;

use harness::proxy::{corrupt_blob, Endpoint};
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

/// Requests a target refuses: every blob upload and manifest push (a full or read-only
/// registry).
fn refuse_pushes() -> impl Rule {
    |request: &RequestInfo| {
        let pushing =
            request.is_upload_start() || request.is_blob_put() || request.is_manifest_put();
        pushing.then(|| Action::error(403, "DENIED", "this registry takes no pushes today"))
    }
}

#[test]
fn two_targets_from_one_pull_and_one_read_of_each_blob_with_a_refusing_target_failing_alone() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let (a_registry, b_registry, c_registry) =
        (Registry::start(), Registry::start(), Registry::start());
    let a = Proxy::start(a_registry.host());
    let b = Proxy::start(b_registry.host());
    let c = Proxy::start(c_registry.host());
    let multi = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 8192);
    let single = Image::single(Flavor::Docker, 3, 4096);
    multi.push(&upstream, "team/multi", "1");
    single.push(&upstream, "team/single", "1");

    let sandbox = Sandbox::new();
    let config = |targets: &[&Proxy]| {
        let list: Vec<String> = targets
            .iter()
            .map(|t| format!("\"{}/mirror\"", t.host()))
            .collect();
        format!(
            "images = [\"{0}/team/multi:1\", \"{0}/team/single:1\"]\n[defaults]\ntargets = [{1}]\n",
            source.host(),
            list.join(", ")
        )
    };

    // Two healthy targets: exactly the pulls and blob reads of one.
    sandbox.write_config(&config(&[&a, &b]));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 4, unchanged 0, failed 0 in");
    let blobs = multi.blobs().len() + single.blobs().len();
    assert_eq!(
        source.manifest_gets(),
        3 + 1,
        "index, two children, one image: once each"
    );
    assert_eq!(
        source.blob_gets(),
        blobs,
        "each blob read from the source once"
    );
    for (registry, proxy) in [(&a_registry, &a), (&b_registry, &b)] {
        check_complete(registry, "mirror/team/multi", "1").unwrap();
        check_complete(registry, "mirror/team/single", "1").unwrap();
        assert_eq!(
            proxy.blob_puts(),
            blobs,
            "every blob uploaded into each target"
        );
    }
    assert!(
        run.stdout.contains(&format!(
            "to {}: mirrored 2, unchanged 0, failed 0",
            a.host()
        )) && run.stdout.contains(&format!(
            "to {}: mirrored 2, unchanged 0, failed 0",
            b.host()
        )),
        "the summary counts per target\n{}",
        run.output()
    );

    // Unchanged everywhere: no pull. A third target, which refuses pushes: it fails alone,
    // and the content is read from the source only for it.
    for proxy in [&source, &a, &b] {
        proxy.clear();
    }
    c.add_rule(refuse_pushes());
    sandbox.write_config(&config(&[&a, &b, &c]));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 0, unchanged 4, failed 2 in");
    let failed = run.failed_lines();
    assert_eq!(failed.len(), 2, "{}", run.output());
    assert!(
        failed
            .iter()
            .all(|l| l.contains(c.host()) && l.contains("denied")),
        "{}",
        run.output()
    );
    assert!(tags(&c_registry, "mirror/team/single").is_empty());
    // A refused blob upload costs no pull: the manifests were pulled before the blobs...
    assert!(source.manifest_gets() <= 4, "{:#?}", source.requests());
    // ...and the two healthy targets were compared by HEAD alone.
    for proxy in [&a, &b] {
        assert!(
            proxy
                .requests()
                .iter()
                .all(|r| r.method == "HEAD" || r.endpoint() == Endpoint::Base),
            "{:#?}",
            proxy.requests()
        );
    }
}

#[test]
fn a_corrupt_blob_aborts_its_upload_to_every_target() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let (a, b) = (Registry::start(), Registry::start());
    let image = Image::single(Flavor::Oci, 2, 64 * 1024);
    image.push(&upstream, "team/app", "1");
    let (bad, _) = image.blobs().into_iter().last().unwrap();
    source.add_rule(corrupt_blob(&bad));
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{}/team/app:1\"\ntargets = [\"{}/app\", \"{}/app\"]\n",
        source.host(),
        a.host(),
        b.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 0, unchanged 0, failed 2 in");
    assert!(
        run.failed_lines()
            .iter()
            .all(|l| l.contains("does not match its digest")),
        "{}",
        run.output()
    );
    for target in [&a, &b] {
        assert!(
            !blob_exists(target, "app", &bad),
            "no target stored the corrupt blob"
        );
        assert!(
            tags(target, "app").is_empty(),
            "no tag points at partial content"
        );
    }
}
