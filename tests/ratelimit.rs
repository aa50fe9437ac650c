//! Pulls paced by the registry's budget, and 429s outlasted calmly, through a Docker Hub
//! look-alike (`harness::hub::PullLimit`) in front of a real registry.

mod harness;

use std::time::{Duration, Instant};

use harness::hub::{HeaderStyle, PullLimit, PullLimitOptions, PullLog, RetryAfter, Seen, Verdict};
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

/// A source registry behind a pull-limit simulator.
struct Hub {
    upstream: Registry,
    proxy: Proxy,
    log: PullLog,
}

impl Hub {
    fn start(options: PullLimitOptions) -> Hub {
        let upstream = Registry::start();
        let proxy = Proxy::start(upstream.host());
        let (rule, log) = PullLimit::new(options);
        proxy.add_rule(rule);
        Hub {
            upstream,
            proxy,
            log,
        }
    }

    /// Pushes `count` two-platform images (three pulls each: the index and two children).
    fn seed(&self, count: usize) -> Vec<(String, Image)> {
        self.seed_with(count, PLATFORMS)
    }

    /// Pushes `count` images of `platforms` (one pull for the index, one per platform).
    fn seed_with(&self, count: usize, platforms: &[&str]) -> Vec<(String, Image)> {
        (0..count)
            .map(|i| {
                let image = Image::multi_arch(Flavor::Docker, platforms, 1, 1024);
                let repo = format!("lib/app{i}");
                image.push(&self.upstream, &repo, "1");
                (repo, image)
            })
            .collect()
    }

    fn reference(&self, repo: &str) -> String {
        format!("\"{}/{repo}:1\"", self.proxy.host())
    }

    /// A sandbox whose mirrors.toml lists `images` from the hub under `target` (a registry
    /// host and optional prefix), with `extra` after `[defaults] target`.
    fn sandbox(&self, images: &[(String, Image)], target: &str, extra: &str) -> Sandbox {
        let list: Vec<String> = images
            .iter()
            .map(|(repo, _)| self.reference(repo))
            .collect();
        let sandbox = Sandbox::new();
        sandbox.write_config(&format!(
            "images = [{}]\n[defaults]\ntarget = \"{target}\"\n{extra}",
            list.join(", ")
        ));
        sandbox
    }
}

