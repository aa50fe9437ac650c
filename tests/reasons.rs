//! Every failure carries its reason class to the top: each class made to happen against real
//! registries (a wrong password, a missing tag, a 429 past `max_wait`, a corrupt blob, a
//! refused push, a TLS registry spoken to in plain HTTP) and read back from the report file,
//! the report, `/healthz` and `/metrics`.

mod harness;

use std::collections::BTreeMap;

use harness::daemon::{eventually, http, server_address};
use harness::proxy::{corrupt_blob, fail_with};
use harness::*;

/// Registries that fail each its own way, and the config that mirrors one image from each.
struct Failing {
    _registries: Vec<Registry>,
    _proxies: Vec<Proxy>,
    config: String,
}

/// The reason class each image's failure must carry, by source repository.
const EXPECTED: [(&str, &str); 6] = [
    ("locked", "auth"),
    ("missing", "not_found"),
    ("limited", "rate_limited"),
    ("corrupt", "integrity"),
    ("refused", "refused"),
    ("tls", "tls"),
];

fn failing(extra: &str) -> Failing {
    let source = Registry::start();
    let locked = Registry::start_with(RegistryOptions::htpasswd("u", "right"));
    let target = Registry::start();
    let tls = Registry::start_with(RegistryOptions::tls());
    let image = Image::single(Flavor::Oci, 1, 512);
    for repo in ["limited", "corrupt", "refused", "tls"] {
        image.push(&source, repo, "1");
    }
    image.push(&locked, "locked", "1");
    let sources = Proxy::start(source.host());
    sources.add_rule(fail_with(
        |r| r.is_manifest_get() && r.repo() == "limited",
        429,
    ));
    let corrupted = Image::single(Flavor::Oci, 1, 512);
    corrupted.push(&source, "corrupt", "1");
    sources.add_rule(corrupt_blob(&corrupted.blobs()[1].0));
    let targets = Proxy::start(target.host());
    targets.add_rule(fail_with(
        |r| r.is_manifest_put() && r.repo().ends_with("refused"),
        400,
    ));
    let (s, t, l) = (sources.host(), targets.host(), locked.host());
    let config = format!(
        "images = [\"{l}/locked:1\", \"{s}/missing:1\", \"{s}/limited:1\", \"{s}/corrupt:1\", \
         \"{s}/refused:1\"]\n\
         [defaults]\ntarget = \"{t}/m\"\n{extra}\n\
         [rate_limit]\nmax_wait = \"2s\"\n\
         [registries.\"{l}\"]\nusername = \"u\"\npassword = \"wrong\"\n\n\
         [[mirror]]\nsource = \"{s}/tls:1\"\ntarget = \"{}/m/tls\"\n",
        tls.host()
    );
    Failing {
        _registries: vec![source, locked, target, tls],
        _proxies: vec![sources, targets],
        config,
    }
}

/// The reason of each failed image in a report document, by source repository.
fn reasons_in(document: &serde_json::Value) -> BTreeMap<String, String> {
    document["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|i| i["outcome"] == "failed")
        .map(|i| {
            let source = i["source"].as_str().unwrap();
            let repo = source
                .rsplit_once('/')
                .unwrap()
                .1
                .split(':')
                .next()
                .unwrap();
            (repo.to_string(), i["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

fn expected() -> BTreeMap<String, String> {
    EXPECTED
        .iter()
        .map(|(repo, reason)| (repo.to_string(), reason.to_string()))
        .collect()
}

#[test]
fn each_failure_names_its_reason_in_the_report_file_and_the_report() {
    let failing = failing("");
    let sandbox = Sandbox::new();
    sandbox.write_config(&failing.config);
    let file = sandbox.path().join("out/report.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let run = sandbox
        .regmirror()
        .args(["--once", "--report"])
        .arg(&file)
        .run();
    run.assert_code(1);
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the report file")).unwrap();
    assert_eq!(
        reasons_in(&document),
        expected(),
        "{document:#}\n{}",
        run.output()
    );
    assert_eq!(document["version"], 1);
    assert_eq!(document["totals"]["failed"], 6, "{document:#}");
    for (repo, reason) in EXPECTED {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with("FAILED") && l.contains(&format!("/{repo}:1 →")))
            .unwrap_or_else(|| panic!("no line for {repo}\n{}", run.output()));
        assert!(line.contains(&format!("): {reason}: ")), "{line}");
    }
}

#[test]
fn the_daemon_counts_failures_by_reason_in_metrics_and_healthz() {
    let failing = failing("[server]\nlisten = \"127.0.0.1:0\"\n");
    let sandbox = Sandbox::new();
    sandbox.write_config(&failing.config);
    let mut daemon = sandbox.regmirror().start();
    let base = format!("http://{}", server_address(&mut daemon));
    eventually(&daemon, "both mirrors' first runs end", || {
        let health: serde_json::Value = http()
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mirrors = health["mirrors"].as_array().cloned().unwrap_or_default();
        !mirrors.is_empty()
            && mirrors
                .iter()
                .all(|m| m["last_run"]["finished"].is_string())
    });
    let health: serde_json::Value = http()
        .get(format!("{base}/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for mirror in health["mirrors"].as_array().unwrap() {
        for (reason, n) in mirror["last_run"]["reasons"].as_object().unwrap() {
            *counted.entry(reason.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let want: BTreeMap<String, u64> = EXPECTED.iter().map(|(_, r)| (r.to_string(), 1)).collect();
    assert_eq!(counted, want, "{health:#}");
    let metrics = http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for (_, reason) in EXPECTED {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"}} 1")),
            "{reason}\n{metrics}"
        );
    }
}
