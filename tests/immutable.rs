//! Targets that never move a tag (ECR's `IMMUTABLE` repositories, Harbor's immutability
//! rules): a real registry behind a proxy that refuses a manifest PUT onto any tag it holds,
//! with ECR's own answer (`harness::ecr::immutable_tags`). A tag moved upstream is its own
//! outcome and never fails the other images; an unchanged image is never written again.

mod harness;

use harness::daemon::{eventually, health, metrics, server_address, PATIENCE};
use harness::ecr::immutable_tags;
use harness::*;

/// A target registry whose tags never move, behind the proxy that refuses to move them.
struct Immutable {
    registry: Registry,
    proxy: Proxy,
}

impl Immutable {
    fn start() -> Immutable {
        let registry = Registry::start();
        let proxy = Proxy::start(registry.host());
        proxy.add_rule(immutable_tags(registry.host()));
        Immutable { registry, proxy }
    }

    /// Manifest PUTs the target refused as immutable.
    fn refused(&self) -> usize {
        self.proxy.count(|r| r.is_manifest_put() && r.status == 400)
    }
}

/// `images` from `source` into `target/mirror`, with `more` after `[defaults]`.
fn config(source: &str, target: &str, images: &[&str], more: &str) -> String {
    images_config(source, &format!("{target}/mirror"), images, more)
}

#[test]
fn a_tag_moved_upstream_is_reported_immutable_and_the_other_images_are_mirrored() {
    let registry = Registry::start();
    // The source through a proxy, to count its pulls.
    let source = Proxy::start(registry.host());
    let target = Immutable::start();
    let a1 = Image::single(Flavor::Oci, 2, 2048);
    let b = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 1, 1024);
    a1.push(&registry, "lib/a", "1");
    b.push(&registry, "lib/b", "1");
    let (s, t) = (source.host(), target.proxy.host());
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(s, t, &["lib/a:1", "lib/b:1"], ""));
    let first = sandbox.regmirror().arg("--once").run();
    first.assert_success();
    first.assert_summary("mirrored 2, unchanged 0, failed 0");

    // Upstream moves a:1, and a new image joins the list.
    let a2 = Image::single(Flavor::Oci, 2, 2048);
    a2.push(&registry, "lib/a", "1");
    let c = Image::single(Flavor::Docker, 1, 1024);
    c.push(&registry, "lib/c", "1");
    sandbox.write_config(&config(s, t, &["lib/a:1", "lib/b:1", "lib/c:1"], ""));
    target.proxy.clear();
    let moved = sandbox.regmirror().arg("--once").run();
    // Not what upstream has: the run says so in its exit code.
    moved.assert_code(1);
    moved.assert_summary("mirrored 1, unchanged 1, immutable 1, failed 0");
    let line = format!(
        "IMMUTABLE   {s}/lib/a:1 → {t}/mirror/lib/a:1 (line 1): immutable in target: upstream \
         moved {} → {}",
        a1.digest(),
        a2.digest()
    );
    assert!(moved.stdout.contains(&line), "{}", moved.output());
    assert!(moved.failed_lines().is_empty(), "{}", moved.output());
    assert!(
        moved.stderr.contains("immutable in target: upstream moved"),
        "{}",
        moved.output()
    );
    let target_direct = &target.registry;
    assert_eq!(
        head_manifest(target_direct, "mirror/lib/a", "1").as_deref(),
        Some(a1.digest()),
        "the target's tag stays"
    );
    assert_eq!(
        head_manifest(target_direct, "mirror/lib/c", "1").as_deref(),
        Some(c.digest())
    );
    assert_eq!(target.refused(), 1, "refused once, not retried");
    // The new content waits in the target by digest, complete.
    assert_eq!(
        head_manifest(target_direct, "mirror/lib/a", a2.digest()).as_deref(),
        Some(a2.digest())
    );

    // The next pass finds it there: the same outcome without a pull at the source.
    source.clear();
    target.proxy.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_code(1);
    again.assert_summary("mirrored 0, unchanged 2, immutable 1, failed 0");
    assert!(again.stdout.contains(&line), "{}", again.output());
    assert_eq!(source.manifest_gets(), 0, "no pull at the source");
    assert_eq!(target.refused(), 1);
    assert_eq!(target.proxy.blob_puts(), 0);
}

