//! Benchmark, scenarios 6 and 7: tags chosen by rules.
//!
//! 6. A repository of 5,000 tags whose rules select 500 (`1.45.x` to `1.49.x`, each its own
//!    image): a full copy into an empty target, then the unchanged re-run, regmirror with
//!    `include` beside `skopeo sync` with `images-by-tag-regex` on the same repository. Wall
//!    time, pulls and requests to each side; target: the unchanged pass ≤ 0.3 × skopeo's time
//!    with 0 pulls.
//! 7. Comparing does not wait on the copy's concurrency: an unchanged pass over 1,000 tags
//!    with 25 ms added to every answer of the source (a delaying proxy), at the default
//!    `concurrency`. Target: ≤ 1.5 s.
//!
//! How it measures: as scenarios 1 and 2 (`tests/bench_copy.rs`): every copy into a fresh
//! target, tools alternating, one counted round through proxies for request counts, then
//! timed rounds straight to the registries.
//!
//! Environment (see `tests/bench/mod.rs`): `BENCH_OUT`, `BENCH_SUMMARY`, `BENCH_ROUNDS`,
//! `BENCH_QUICK`, `BENCH_REGMIRROR`.
//!
//! Ignored by default: `scripts/bench tags` runs it in release mode.

mod bench;
mod harness;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use bench::measure::{
    measure, process_cpu, regmirror_in, require_tools, skopeo, strings, Measured,
};
use bench::report::{
    cpu_secs, exits, fmt_list, fmt_median_secs, fmt_mib, fmt_secs, median, publish, render_rows,
    rss_mib, secs, Row,
};
use bench::Settings;
use harness::proxy::Endpoint;
use harness::*;
use regmirror::registry::HEADS_PER_REGISTRY;

const REPO: &str = "bench/tagged";
/// What regmirror selects with `include`, and skopeo with `images-by-tag-regex` (unanchored:
/// skopeo's own syntax needs the anchors written out).
const INCLUDE: &str = r"1\.4[5-9]\.\d+";
const SKOPEO_REGEX: &str = r"^1\.4[5-9]\.[0-9]+$";

/// The repository of scenario 6: `minors × 100` tags `1.M.P`, of which those of minors 45 to
/// 49 are each their own image and the others share one.
struct Corpus {
    source: Registry,
    /// Every selected tag and its digest.
    selected: Vec<(String, String)>,
    listed: usize,
}

impl Corpus {
    fn seed(quick: bool) -> Corpus {
        let source = Registry::start();
        let minors = if quick { 40..=49 } else { 0..=49 };
        let patches = if quick { 10 } else { 100 };
        let filler = Image::single(Flavor::Oci, 1, 256);
        let mut filler_pushed = false;
        let mut selected = Vec::new();
        let mut listed = 0;
        for minor in minors {
            for patch in 0..patches {
                let tag = format!("1.{minor}.{patch}");
                listed += 1;
                if minor >= 45 {
                    let image = Image::single(Flavor::Oci, 1, 4096);
                    let pushed = image.push(&source, REPO, &tag);
                    selected.push((tag, pushed.digest));
                } else if filler_pushed {
                    filler.tag(&source, REPO, &tag);
                } else {
                    filler.push(&source, REPO, &tag);
                    filler_pushed = true;
                }
            }
        }
        Corpus {
            source,
            selected,
            listed,
        }
    }

