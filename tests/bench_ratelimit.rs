//! Benchmark: regmirror against `skopeo sync` behind a Docker Hub pull limit.
//!
//! Scenario 4, the one of `tests/ratelimit.rs`'s eighteen-pull test: six two-platform images
//! (an index and two children, so three manifest GETs each: 18 pulls) behind a budget of 5
//! pulls per 10 s window, with Docker Hub's `ratelimit-limit`/`ratelimit-remaining: N;w=10`
//! headers and no `Retry-After`. Each tool gets a fresh simulator, source and target (a whole
//! budget), and the table shows what each spent and how long it took. 18 pulls at 5 per window
//! need four windows, so no tool can finish correctly in less than 30 s.
//!
//! Scenario 4b, its two-shard test: twelve such images (36 pulls, eight windows: 70 s at
//! least) split between two processes started together on the one budget, as two scheduled
//! tasks with `--shard 1/2` and `--shard 2/2` would run them; skopeo runs as two processes
//! with half the list each.
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

use bench::measure::{regmirror_in, run_timed_together, skopeo, skopeo_version, strings};
use bench::report::append_env_file;
use harness::hub::{HeaderStyle, PullLimit, PullLimitOptions, PullLog};
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];
/// Manifest GETs per image: the index and its two children.
const PULLS_PER_IMAGE: usize = 3;
const LIMIT: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);
/// How long a tool may take before it is killed and reported as timed out.
const TIMEOUT: Duration = Duration::from_secs(240);
/// Retries asked of skopeo (its `--retry-times`).
const SKOPEO_RETRIES: u32 = 5;

/// The images and how many processes share them.
#[derive(Debug, Clone, Copy)]
struct Setup {
    images: usize,
    processes: usize,
}

impl Setup {
    fn pulls(self) -> usize {
        self.images * PULLS_PER_IMAGE
    }

    /// The last pull cannot start before the window it falls in opens.
    fn pacing_minimum(self) -> Duration {
        let windows = self.pulls().div_ceil(LIMIT as usize);
        WINDOW * (windows as u32 - 1)
    }
}

/// A fresh source behind a pull-limit simulator, seeded, and an empty target.
struct Scenario {
    _upstream: Registry,
    proxy: Proxy,
    log: PullLog,
    target: Registry,
    repos: Vec<String>,
}

