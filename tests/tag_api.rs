//! Comparing through Docker Hub's tag API (`tag_api`): the harness proxy serves the API's
//! shape (`tests/harness/hub_api.rs`) beside the real registry it forwards to, its digests
//! read from that registry, lagging it until the test says, and failing as the test says.

mod harness;

use std::path::PathBuf;

use harness::daemon::{eventually, metrics, server_address, PATIENCE};
use harness::hub_api::{Fault, HubApi};
use harness::*;

const REPO: &str = "library/app";

/// A Docker Hub look-alike (registry and tag API on one proxy), a target, and a sandbox whose
/// mirror takes every tag `t<N>` of [`REPO`].
struct Hub {
    upstream: Registry,
    proxy: Proxy,
    api: HubApi,
    target: Registry,
    sandbox: Sandbox,
}

impl Hub {
    /// `tags` tags of one image, mirrored once already, the API showing them.
    fn mirrored(tags: usize, settings: &str) -> Hub {
        let upstream = Registry::start();
        let proxy = Proxy::start(upstream.host());
        let api = HubApi::new(proxy.host());
        proxy.add_rule(api.rule());
        let image = Image::single(Flavor::Oci, 1, 256);
        image.push(&upstream, REPO, "t0");
        for i in 1..tags {
            image.tag(&upstream, REPO, &format!("t{i}"));
        }
        api.refresh(&upstream, REPO);
        let hub = Hub {
            target: Registry::start(),
            sandbox: Sandbox::new(),
            upstream,
            proxy,
            api,
        };
        hub.configure(&hub.api_on(settings));
        let first = hub.sandbox.regmirror().arg("--once").run();
        first.assert_success();
        first.assert_summary(&format!("mirrored {tags}, unchanged 0"));
        hub.proxy.clear();
        hub
    }

    /// The source's settings: its tag API the harness's, and `more`.
    fn api_on(&self, more: &str) -> String {
        format!("tag_api = \"{}\"\n{more}", self.api.base())
    }

    /// mirrors.toml with `settings` in the source's `[registries]` section (and what follows
    /// it), the mirror run every `schedule` if one is given.
    fn configure_with(&self, settings: &str, schedule: Option<&str>) {
        let schedule = schedule.map_or(String::new(), |s| format!("schedule = \"{s}\"\n"));
        self.sandbox.write_config(&format!(
            "[defaults]\ntarget = \"{target}/mirror\"\n\
             [registries.\"{proxy}\"]\n{settings}\n\
             [[mirror]]\nname = \"app\"\n{schedule}source = \"{proxy}/{REPO}\"\ninclude = ['t\\d+']\n",
            target = self.target.host(),
            proxy = self.proxy.host(),
        ));
    }

    fn configure(&self, settings: &str) {
        self.configure_with(settings, None);
    }

    /// One `--once` pass, its report file read back.
    fn pass(&self) -> (Run, serde_json::Value) {
        let report = self.sandbox.path().join("report.json");
        let run = self
            .sandbox
            .regmirror()
            .arg("--once")
            .arg("--report")
            .arg(&report)
            .run();
        (run, read_json(&report))
    }

    /// Pushes a new image under `tag` upstream (the API is not told); its digest.
    fn move_upstream(&self, tag: &str) -> String {
        Image::single(Flavor::Oci, 1, 256)
            .push(&self.upstream, REPO, tag)
            .digest
    }

    fn in_target(&self, tag: &str) -> Option<String> {
        head_manifest(&self.target, &format!("mirror/{REPO}"), tag)
    }

    fn api_requests(&self) -> usize {
        self.proxy.count(|r| r.path.starts_with("/v2/namespaces/"))
    }

