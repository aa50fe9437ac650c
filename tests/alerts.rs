//! The alerts that ship, deploy/prometheus/regmirror-alerts.yml: promtool checks them and runs
//! their unit tests, the PrometheusRule holds the same groups, the README quotes them as they
//! are, and every metric they read is one a running daemon exports.

mod harness;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::daemon::{eventually, metrics, replace_config, server_address, start_daemon};
use harness::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `promtool ARGS` in deploy/prometheus, failing with how to install it when it is missing.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package \
                 (apt-get install --no-install-recommends prometheus), or run scripts/test, \
                 which does"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", "regmirror-alerts.yml"]);
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_prometheusrule_holds_the_groups_of_the_rules_file() {
    let rules = yaml("deploy/prometheus/regmirror-alerts.yml");
    let custom = yaml("deploy/kubernetes/daemon/prometheusrule.yaml");
    assert_eq!(custom["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        custom["spec"]["groups"], rules["groups"],
        "deploy/kubernetes/daemon/prometheusrule.yaml's spec.groups differ from \
         deploy/prometheus/regmirror-alerts.yml's groups: copy them"
    );
}

/// Whether `block`'s lines are lines of `file`, one after another, all indented alike.
fn quoted(file: &str, block: &str) -> bool {
    let lines: Vec<&str> = file.lines().collect();
    let wanted: Vec<&str> = block.lines().collect();
    (0..lines.len()).any(|start| {
        let indent = lines[start].len() - lines[start].trim_start().len();
        wanted.iter().enumerate().all(|(i, want)| {
            lines.get(start + i).is_some_and(|have| {
                if want.is_empty() {
                    have.trim().is_empty()
                } else {
                    have.len() > indent
                        && have[..indent].trim().is_empty()
                        && &have[indent..] == *want
                }
            })
        })
    })
}

#[test]
fn the_readme_quotes_the_rules_file_as_it_is() {
    let readme = read("README.md");
    let rules = read("deploy/prometheus/regmirror-alerts.yml");
    let section = readme
        .split("\n### Alerts\n")
        .nth(1)
        .expect("README.md has an \"### Alerts\" section");
    let section = section.split("\n#").next().unwrap_or(section);
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(
        blocks.len() >= 2,
        "the Alerts section quotes no rule:\n{section}"
    );
    for block in blocks {
        assert!(
            quoted(&rules, block),
            "README.md quotes what deploy/prometheus/regmirror-alerts.yml does not say:\n{block}"
        );
    }
}

/// Every `regmirror_…` metric an `expr` of the rules file reads.
fn metrics_the_rules_read() -> BTreeSet<String> {
    let name = regex::Regex::new(r"\bregmirror_[a-z_]+").unwrap();
    let rules = yaml("deploy/prometheus/regmirror-alerts.yml");
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            names.extend(name.find_iter(expr).map(|m| m.as_str().to_string()));
        }
    }
    names
}

/// The names of every series a scrape can show: its samples, and each family's `# TYPE`
/// (a family with no series yet shows only that).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split(' ');
            let (family, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            match kind {
                "counter" => names.insert(format!("{family}_total")),
                _ => names.insert(family.to_string()),
            };
        } else if !line.starts_with('#') {
            let sample = line.split(['{', ' ']).next().unwrap();
            names.insert(sample.to_string());
        }
    }
    names
}

