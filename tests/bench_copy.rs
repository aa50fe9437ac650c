//! Benchmarks: regmirror against Debian's `skopeo` on the copy scenarios of the performance
//! issue (scenario 4, the pull limit, is `tests/bench_ratelimit.rs`).
//!
//! 1. full copy of 60 two-platform tags (20 repositories × 3 tags, 3 layers per platform);
//! 2. the same 60 tags again, unchanged: wall time, requests to each side, pulls;
//! 3. one single-layer image of 1 GiB: wall time and peak RSS, against `skopeo copy` and a
//!    raw `curl | curl` pipe of the same blob (the physical limit on this machine);
//! 5. idle daemon RSS, and `regmirror check` on a config of 10,000 tags.
//!
//! How it measures:
//!
//! - Each tool runs under GNU `/usr/bin/time -f '%M %U %S'`: peak RSS is the child's
//!   `ru_maxrss` as `wait4` reports it (exact, not sampled), with its user and system CPU. Wall
//!   time is taken here, from spawn to exit, polling every millisecond.
//! - Every copy goes into a fresh target registry; the source is seeded once and shared.
//!   Tools alternate within a round, the first one swapped each round, so neither always gets
//!   the warmer machine. The first round of scenarios 1 and 2 goes through counting proxies
//!   in front of the source and the target: it gives the request counts and is left out of
//!   the medians (the proxy's own work would be timed with the tool). Timed rounds talk to
//!   the registries directly.
//! - Every copy is checked afterwards: each tag complete in the target, at the source's
//!   digest.
//!
//! Environment: `BENCH_OUT` (markdown sections are appended to it), `BENCH_SUMMARY` (one
//! table row per target is appended to it), `BENCH_ROUNDS` (timed rounds, default 3),
//! `BENCH_QUICK=1` (small sizes for a smoke run), and for finer control `BENCH_REPOS`,
//! `BENCH_LAYER_KIB`, `BENCH_BIG_MIB`, `BENCH_CHECK_TAGS`.
//!
//! Ignored by default: `scripts/bench` runs it in release mode and assembles BENCHMARKS.md.

mod harness;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use harness::proxy::Endpoint;
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];
/// Tags per repository in scenarios 1 and 2.
const TAGS: usize = 3;
/// Fresh layers per platform manifest in scenarios 1 and 2.
const LAYERS: usize = 3;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// GNU time: its `%M` is the exact peak RSS of the child, where polling `/proc` could miss it.
const TIME: &str = "/usr/bin/time";
/// How long one run may take before it is killed and reported as timed out.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the idle daemon runs before its RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(3);
/// Where regmirror puts everything, and where skopeo is told to: the same repository names.
const TARGET_NAMESPACE: &str = "bench";

/// Sizes and rounds, from the environment (see the module comment).
#[derive(Debug)]
struct Settings {
    rounds: usize,
    repos: usize,
    layer_size: usize,
    big_size: usize,
    check_tags: usize,
    quick: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let pick = |name: &str, full: usize, small: usize| {
            env_usize(name).unwrap_or(if quick { small } else { full })
        };
        Settings {
            rounds: pick("BENCH_ROUNDS", 3, 2).max(1),
            repos: pick("BENCH_REPOS", 20, 4).max(1),
            layer_size: pick("BENCH_LAYER_KIB", 1024, 64) * KIB,
            big_size: pick("BENCH_BIG_MIB", 1024, 64) * MIB,
            check_tags: pick("BENCH_CHECK_TAGS", 10_000, 10_000).max(100),
            quick,
        }
    }
}

fn env_usize(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: not a number: {e}")),
    )
}

// ---------------------------------------------------------------------------------------------
// Running a tool and measuring it
// ---------------------------------------------------------------------------------------------

/// One run of one tool.
#[derive(Debug, Clone)]
struct Measured {
    took: Duration,
    /// Exit code; `None` when killed by a signal or the timeout.
    code: Option<i32>,
    timed_out: bool,
    /// Peak resident set of the tool's process, in KiB (GNU time's `%M`).
    peak_rss_kib: Option<u64>,
    /// User plus system CPU time of the tool.
    cpu: Option<Duration>,
    output: String,
}

impl Measured {
    fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// Runs `inner` under GNU time to its end (or [`RUN_TIMEOUT`]), timing it from here.
/// `stats` is a scratch file for time's report.
fn measure(inner: &Command, stats: &Path) -> Measured {
    let _ = fs::remove_file(stats);
    let mut wrapped = vec![
        "-o".into(),
        stats.as_os_str().to_owned(),
        "-f".into(),
        "%M %U %S".into(),
        inner.get_program().to_owned(),
    ];
    wrapped.extend(inner.get_args().map(OsStr::to_owned));
    let mut command = rebuild(inner, OsStr::new(TIME), &wrapped);
    let started = Instant::now();
    let mut child = command.start();
    while child.is_running() && started.elapsed() < RUN_TIMEOUT {
        thread::sleep(Duration::from_millis(1));
    }
    let took = started.elapsed();
    let timed_out = child.is_running();
    let run = if timed_out {
        // `time` is our child; the tool is its child, and would outlive a kill of `time`.
        kill_children_of(child.pid());
        child.kill()
    } else {
        child.wait(Duration::from_secs(5))
    };
    let stats = fs::read_to_string(stats).unwrap_or_default();
    // time puts "Command exited with non-zero status N" first when the tool fails.
    let fields: Vec<&str> = stats
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let (peak_rss_kib, cpu) = match fields.as_slice() {
        [rss, user, system] => (
            rss.parse().ok(),
            user.parse::<f64>()
                .ok()
                .zip(system.parse::<f64>().ok())
                .map(|(u, s)| Duration::from_secs_f64(u + s)),
        ),
        _ => (None, None),
    };
    Measured {
        took,
        code: run.code,
        timed_out,
        peak_rss_kib,
        cpu,
        output: run.output(),
    }
}

/// `inner`'s environment and directory with another program and arguments; stdin closed.
fn rebuild(inner: &Command, program: &OsStr, args: &[OsString]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    if let Some(dir) = inner.get_current_dir() {
        command.current_dir(dir);
    }
    command.stdin(Stdio::null());
    command
}

/// The harness's `regmirror` command for `sandbox`, running `$BENCH_REGMIRROR` if set:
/// `scripts/bench` points it at a copy of the release binary, so every scenario measures the
/// same build even if `target/release/regmirror` is rebuilt meanwhile.
fn regmirror_in(sandbox: &Sandbox) -> Command {
    let command = sandbox.regmirror();
    match std::env::var_os("BENCH_REGMIRROR") {
        Some(program) => {
            let args: Vec<OsString> = command.get_args().map(OsStr::to_owned).collect();
            rebuild(&command, &program, &args)
        }
        None => command,
    }
}

/// SIGKILLs the direct children of `pid` (all of them started by this test).
fn kill_children_of(pid: u32) {
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        let _ = Command::new("kill").args(["-s", "KILL", child]).status();
    }
}