#[test]
fn eighteen_pulls_behind_five_per_ten_seconds_complete_without_a_single_429() {
    let hub = Hub::start(PullLimitOptions {
        limit: 5,
        window: Duration::from_secs(10),
        headers: HeaderStyle::DockerHub,
        ..PullLimitOptions::default()
    });
    let images = hub.seed(6);
    let free_upstream = Registry::start();
    let free = Proxy::start(free_upstream.host());
    Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 1024).push(&free_upstream, "quick/app", "1");
    let target_registry = Registry::start();

    let mut list: Vec<String> = images.iter().map(|(repo, _)| hub.reference(repo)).collect();
    list.push(format!("\"{}/quick/app:1\"", free.host())); // last, behind the throttled ones
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [{}]\n[defaults]\ntarget = \"{}\"\n",
        list.join(", "),
        target_registry.host()
    ));
    let started = Instant::now();
    let child = sandbox.regmirror().arg("--once").start();
    // The unthrottled registry's image must not queue behind the throttled ones' waits: it is
    // done while the first budget window (10 s) is still running.
    let mut quick_done = None;
    while started.elapsed() < Duration::from_secs(60) {
        if poll_manifest(&target_registry, "quick/app", "1").is_some() {
            quick_done = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = child.wait(Duration::from_secs(120));
    let took = started.elapsed();
    run.assert_success();
    let quick_done = quick_done.expect("quick/app was mirrored");
    assert!(
        quick_done < Duration::from_secs(8),
        "the unthrottled image waited {quick_done:?}"
    );

    assert_eq!(
        hub.log.refused().total(),
        0,
        "no 429 may be served: {}",
        run.output()
    );
    assert_eq!(hub.log.pulls_served(), 18, "{}", run.output());
    for (repo, image) in &images {
        assert_eq!(
            head_manifest(&target_registry, repo, "1").as_deref(),
            Some(image.digest())
        );
    }
    // 18 pulls at 5 per window need four windows: the last batch cannot start before 30 s.
    assert!(
        took >= Duration::from_secs(29),
        "faster than the budget allows: {took:?}"
    );
    let budget_line = format!("{}: 18 pulls, 0 refused (HTTP 429)", hub.proxy.host());
    assert!(run.stdout.contains(&budget_line), "{}", run.output());
    // Probes run about every second through three exhausted windows: logged per probe, that
    // would be dozens of lines. Logged per pause, it is one per window (a pause can end on a
    // probe and start again within a window, hence the slack).
    let pauses = run.stderr.matches("pull budget spent: pausing").count();
    assert!(
        (3..=6).contains(&pauses),
        "{pauses} pause messages: {}",
        run.stderr
    );
}

/// Another client spends from the same budget after every pull regmirror makes, so the count
/// regmirror keeps is always one too high. Images are copied one at a time, each with four
/// pulls, against a budget of six per window of which the other client takes half: the fourth
/// pull of each image would be sent on a count of one that is really none. Near the bottom a
/// free HEAD before each pull finds the real count, and no pull is refused.
#[test]
fn a_budget_spent_by_another_client_meanwhile_is_refreshed_before_each_pull() {
    let hub = Hub::start(PullLimitOptions {
        limit: 6,
        window: Duration::from_secs(6),
        headers: HeaderStyle::DockerHub,
        other_client_pulls: 1,
        ..PullLimitOptions::default()
    });
    let images = hub.seed_with(2, &["linux/amd64", "linux/arm64", "linux/s390x"]);
    let target = Registry::start();
    let sandbox = hub.sandbox(&images, target.host(), "concurrency = 1\n");
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    assert_eq!(hub.log.pulls_served(), 8, "{}", run.output());
    assert_eq!(hub.log.refused().total(), 0, "{}", run.output());
    for (repo, image) in &images {
        assert_eq!(
            head_manifest(&target, repo, "1").as_deref(),
            Some(image.digest())
        );
    }
}

/// Two shards of one list, as two scheduled tasks run them, behind one budget of 5 pulls per
/// 10 s: 12 two-platform images, 36 pulls. Each process's estimate goes stale as the other
/// pulls; refreshed by a free HEAD before each pull near the bottom, the two collide only in
/// the moment between one's HEAD and its GET.
#[test]
fn two_shards_sharing_one_budget_collide_at_most_once() {
    let hub = Hub::start(PullLimitOptions {
        limit: 5,
        window: Duration::from_secs(10),
        headers: HeaderStyle::DockerHub,
        ..PullLimitOptions::default()
    });
    let images = hub.seed(12);
    let target = Registry::start();
    let sandbox = hub.sandbox(&images, target.host(), "");
    let started = Instant::now();
    let shards: Vec<Spawned> = ["1/2", "2/2"]
        .iter()
        .map(|shard| {
            sandbox
                .regmirror()
                .args(["--once", "--shard", shard])
                .start()
        })
        .collect();
    let runs: Vec<Run> = shards
        .into_iter()
        .map(|shard| shard.wait(Duration::from_secs(240)))
        .collect();
    let took = started.elapsed();
    for run in &runs {
        run.assert_success();
    }
    let output = || runs.iter().map(Run::output).collect::<Vec<_>>().join("\n");
    for (repo, image) in &images {
        assert_eq!(
            head_manifest(&target, repo, "1").as_deref(),
            Some(image.digest()),
            "{repo}"
        );
    }
    assert_eq!(hub.log.pulls_served(), 36, "{}", output());
    let refused = hub.log.refused().total();
    assert!(
        refused <= 1,
        "{refused} pulls refused (HTTP 429)\n{}",
        output()
    );
    // 36 pulls at 5 per window need eight windows: the last cannot start before 70 s.
    assert!(
        took >= Duration::from_secs(69),
        "faster than the budget allows: {took:?}"
    );
    eprintln!("two shards: {refused} × 429 in {took:?}");
}

#[test]
fn random_429s_are_outlasted_with_jittered_gaps() {
    let hub = Hub::start(PullLimitOptions {
        limit: 1000,
        window: Duration::from_secs(3600),
        flaky_share: 0.2,
        retry_after: RetryAfter::None,
        seed: 7,
        // Enough refused retries to judge the jitter, however the images' requests interleave
        // with the draws: five gaps drawn from 0.5-1.5 s all fall within 100 ms of each other
        // about once in 2,000 runs.
        refuse_first_manifest_requests: 5,
        ..PullLimitOptions::default()
    });
    let images = hub.seed(4);
    let target = Registry::start();
    let sandbox = hub.sandbox(&images, &format!("{}/m", target.host()), "");
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    for (repo, image) in &images {
        check_complete(&target, &format!("m/{repo}"), "1").unwrap();
        assert_eq!(
            head_manifest(&target, &format!("m/{repo}"), "1").as_deref(),
            Some(image.digest())
        );
    }
    let refused = hub.log.refused();
    assert!(
        refused.flaky >= 3,
        "the simulator refused too little to judge: {refused:?}"
    );
    // Manifest and blob requests: the once-per-registry `GET /v2/` is retried too, but on
    // the backoff's first step only, too few gaps to judge the jitter by.
    let gaps = hub
        .log
        .retry_gaps_where(|s| s.path.contains("/manifests/") || s.path.contains("/blobs/"));
    assert!(gaps.len() >= 3, "{gaps:?}");
    let shortest = gaps.iter().min().unwrap();
    let longest = gaps.iter().max().unwrap();
    assert!(
        *shortest >= Duration::from_millis(400),
        "a retry came too soon: {gaps:?}"
    );
    assert!(
        *longest - *shortest >= Duration::from_millis(100),
        "retries must be jittered, not all after the same delay: {gaps:?}"
    );
}

fn retry_after_is_honoured(retry_after: RetryAfter) {
    let hub = Hub::start(PullLimitOptions {
        limit: 1000,
        window: Duration::from_secs(3600),
        flaky_share: 0.3,
        retry_after,
        flaky_retry_after: Duration::from_secs(2),
        seed: 11,
        refuse_first_manifest_requests: 2,
        ..PullLimitOptions::default()
    });
    let images = hub.seed(2);
    let target = Registry::start();
    let sandbox = hub.sandbox(&images, target.host(), "");
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    let gaps = hub.log.retry_gaps_where(|s| s.path.contains("/manifests/"));
    assert!(
        !gaps.is_empty(),
        "no manifest request was refused: nothing was tested"
    );
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(1900),
            "retried before Retry-After: {gaps:?}"
        );
    }
}

