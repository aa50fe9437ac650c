//! Faults during a copy: corrupt bytes from the source, and the process killed mid-copy.
//! Neither may ever leave a tag pointing at content the target does not fully hold.

mod harness;

use std::time::Duration;

use harness::proxy::corrupt_blob;
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

/// Every tag of `repo` in the target names a complete image.
fn assert_no_broken_tag(target: &Registry, repo: &str) {
    for tag in tags(target, repo) {
        check_complete(target, repo, &tag)
            .unwrap_or_else(|e| panic!("{repo}:{tag} is broken: {e}"));
    }
}

#[test]
fn a_corrupt_blob_fails_its_image_pushes_no_manifest_and_the_others_succeed() {
    let source_registry = Registry::start();
    let source = Proxy::start(source_registry.host());
    let target = Registry::start();
    let bad = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 256 * 1024);
    let good = Image::multi_arch(Flavor::Docker, PLATFORMS, 2, 4096);
    bad.push(&source_registry, "bad", "1");
    good.push(&source_registry, "good", "1");
    let (victim, _) = bad
        .blobs()
        .into_iter()
        .find(|(_, size)| *size > 1000)
        .unwrap();
    source.add_rule(corrupt_blob(&victim));

    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/bad:1\", \"{0}/good:1\"]\n[defaults]\ntarget = \"{1}\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    let failed = run.failed_lines();
    assert_eq!(failed.len(), 1, "{}", run.output());
    assert!(failed[0].contains("/bad:1 → "), "{}", failed[0]);
    assert!(
        failed[0].contains("does not match its digest"),
        "{}",
        failed[0]
    );
    // regmirror catches the mismatch itself and stops the upload short; it does not lean on
    // the target registry to refuse the bytes.
    assert!(!failed[0].contains("refused the upload"), "{}", failed[0]);
    run.assert_summary("mirrored 1, unchanged 0, failed 1 in");

    assert!(
        tags(&target, "bad").is_empty(),
        "no tag for the corrupt image"
    );
    assert_eq!(head_manifest(&target, "bad", bad.digest()), None);
    assert!(
        !blob_exists(&target, "bad", &victim),
        "the corrupt blob was not stored"
    );
    assert_eq!(
        head_manifest(&target, "good", "1").as_deref(),
        Some(good.digest())
    );
    check_complete(&target, "good", "1").unwrap();
}

/// Where in a copy the process is killed.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// While the first blob's bytes are being uploaded.
    FirstBlobUpload,
    /// While the first child manifest of the index is pushed by digest.
    FirstChildManifest,
    /// While the tagged top manifest (the very last request) is pushed.
    TagPush,
}

impl KillPoint {
    fn matches(self, request: &RequestInfo) -> bool {
        match self {
            KillPoint::FirstBlobUpload => request.is_blob_put(),
            KillPoint::FirstChildManifest => {
                request.is_manifest_put() && request.reference().starts_with("sha256:")
            }
            KillPoint::TagPush => {
                request.is_manifest_put() && !request.reference().starts_with("sha256:")
            }
        }
    }
}

/// Kills regmirror at `point` while it replaces `app:stable` (v1 in the target) with v2, then
/// checks the tag still names complete content and a re-run finishes the job.
fn kill_mid_copy_then_rerun(point: KillPoint) {
    let source = Registry::start();
    let target_registry = Registry::start();
    let target = Proxy::start(target_registry.host());
    let v1 = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 64 * 1024);
    let v2 = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 64 * 1024);
    v1.push(&source, "app", "stable");
    let fresh = Image::multi_arch(Flavor::Docker, PLATFORMS, 2, 64 * 1024);
    fresh.push(&source, "fresh", "1");

    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/app:stable\"]\n[defaults]\ntarget = \"{1}\"\n",
        source.host(),
        target.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    v2.push(&source, "app", "stable");
    sandbox.write_config(&format!(
        "images = [\"{0}/app:stable\", \"{0}/fresh:1\"]\n[defaults]\ntarget = \"{1}\"\n",
        source.host(),
        target.host()
    ));

    let holder = target.hold_on(move |r| point.matches(r));
    let child = sandbox.regmirror().arg("--once").start();
    assert!(
        holder.wait(Duration::from_secs(60)),
        "{point:?} never reached"
    );
    let killed = child.kill();
    drop(holder); // the held request dies with the process, unanswered
    assert_ne!(killed.code, Some(0), "{point:?}: {}", killed.output());

    let stable = head_manifest(&target_registry, "app", "stable");
    assert_eq!(
        stable.as_deref(),
        Some(v1.digest()),
        "{point:?}: the tag must still name v1"
    );
    assert_no_broken_tag(&target_registry, "app");
    assert_no_broken_tag(&target_registry, "fresh");

    let rerun = sandbox.regmirror().arg("--once").run();
    rerun.assert_success();
    assert!(rerun.stdout.contains("failed 0"), "{}", rerun.output());
    assert_eq!(
        head_manifest(&target_registry, "app", "stable").as_deref(),
        Some(v2.digest())
    );
    assert_eq!(
        head_manifest(&target_registry, "fresh", "1").as_deref(),
        Some(fresh.digest())
    );
    assert_no_broken_tag(&target_registry, "app");
    assert_no_broken_tag(&target_registry, "fresh");
}