/// `/usr/bin/time` must be GNU time; `scripts/bench` installs Debian's `time` package.
fn require_tools(skopeo: bool) -> Option<String> {
    let time = Command::new(TIME).args(["-f", "%M", "true"]).output();
    assert!(
        time.is_ok_and(|out| out.status.success()),
        "{TIME} is missing or not GNU time: install it with `apt-get install time`"
    );
    if !skopeo {
        return None;
    }
    match Command::new("skopeo").arg("--version").output() {
        Ok(out) if out.status.success() => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        _ => panic!("skopeo is missing: install it with `apt-get install skopeo`"),
    }
}

/// skopeo with a clean environment like the harness gives regmirror: private HOME, no
/// proxies or auth files; `args` come after `skopeo --policy <accept anything>`.
fn skopeo(sandbox: &Sandbox, args: &[String]) -> Command {
    let policy = sandbox.write_file(
        "policy.json",
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    let mut command = harness::cli::skopeo(sandbox.path());
    command.arg("--policy").arg(policy).args(args);
    command
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting
// ---------------------------------------------------------------------------------------------

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

fn secs(runs: &[Measured]) -> Vec<f64> {
    runs.iter().map(|r| r.took.as_secs_f64()).collect()
}

fn rss_mib(runs: &[Measured]) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.peak_rss_kib)
        .map(|kib| kib as f64 / 1024.0)
        .collect()
}

fn cpu_secs(runs: &[Measured]) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.cpu)
        .map(|d| d.as_secs_f64())
        .collect()
}

