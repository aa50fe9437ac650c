//! Benchmark, scenario 11: Docker Hub's tag API and the request cap (issue 25), side by side
//! in one run, against a Docker Hub look-alike: a real registry behind the harness proxy,
//! which also serves the tag API's shape (`tests/harness/hub_api.rs`) and logs when every
//! request arrived.
//!
//! a. An unchanged pass over 5,000 tags of one repository, the tag API on (its default for
//!    Docker Hub) and off (`tag_api = false`): requests the hub saw, HEADs, pulls, wall time.
//!    Target: ≤ 60 requests and 0 pulls with the API on (about 5,000 HEADs without).
//! b. A tag moved upstream while the API still lists its old digest: the pass then, and the
//!    pass after the API shows the move. Target: caught in that pass.
//! c. `requests_per_second = 20`: the most requests the hub saw in any 1 s window, and how long
//!    its requests took from the first to the last against what the cap implies ((N − 1) / 20
//!    s), for the API-on pass over 5,000 tags and an API-off pass over 300. Target: ≤ 22 in
//!    any second, ≤ 1.1 × the implied time.
//!
//! Environment (see `tests/bench/mod.rs`): `BENCH_OUT`, `BENCH_SUMMARY`, `BENCH_QUICK` (500
//! tags instead of 5,000), `BENCH_REGMIRROR`.
//!
//! Ignored by default: `scripts/bench hubapi` runs it in release mode.

mod bench;
mod harness;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench::measure::{regmirror_in, run_timed};
use bench::report::{publish, Row};
use bench::Settings;
use harness::hub_api::HubApi;
use harness::*;

const BIG: &str = "library/many";
const SMALL: &str = "library/few";
const SMALL_TAGS: usize = 300;
const CAP: u32 = 20;
const TIMEOUT: Duration = Duration::from_secs(900);

/// The hub (registry, tag API and request log on one proxy), a target, and a sandbox.
struct Hub {
    upstream: Registry,
    proxy: Proxy,
    api: HubApi,
    /// When each request reached the hub, since the last [`Hub::clear`].
    arrivals: Arc<Mutex<Vec<Instant>>>,
    target: Registry,
    sandbox: Sandbox,
}

/// What one pass did, as the hub saw it.
struct Pass {
    requests: usize,
    heads: usize,
    pulls: usize,
    pages: usize,
    wall: Duration,
    /// The most requests in any 1 s window.
    busiest: usize,
    /// From the first request to the hub to the last.
    span: Duration,
    summary: String,
    ok: bool,
}

impl Hub {
    fn start(big: usize) -> Hub {
        let upstream = Registry::start();
        let proxy = Proxy::start(upstream.host());
        let api = HubApi::new(proxy.host());
        let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let log = arrivals.clone();
        proxy.add_rule(move |_: &RequestInfo| {
            log.lock().unwrap().push(Instant::now());
            None
        });
        proxy.add_rule(api.rule());
        let image = Image::single(Flavor::Oci, 1, 1024);
        for (repo, tags) in [(BIG, big), (SMALL, SMALL_TAGS)] {
            image.push(&upstream, repo, "t0");
            for i in 1..tags {
                image.tag(&upstream, repo, &format!("t{i}"));
            }
            for i in 0..tags {
                api.show(repo, &format!("t{i}"), image.digest());
            }
        }
        Hub {
            upstream,
            proxy,
            api,
            arrivals,
            target: Registry::start(),
            sandbox: Sandbox::new(),
        }
    }

    /// mirrors.toml: `repo`'s every tag, the source's section `settings`.
    fn configure(&self, repo: &str, settings: &str) {
        self.sandbox.write_config(&format!(
            "[defaults]\ntarget = \"{}/mirror\"\n[registries.\"{proxy}\"]\n{settings}\n\
             [[mirror]]\nsource = \"{proxy}/{repo}\"\ninclude = ['t\\d+']\n",
            self.target.host(),
            proxy = self.proxy.host(),
        ));
    }

