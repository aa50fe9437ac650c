//! Benchmark: regmirror against `skopeo sync` behind a Docker Hub pull limit.
//!
//! The scenario of `tests/ratelimit.rs`'s eighteen-pull test: six two-platform images (an index
//! and two children, so three manifest GETs each: 18 pulls) behind a budget of 5 pulls per
//! 10 s window, with Docker Hub's `ratelimit-limit`/`ratelimit-remaining: N;w=10` headers and
//! no `Retry-After`. Each tool gets a fresh simulator, source and target (a whole budget), and
//! the table shows what each spent and how long it took. 18 pulls at 5 per window need four
//! windows, so no tool can finish correctly in less than 30 s.
//!
//! Each tool runs once, timed from spawn to exit (`bench::measure::run_timed`), without GNU
//! time: the pacing is what is measured here, not memory. Like the other scenarios it runs
//! `$BENCH_REGMIRROR` when set (`bench::measure::regmirror_in`). `$BENCH_OUT`, if set, gets the
//! table.
//!
//! Ignored by default: `scripts/bench` runs it in release mode and keeps the table.

mod bench;
mod harness;

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use bench::measure::{regmirror_in, run_timed, skopeo, skopeo_version, strings};
use bench::report::append_env_file;
use harness::hub::{HeaderStyle, PullLimit, PullLimitOptions, PullLog};
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];
const IMAGES: usize = 6;
const LIMIT: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);
/// The 16th pull cannot start before the fourth window opens, 3 × 10 s after the first pull.
const PACING_MINIMUM: Duration = Duration::from_secs(30);
/// How long a tool may take before it is killed and reported as timed out.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Retries asked of skopeo (its `--retry-times`).
const SKOPEO_RETRIES: u32 = 5;

/// A fresh source behind a pull-limit simulator, seeded, and an empty target.
struct Scenario {
    _upstream: Registry,
    proxy: Proxy,
    log: PullLog,
    target: Registry,
    repos: Vec<String>,
}

impl Scenario {
    fn start() -> Scenario {
        let upstream = Registry::start();
        let proxy = Proxy::start(upstream.host());
        let (rule, log) = PullLimit::new(PullLimitOptions {
            limit: LIMIT,
            window: WINDOW,
            headers: HeaderStyle::DockerHub,
            ..PullLimitOptions::default()
        });
        proxy.add_rule(rule);
        let repos = (0..IMAGES)
            .map(|i| {
                let repo = format!("lib/app{i}");
                Image::multi_arch(Flavor::Docker, PLATFORMS, 1, 1024).push(&upstream, &repo, "1");
                repo
            })
            .collect();
        Scenario {
            _upstream: upstream,
            proxy,
            log,
            target: Registry::start(),
            repos,
        }
    }
}

/// One tool's row in the table.
#[derive(Debug)]
struct Outcome {
    tool: String,
    /// Exit code; `None` when killed by a signal or the timeout.
    code: Option<i32>,
    timed_out: bool,
    refused: usize,
    /// For each 429 the client came back after, how long it waited.
    retry_gaps: Vec<Duration>,
    pulls: usize,
    took: Duration,
    complete: usize,
    /// The first incomplete image and why, if any.
    problem: Option<String>,
    output: String,
}

/// Measures one tool on a fresh scenario (killed after [`TIMEOUT`]); `target_repo` maps a
/// source repo to where the tool puts it in the target.
fn measure(
    tool: &str,
    scenario: &Scenario,
    command: &mut Command,
    target_repo: impl Fn(&str) -> String,
) -> Outcome {
    let (run, took, timed_out) = run_timed(command, TIMEOUT);
    let mut complete = 0;
    let mut problem = None;
    for repo in &scenario.repos {
        match check_complete(&scenario.target, &target_repo(repo), "1") {
            Ok(()) => complete += 1,
            Err(e) => {
                problem.get_or_insert(e);
            }
        }
    }
    Outcome {
        tool: tool.to_owned(),
        code: run.code,
        timed_out,
        refused: scenario.log.refused().total(),
        retry_gaps: scenario.log.retry_gaps(),
        pulls: scenario.log.pulls_served(),
        took,
        complete,
        problem,
        output: run.output(),
    }
}

fn bench_regmirror() -> Outcome {
    let scenario = Scenario::start();
    let images: Vec<String> = scenario
        .repos
        .iter()
        .map(|repo| format!("\"{}/{repo}:1\"", scenario.proxy.host()))
        .collect();
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [{}]\n[defaults]\ntarget = \"{}\"\n",
        images.join(", "),
        scenario.target.host()
    ));
    let mut command = regmirror_in(&sandbox);
    command.arg("--once");
    measure("regmirror --once", &scenario, &mut command, str::to_owned)
}