impl Scenario {
    fn start(setup: Setup) -> Scenario {
        let upstream = Registry::start();
        let proxy = Proxy::start(upstream.host());
        let (rule, log) = PullLimit::new(PullLimitOptions {
            limit: LIMIT,
            window: WINDOW,
            headers: HeaderStyle::DockerHub,
            ..PullLimitOptions::default()
        });
        proxy.add_rule(rule);
        let repos = (0..setup.images)
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

/// Measures one tool, as one process or several started together, on a fresh scenario
/// (killed after [`TIMEOUT`]); `target_repo` maps a source repo to where the tool puts it in
/// the target.
fn measure(
    tool: &str,
    scenario: &Scenario,
    commands: &mut [Command],
    target_repo: impl Fn(&str) -> String,
) -> Outcome {
    let mut commands: Vec<&mut Command> = commands.iter_mut().collect();
    let (runs, took, timed_out) = run_timed_together(&mut commands, TIMEOUT);
    // The worst exit code stands for them all.
    let code = runs
        .iter()
        .map(|r| r.code)
        .max_by_key(|c| c.map_or(i32::MAX, |c| c));
    let output = runs.iter().map(Run::output).collect::<Vec<_>>().join("\n");
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
        code: code.flatten(),
        timed_out,
        refused: scenario.log.refused().total(),
        retry_gaps: scenario.log.retry_gaps(),
        pulls: scenario.log.pulls_served(),
        took,
        complete,
        problem,
        output,
    }
}

fn bench_regmirror(setup: Setup) -> Outcome {
    let scenario = Scenario::start(setup);
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
    let mut commands: Vec<Command> = (1..=setup.processes)
        .map(|shard| {
            let mut command = regmirror_in(&sandbox);
            command.arg("--once");
            if setup.processes > 1 {
                command.args(["--shard", &format!("{shard}/{}", setup.processes)]);
            }
            command
        })
        .collect();
    let tool = match setup.processes {
        1 => "regmirror --once".to_string(),
        n => format!("regmirror --once --shard i/{n}, {n} processes"),
    };
    measure(&tool, &scenario, &mut commands, str::to_owned)
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

fn bench_skopeo(setup: Setup) -> (Outcome, String) {
    let version = skopeo_version();
    let scenario = Scenario::start(setup);
    let sandbox = Sandbox::new();
    // One YAML source per process, each with its share of the repositories: plain HTTP on
    // loopback, one tag per repository.
    let mut yamls = Vec::new();
    let mut commands = Vec::new();
    for process in 0..setup.processes {
        let mut yaml = format!(
            "\"{}\":\n  tls-verify: false\n  images:\n",
            scenario.proxy.host()
        );
        for repo in scenario.repos.iter().skip(process).step_by(setup.processes) {
            writeln!(yaml, "    {repo}: [\"1\"]").unwrap();
        }
        let yaml_path = sandbox.write_file(&format!("sync-{process}.yaml"), &yaml);
        // A clean environment like regmirror's: private HOME, no proxies or auth files.
        commands.push(skopeo(
            &sandbox,
            &skopeo_sync_args(&yaml_path.to_string_lossy(), scenario.target.host()),
        ));
        yamls.push(yaml);
    }
    let tool = match setup.processes {
        1 => format!("{version} sync"),
        n => format!("{version} sync, {n} processes"),
    };
    // Without --scoped, `skopeo sync` keeps only the last path component: `lib/app0` lands
    // as `app0` in the target.
    let outcome = measure(&tool, &scenario, &mut commands, |repo| {
        repo.rsplit('/').next().unwrap_or(repo).to_owned()
    });
    let shown = format!(
        "skopeo --policy <policy.json> {}",
        skopeo_sync_args("<sync.yaml>", "<target>").join(" ")
    );
    let yamls = yamls.join("\n");
    (outcome, format!("{shown}\n\nsync.yaml:\n\n{yamls}"))
}

/// One decimal, as this table always showed it (not the other scenarios' `fmt_secs`).
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn table(setup: Setup, outcomes: &[Outcome], skopeo_command: &str) -> String {
    let mut out = String::new();
    let shared = match setup.processes {
        1 => String::new(),
        n => format!(", split between {n} processes on one budget"),
    };
    writeln!(
        out,
        "## Rate limit: {} two-platform images ({} pulls){shared} behind {LIMIT} pulls per {} s\n",
        setup.images,
        setup.pulls(),
        WINDOW.as_secs()
    )
    .unwrap();
    let windows = setup.pulls().div_ceil(LIMIT as usize);
    writeln!(
        out,
        "Docker Hub headers (`ratelimit-remaining: N;w={}`), no `Retry-After`. Pacing minimum: \
         {} (the last pull waits for window {windows}).\n",
        WINDOW.as_secs(),
        secs(setup.pacing_minimum())
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
            "| {} | {exit} | {} | {retries} | {} / {} | {} | {:+.1} s | {} / {} |",
            o.tool,
            o.refused,
            o.pulls,
            setup.pulls(),
            secs(o.took),
            o.took.as_secs_f64() - setup.pacing_minimum().as_secs_f64(),
            o.complete,
            setup.images
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

/// Runs regmirror, then skopeo, on fresh scenarios, and reports the table.
fn bench(setup: Setup) {
    let regmirror = bench_regmirror(setup);
    let (skopeo, skopeo_command) = bench_skopeo(setup);
    let outcomes = [regmirror, skopeo];
    for o in &outcomes {
        eprintln!("===== {} =====\n{}\n", o.tool, o.output);
    }
    let table = table(setup, &outcomes, &skopeo_command);
    println!("{table}");
    append_env_file("BENCH_OUT", &table);
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn eighteen_pulls_behind_five_per_ten_seconds_regmirror_vs_skopeo() {
    bench(Setup {
        images: 6,
        processes: 1,
    });
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn thirty_six_pulls_in_two_shards_behind_five_per_ten_seconds_regmirror_vs_skopeo() {
    bench(Setup {
        images: 12,
        processes: 2,
    });
}