    fn verify(&self, target: &Registry) -> (usize, Option<String>) {
        let mut complete = 0;
        let mut problem = None;
        for (tag, digest) in &self.selected {
            match head_manifest(target, REPO, tag) {
                Some(d) if &d == digest => complete += 1,
                other => {
                    problem.get_or_insert(format!("{REPO}:{tag} is at {other:?}, not {digest}"));
                }
            }
        }
        (complete, problem)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Regmirror,
    Skopeo,
}

impl Tool {
    fn order(round: usize) -> [Tool; 2] {
        if round % 2 == 0 {
            [Tool::Regmirror, Tool::Skopeo]
        } else {
            [Tool::Skopeo, Tool::Regmirror]
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tool::Regmirror => "regmirror --once",
            Tool::Skopeo => "skopeo sync",
        }
    }
}

fn regmirror_config(source: &str, target: &str) -> String {
    format!(
        "[[mirror]]\nsource = \"{source}/{REPO}\"\ninclude = ['{INCLUDE}']\ntarget = \"{target}/{REPO}\"\n"
    )
}

fn skopeo_yaml(source: &str) -> String {
    format!(
        "\"{source}\":\n  tls-verify: false\n  images-by-tag-regex:\n    {REPO}: '{SKOPEO_REGEX}'\n"
    )
}

fn skopeo_args(yaml: &str, destination: &str) -> Vec<String> {
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

fn command(tool: Tool, sandbox: &Sandbox, source: &str, target: &str) -> Command {
    match tool {
        Tool::Regmirror => {
            let path = sandbox.write_config(&regmirror_config(source, target));
            let mut command = regmirror_in(sandbox);
            command.arg("--once").arg("--config").arg(path);
            command
        }
        Tool::Skopeo => {
            let yaml = sandbox.write_file("sync.yaml", &skopeo_yaml(source));
            // skopeo keeps the last path component: `<target>/bench/tagged`, as regmirror.
            skopeo(
                sandbox,
                &skopeo_args(&yaml.to_string_lossy(), &format!("{target}/bench")),
            )
        }
    }
}

/// Requests of one run to the source and the target.
#[derive(Debug, Clone, Default)]
struct Traffic {
    source: Vec<Logged>,
    target: Vec<Logged>,
}

impl Traffic {
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

    fn listings(&self) -> usize {
        self.source
            .iter()
            .filter(|r| r.method == "GET" && r.endpoint() == Endpoint::Tags)
            .count()
    }
}

struct Round {
    copy: Measured,
    rerun: Measured,
    complete: usize,
    problem: Option<String>,
    copy_traffic: Option<Traffic>,
    rerun_traffic: Option<Traffic>,
}

fn round(tool: Tool, corpus: &Corpus, counted: bool) -> Round {
    let target = Registry::start();
    let proxies = counted.then(|| {
        (
            Proxy::start(corpus.source.host()),
            Proxy::start(target.host()),
        )
    });
    let (source_host, target_host) = match &proxies {
        Some((s, t)) => (s.host(), t.host()),
        None => (corpus.source.host(), target.host()),
    };
    let sandbox = Sandbox::new();
    let stats = sandbox.path().join("time.txt");
    let command = command(tool, &sandbox, source_host, target_host);
    let copy = measure(&command, &stats);
    let copy_traffic = proxies.as_ref().map(|(s, t)| Traffic::take(s, t));
    let rerun = measure(&command, &stats);
    let rerun_traffic = proxies.as_ref().map(|(s, t)| Traffic::take(s, t));
    let (complete, problem) = corpus.verify(&target);
    let problem = problem
        .or_else(|| (!copy.ok()).then(|| format!("copy failed:\n{}", copy.output)))
        .or_else(|| (!rerun.ok()).then(|| format!("re-run failed:\n{}", rerun.output)));
    Round {
        copy,
        rerun,
        complete,
        problem,
        copy_traffic,
        rerun_traffic,
    }
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_6_five_thousand_tags_rules_select_five_hundred() {
    let settings = Settings::from_env();
    require_tools(true);
    let started = Instant::now();
    let corpus = Corpus::seed(settings.quick);
    let (listed, selected) = (corpus.listed, corpus.selected.len());
    eprintln!(
        "seeded {listed} tags, {selected} selected, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut counted = BTreeMap::new();
    for tool in Tool::order(0) {
        counted.insert(tool, round(tool, &corpus, true));
    }
    let mut timed: BTreeMap<Tool, Vec<Round>> = BTreeMap::new();
    for n in 0..settings.rounds {
        for tool in Tool::order(n) {
            let result = round(tool, &corpus, false);
            eprintln!(
                "round {}: {tool:?}: copy {:.2} s, unchanged {:.2} s",
                n + 1,
                result.copy.took.as_secs_f64(),
                result.rerun.took.as_secs_f64()
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
    let all_complete = |tool: Tool| {
        timed[&tool]
            .iter()
            .chain(std::iter::once(&counted[&tool]))
            .all(|r| r.complete == selected && r.problem.is_none())
    };

    let copy_title = format!("6. {listed} tags, rules select {selected}: full copy");
    let rerun_title = format!("6. {listed} tags, rules select {selected}: unchanged re-run");
    let mut rows = Vec::new();
    for (rerun, title) in [(false, &copy_title), (true, &rerun_title)] {
        let ours = secs(&runs(Tool::Regmirror, rerun));
        let theirs = secs(&runs(Tool::Skopeo, rerun));
        let ratio = median(&ours).zip(median(&theirs)).map(|(a, b)| a / b);
        for tool in [Tool::Regmirror, Tool::Skopeo] {
            let times = secs(&runs(tool, rerun));
            let mine = tool == Tool::Regmirror;
            rows.push(Row {
                scenario: title,
                tool: tool.label(),
                median: format!("{} wall", fmt_median_secs(&times)),
                rounds: fmt_list(&times, fmt_secs),
                ratio: if mine {
                    ratio.map_or("–".to_owned(), |r| format!("{r:.2} × skopeo"))
                } else {
                    "1".to_owned()
                },
                target: if mine && rerun {
                    "≤ 0.3 × skopeo"
                } else {
                    ""
                },
                met: (mine && rerun).then(|| ratio.is_some_and(|r| r <= 0.3) && all_complete(tool)),
            });
        }
    }
    let mut counts = String::from(
        "| run | tool | pulls | tag-list requests | requests to the source | requests to the target |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for (rerun, label) in [(false, "full copy"), (true, "unchanged re-run")] {
        for tool in [Tool::Regmirror, Tool::Skopeo] {
            let traffic = if rerun {
                &counted[&tool].rerun_traffic
            } else {
                &counted[&tool].copy_traffic
            };
            let traffic = traffic.clone().unwrap_or_default();
            writeln!(
                counts,
                "| {label} | {} | {} | {} | {} | {} |",
                tool.label(),
                traffic.pulls(),
                traffic.listings(),
                traffic.source.len(),
                traffic.target.len()
            )
            .unwrap();
        }
    }
    let ours = counted[&Tool::Regmirror]
        .rerun_traffic
        .clone()
        .unwrap_or_default();
    let heads_per_tag = |requests: &[Logged]| {
        requests.iter().filter(|r| r.is_manifest_head()).count() as f64 / selected as f64
    };
    rows.push(Row {
        scenario: &rerun_title,
        tool: "regmirror --once",
        median: format!(
            "{} pulls, {} tag-list requests, {:.2} / {:.2} manifest HEADs per selected tag (source / target)",
            ours.pulls(),
            ours.listings(),
            heads_per_tag(&ours.source),
            heads_per_tag(&ours.target)
        ),
        rounds: "counted round".to_owned(),
        ratio: "–".to_owned(),
        target: "0 pulls, 1 HEAD per tag on each side",
        met: Some(
            ours.pulls() == 0
                && heads_per_tag(&ours.source) == 1.0
                && heads_per_tag(&ours.target) == 1.0,
        ),
    });
    let mut also =
        String::from("| run | tool | peak RSS (median) | exit codes |\n|---|---|---|---|\n");
    for (rerun, label) in [(false, "full copy"), (true, "unchanged re-run")] {
        for tool in [Tool::Regmirror, Tool::Skopeo] {
            let measured = runs(tool, rerun);
            writeln!(
                also,
                "| {label} | {} | {} | {} |",
                tool.label(),
                median(&rss_mib(&measured)).map_or("–".to_owned(), fmt_mib),
                exits(&measured)
            )
            .unwrap();
        }
    }
    let mut section = format!(
        "## 6. {listed} tags, rules select {selected}\n\n\
         One repository of {listed} tags `1.M.P`; the {selected} of minors 45 to 49 are each \
         their own single-platform image (one 4 KiB layer), the others share one. regmirror \
         selects them with `include = ['{INCLUDE}']`, skopeo with `images-by-tag-regex: \
         '{SKOPEO_REGEX}'`. Every copy into a fresh target, then the same command again \
         (unchanged). {} timed rounds after one counted round through proxies.\n\n",
        settings.rounds
    );
    section.push_str(&render_rows(&rows));
    writeln!(
        section,
        "\nRequests of the counted round:\n\n{counts}\n{also}"
    )
    .unwrap();
    for tool in [Tool::Regmirror, Tool::Skopeo] {
        let problems: Vec<&str> = timed[&tool]
            .iter()
            .chain(std::iter::once(&counted[&tool]))
            .filter_map(|r| r.problem.as_deref())
            .collect();
        if let Some(first) = problems.first() {
            writeln!(
                section,
                "{}: {} rounds had a problem; the first: {}\n",
                tool.label(),
                problems.len(),
                first.lines().take(20).collect::<Vec<_>>().join("\n")
            )
            .unwrap();
        }
    }
    writeln!(
        section,
        "Commands: `regmirror --once --config mirrors.toml` with\n\n```toml\n{}```\n\n\
         `skopeo {}` with\n\n```yaml\n{}```\n",
        regmirror_config("<source>", "<target>"),
        skopeo_args("sync.yaml", "<target>/bench").join(" "),
        skopeo_yaml("<source>")
    )
    .unwrap();
    if settings.quick {
        section.push_str("(BENCH_QUICK: reduced sizes, not the issue's scenario.)\n");
    }
    publish(&section, &rows);
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_7_unchanged_pass_over_a_thousand_tags_25_ms_away() {
    let settings = Settings::from_env();
    require_tools(false);
    let tag_count: usize = 1000;
    let delay = Duration::from_millis(25);
    let upstream = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 256);
    image.push(&upstream, REPO, "t0000");
    for n in 1..tag_count {
        image.tag(&upstream, REPO, &format!("t{n:04}"));
    }
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let sandbox = Sandbox::new();
    let config = format!(
        "[[mirror]]\nsource = \"{}/{REPO}\"\ninclude = ['t\\d+']\ntarget = \"{}/{REPO}\"\n",
        source.host(),
        target.host()
    );
    let path = sandbox.write_config(&config);
    let mut command = regmirror_in(&sandbox);
    command.arg("--once").arg("--config").arg(&path);
    let stats = sandbox.path().join("time.txt");
    let first = measure(&command, &stats);
    assert!(first.ok(), "the first copy failed:\n{}", first.output);
    // The same pass with nothing added: what the machine itself costs.
    // Its CPU, process by process: regmirror, the two registries, the proxy (this process).
    let mut machine = Vec::new();
    let undelayed: Vec<Measured> = (0..settings.rounds.max(3))
        .map(|_| {
            let pids = [upstream.pid(), target.pid(), std::process::id()];
            let before = pids.map(process_cpu);
            let run = measure(&command, &stats);
            let used = pids.map(process_cpu);
            let others = |i: usize| (used[i] - before[i]).as_secs_f64();
            // regmirror, source registry, target registry, proxy.
            machine.push([
                run.cpu.map_or(0.0, |d| d.as_secs_f64()),
                others(0),
                others(1),
                others(2),
            ]);
            run
        })
        .collect();
    source.add_rule(move |_: &RequestInfo| Some(Action::Delay(delay)));
    let rounds: Vec<Measured> = (0..settings.rounds.max(3))
        .map(|_| measure(&command, &stats))
        .collect();
    let times = secs(&rounds);
    let floor = secs(&undelayed);
    // With HEADS_PER_REGISTRY HEADs in flight, the delay alone costs this much.
    let delay_alone = tag_count.div_ceil(HEADS_PER_REGISTRY) as f64 * delay.as_secs_f64();
    let all_ok = rounds
        .iter()
        .all(|r| r.ok() && r.output.contains(&format!("unchanged {tag_count}")));
    let rows = vec![
        Row {
            scenario: "7. unchanged pass, 1,000 tags, 25 ms added to every source answer",
            tool: "regmirror --once (concurrency 4, the default)",
            median: format!("{} wall", fmt_median_secs(&times)),
            rounds: fmt_list(&times, fmt_secs),
            ratio: "–".to_owned(),
            target: "≤ 1.5 s",
            met: Some(all_ok && median(&times).is_some_and(|m| m <= 1.5)),
        },
        Row {
            scenario: "7. the same pass, nothing added",
            tool: "regmirror --once (concurrency 4, the default)",
            median: format!("{} wall", fmt_median_secs(&floor)),
            rounds: fmt_list(&floor, fmt_secs),
            ratio: "–".to_owned(),
            target: "",
            met: None,
        },
    ];
    let mut section = format!(
        "## 7. Comparing runs ahead of the copies\n\n\
         {tag_count} tags of one repository, already mirrored; a proxy in front of the source \
         adds {} ms to every answer (the listing's and every HEAD's). The pass lists, selects \
         every tag and compares each with a HEAD on each side, at the default `concurrency = 4`: \
         up to {HEADS_PER_REGISTRY} HEADs are in flight to a registry, whatever `concurrency` \
         says.\n\n",
        delay.as_millis()
    );
    section.push_str(&render_rows(&rows));
    writeln!(
        section,
        "\nThe delay alone accounts for {} (1,000 HEADs, 32 at a time, {} ms each); the pass \
         with nothing added for {} more.",
        fmt_secs(delay_alone),
        delay.as_millis(),
        fmt_median_secs(&floor)
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let pick = |i: usize| -> String {
        fmt_median_secs(&machine.iter().map(|cpu| cpu[i]).collect::<Vec<_>>())
    };
    let busy: Vec<f64> = machine
        .iter()
        .zip(&floor)
        .map(|(cpu, wall)| cpu.iter().sum::<f64>() / (cores * wall))
        .collect();
    writeln!(
        section,
        "\nWith nothing added, CPU (user + system, medians): regmirror {}, the source registry \
         {}, the target registry {}, the proxy (the benchmark's process) {}; all of it {} of \
         {cores} cores × wall time.",
        pick(0),
        pick(1),
        pick(2),
        pick(3),
        median(&busy).map_or("–".to_owned(), |b| format!("{:.0} %", b * 100.0))
    )
    .unwrap();
    writeln!(
        section,
        "\nregmirror's CPU (user + system, median): {}; peak RSS (median): {}; exit codes: {}.\n",
        fmt_median_secs(&cpu_secs(&rounds)),
        median(&rss_mib(&rounds)).map_or("–".to_owned(), fmt_mib),
        exits(&rounds)
    )
    .unwrap();
    publish(&section, &rows);
}
