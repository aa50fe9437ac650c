//! Benchmark, scenarios 1 and 2 of the performance issue: regmirror against Debian's
//! `skopeo sync` on 60 two-platform tags (20 repositories × 3 tags, each an index over two
//! platforms with 3 layers each).
//!
//! 1. full copy of the 60 tags into an empty target: wall time, peak RSS, CPU;
//! 2. the same 60 tags again, unchanged: wall time, requests to each side, pulls.
//!
//! How it measures (each tool under GNU time, see `tests/bench/measure.rs`):
//!
//! - Every copy goes into a fresh target registry; the source is seeded once and shared.
//!   Tools alternate within a round, the first one swapped each round, so neither always gets
//!   the warmer machine. The first round goes through counting proxies in front of the source
//!   and the target: it gives the request counts and is left out of the medians (the proxy's
//!   own work would be timed with the tool). Timed rounds talk to the registries directly.
//! - Every copy is checked afterwards: each tag complete in the target, at the source's
//!   digest.
//!
//! Environment (see `tests/bench/mod.rs`): `BENCH_OUT`, `BENCH_SUMMARY`, `BENCH_ROUNDS`,
//! `BENCH_QUICK`, `BENCH_REPOS`, `BENCH_LAYER_KIB`, `BENCH_REGMIRROR`.
//!
//! Ignored by default: `scripts/bench copy` runs it in release mode and puts its section and
//! summary rows into BENCHMARKS.md.

mod bench;
mod harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use bench::measure::{measure, regmirror_in, require_tools, skopeo, strings, Measured};
use bench::report::{
    cpu_secs, exits, fmt_bytes, fmt_list, fmt_median_secs, fmt_mib, fmt_secs, median, publish,
    render_rows, rss_mib, secs, Row,
};
use bench::Settings;
use harness::proxy::Endpoint;
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];
/// Tags per repository.
const TAGS: usize = 3;
/// Fresh layers per platform manifest.
const LAYERS: usize = 3;
/// Where regmirror puts everything, and where skopeo is told to: the same repository names.
const TARGET_NAMESPACE: &str = "bench";

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

    /// `"v1", "v2", …`: `repo`'s tags, quoted, as both TOML and YAML write a list.
    fn quoted_tags(&self, repo: &str) -> String {
        let tags: Vec<String> = self
            .tags
            .iter()
            .filter(|(r, _, _)| r == repo)
            .map(|(_, tag, _)| format!("\"{tag}\""))
            .collect();
        tags.join(", ")
    }

    /// One `[[mirror]]` per repository with its tags; targets keep the source path.
    fn regmirror_config(&self, source: &str, target: &str) -> String {
        let mut config = format!("[defaults]\ntarget = \"{target}\"\n");
        for repo in &self.repos {
            write!(
                config,
                "\n[[mirror]]\nsource = \"{source}/{repo}\"\ntags = [{}]\n",
                self.quoted_tags(repo)
            )
            .unwrap();
        }
        config
    }

    /// skopeo's YAML source: the same repositories and tags, plain HTTP.
    fn skopeo_yaml(&self, source: &str) -> String {
        let mut yaml = format!("\"{source}\":\n  tls-verify: false\n  images:\n");
        for repo in &self.repos {
            writeln!(yaml, "    {repo}: [{}]", self.quoted_tags(repo)).unwrap();
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