/// A duration in seconds with enough digits for both 3 ms and 30 s.
fn fmt_secs(s: f64) -> String {
    if s < 0.1 {
        format!("{:.1} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

fn fmt_median_secs(values: &[f64]) -> String {
    median(values).map_or("–".to_owned(), fmt_secs)
}

fn fmt_list(values: &[f64], unit: fn(f64) -> String) -> String {
    values
        .iter()
        .map(|v| unit(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_mib(m: f64) -> String {
    format!("{m:.1} MiB")
}

fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= MIB as f64 * 1024.0 {
        format!("{:.2} GiB", b / (MIB as f64 * 1024.0))
    } else if b >= MIB as f64 {
        format!("{:.1} MiB", b / MIB as f64)
    } else {
        format!("{:.0} KiB", b / KIB as f64)
    }
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

/// Exit codes of the runs, shortened when they all agree.
fn exits(runs: &[Measured]) -> String {
    let each: Vec<String> = runs
        .iter()
        .map(|r| match (r.timed_out, r.code) {
            (true, _) => "timeout".to_owned(),
            (false, Some(code)) => code.to_string(),
            (false, None) => "signal".to_owned(),
        })
        .collect();
    if each.iter().all(|e| e == &each[0]) {
        format!("{} × {}", each.len(), each[0])
    } else {
        each.join(", ")
    }
}

/// One row of the per-target tables: scenario, tool, median, rounds, ratio, target, met?
struct Row<'a> {
    scenario: &'a str,
    tool: &'a str,
    median: String,
    rounds: String,
    ratio: String,
    target: &'a str,
    met: Option<bool>,
}

const ROW_HEADER: &str = "| scenario | tool | median | rounds | ratio | target | met? |\n\
                          |---|---|---|---|---|---|---|\n";

impl Row<'_> {
    fn render(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            self.scenario,
            self.tool,
            self.median,
            self.rounds,
            self.ratio,
            if self.target.is_empty() {
                "–"
            } else {
                self.target
            },
            self.met.map_or("–", yes_no)
        )
    }

    /// The line for BENCHMARKS.md's summary: scenario, measured, target, met?
    fn summary(&self) -> Option<String> {
        let met = self.met?;
        let ratio = if self.ratio == "–" || self.ratio.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.ratio)
        };
        Some(format!(
            "| {} | {}: {}{ratio} | {} | {} |\n",
            self.scenario,
            self.tool,
            self.median,
            self.target,
            yes_no(met)
        ))
    }
}

fn render_rows(rows: &[Row]) -> String {
    let mut out = String::from(ROW_HEADER);
    for row in rows {
        out.push_str(&row.render());
    }
    out
}

/// Appends to the file named by `$name`, if set.
fn append_env_file(name: &str, text: &str) {
    let Some(path) = std::env::var_os(name) else {
        return;
    };
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).expect("create the output's directory");
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Prints a scenario's section and appends it to `$BENCH_OUT`, its summary rows to
/// `$BENCH_SUMMARY`.
fn publish(section: &str, rows: &[Row]) {
    println!("{section}");
    append_env_file("BENCH_OUT", &format!("{section}\n"));
    let summary: String = rows.iter().filter_map(Row::summary).collect();
    append_env_file("BENCH_SUMMARY", &summary);
}

// ---------------------------------------------------------------------------------------------
// Request counts
// ---------------------------------------------------------------------------------------------

/// What a request was, for the breakdown tables.
fn kind(request: &Logged) -> String {
    let by = |reference: &str| {
        if reference.starts_with("sha256:") {
            "by digest"
        } else {
            "by tag"
        }
    };
    let method = request.method.as_str();
    match request.endpoint() {
        Endpoint::Base => format!("{method} /v2/"),
        Endpoint::Manifest => format!("{method} manifest {}", by(request.reference())),
        Endpoint::Blob => format!("{method} blob"),
        Endpoint::Upload if method == "POST" && request.path.contains("mount=") => {
            "POST upload (mount)".to_owned()
        }
        Endpoint::Upload => format!("{method} upload"),
        Endpoint::Tags => format!("{method} tags/list"),
        Endpoint::Other => format!("{method} {}", request.path),
    }
}

/// Requests one run sent to the source and to the target.
#[derive(Debug, Clone, Default)]
struct Traffic {
    source: Vec<Logged>,
    target: Vec<Logged>,
}

impl Traffic {
    /// Takes what the proxies logged and clears them for the next run.
    fn take(source: &Proxy, target: &Proxy) -> Traffic {
        let traffic = Traffic {
            source: source.requests(),
            target: target.requests(),
        };
        source.clear();
        target.clear();
        traffic
    }

    fn pulls(&self) -> usize {
        self.source.iter().filter(|r| r.is_manifest_get()).count()
    }

    fn by_kind(requests: &[Logged]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for request in requests {
            *counts.entry(kind(request)).or_default() += 1;
        }
        counts
    }

    /// Requests answered with an error (4xx other than an expected 404, 5xx).
    fn errors(&self) -> usize {
        self.source
            .iter()
            .chain(&self.target)
            .filter(|r| r.status >= 500 || r.status == 0)
            .count()
    }
}

/// A table of request kinds (rows) by tool and side (columns).
fn breakdown(columns: &[(&str, &Traffic)]) -> String {
    let mut kinds = BTreeMap::<String, Vec<usize>>::new();
    let sides = columns.len() * 2;
    for (i, (_, traffic)) in columns.iter().enumerate() {
        for (j, requests) in [&traffic.source, &traffic.target].into_iter().enumerate() {
            for (kind, count) in Traffic::by_kind(requests) {
                kinds.entry(kind).or_insert_with(|| vec![0; sides])[i * 2 + j] = count;
            }
        }
    }
    let mut out = String::from("| request |");
    for (tool, _) in columns {
        write!(out, " {tool}: source | {tool}: target |").unwrap();
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(sides));
    out.push('\n');
    for (kind, counts) in &kinds {
        write!(out, "| `{kind}` |").unwrap();
        for count in counts {
            write!(out, " {count} |").unwrap();
        }
        out.push('\n');
    }
    out.push_str("| **total** |");
    for (_, traffic) in columns {
        write!(
            out,
            " {} | {} |",
            traffic.source.len(),
            traffic.target.len()
        )
        .unwrap();
    }
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------------------
// Scenarios 1 and 2: 60 multi-arch tags, copied, then again unchanged
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Regmirror,
    Skopeo,
}

impl Tool {
    /// The first tool of each round alternates.
    fn order(round: usize) -> [Tool; 2] {
        if round % 2 == 0 {
            [Tool::Regmirror, Tool::Skopeo]
        } else {
            [Tool::Skopeo, Tool::Regmirror]
        }
    }
}

/// The seeded source registry of scenarios 1 and 2.
struct Corpus {
    source: Registry,
    /// `bench/appNN` for each repository.
    repos: Vec<String>,
    /// `(repo, tag, digest of the index)` for every tag.
    tags: Vec<(String, String, String)>,
    bytes: u64,
}

impl Corpus {
    fn seed(settings: &Settings) -> Corpus {
        let source = Registry::start();
        let mut repos = Vec::new();
        let mut tags = Vec::new();
        let mut bytes = 0;
        for r in 0..settings.repos {
            let repo = format!("{TARGET_NAMESPACE}/app{r:02}");
            // Half Docker manifest lists, half OCI indexes, as on Docker Hub today.
            let flavor = if r % 2 == 0 {
                Flavor::Docker
            } else {
                Flavor::Oci
            };
            for t in 1..=TAGS {
                let tag = format!("v{t}");
                let image = Image::multi_arch(flavor, PLATFORMS, LAYERS, settings.layer_size);
                let pushed = image.push(&source, &repo, &tag);
                bytes += pushed.blobs.iter().map(|(_, size)| size).sum::<u64>();
                tags.push((repo.clone(), tag, pushed.digest));
            }
            repos.push(repo);
        }
        Corpus {
            source,
            repos,
            tags,
            bytes,
        }
    }

    /// The tool's command copying every tag from `source` (a host) into `target`.
    fn command(&self, tool: Tool, sandbox: &Sandbox, source: &str, target: &str) -> Command {
        match tool {
            Tool::Regmirror => {
                let config = self.regmirror_config(source, target);
                let path = sandbox.write_config(&config);
                let mut command = regmirror_in(sandbox);
                command.arg("--once").arg("--config").arg(path);
                command
            }
            Tool::Skopeo => {
                let yaml = sandbox.write_file("sync.yaml", &self.skopeo_yaml(source));
                skopeo(
                    sandbox,
                    &skopeo_sync_args(
                        &yaml.to_string_lossy(),
                        &format!("{target}/{TARGET_NAMESPACE}"),
                    ),
                )
            }
        }
    }

    /// One `[[mirror]]` per repository with its tags; targets keep the source path.
    fn regmirror_config(&self, source: &str, target: &str) -> String {
        let mut config = format!("[defaults]\ntarget = \"{target}\"\n");
        for repo in &self.repos {
            let tags: Vec<String> = self
                .tags
                .iter()
                .filter(|(r, _, _)| r == repo)
                .map(|(_, tag, _)| format!("\"{tag}\""))
                .collect();
            write!(
                config,
                "\n[[mirror]]\nsource = \"{source}/{repo}\"\ntags = [{}]\n",
                tags.join(", ")
            )
            .unwrap();
        }
        config
    }

    /// skopeo's YAML source: the same repositories and tags, plain HTTP.
    fn skopeo_yaml(&self, source: &str) -> String {
        let mut yaml = format!("\"{source}\":\n  tls-verify: false\n  images:\n");
        for repo in &self.repos {
            let tags: Vec<String> = self
                .tags
                .iter()
                .filter(|(r, _, _)| r == repo)
                .map(|(_, tag, _)| format!("\"{tag}\""))
                .collect();
            writeln!(yaml, "    {repo}: [{}]", tags.join(", ")).unwrap();
        }
        yaml
    }

    /// How many tags are complete in `target` at the source's digest, and the first problem.
    fn verify(&self, target: &Registry) -> (usize, Option<String>) {
        let mut complete = 0;
        let mut problem = None;
        for (repo, tag, digest) in &self.tags {
            let result = check_complete(target, repo, tag).and_then(|()| {
                match head_manifest(target, repo, tag) {
                    Some(d) if &d == digest => Ok(()),
                    other => Err(format!(
                        "{repo}:{tag} is at {other:?}, the source at {digest}"
                    )),
                }
            });
            match result {
                Ok(()) => complete += 1,
                Err(e) => {
                    problem.get_or_insert(e);
                }
            }
        }
        (complete, problem)
    }
}

/// `skopeo sync` from a YAML file into `destination` (`host/namespace`). Without `--scoped`
/// skopeo keeps the last path component, so `bench/app00` lands as `<destination>/app00`:
/// the same name as regmirror's.
fn skopeo_sync_args(yaml: &str, destination: &str) -> Vec<String> {
    strings(&[
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "yaml",
        "--dest",
        "docker",
        "--dest-tls-verify=false",
        yaml,
        destination,
    ])
}

/// A full copy and the unchanged re-run into one fresh target.
#[derive(Debug)]
struct CopyRound {
    copy: Measured,
    rerun: Measured,
    /// Tags complete after the copy and after the re-run, and the first problem.
    copy_complete: usize,
    rerun_complete: usize,
    problem: Option<String>,
    /// Requests, when the round went through counting proxies.
    copy_traffic: Option<Traffic>,
    rerun_traffic: Option<Traffic>,
}

fn copy_round(tool: Tool, corpus: &Corpus, counted: bool) -> CopyRound {
    let target = Registry::start();
    let proxies = counted.then(|| {
        (
            Proxy::start(corpus.source.host()),
            Proxy::start(target.host()),
        )
    });
    let (source_host, target_host) = match &proxies {
        Some((source, target)) => (source.host(), target.host()),
        None => (corpus.source.host(), target.host()),
    };
    let sandbox = Sandbox::new();
    let stats = sandbox.path().join("time.txt");
    let command = corpus.command(tool, &sandbox, source_host, target_host);
    let copy = measure(&command, &stats);
    let copy_traffic = proxies.as_ref().map(|(s, t)| Traffic::take(s, t));
    let (copy_complete, copy_problem) = corpus.verify(&target);
    let rerun = measure(&command, &stats);
    let rerun_traffic = proxies.as_ref().map(|(s, t)| Traffic::take(s, t));
    let (rerun_complete, rerun_problem) = corpus.verify(&target);
    let problem = copy_problem
        .map(|p| format!("after the copy: {p}"))
        .or(rerun_problem.map(|p| format!("after the re-run: {p}")))
        .or_else(|| (!copy.ok()).then(|| format!("copy failed:\n{}", copy.output)))
        .or_else(|| (!rerun.ok()).then(|| format!("re-run failed:\n{}", rerun.output)));
    CopyRound {
        copy,
        rerun,
        copy_complete,
        rerun_complete,
        problem,
        copy_traffic,
        rerun_traffic,
    }
}

fn tool_name(tool: Tool, skopeo_version: &str) -> String {
    match tool {
        Tool::Regmirror => "regmirror --once".to_owned(),
        Tool::Skopeo => format!(
            "skopeo sync ({})",
            skopeo_version.trim_start_matches("skopeo ")
        ),
    }
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenarios_1_2_sixty_tags_copied_then_unchanged() {
    let settings = Settings::from_env();
    let skopeo_version = require_tools(true).unwrap_or_default();
    let started = Instant::now();
    let corpus = Corpus::seed(&settings);
    let ntags = corpus.tags.len();
    eprintln!(
        "seeded {ntags} tags ({}) in {:.1} s",
        fmt_bytes(corpus.bytes),
        started.elapsed().as_secs_f64()
    );

    // Warm-up round through counting proxies: request counts, not timed.
    let mut counted = BTreeMap::new();
    for tool in Tool::order(0) {
        eprintln!("counted round: {tool:?}");
        counted.insert(tool, copy_round(tool, &corpus, true));
    }
    let mut timed: BTreeMap<Tool, Vec<CopyRound>> = BTreeMap::new();
    for round in 0..settings.rounds {
        for tool in Tool::order(round) {
            let result = copy_round(tool, &corpus, false);
            eprintln!(
                "round {}: {tool:?}: copy {:.2} s (exit {:?}), unchanged {:.2} s (exit {:?})",
                round + 1,
                result.copy.took.as_secs_f64(),
                result.copy.code,
                result.rerun.took.as_secs_f64(),
                result.rerun.code
            );
            timed.entry(tool).or_default().push(result);
        }
    }

    let runs = |tool: Tool, rerun: bool| -> Vec<Measured> {
        timed[&tool]
            .iter()
            .map(|r| {
                if rerun {
                    r.rerun.clone()
                } else {
                    r.copy.clone()
                }
            })
            .collect()
    };
    let name = |tool| tool_name(tool, &skopeo_version);
    let all_complete = |tool: Tool| {
        timed[&tool]
            .iter()
            .chain(std::iter::once(&counted[&tool]))
            .all(|r| {
                r.copy_complete == ntags && r.rerun_complete == ntags && r.copy.ok() && r.rerun.ok()
            })
    };

    let copy_title = format!("1. full copy, {ntags} tags");
    let rerun_title = format!("2. unchanged re-run, {ntags} tags");
    let mut rows = Vec::new();
    for (rerun, title, bound) in [
        (false, &copy_title, "≤ 0.5 × skopeo"),
        (true, &rerun_title, "≤ 0.5 × skopeo"),
    ] {
        let ours = secs(&runs(Tool::Regmirror, rerun));
        let theirs = secs(&runs(Tool::Skopeo, rerun));
        let ratio = median(&ours).zip(median(&theirs)).map(|(a, b)| a / b);
        for tool in [Tool::Regmirror, Tool::Skopeo] {
            let times = secs(&runs(tool, rerun));
            let ours = tool == Tool::Regmirror;
            rows.push(Row {
                scenario: title,
                tool: if ours {
                    "regmirror --once"
                } else {
                    "skopeo sync"
                },
                median: format!("{} wall", fmt_median_secs(&times)),
                rounds: fmt_list(&times, fmt_secs),
                ratio: if ours {
                    ratio.map_or("–".to_owned(), |r| format!("{r:.2} × skopeo"))
                } else {
                    "1".to_owned()
                },
                target: if ours { bound } else { "" },
                met: ours.then(|| ratio.is_some_and(|r| r <= 0.5) && all_complete(tool)),
            });
        }
    }
    // Scenario 2's request targets, from the counted round.
    let ours = counted[&Tool::Regmirror]
        .rerun_traffic
        .clone()
        .unwrap_or_default();
    let theirs = counted[&Tool::Skopeo]
        .rerun_traffic
        .clone()
        .unwrap_or_default();
    for (tool, traffic) in [(Tool::Regmirror, &ours), (Tool::Skopeo, &theirs)] {
        let mine = tool == Tool::Regmirror;
        let tool_label = if mine {
            "regmirror --once"
        } else {
            "skopeo sync"
        };
        rows.push(Row {
            scenario: &rerun_title,
            tool: tool_label,
            median: format!("{} pulls", traffic.pulls()),
            rounds: "counted round".to_owned(),
            ratio: "–".to_owned(),
            target: if mine { "0 pulls" } else { "" },
            met: mine.then(|| traffic.pulls() == 0),
        });
        let per_tag_source = traffic.source.len() as f64 / ntags as f64;
        let per_tag_target = traffic.target.len() as f64 / ntags as f64;
        rows.push(Row {
            scenario: &rerun_title,
            tool: tool_label,
            median: format!(
                "{per_tag_source:.2} / {per_tag_target:.2} requests per tag (source / target)"
            ),
            rounds: "counted round".to_owned(),
            ratio: "–".to_owned(),
            target: if mine {
                "≤ 2 per tag to each side"
            } else {
                ""
            },
            met: mine.then_some(per_tag_source <= 2.0 && per_tag_target <= 2.0),
        });
    }

    // Everything else measured, per tool.
    let mut also = String::from(
        "| run | tool | peak RSS (median) | CPU user+sys (median) | exit codes | tags complete |\n\
         |---|---|---|---|---|---|\n",
    );
    for (rerun, label) in [(false, "full copy"), (true, "unchanged re-run")] {
        for tool in [Tool::Regmirror, Tool::Skopeo] {
            let measured = runs(tool, rerun);
            let complete: Vec<String> = timed[&tool]
                .iter()
                .map(|r| {
                    if rerun {
                        r.rerun_complete
                    } else {
                        r.copy_complete
                    }
                    .to_string()
                })
                .collect();
            writeln!(
                also,
                "| {label} | {} | {} | {} | {} | {} of {ntags} |",
                name(tool),
                median(&rss_mib(&measured)).map_or("–".to_owned(), fmt_mib),
                fmt_median_secs(&cpu_secs(&measured)),
                exits(&measured),
                complete.join(", ")
            )
            .unwrap();
        }
    }

    let mut section = String::new();
    writeln!(
        section,
        "## 1 and 2. {ntags} two-platform tags: full copy, then unchanged\n\n\
         {} repositories × {TAGS} tags, each an index over {} platforms with {LAYERS} layers of \
         {} (random, so incompressible) and a config: {} in all, {} blobs. Half Docker manifest \
         lists, half OCI indexes. Every copy goes into a fresh, empty target; the unchanged \
         re-run repeats the same command against the same target right after. {} timed rounds \
         (tools alternating, the first one swapped each round), after one counted round \
         through proxies that gives the request counts.\n",
        corpus.repos.len(),
        PLATFORMS.len(),
        fmt_bytes(settings.layer_size as u64),
        fmt_bytes(corpus.bytes),
        ntags * PLATFORMS.len() * (LAYERS + 1),
        settings.rounds,
    )
    .unwrap();
    section.push_str(&render_rows(&rows));
    writeln!(section, "\n{also}").unwrap();
    let regmirror = name(Tool::Regmirror);
    let skopeo_name = name(Tool::Skopeo);
    let copies = [
        (
            regmirror.as_str(),
            counted[&Tool::Regmirror]
                .copy_traffic
                .clone()
                .unwrap_or_default(),
        ),
        (
            skopeo_name.as_str(),
            counted[&Tool::Skopeo]
                .copy_traffic
                .clone()
                .unwrap_or_default(),
        ),
    ];
    writeln!(
        section,
        "Requests of the counted round's full copy ({ntags} tags; pulls are the source's \
         manifest GETs):\n\n{}",
        breakdown(&[(copies[0].0, &copies[0].1), (copies[1].0, &copies[1].1)])
    )
    .unwrap();
    writeln!(
        section,
        "Requests of the counted round's unchanged re-run:\n\n{}",
        breakdown(&[(regmirror.as_str(), &ours), (skopeo_name.as_str(), &theirs)])
    )
    .unwrap();
    for tool in [Tool::Regmirror, Tool::Skopeo] {
        let failures: Vec<&str> = timed[&tool]
            .iter()
            .chain(std::iter::once(&counted[&tool]))
            .filter_map(|r| r.problem.as_deref())
            .collect();
        if let Some(first) = failures.first() {
            writeln!(
                section,
                "{}: {} of {} rounds had a problem; the first: {}\n",
                name(tool),
                failures.len(),
                settings.rounds + 1,
                first.lines().take(20).collect::<Vec<_>>().join("\n")
            )
            .unwrap();
        }
        let errors: usize = [&counted[&tool].copy_traffic, &counted[&tool].rerun_traffic]
            .into_iter()
            .flatten()
            .map(Traffic::errors)
            .sum();
        if errors > 0 {
            writeln!(
                section,
                "{}: {errors} requests answered 5xx or not at all.\n",
                name(tool)
            )
            .unwrap();
        }
    }
    let shown_config = corpus.regmirror_config("<source>", "<target>");
    let shown_config: String = shown_config.lines().take(9).collect::<Vec<_>>().join("\n");
    writeln!(
        section,
        "Commands: `regmirror --once --config mirrors.toml` (every other setting at its \
         default), with\n\n```toml\n{shown_config}\n# ... one [[mirror]] per repository\n```\n\n\
         `skopeo --policy <accept anything> {}`, with\n\n```yaml\n{}    # ... one line per \
         repository\n```\n",
        skopeo_sync_args("sync.yaml", "<target>/bench").join(" "),
        corpus
            .skopeo_yaml("<source>")
            .lines()
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    )
    .unwrap();
    if settings.quick {
        section.push_str("(BENCH_QUICK: reduced sizes, not the issue's scenario.)\n");
    }
    publish(&section, &rows);
    for tool in [Tool::Regmirror, Tool::Skopeo] {
        if let Some(problem) = &counted[&tool].problem {
            eprintln!("===== {tool:?} (counted round) =====\n{problem}\n");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: one big single-layer image
// ---------------------------------------------------------------------------------------------

/// What copies the big image in scenario 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BigTool {
    Regmirror,
    Skopeo,
    /// `curl` GET piped into `curl` PUT: the blob alone, no manifests, no digest check here
    /// (the registry checks it).
    Pipe,
}

impl BigTool {
    const ALL: [BigTool; 3] = [BigTool::Regmirror, BigTool::Skopeo, BigTool::Pipe];

    /// Rotated each round, so each goes first once every three rounds.
    fn order(round: usize) -> Vec<BigTool> {
        (0..3).map(|i| BigTool::ALL[(round + i) % 3]).collect()
    }
}

/// The big image in its source.
struct Big {
    source: Registry,
    repo: String,
    tag: String,
    digest: String,
    layer: String,
}

const BIG_REPO: &str = "bench/big";
const BIG_TAG: &str = "v1";

/// The raw pipe: start an upload on the target, then stream the source's GET into its PUT.
const PIPE_SCRIPT: &str = r#"set -euo pipefail
location=$(curl -sS -f -X POST -o /dev/null -D - "http://$DST/v2/$REPO/blobs/uploads/" \
  | tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
case "$location" in /*) location="http://$DST$location" ;; esac
case "$location" in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sS -f "http://$SRC/v2/$REPO/blobs/$DIGEST" \
  | curl -sS -f -o /dev/null -X PUT -T - -H 'Expect:' \
      -H 'Content-Type: application/octet-stream' "$location${sep}digest=$DIGEST"
"#;

fn skopeo_copy_args(source: &str, target: &str) -> Vec<String> {
    strings(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{source}/{BIG_REPO}:{BIG_TAG}"),
        &format!("docker://{target}/{BIG_REPO}:{BIG_TAG}"),
    ])
}

fn big_round(tool: BigTool, big: &Big) -> (Measured, Option<String>) {
    let target = Registry::start();
    let sandbox = Sandbox::new();
    let stats = sandbox.path().join("time.txt");
    let source = big.source.host();
    let command = match tool {
        BigTool::Regmirror => {
            let path = sandbox.write_config(&format!(
                "images = [\"{source}/{}:{}\"]\n[defaults]\ntarget = \"{}\"\n",
                big.repo,
                big.tag,
                target.host()
            ));
            let mut command = regmirror_in(&sandbox);
            command.arg("--once").arg("--config").arg(path);
            command
        }
        BigTool::Skopeo => skopeo(&sandbox, &skopeo_copy_args(source, target.host())),
        BigTool::Pipe => {
            let mut command = Command::new("bash");
            command
                .arg("-c")
                .arg(PIPE_SCRIPT)
                .env("SRC", source)
                .env("DST", target.host())
                .env("REPO", &big.repo)
                .env("DIGEST", &big.layer)
                .current_dir(sandbox.path());
            for name in harness::cli::CLEARED {
                command.env_remove(name);
            }
            command
        }
    };
    let measured = measure(&command, &stats);
    let problem = match tool {
        BigTool::Pipe => (!blob_exists(&target, &big.repo, &big.layer))
            .then(|| format!("the blob is missing from the target\n{}", measured.output)),
        _ => check_complete(&target, &big.repo, &big.tag)
            .and_then(|()| match head_manifest(&target, &big.repo, &big.tag) {
                Some(d) if d == big.digest => Ok(()),
                other => Err(format!("tag is at {other:?}, the source at {}", big.digest)),
            })
            .err(),
    }
    .or_else(|| (!measured.ok()).then(|| format!("failed:\n{}", measured.output)));
    (measured, problem)
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_3_one_big_layer() {
    let settings = Settings::from_env();
    let skopeo_version = require_tools(true).unwrap_or_default();
    let started = Instant::now();
    let source = Registry::start();
    let (digest, layer, layer_size) = {
        // Held in memory only while pushing (about twice its size while gzipping).
        let image = Image::single(Flavor::Docker, 1, settings.big_size);
        let pushed = image.push(&source, BIG_REPO, BIG_TAG);
        let (layer, size) = pushed
            .blobs
            .iter()
            .max_by_key(|(_, size)| *size)
            .cloned()
            .expect("the image has blobs");
        (pushed.digest, layer, size)
    };
    eprintln!(
        "seeded a {} layer in {:.1} s",
        fmt_bytes(layer_size),
        started.elapsed().as_secs_f64()
    );
    let big = Big {
        source,
        repo: BIG_REPO.to_owned(),
        tag: BIG_TAG.to_owned(),
        digest,
        layer,
    };

    let mut results: BTreeMap<BigTool, Vec<(Measured, Option<String>)>> = BTreeMap::new();
    for round in 0..settings.rounds {
        for tool in BigTool::order(round) {
            let result = big_round(tool, &big);
            eprintln!(
                "round {}: {tool:?}: {:.2} s, peak RSS {:?} KiB, exit {:?}",
                round + 1,
                result.0.took.as_secs_f64(),
                result.0.peak_rss_kib,
                result.0.code
            );
            results.entry(tool).or_default().push(result);
        }
    }
    let runs = |tool: BigTool| -> Vec<Measured> {
        results[&tool].iter().map(|(m, _)| m.clone()).collect()
    };
    let ok = |tool: BigTool| results[&tool].iter().all(|(_, problem)| problem.is_none());
    let median_of = |tool: BigTool| median(&secs(&runs(tool)));
    let ours = median_of(BigTool::Regmirror);
    let vs_skopeo = ours.zip(median_of(BigTool::Skopeo)).map(|(a, b)| a / b);
    let vs_pipe = ours.zip(median_of(BigTool::Pipe)).map(|(a, b)| a / b);
    let ours_rss = median(&rss_mib(&runs(BigTool::Regmirror)));
    let max_rss = rss_mib(&runs(BigTool::Regmirror))
        .into_iter()
        .fold(None, |max: Option<f64>, v| {
            Some(max.map_or(v, |m| m.max(v)))
        });
    let title = format!("3. one {} layer", fmt_bytes(layer_size));
    let times = |tool| secs(&runs(tool));
    let rss = |tool| rss_mib(&runs(tool));
    let rows = vec![
        Row {
            scenario: &title,
            tool: "regmirror --once",
            median: format!("{} wall", fmt_median_secs(&times(BigTool::Regmirror))),
            rounds: fmt_list(&times(BigTool::Regmirror), fmt_secs),
            ratio: vs_skopeo.map_or("–".to_owned(), |r| format!("{r:.2} × skopeo")),
            target: "≤ 1.0 × skopeo copy",
            met: Some(vs_skopeo.is_some_and(|r| r <= 1.0) && ok(BigTool::Regmirror)),
        },
        Row {
            scenario: &title,
            tool: "regmirror --once",
            median: format!("{} wall", fmt_median_secs(&times(BigTool::Regmirror))),
            rounds: fmt_list(&times(BigTool::Regmirror), fmt_secs),
            ratio: vs_pipe.map_or("–".to_owned(), |r| format!("{r:.2} × raw pipe")),
            target: "≤ 1.2 × raw pipe",
            met: Some(vs_pipe.is_some_and(|r| r <= 1.2) && ok(BigTool::Regmirror)),
        },
        Row {
            scenario: &title,
            tool: "regmirror --once",
            median: format!("{} peak RSS", ours_rss.map_or("–".to_owned(), fmt_mib)),
            rounds: fmt_list(&rss(BigTool::Regmirror), fmt_mib),
            ratio: "–".to_owned(),
            target: "≤ 32 MiB",
            // Every round, not only the median, must stay under the bound.
            met: Some(max_rss.is_some_and(|m| m <= 32.0)),
        },
        Row {
            scenario: &title,
            tool: "skopeo copy",
            median: format!("{} wall", fmt_median_secs(&times(BigTool::Skopeo))),
            rounds: fmt_list(&times(BigTool::Skopeo), fmt_secs),
            ratio: "1".to_owned(),
            target: "",
            met: None,
        },
        Row {
            scenario: &title,
            tool: "skopeo copy",
            median: format!(
                "{} peak RSS",
                median(&rss(BigTool::Skopeo)).map_or("–".to_owned(), fmt_mib)
            ),
            rounds: fmt_list(&rss(BigTool::Skopeo), fmt_mib),
            ratio: "–".to_owned(),
            target: "",
            met: None,
        },
        Row {
            scenario: &title,
            tool: "raw pipe (`curl | curl`)",
            median: format!("{} wall", fmt_median_secs(&times(BigTool::Pipe))),
            rounds: fmt_list(&times(BigTool::Pipe), fmt_secs),
            ratio: "–".to_owned(),
            target: "",
            met: None,
        },
    ];

    let mut also = String::from(
        "| tool | throughput (median) | CPU user+sys (median) | peak RSS (median) | exit codes |\n\
         |---|---|---|---|---|\n",
    );
    for tool in BigTool::ALL {
        let measured = runs(tool);
        let name = match tool {
            BigTool::Regmirror => "regmirror --once".to_owned(),
            BigTool::Skopeo => format!(
                "skopeo copy ({})",
                skopeo_version.trim_start_matches("skopeo ")
            ),
            BigTool::Pipe => "raw pipe (bash, 3 × curl)".to_owned(),
        };
        let throughput = median_of(tool).map_or("–".to_owned(), |s| {
            format!("{:.0} MiB/s", layer_size as f64 / MIB as f64 / s)
        });
        writeln!(
            also,
            "| {name} | {throughput} | {} | {} | {} |",
            fmt_median_secs(&cpu_secs(&measured)),
            median(&rss_mib(&measured)).map_or("–".to_owned(), fmt_mib),
            exits(&measured)
        )
        .unwrap();
    }
    let mut section = String::new();
    writeln!(
        section,
        "## 3. One single-layer image of {}\n\n\
         A Docker v2 image whose one layer is {} of random bytes (stored gzip), and a config. \
         Each run copies it into a fresh, empty target registry on the same machine (source \
         and target are `docker-registry` processes on loopback, storing on the same disk). \
         {} rounds, the three runs rotated each round. Peak RSS is the process's own maximum \
         resident set (`ru_maxrss`, from GNU time).\n",
        fmt_bytes(layer_size),
        fmt_bytes(settings.big_size as u64),
        settings.rounds
    )
    .unwrap();
    section.push_str(&render_rows(&rows));
    writeln!(section, "\n{also}").unwrap();
    for tool in BigTool::ALL {
        if let Some((_, Some(problem))) = results[&tool].iter().find(|(_, p)| p.is_some()) {
            let problem: String = problem.lines().take(20).collect::<Vec<_>>().join("\n");
            writeln!(section, "{tool:?}: a round had a problem: {problem}\n").unwrap();
        }
    }
    writeln!(
        section,
        "Commands: `regmirror --once` with `images = [\"<source>/{BIG_REPO}:{BIG_TAG}\"]` and \
         `defaults.target = \"<target>\"`; `skopeo --policy <accept anything> {}`; the raw pipe:\
         \n\n```sh\n{PIPE_SCRIPT}```\n",
        skopeo_copy_args("<source>", "<target>").join(" ")
    )
    .unwrap();
    if settings.quick {
        section.push_str("(BENCH_QUICK: reduced sizes, not the issue's scenario.)\n");
    }
    publish(&section, &rows);
}

// ---------------------------------------------------------------------------------------------
// Scenario 5: the idle daemon's memory, and `check` on 10,000 tags
// ---------------------------------------------------------------------------------------------

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts the daemon with one mirror scheduled far away, waits, reads its memory, stops it.
fn idle_daemon(registry: &Registry) -> (u64, u64) {
    let sandbox = Sandbox::new();
    let path = sandbox.write_config(&format!(
        "[defaults]\ntarget = \"{host}/mirror\"\nschedule = \"0 3 1 1 *\"\n\
         run_on_start = false\n\n[[mirror]]\nsource = \"{host}/bench/app\"\ntags = [\"v1\"]\n",
        host = registry.host()
    ));
    let mut daemon = regmirror_in(&sandbox).arg("--config").arg(path).start();
    thread::sleep(IDLE_SETTLE);
    assert!(
        daemon.is_running(),
        "the daemon exited early\n{}",
        daemon.stderr()
    );
    let memory = memory_kib(daemon.pid());
    daemon.terminate();
    daemon.wait(Duration::from_secs(10)).assert_success();
    memory
}

/// A config of `tags` tags: as many `images` entries, or `[[mirror]]`s of 100 tags each.
fn big_config(tags: usize, as_mirrors: bool) -> String {
    let mut config = String::new();
    let source = "127.0.0.1:5000";
    if !as_mirrors {
        config.push_str("images = [\n");
        for i in 0..tags {
            writeln!(config, "  \"{source}/team/app{:04}:v{}\",", i / 10, i % 10).unwrap();
        }
        config.push_str("]\n");
    }
    config.push_str(
        "\n[defaults]\ntarget = \"registry.example.com/mirror\"\nschedule = \"0 3 * * *\"\n\
         timezone = \"Europe/Berlin\"\n",
    );
    if as_mirrors {
        for m in 0..tags.div_ceil(100) {
            let tags: Vec<String> = (0..100.min(tags - m * 100))
                .map(|t| format!("\"v{t}\""))
                .collect();
            write!(
                config,
                "\n[[mirror]]\nsource = \"{source}/team/app{m:03}\"\ntags = [{}]\n",
                tags.join(", ")
            )
            .unwrap();
        }
    }
    config
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_5_idle_daemon_and_check() {
    let settings = Settings::from_env();
    require_tools(false);
    let registry = Registry::start();
    let rounds = settings.rounds.max(5);

    let idle: Vec<(u64, u64)> = (0..settings.rounds)
        .map(|_| idle_daemon(&registry))
        .collect();
    let idle_rss: Vec<f64> = idle.iter().map(|(rss, _)| *rss as f64 / 1024.0).collect();
    let idle_hwm: Vec<f64> = idle.iter().map(|(_, hwm)| *hwm as f64 / 1024.0).collect();
    let idle_max = idle_rss.iter().cloned().fold(0.0, f64::max);

    let tags = settings.check_tags;
    let mut checks = Vec::new();
    for (as_mirrors, shape) in [
        (false, format!("{tags} `images` entries")),
        (
            true,
            format!("{} `[[mirror]]` × 100 tags", tags.div_ceil(100)),
        ),
    ] {
        let sandbox = Sandbox::new();
        let path = sandbox.write_config(&big_config(tags, as_mirrors));
        let stats = sandbox.path().join("time.txt");
        let mut command = regmirror_in(&sandbox);
        command.arg("check").arg("--config").arg(&path);
        let runs: Vec<Measured> = (0..rounds).map(|_| measure(&command, &stats)).collect();
        let expected = format!("{tags} images");
        let problem = runs
            .iter()
            .find(|r| !r.ok() || !r.output.contains(&expected))
            .map(|r| r.output.lines().take(20).collect::<Vec<_>>().join("\n"));
        checks.push((shape, runs, problem));
    }

    let title_idle = "5. idle daemon".to_owned();
    let mut rows = vec![Row {
        scenario: &title_idle,
        tool: "regmirror (daemon)",
        median: format!("{} RSS", median(&idle_rss).map_or("–".to_owned(), fmt_mib)),
        rounds: fmt_list(&idle_rss, fmt_mib),
        ratio: "–".to_owned(),
        target: "≤ 16 MiB",
        met: Some(idle_max <= 16.0),
    }];
    let titles: Vec<String> = checks
        .iter()
        .map(|(shape, _, _)| format!("5. `regmirror check`, {shape}"))
        .collect();
    for ((_, runs, problem), title) in checks.iter().zip(&titles) {
        let times = secs(runs);
        rows.push(Row {
            scenario: title,
            tool: "regmirror check",
            median: format!("{} wall", fmt_median_secs(&times)),
            rounds: fmt_list(&times, fmt_secs),
            ratio: "–".to_owned(),
            target: "< 1 s",
            met: Some(problem.is_none() && median(&times).is_some_and(|t| t < 1.0)),
        });
    }
    let mut section = String::new();
    writeln!(
        section,
        "## 5. Idle daemon memory; `regmirror check` on {tags} tags\n\n\
         The idle daemon: `regmirror --config mirrors.toml` with one mirror of one tag, \
         `schedule = \"0 3 1 1 *\"` and `run_on_start = false`, no `[server]`; VmRSS from \
         `/proc/<pid>/status` {} s after start, then SIGTERM (exit 0), {} rounds. `check`: \
         wall time of `regmirror check --config mirrors.toml` (stdout to a pipe), \
         `defaults.schedule = \"0 3 * * *\"` in `Europe/Berlin`, {rounds} runs per shape.\n",
        IDLE_SETTLE.as_secs(),
        settings.rounds
    )
    .unwrap();
    section.push_str(&render_rows(&rows));
    writeln!(
        section,
        "\n| measure | median | rounds |\n|---|---|---|\n\
         | idle daemon, VmHWM (peak since start) | {} | {} |",
        median(&idle_hwm).map_or("–".to_owned(), fmt_mib),
        fmt_list(&idle_hwm, fmt_mib)
    )
    .unwrap();
    for (shape, runs, problem) in &checks {
        writeln!(
            section,
            "| `check`, {shape}: peak RSS | {} | {} |\n\
             | `check`, {shape}: CPU user+sys | {} | {} |",
            median(&rss_mib(runs)).map_or("–".to_owned(), fmt_mib),
            fmt_list(&rss_mib(runs), fmt_mib),
            fmt_median_secs(&cpu_secs(runs)),
            fmt_list(&cpu_secs(runs), fmt_secs)
        )
        .unwrap();
        if let Some(problem) = problem {
            writeln!(
                section,
                "\n`check` on {shape} failed:\n\n```\n{problem}\n```\n"
            )
            .unwrap();
        }
    }
    section.push('\n');
    publish(&section, &rows);
}