#[test]
fn an_unchanged_image_is_never_rewritten_into_an_immutable_target() {
    let source = Registry::start();
    let target = Immutable::start();
    let index = Image::multi_arch(
        Flavor::Oci,
        &["linux/amd64", "linux/arm64", "linux/s390x"],
        1,
        1024,
    );
    index.push(&source, "lib/app", "1");
    Image::single(Flavor::Docker, 1, 1024).push(&source, "lib/tool", "1");
    let (s, t) = (source.host(), target.proxy.host());
    let sandbox = Sandbox::new();
    // The index whole, a filtered index of one platform, and a single image.
    let some = format!(
        "[[mirror]]\nname = \"amd64\"\nsource = \"{s}/lib/app:1\"\ntarget = \"{t}/amd64/app\"\nplatforms = [\"linux/amd64\"]\n"
    );
    sandbox.write_config(&config(s, t, &["lib/app:1", "lib/tool:1"], &some));
    sandbox
        .regmirror()
        .arg("--once")
        .run()
        .assert_success()
        .assert_summary("mirrored 3, unchanged 0, failed 0");

    target.proxy.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    again.assert_summary("mirrored 0, unchanged 3, failed 0");
    assert_eq!(target.proxy.manifest_puts(), 0, "nothing written");
    assert_eq!(
        target.proxy.manifest_gets(),
        1,
        "nothing read but the filtered index, for the source digest it records"
    );

    // skopeo's failure mode (containers/container-libs#918): it writes the unchanged index
    // again, which the target refuses.
    let skopeo = cli::skopeo(sandbox.path())
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{s}/lib/app:1"))
        .arg(format!("docker://{t}/mirror/lib/app:1"))
        .run();
    assert!(!skopeo.success(), "{}", skopeo.output());
    assert!(
        skopeo
            .stderr
            .contains("cannot be overwritten because the repository is immutable"),
        "{}",
        skopeo.output()
    );
    // skopeo may try the index again in another manifest format: refused each time.
    assert_ne!(target.refused(), 0, "skopeo's rewrite refused");
}

#[test]
fn the_daemon_counts_an_immutable_image_in_metrics_and_healthz() {
    let source = Registry::start();
    let target = Immutable::start();
    let v1 = Image::single(Flavor::Oci, 1, 1024);
    v1.push(&source, "app", "1");
    let (s, t) = (source.host(), target.proxy.host());
    let sandbox = Sandbox::new();
    sandbox.write_config(&config(s, t, &["app:1"], ""));
    sandbox.regmirror().arg("--once").run().assert_success();
    let v2 = Image::single(Flavor::Oci, 1, 1024);
    v2.push(&source, "app", "1");
    sandbox.write_config(&config(
        s,
        t,
        &["app:1"],
        "run_on_start = true\n[server]\nlisten = \"127.0.0.1:0\"\n",
    ));

    let mut daemon = sandbox.regmirror().start();
    let base = format!("http://{}", server_address(&mut daemon));
    let mirror = format!("{s}/app:1");
    let counted = format!("regmirror_images_total{{mirror=\"{mirror}\",result=\"immutable\"}} 1");
    eventually(&daemon, "the immutable image shows in /metrics", || {
        metrics(&base).contains(&counted)
    });
    let shown = metrics(&base);
    assert!(
        shown.contains(&format!(
            "regmirror_runs_total{{mirror=\"{mirror}\",result=\"failed\"}} 1"
        )),
        "{shown}"
    );
    assert!(
        !shown.contains("regmirror_last_success_timestamp_seconds{"),
        "{shown}"
    );
    let health = health(&base);
    let last = &health["mirrors"][0]["last_run"];
    assert_eq!(last["result"], "immutable", "{health}");
    assert_eq!(
        (&last["immutable"], &last["failed"]),
        (&1.into(), &0.into()),
        "{health}"
    );
    assert_eq!(
        last["immutable_images"][0],
        format!(
            "{mirror} → {t}/mirror/app:1: immutable in target: upstream moved {} → {}",
            v1.digest(),
            v2.digest()
        ),
        "{health}"
    );
    assert!(
        daemon.stderr().contains("immutable=1"),
        "{}",
        daemon.stderr()
    );
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}