#[test]
fn every_metric_the_rules_read_is_exported_by_a_daemon_with_values_an_alert_can_judge() {
    let source = Registry::start();
    let target = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&source, "app", "1");
    let sandbox = Sandbox::new();
    let server = "[server]\nlisten = \"127.0.0.1:0\"\n";
    // gone:1 is not upstream: its runs fail.
    let config = |images: &[&str]| {
        images_config(
            source.host(),
            target.host(),
            images,
            &format!("schedule = \"@hourly\"\n{server}"),
        )
    };
    sandbox.write_config(&config(&["app:1", "gone:1"]));
    let mut daemon = start_daemon(&sandbox);
    let base = format!("http://{}", server_address(&mut daemon));
    let (app, gone) = (
        format!("{}/app:1", source.host()),
        format!("{}/gone:1", source.host()),
    );
    eventually(&daemon, "both runs on start finish", || {
        metrics(&base).matches("regmirror_runs_total{").count() == 2
    });
    let text = metrics(&base);
    for expected in [
        format!("regmirror_consecutive_failed_runs{{mirror=\"{gone}\"}} 1\n"),
        format!("regmirror_consecutive_failed_runs{{mirror=\"{app}\"}} 0\n"),
        format!("regmirror_schedule_interval_seconds{{mirror=\"{app}\"}} 3600.0\n"),
        format!("regmirror_schedule_interval_seconds{{mirror=\"{gone}\"}} 3600.0\n"),
        format!("regmirror_schedule_start_timestamp_seconds{{mirror=\"{gone}\"}} "),
        format!("regmirror_last_success_timestamp_seconds{{mirror=\"{app}\"}} "),
        format!(
            "regmirror_ratelimit_waiting_pulls{{registry=\"{}\"}} 0\n",
            source.host()
        ),
        "regmirror_config_last_reload_successful 1\n".to_string(),
    ] {
        assert!(text.contains(&expected), "missing {expected}\n{text}");
    }
    let exported = exported(&text);
    for name in metrics_the_rules_read() {
        assert!(
            exported.contains(&name),
            "the rules read {name}, which /metrics lacks:\n{text}"
        );
    }

    replace_config(&sandbox, "images = [\n");
    eventually(&daemon, "the broken edit shows in /metrics", || {
        metrics(&base).contains("regmirror_config_last_reload_successful 0\n")
    });
    // Fixed, without gone:1: no gauge is left for an alert about a mirror no longer there.
    replace_config(&sandbox, &config(&["app:1"]));
    eventually(&daemon, "the fix shows in /metrics", || {
        metrics(&base).contains("regmirror_config_last_reload_successful 1\n")
    });
    let text = metrics(&base);
    for gone_gauge in [
        "regmirror_consecutive_failed_runs",
        "regmirror_schedule_interval_seconds",
        "regmirror_schedule_start_timestamp_seconds",
    ] {
        let series = format!("{gone_gauge}{{mirror=\"{gone}\"}}");
        assert!(!text.contains(&series), "{series} left\n{text}");
    }
    assert!(
        text.contains(&format!(
            "regmirror_schedule_interval_seconds{{mirror=\"{app}\"}} 3600.0\n"
        )),
        "{text}"
    );
}

#[test]
fn pulls_waiting_for_a_spent_budget_show_in_metrics_until_they_go() {
    let upstream = Registry::start();
    let hub = Proxy::start(upstream.host());
    let (rule, log) = PullLimit::new(PullLimitOptions {
        limit: 1,
        window: Duration::from_secs(10),
        headers: HeaderStyle::DockerHub,
        ..PullLimitOptions::default()
    });
    hub.add_rule(rule);
    let target = Registry::start();
    for repo in ["one", "two"] {
        Image::single(Flavor::Oci, 1, 1024).push(&upstream, repo, "1");
    }
    let sandbox = Sandbox::new();
    sandbox.write_config(&images_config(
        hub.host(),
        target.host(),
        &["one:1", "two:1"],
        "[server]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let mut daemon = start_daemon(&sandbox);
    let base = format!("http://{}", server_address(&mut daemon));
    let waiting = |n: u32| {
        format!(
            "regmirror_ratelimit_waiting_pulls{{registry=\"{}\"}} {n}\n",
            hub.host()
        )
    };
    // One pull per 10 s window: one image copies, the other waits for the next window.
    eventually(&daemon, "a pull waits for the budget", || {
        metrics(&base).contains(&waiting(1))
    });
    eventually(&daemon, "both images are copied", || {
        metrics(&base).matches("result=\"success\"} 1").count() == 2
    });
    let text = metrics(&base);
    assert!(text.contains(&waiting(0)), "{text}");
    assert_eq!(log.pulls_served(), 2);
}