    /// The report's request counts for the source registry.
    fn source_requests(&self, report: &serde_json::Value) -> serde_json::Value {
        report["registries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["registry"] == self.proxy.host())
            .map(|r| r["requests"].clone())
            .unwrap_or_else(|| panic!("no requests for the source in {report}"))
    }
}

fn read_json(path: &PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn an_unchanged_pass_reads_a_page_per_hundred_tags_and_heads_none_until_switched_off() {
    let hub = Hub::mirrored(250, "");
    let (run, report) = hub.pass();
    run.assert_success();
    run.assert_summary("unchanged 250");
    run.assert_summary("compared 250 tags: 250 by the tag API's digests, 0 by HEAD");
    assert_eq!(hub.api_requests(), 3, "three pages of 100");
    assert_eq!(hub.proxy.manifest_heads(), 0, "no HEAD at the source");
    assert_eq!(hub.proxy.manifest_gets(), 0, "no pull");
    assert_eq!(report["compared"]["by_api"], 250, "{report}");
    assert_eq!(report["compared"]["by_head"], 0, "{report}");
    let requests = hub.source_requests(&report);
    assert_eq!(requests["tag_api"], 3, "{requests}");
    assert_eq!(requests["head"], 0, "{requests}");
    assert_eq!(
        requests["list"], 1,
        "the registry's own listing: {requests}"
    );

    // The off switch: every tag HEADed, as before.
    hub.configure("tag_api = false");
    hub.proxy.clear();
    let (run, report) = hub.pass();
    run.assert_success();
    run.assert_summary("unchanged 250");
    assert_eq!(hub.api_requests(), 0);
    assert_eq!(hub.proxy.manifest_heads(), 250);
    assert_eq!(report["compared"]["by_head"], 250, "{report}");
    assert_eq!(hub.source_requests(&report)["head"], 250);
}

#[test]
fn a_tag_moved_upstream_is_seen_once_the_api_shows_it_or_by_the_head_pass_that_bounds_its_lag() {
    let hub = Hub::mirrored(5, "");
    let old = hub.in_target("t1").unwrap();
    let moved = hub.move_upstream("t1");

    // The API still lists the old digest, the target's: believed, as the README says.
    let (run, _) = hub.pass();
    run.assert_success();
    run.assert_summary("unchanged 5");
    assert_eq!(hub.in_target("t1"), Some(old));

    // The API shows the move: the next pass HEADs that tag alone and copies it.
    hub.api.refresh(&hub.upstream, REPO);
    hub.proxy.clear();
    let (run, report) = hub.pass();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 4");
    assert_eq!(hub.in_target("t1"), Some(moved));
    assert_eq!(hub.proxy.manifest_heads(), 1);
    assert_eq!(report["compared"]["by_api"], 4, "{report}");
    assert_eq!(report["compared"]["by_head"], 1, "{report}");

    // head_every = 0: every pass compares by HEAD, so a move the API hides is seen at once.
    let hidden = hub.move_upstream("t2");
    hub.configure(&hub.api_on("head_every = \"0s\""));
    hub.proxy.clear();
    let (run, _) = hub.pass();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 4");
    assert_eq!(hub.in_target("t2"), Some(hidden));
    assert_eq!(hub.api_requests(), 0);

    // --verify-heads: a --once run that compares by HEAD whatever the API lists.
    hub.configure(&hub.api_on(""));
    let hidden = hub.move_upstream("t4");
    hub.proxy.clear();
    let run = hub
        .sandbox
        .regmirror()
        .args(["--once", "--verify-heads"])
        .run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 4");
    assert_eq!(hub.in_target("t4"), Some(hidden));
    assert_eq!((hub.api_requests(), hub.proxy.manifest_heads()), (0, 5));
    let daemon = hub.sandbox.regmirror().arg("--verify-heads").run();
    daemon.assert_code(2);
    assert!(
        daemon.output().contains("--verify-heads goes with --once"),
        "{}",
        daemon.output()
    );
}

#[test]
fn a_failing_tag_api_sends_the_repository_back_to_heads_and_the_pass_still_succeeds() {
    let hub = Hub::mirrored(5, "");
    let faults = [
        Fault::Status(429),
        Fault::Status(503),
        Fault::Status(404),
        Fault::ChangedFormat,
    ];
    for (i, fault) in faults.into_iter().enumerate() {
        let tag = format!("t{i}");
        let moved = hub.move_upstream(&tag);
        hub.api.fail(Some(fault));
        hub.proxy.clear();
        let (run, report) = hub.pass();
        run.assert_success();
        run.assert_summary("mirrored 1, unchanged 4");
        assert!(
            run.output().contains("tag API not used"),
            "{fault:?}\n{}",
            run.output()
        );
        run.assert_summary(
            "compared 5 tags: 0 by the tag API's digests, 5 by HEAD; \
             the tag API failed for 1 repository, compared by HEAD",
        );
        assert_eq!(hub.in_target(&tag), Some(moved), "{fault:?}");
        assert_eq!(hub.proxy.manifest_heads(), 5, "{fault:?}");
        assert_eq!(
            report["compared"]["api_fallbacks"], 1,
            "{fault:?}: {report}"
        );
        assert_eq!(report["compared"]["by_head"], 5, "{fault:?}: {report}");
    }

    // A record with a broken digest: its tag alone is HEADed.
    hub.api.refresh(&hub.upstream, REPO);
    hub.api.fail(Some(Fault::BadRecord));
    hub.proxy.clear();
    let (run, report) = hub.pass();
    run.assert_success();
    run.assert_summary("unchanged 5");
    assert_eq!(hub.proxy.manifest_heads(), 1);
    assert_eq!(report["compared"]["by_api"], 4, "{report}");
    assert_eq!(report["compared"]["api_fallbacks"], 0, "{report}");
}

#[test]
fn the_daemon_heads_every_tag_within_head_every_and_metrics_count_requests_by_kind() {
    let hub = Hub::mirrored(5, "");
    let moved = hub.move_upstream("t3");
    // The API never shows the move: only the HEAD pass head_every brings can catch it.
    let settings = hub.api_on("head_every = \"2s\"\n[server]\nlisten = \"127.0.0.1:0\"\n");
    hub.configure_with(&settings, Some("* * * * * *"));
    let mut daemon = hub.sandbox.regmirror().start();
    let base = format!("http://{}", server_address(&mut daemon));
    eventually(&daemon, "t3 mirrored by a pass by HEAD", || {
        hub.in_target("t3").as_deref() == Some(moved.as_str())
    });
    let source = hub.proxy.host();
    eventually(&daemon, "the passes show in /metrics", || {
        let text = metrics(&base);
        text.contains("regmirror_compared_tags_total{mirror=\"app\",by=\"head\"} ")
            && text.contains(&format!(
                "regmirror_registry_requests_total{{registry=\"{source}\",kind=\"head\"}}"
            ))
    });
    let text = metrics(&base);
    for expected in [
        format!("regmirror_registry_requests_total{{registry=\"{source}\",kind=\"tag_api\"}}"),
        format!("regmirror_registry_requests_total{{registry=\"{source}\",kind=\"list\"}}"),
        "regmirror_compared_tags_total{mirror=\"app\",by=\"api\"}".to_string(),
        "regmirror_tag_api_fallbacks_total{mirror=\"app\"} 0".to_string(),
    ] {
        assert!(text.contains(&expected), "missing {expected}\n{text}");
    }
    let api_compared: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("regmirror_compared_tags_total{mirror=\"app\",by=\"api\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        api_compared >= 4,
        "passes before the HEAD pass used the API\n{text}"
    );
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}
