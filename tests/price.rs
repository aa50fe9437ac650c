//! A dry run prices its plan: the pulls the copies would spend at each source registry, from
//! free HEADs only, against the budget the registry announces, and the next real pass spends
//! exactly that, on the harness's Docker Hub stand-in.

mod harness;

use std::time::Duration;

use harness::hub::{HeaderStyle, PullLimit, PullLimitOptions};
use harness::*;

#[test]
fn the_plans_pulls_are_what_the_pass_then_spends_and_its_budget_is_named() {
    let upstream = Registry::start();
    let hub = Proxy::start(upstream.host());
    let (rule, log) = PullLimit::new(PullLimitOptions {
        limit: 100,
        window: Duration::from_secs(6 * 3600),
        headers: HeaderStyle::DockerHub,
        ..PullLimitOptions::default()
    });
    hub.add_rule(rule);
    let target = Registry::start();
    for repo in ["one", "two", "three"] {
        let image = Image::single(Flavor::Oci, 1, 512);
        image.push(&upstream, repo, "1");
        if repo == "one" {
            // Two tags of one content: priced, and pulled, once.
            image.tag(&upstream, repo, "2");
        }
    }
    // An index of two platforms, of which one is taken: its index and that child.
    Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 1, 512)
        .push(&upstream, "multi", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{h}/one:1\", \"{h}/one:2\", \"{h}/two:1\", \"{h}/three:1\"]\n\
         [defaults]\ntarget = \"{t}/m\"\n\n\
         [[mirror]]\nsource = \"{h}/multi:1\"\nplatforms = [\"linux/amd64\"]\n",
        h = hub.host(),
        t = target.host()
    ));

    let plan = sandbox.regmirror().arg("--dry-run").run();
    plan.assert_success();
    assert_eq!(log.pulls_served(), 0, "a plan spends no pull");
    let line = plan
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{}: needs", hub.host())))
        .unwrap_or_else(|| panic!("no price line\n{}", plan.output()));
    assert!(
        line.starts_with(&format!(
            "{}: needs about 5 pulls; it has 100 of 100 per ",
            hub.host()
        )),
        "{line}"
    );
    assert!(line.ends_with("within its budget now"), "{line}");
    assert!(plan.stdout.contains("; 1 pull)"), "{}", plan.output());
    assert!(
        plan.stdout.contains("; about 2 pulls)"),
        "{}",
        plan.output()
    );

    let json = sandbox
        .regmirror()
        .args(["--dry-run", "--output", "json"])
        .run();
    json.assert_success();
    let document: serde_json::Value =
        serde_json::from_str(&json.stdout).expect("one JSON document");
    let price = &document["price"][0];
    assert_eq!(price["registry"], hub.host());
    assert_eq!(price["pulls"], 5, "{document:#}");
    assert_eq!(price["pulls_estimate"], "about");
    assert_eq!(price["limit"], 100);
    assert_eq!(price["takes_seconds"], 0);
    assert_eq!(document["totals"]["would_copy"], 5);

    let pass = sandbox.regmirror().arg("--once").run();
    pass.assert_success();
    assert_eq!(log.pulls_served(), 5, "the pass spent what the plan said");
}