/// The `skopeo sync` arguments after `skopeo --policy <policy.json>`, for a YAML source file
/// and a target registry.
fn skopeo_sync_args(yaml: &str, target: &str) -> Vec<String> {
    strings(&[
        "sync",
        "--all",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        "--retry-times",
        &SKOPEO_RETRIES.to_string(),
        yaml,
        target,
    ])
}

fn bench_skopeo() -> (Outcome, String) {
    let version = skopeo_version();
    let scenario = Scenario::start();
    let sandbox = Sandbox::new();
    // The YAML source: plain HTTP on loopback, one tag per repository.
    let mut yaml = format!(
        "\"{}\":\n  tls-verify: false\n  images:\n",
        scenario.proxy.host()
    );
    for repo in &scenario.repos {
        writeln!(yaml, "    {repo}: [\"1\"]").unwrap();
    }
    let yaml_path = sandbox.write_file("sync.yaml", &yaml);
    // A clean environment like regmirror's: private HOME, no proxies or auth files.
    let mut command = skopeo(
        &sandbox,
        &skopeo_sync_args(&yaml_path.to_string_lossy(), scenario.target.host()),
    );
    // Without --scoped, `skopeo sync` keeps only the last path component: `lib/app0` lands
    // as `app0` in the target.
    let outcome = measure(
        &format!("{version} sync"),
        &scenario,
        &mut command,
        |repo| repo.rsplit('/').next().unwrap_or(repo).to_owned(),
    );
    let shown = format!(
        "skopeo --policy <policy.json> {}",
        skopeo_sync_args("<sync.yaml>", "<target>").join(" ")
    );
    (outcome, format!("{shown}\n\nsync.yaml:\n\n{yaml}"))
}

/// One decimal, as this table always showed it (not the other scenarios' `fmt_secs`).
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn table(outcomes: &[Outcome], skopeo_command: &str) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "## Rate limit: {} two-platform images ({} pulls) behind {LIMIT} pulls per {} s\n",
        IMAGES,
        IMAGES * 3,
        WINDOW.as_secs()
    )
    .unwrap();
    writeln!(
        out,
        "Docker Hub headers (`ratelimit-remaining: N;w={}`), no `Retry-After`. Pacing minimum: \
         {} (the 16th pull waits for the 4th window).\n",
        WINDOW.as_secs(),
        secs(PACING_MINIMUM)
    )
    .unwrap();
    writeln!(
        out,
        "| tool | exit | 429s served | retried after 429 (wait) | pulls spent | wall time | \
         vs. minimum | images complete |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|---|---|---|").unwrap();
    for o in outcomes {
        let exit = match (o.timed_out, o.code) {
            (true, _) => format!("killed after {}", secs(TIMEOUT)),
            (false, Some(code)) => code.to_string(),
            (false, None) => "signal".to_owned(),
        };
        let retries = match (o.retry_gaps.iter().min(), o.retry_gaps.iter().max()) {
            (Some(min), Some(max)) => format!(
                "{} ({:.1}–{:.1} s)",
                o.retry_gaps.len(),
                min.as_secs_f64(),
                max.as_secs_f64()
            ),
            _ => "0".to_owned(),
        };
        writeln!(
            out,
            "| {} | {exit} | {} | {retries} | {} / {} | {} | {:+.1} s | {} / {IMAGES} |",
            o.tool,
            o.refused,
            o.pulls,
            IMAGES * 3,
            secs(o.took),
            o.took.as_secs_f64() - PACING_MINIMUM.as_secs_f64(),
            o.complete
        )
        .unwrap();
    }
    for o in outcomes {
        if let Some(problem) = &o.problem {
            writeln!(out, "\n{}: first incomplete image: {problem}", o.tool).unwrap();
        }
    }
    writeln!(out, "\nskopeo command line:\n\n```\n{skopeo_command}```").unwrap();
    out
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn eighteen_pulls_behind_five_per_ten_seconds_regmirror_vs_skopeo() {
    let regmirror = bench_regmirror();
    let (skopeo, skopeo_command) = bench_skopeo();
    let outcomes = [regmirror, skopeo];
    for o in &outcomes {
        eprintln!("===== {} =====\n{}\n", o.tool, o.output);
    }
    let table = table(&outcomes, &skopeo_command);
    println!("{table}");
    append_env_file("BENCH_OUT", &table);
}