#[test]
fn retry_after_in_seconds_is_a_floor() {
    retry_after_is_honoured(RetryAfter::Seconds);
}

#[test]
fn retry_after_as_an_http_date_is_a_floor() {
    retry_after_is_honoured(RetryAfter::HttpDate);
}

#[test]
fn past_max_wait_the_image_fails_naming_the_registry_and_the_wait_and_the_others_succeed() {
    let hub = Hub::start(PullLimitOptions {
        limit: 2,
        window: Duration::from_secs(60),
        headers: HeaderStyle::DockerHub,
        ..PullLimitOptions::default()
    });
    let images = hub.seed(1);
    let free = Registry::start();
    let other = Image::single(Flavor::Oci, 1, 1024);
    other.push(&free, "other", "1");
    let target = Registry::start();
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [{}, \"{}/other:1\"]\n[defaults]\ntarget = \"{}\"\n[rate_limit]\nmax_wait = \"3s\"\n",
        hub.reference(&images[0].0),
        free.host(),
        target.host()
    ));
    let started = Instant::now();
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it must not sit out the 60 s window"
    );
    let failed = run.failed_lines();
    assert_eq!(failed.len(), 1, "{}", run.output());
    assert!(
        failed[0].contains(hub.proxy.host()),
        "names the registry: {}",
        failed[0]
    );
    assert!(
        failed[0].contains("pull budget"),
        "says what it waited for: {}",
        failed[0]
    );
    assert!(
        failed[0].contains("max_wait (3.0 s)"),
        "says the limit: {}",
        failed[0]
    );
    assert_eq!(hub.log.refused().total(), 0, "waiting, not hammering");
    check_complete(&target, "other", "1").unwrap();
    assert!(
        tags(&target, &images[0].0).is_empty(),
        "no tag for the image that gave up"
    );
}

#[test]
fn a_registry_reserve_leaves_pulls_unspent() {
    let hub = Hub::start(PullLimitOptions {
        limit: 8,
        window: Duration::from_secs(8),
        headers: HeaderStyle::DockerHub,
        ..PullLimitOptions::default()
    });
    let images = hub.seed(2); // six pulls
    let target = Registry::start();
    let extra = format!(
        "[rate_limit]\nreserve = 0\n[registries.\"{}\"]\nreserve = 3\n",
        hub.proxy.host()
    );
    let sandbox = hub.sandbox(&images, target.host(), &extra);
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    let seen = hub.log.seen();
    let pulls: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.pull && s.verdict == Verdict::Passed)
        .collect();
    assert_eq!(pulls.len(), 6);
    let first = pulls[0].at;
    let in_first_window = pulls
        .iter()
        .filter(|s| s.at < first + Duration::from_secs(8))
        .count();
    assert_eq!(
        in_first_window,
        5,
        "8 allowed, 3 kept in reserve: {}",
        run.output()
    );
    assert_eq!(hub.log.refused().total(), 0);
}