    /// The source's section with the tag API on (or off), and a request cap (or none).
    fn settings(&self, api: bool, cap: Option<u32>) -> String {
        let api = match api {
            true => format!("tag_api = \"{}\"\n", self.api.base()),
            false => "tag_api = false\n".to_string(),
        };
        format!("{api}requests_per_second = {}\n", cap.unwrap_or(0))
    }

    fn pass(&self) -> Pass {
        self.proxy.clear();
        self.arrivals.lock().unwrap().clear();
        let pages_before = self.api.requests();
        let mut command = regmirror_in(&self.sandbox);
        command.arg("--once");
        let (run, wall, timed_out) = run_timed(&mut command, TIMEOUT);
        let arrivals = self.arrivals.lock().unwrap().clone();
        let busiest = arrivals
            .iter()
            .map(|start| {
                arrivals
                    .iter()
                    .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        let span = match (arrivals.iter().min(), arrivals.iter().max()) {
            (Some(first), Some(last)) => last.duration_since(*first),
            _ => Duration::ZERO,
        };
        let output = run.output();
        Pass {
            requests: self.proxy.requests().len(),
            heads: self.proxy.manifest_heads(),
            pulls: self.proxy.manifest_gets(),
            pages: self.api.requests() - pages_before,
            wall,
            busiest,
            span,
            summary: output
                .lines()
                .rev()
                .find(|l| l.contains(" in ") && l.contains("unchanged"))
                .unwrap_or("(no summary)")
                .to_string(),
            ok: run.success() && !timed_out,
        }
    }

    fn in_target(&self, repo: &str, tag: &str) -> Option<String> {
        head_manifest(&self.target, &format!("mirror/{repo}"), tag)
    }
}

fn table_row(what: &str, api: &str, p: &Pass) -> String {
    format!(
        "| {what} | {api} | {} | {} | {} | {} | {:.2} s | {} |\n",
        p.requests,
        p.heads,
        p.pulls,
        p.pages,
        p.wall.as_secs_f64(),
        p.summary.split(" in ").next().unwrap_or_default()
    )
}

/// `(N − 1) / cap`: the least time N requests spread by the cap take, first to last.
fn implied(requests: usize) -> Duration {
    Duration::from_secs_f64(requests.saturating_sub(1) as f64 / f64::from(CAP))
}

#[test]
#[ignore = "benchmark: scripts/bench hubapi"]
fn scenario_11_tag_api_and_request_cap() {
    let settings = Settings::from_env();
    let big = if settings.quick { 500 } else { 5_000 };
    let hub = Hub::start(big);

    // The first copy, with neither cap nor API: everything lands in the target.
    hub.configure(BIG, &hub.settings(false, None));
    let first = hub.pass();
    assert!(first.ok, "the first copy failed: {}", first.summary);

    // a. Unchanged, the API on and off.
    hub.configure(BIG, &hub.settings(true, None));
    let on = hub.pass();
    hub.configure(BIG, &hub.settings(false, None));
    let off = hub.pass();

    // b. A tag moved upstream: unseen while the API lags, caught once it shows the move.
    let moved_tag = format!("t{}", big - 1);
    let moved = Image::single(Flavor::Oci, 1, 1024)
        .push(&hub.upstream, BIG, &moved_tag)
        .digest;
    hub.configure(BIG, &hub.settings(true, None));
    let lagging = hub.pass();
    let unseen = hub.in_target(BIG, &moved_tag).as_deref() != Some(moved.as_str());
    hub.api.show(BIG, &moved_tag, &moved);
    let shown = hub.pass();
    let caught = hub.in_target(BIG, &moved_tag).as_deref() == Some(moved.as_str());

    // c. The cap: the API-on pass over the big repository, an API-off pass over the small one
    // (mirrored first, uncapped).
    hub.configure(BIG, &hub.settings(true, Some(CAP)));
    let capped_api = hub.pass();
    hub.configure(SMALL, &hub.settings(false, None));
    assert!(hub.pass().ok, "the small repository's first copy failed");
    hub.configure(SMALL, &hub.settings(false, Some(CAP)));
    let capped_heads = hub.pass();

    let mut section = String::new();
    let quick = if settings.quick { " (BENCH_QUICK)" } else { "" };
    let _ = writeln!(
        section,
        "## 11. Docker Hub's tag API and the request cap{quick}\n\n\
         A Docker Hub look-alike: distribution 2.8 behind the harness proxy, which also serves \
         the tag API's pages of 100 (`tests/bench_hubapi.rs`). One repository of {big} tags \
         (one image), mirrored once, then passed over with regmirror `--once`. Requests are \
         every request the hub saw (registry API, `/v2/` and tag API pages); the registry's own \
         tag list answers every tag in one request.\n"
    );
    section.push_str(
        "| pass | tag API | requests to the hub | HEADs | pulls | API pages | wall | result |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    section.push_str(&table_row(&format!("unchanged, {big} tags"), "on", &on));
    section.push_str(&table_row(&format!("unchanged, {big} tags"), "off", &off));
    section.push_str(&table_row(
        &format!("`{moved_tag}` moved, the API still lists the old digest"),
        "on",
        &lagging,
    ));
    section.push_str(&table_row(
        "the next pass, once the API shows the move",
        "on",
        &shown,
    ));
    let _ = writeln!(
        section,
        "\nWith `requests_per_second = {CAP}` (the busiest second: the most requests the hub saw \
         in any 1 s window; hub time: its first request to its last, against the (N − 1) / {CAP} \
         s the cap implies):\n"
    );
    section.push_str(
        "| pass | requests to the hub | busiest second | hub time | cap implies | wall |\n\
         |---|---|---|---|---|---|\n",
    );
    for (what, p) in [
        (format!("unchanged, {big} tags, tag API on"), &capped_api),
        (
            format!("unchanged, {SMALL_TAGS} tags, tag API off"),
            &capped_heads,
        ),
    ] {
        let _ = writeln!(
            section,
            "| {what} | {} | {} | {:.2} s | {:.2} s | {:.2} s |",
            p.requests,
            p.busiest,
            p.span.as_secs_f64(),
            implied(p.requests).as_secs_f64(),
            p.wall.as_secs_f64()
        );
    }

    let on_met = on.ok && on.requests <= 60 && on.pulls == 0;
    let catch_met = lagging.ok && shown.ok && unseen && caught;
    let within = |p: &Pass| {
        p.ok && p.busiest <= 22 && p.span.as_secs_f64() <= 1.1 * implied(p.requests).as_secs_f64()
    };
    let cap_met = within(&capped_api) && within(&capped_heads);
    let rows = [
        Row {
            scenario: "11a. unchanged pass over 5,000 Docker Hub tags",
            tool: "regmirror, tag API on",
            median: format!(
                "{} requests, {} HEADs, {} pulls (API off: {} requests, {} HEADs)",
                on.requests, on.heads, on.pulls, off.requests, off.heads
            ),
            rounds: "1".into(),
            ratio: "–".into(),
            target: "≤ 60 requests, 0 pulls",
            met: Some(on_met),
        },
        Row {
            scenario: "11b. a tag moved upstream",
            tool: "regmirror, tag API on",
            median: format!(
                "unseen while the API lags: {}; caught in the pass after it shows the move: {}",
                yes(unseen),
                yes(caught)
            ),
            rounds: "1".into(),
            ratio: "–".into(),
            target: "caught in the pass after the API shows it",
            met: Some(catch_met),
        },
        Row {
            scenario: "11c. requests_per_second = 20",
            tool: "regmirror",
            median: format!(
                "busiest second {} and {}; hub time {:.2} s of {:.2} s implied, {:.2} s of {:.2} s",
                capped_api.busiest,
                capped_heads.busiest,
                capped_api.span.as_secs_f64(),
                implied(capped_api.requests).as_secs_f64(),
                capped_heads.span.as_secs_f64(),
                implied(capped_heads.requests).as_secs_f64()
            ),
            rounds: "1".into(),
            ratio: "–".into(),
            target: "≤ 22 in any 1 s, ≤ 1.1 × the implied time",
            met: Some(cap_met),
        },
    ];
    publish(&section, &rows);
    assert!(
        on_met && catch_met && cap_met,
        "a target was missed:\n{section}"
    );
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
