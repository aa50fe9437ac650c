//! `regmirror --once` against real registries: what gets copied, digest for digest, and what
//! an unchanged re-run costs.

mod harness;

use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

fn assert_mirrored(source: &Proxy, target: &Registry, src_repo: &str, dst_repo: &str, tag: &str) {
    let want = head_manifest(source, src_repo, tag).expect("source tag exists");
    assert_eq!(
        head_manifest(target, dst_repo, tag).as_deref(),
        Some(want.as_str()),
        "{dst_repo}:{tag} should carry the source digest"
    );
    check_complete(target, dst_repo, tag).unwrap_or_else(|e| panic!("{dst_repo}:{tag}: {e}"));
}

#[test]
fn multi_arch_oci_and_docker_images_mirror_with_equal_digests_and_rerun_without_pulls() {
    let source_registry = Registry::start();
    let source = Proxy::start(source_registry.host());
    let target = Registry::start();
    let oci = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 4096);
    let docker = Image::multi_arch(Flavor::Docker, PLATFORMS, 2, 4096);
    let single = Image::single(Flavor::Docker, 1, 1024);
    let artifact = Image::artifact(2048);
    oci.push(&source_registry, "team/oci", "1.0");
    docker.push(&source_registry, "team/docker", "2.0");
    docker.push(&source_registry, "tools/docker", "v1");
    single.push(&source_registry, "tools/single", "v1");
    artifact.push(&source_registry, "tools/artifact", "v1");

    let sandbox = Sandbox::new();
    let src = source.host();
    let dst = target.host();
    sandbox.write_config(&format!(
        r#"
images = ["{src}/team/oci:1.0", "{src}/team/docker:2.0"]

[defaults]
target = "{dst}/mirror"

[[mirror]]
source = "{src}/tools/docker"
tags = ["v1"]
target = "{dst}/elsewhere/docker"

[[mirror]]
source = "{src}/tools/single"
tags = ["v1"]

[[mirror]]
source = "{src}/tools/artifact:v1"
"#
    ));

    let first = sandbox.regmirror().arg("--once").run();
    first.assert_success();
    first.assert_summary("mirrored 5, unchanged 0, failed 0 in");
    assert_mirrored(&source, &target, "team/oci", "mirror/team/oci", "1.0");
    assert_mirrored(&source, &target, "team/docker", "mirror/team/docker", "2.0");
    assert_mirrored(&source, &target, "tools/docker", "elsewhere/docker", "v1");
    assert_mirrored(
        &source,
        &target,
        "tools/single",
        "mirror/tools/single",
        "v1",
    );
    assert_mirrored(
        &source,
        &target,
        "tools/artifact",
        "mirror/tools/artifact",
        "v1",
    );
    let (_, content_type) = get_manifest(&target, "mirror/team/docker", "2.0").unwrap();
    assert_eq!(content_type, harness::image::DOCKER_LIST);
    // An open registry is asked how to authenticate once, not before every request.
    let probes = source.count(|r| r.path == "/v2/");
    assert_eq!(probes, 1, "{:#?}", source.requests());
    // Connections are kept alive and reused, not opened per request.
    let (requests, connections) = (source.requests().len(), source.connections());
    assert!(
        connections * 2 < requests,
        "{connections} connections for {requests} requests"
    );

    source.clear();
    let second = sandbox.regmirror().arg("--once").run();
    second.assert_success();
    second.assert_summary("mirrored 0, unchanged 5, failed 0 in");
    assert_eq!(source.manifest_gets(), 0, "{:#?}", source.requests());
    assert_eq!(source.blob_gets(), 0, "{:#?}", source.requests());
    assert_eq!(source.manifest_heads(), 5, "{:#?}", source.requests());
    assert_eq!(source.requests().len(), 5 + 1, "{:#?}", source.requests());
    // Every image is compared at once (up to 32 HEADs in flight per registry), so at most one
    // connection per image, and the /v2/ probe's is reused.
    let reopened = source.connections() - connections;
    assert!(reopened <= 5, "{reopened} connections for 6 requests");
}

#[test]
fn a_moved_tag_is_followed_and_only_new_content_moves() {
    let source_registry = Registry::start();
    let source = Proxy::start(source_registry.host());
    let target = Registry::start();
    let base = Layer::random(8192);
    let v1 = ImageBuilder::new(Flavor::Oci).shared_layer(&base).build();
    v1.push(&source_registry, "app", "stable");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/app:stable\"]\n[defaults]\ntarget = \"{}\"\n",
        source.host(),
        target.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();

    let v2 = ImageBuilder::new(Flavor::Oci).shared_layer(&base).build();
    v2.push(&source_registry, "app", "stable");
    source.clear();
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0");
    assert_eq!(
        head_manifest(&target, "app", "stable").as_deref(),
        Some(v2.digest())
    );
    let base_gets = source.count(|r| r.is_blob_get() && r.path.contains(base.digest()));
    assert_eq!(base_gets, 0, "the shared base layer was already there");
    assert_eq!(source.manifest_gets(), 1, "{:#?}", source.requests());
}