#[test]
fn killed_during_a_blob_upload_leaves_no_broken_tag_and_a_rerun_finishes() {
    kill_mid_copy_then_rerun(KillPoint::FirstBlobUpload);
}

#[test]
fn killed_during_a_child_manifest_push_leaves_no_broken_tag_and_a_rerun_finishes() {
    kill_mid_copy_then_rerun(KillPoint::FirstChildManifest);
}

#[test]
fn killed_during_the_tag_push_leaves_no_broken_tag_and_a_rerun_finishes() {
    kill_mid_copy_then_rerun(KillPoint::TagPush);
}

#[test]
fn a_source_tag_that_does_not_exist_fails_that_image_only() {
    let source = Registry::start();
    let target = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 1024);
    image.push(&source, "real", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/real:1\", \"{0}/real:nope\", \"{0}/ghost:1\"]\n[defaults]\ntarget = \"{1}\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 2");
    assert!(
        run.stdout.contains("real:nope does not exist"),
        "{}",
        run.output()
    );
    assert!(run.stdout.contains("(line 1)"), "{}", run.output());
}

#[test]
fn an_unreachable_target_fails_every_image_with_a_reason_and_exit_1() {
    let source = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 1024);
    image.push(&source, "app", "1");
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/app:1\"]\n[defaults]\ntarget = \"127.0.0.1:{port}/m\"\n",
        source.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(run.stdout.contains("cannot connect"), "{}", run.output());
}

#[test]
fn sigterm_during_once_finishes_the_copy_under_way_starts_no_other_and_exits_1() {
    let source = Registry::start();
    let target_registry = Registry::start();
    let target = Proxy::start(target_registry.host());
    let first = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 64 * 1024);
    let second = Image::single(Flavor::Docker, 1, 4096);
    first.push(&source, "first", "1");
    second.push(&source, "second", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/first:1\", \"{0}/second:1\"]\n[defaults]\ntarget = \"{1}\"\nconcurrency = 1\n",
        source.host(),
        target.host()
    ));
    let holder = target.hold_on(|r| r.is_blob_put());
    let mut child = sandbox.regmirror().arg("--once").start();
    assert!(holder.wait(Duration::from_secs(60)), "no upload started");
    child.terminate();
    assert!(child.wait_for_output("shutting down", Duration::from_secs(30)));
    holder.release();
    let run = child.wait(Duration::from_secs(60));
    run.assert_code(1);
    // Whichever image held the one slot finished; the other never started.
    let mirrored: Vec<&str> = [("first", &first), ("second", &second)]
        .into_iter()
        .filter(|(repo, image)| {
            head_manifest(&target_registry, repo, "1").as_deref() == Some(image.digest())
        })
        .map(|(repo, _)| repo)
        .collect();
    assert_eq!(mirrored.len(), 1, "{}", run.output());
    check_complete(&target_registry, mirrored[0], "1").unwrap();
    let other = if mirrored[0] == "first" {
        "second"
    } else {
        "first"
    };
    assert!(tags(&target_registry, other).is_empty(), "{}", run.output());
    let failed = run.failed_lines();
    assert_eq!(failed.len(), 1, "{}", run.output());
    assert!(
        failed[0].contains(&format!("/{other}:1 → "))
            && failed[0].contains("not started: stopped waiting: regmirror is shutting down"),
        "{}",
        run.output()
    );
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
}