#[test]
fn a_blob_shared_by_several_images_is_transferred_once() {
    let source_registry = Registry::start();
    let source = Proxy::start(source_registry.host());
    let target = Registry::start();
    let shared = Layer::random(64 * 1024);
    let mut images = String::new();
    for name in ["a", "b", "c", "d"] {
        let image = ImageBuilder::new(Flavor::Docker)
            .shared_layer(&shared)
            .build();
        image.push(&source_registry, &format!("shared/{name}"), "1");
        images.push_str(&format!("\"{}/shared/{name}:1\", ", source.host()));
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [{images}]\n[defaults]\ntarget = \"{}/m\"\nconcurrency = 4\n",
        target.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    let shared_gets = source.count(|r| r.is_blob_get() && r.path.contains(shared.digest()));
    assert_eq!(shared_gets, 1, "{:#?}", source.requests());
    for name in ["a", "b", "c", "d"] {
        check_complete(&target, &format!("m/shared/{name}"), "1").unwrap();
    }
}

#[test]
fn same_registry_copies_mount_blobs_instead_of_moving_bytes() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 4096);
    image.push(&registry, "upstream/app", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/upstream/app:1\"]\n[defaults]\ntarget = \"{0}/copy\"\n",
        proxy.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    assert_eq!(
        head_manifest(&registry, "copy/upstream/app", "1").as_deref(),
        Some(image.digest())
    );
    check_complete(&registry, "copy/upstream/app", "1").unwrap();
    assert_eq!(proxy.blob_gets(), 0, "{:#?}", proxy.requests());
    assert_eq!(proxy.blob_puts(), 0, "{:#?}", proxy.requests());
}

#[test]
fn digest_pinned_sources_are_pushed_by_digest_and_dry_run_copies_nothing() {
    let source = Registry::start();
    let target = Registry::start();
    let image = Image::multi_arch(Flavor::Docker, PLATFORMS, 1, 1024);
    image.push(&source, "pinned/app", "moving");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/pinned/app@{}\"]\n[defaults]\ntarget = \"{}\"\n",
        source.host(),
        image.digest(),
        target.host()
    ));

    let dry = sandbox.regmirror().args(["--once", "--dry-run"]).run();
    dry.assert_success();
    dry.assert_summary("would copy  ");
    dry.assert_summary("would copy 1, unchanged 0, failed 0");
    assert_eq!(head_manifest(&target, "pinned/app", image.digest()), None);

    sandbox.regmirror().arg("--once").run().assert_success();
    assert_eq!(
        head_manifest(&target, "pinned/app", image.digest()).as_deref(),
        Some(image.digest())
    );
    assert!(
        tags(&target, "pinned/app").is_empty(),
        "pushed by digest, no tag"
    );

    let again = sandbox.regmirror().arg("--dry-run").run();
    again.assert_success();
    assert!(again.stdout.contains("unchanged   "), "{}", again.output());
}

#[test]
fn check_prints_the_plan_and_the_shipped_example_is_valid() {
    let sandbox = Sandbox::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/mirrors.toml");
    let run = sandbox
        .regmirror()
        .args(["check", "--config", example])
        .env("DOCKERHUB_USERNAME", "someone")
        .env("DOCKERHUB_TOKEN", "not-a-real-token")
        .env("REGMIRROR_SYNC_TOKEN", "not-a-real-sync-token")
        .env("REGMIRROR_WEBHOOK_SECRET", "not-a-real-webhook-secret")
        .run();
    run.assert_success();
    assert!(
        run.stdout.contains("grafana (line ")
            && run.stdout.contains("\"@hourly\" (Europe/Berlin), next "),
        "{}",
        run.output()
    );
    assert!(
        run.stdout.contains(
            "docker.io/library/nginx:stable → 123456789012.dkr.ecr.eu-central-1.amazonaws.com/mirror/nginx:stable"
        ),
        "{}",
        run.output()
    );
    assert!(
        run.stdout.contains(
            "quay.io/prometheus/prometheus: tags listed at each run, selected by semver *; latest 5 → "
        ),
        "the example's tag rules are valid and printed\n{}",
        run.output()
    );
    for secret in [
        "not-a-real-token",
        "not-a-real-sync-token",
        "not-a-real-webhook-secret",
    ] {
        assert!(!run.output().contains(secret));
    }
}

#[test]
fn a_docker_schema1_manifest_is_refused_by_name_and_the_others_still_mirror() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let modern = Image::single(Flavor::Docker, 1, 1024);
    modern.push(&upstream, "modern", "1");
    // Old registries still serve schema 1 for images pushed long ago: play one for `old:1`.
    let body = br#"{"schemaVersion":1,"name":"old","tag":"1","architecture":"amd64","fsLayers":[],"history":[]}"#.to_vec();
    let digest = sha256_digest(&body);
    source.add_rule(move |r: &RequestInfo| {
        (r.path == "/v2/old/manifests/1" || r.path == format!("/v2/old/manifests/{digest}")).then(
            || Action::Respond {
                status: 200,
                headers: vec![
                    (
                        "content-type".into(),
                        "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
                    ),
                    ("docker-content-digest".into(), digest.clone()),
                ],
                body: if r.method == "HEAD" {
                    Vec::new()
                } else {
                    body.clone()
                },
            },
        )
    });
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/old:1\", \"{0}/modern:1\"]\n[defaults]\ntarget = \"{1}\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(
        run.stdout.contains("Docker schema 1 manifest"),
        "{}",
        run.output()
    );
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
    assert!(tags(&target, "old").is_empty());
    check_complete(&target, "modern", "1").unwrap();
}
