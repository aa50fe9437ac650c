//! Benchmark, scenario 3 of the performance issue: one single-layer image of 1 GiB, copied by
//! `regmirror --once`, by `skopeo copy`, and by a raw `curl | curl` pipe of the same blob (the
//! physical limit on this machine): wall time, peak RSS, CPU, throughput.
//!
//! How it measures (each tool under GNU time, see `tests/bench/measure.rs`): the source is
//! seeded once; every run copies into a fresh, empty target registry and is checked afterwards
//! (the tag complete in the target at the source's digest; for the pipe, the blob there). The
//! three runs are rotated each round, so each goes first once every three rounds.
//!
//! Environment (see `tests/bench/mod.rs`): `BENCH_OUT`, `BENCH_SUMMARY`, `BENCH_ROUNDS`,
//! `BENCH_QUICK`, `BENCH_BIG_MIB`, `BENCH_REGMIRROR`.
//!
//! Ignored by default: `scripts/bench big` runs it in release mode and puts its section and
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
use bench::{Settings, MIB};
use harness::*;

/// What copies the big image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Regmirror,
    Skopeo,
    /// `curl` GET piped into `curl` PUT: the blob alone, no manifests, no digest check here
    /// (the registry checks it).
    Pipe,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::Regmirror, Tool::Skopeo, Tool::Pipe];

    /// Rotated each round, so each goes first once every three rounds.
    fn order(round: usize) -> Vec<Tool> {
        (0..3).map(|i| Tool::ALL[(round + i) % 3]).collect()
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

fn big_round(tool: Tool, big: &Big) -> (Measured, Option<String>) {
    let target = Registry::start();
    let sandbox = Sandbox::new();
    let stats = sandbox.path().join("time.txt");
    let source = big.source.host();
    let command = match tool {
        Tool::Regmirror => {
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
        Tool::Skopeo => skopeo(&sandbox, &skopeo_copy_args(source, target.host())),
        Tool::Pipe => {
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
        Tool::Pipe => (!blob_exists(&target, &big.repo, &big.layer))
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

    let mut results: BTreeMap<Tool, Vec<(Measured, Option<String>)>> = BTreeMap::new();
    for round in 0..settings.rounds {
        for tool in Tool::order(round) {
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
    let runs =
        |tool: Tool| -> Vec<Measured> { results[&tool].iter().map(|(m, _)| m.clone()).collect() };
    let ok = |tool: Tool| results[&tool].iter().all(|(_, problem)| problem.is_none());
    let median_of = |tool: Tool| median(&secs(&runs(tool)));
    let ours = median_of(Tool::Regmirror);
    let vs_skopeo = ours.zip(median_of(Tool::Skopeo)).map(|(a, b)| a / b);
    let vs_pipe = ours.zip(median_of(Tool::Pipe)).map(|(a, b)| a / b);
    let ours_rss = median(&rss_mib(&runs(Tool::Regmirror)));
    let max_rss = rss_mib(&runs(Tool::Regmirror))
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
            median: format!("{} wall", fmt_median_secs(&times(Tool::Regmirror))),
            rounds: fmt_list(&times(Tool::Regmirror), fmt_secs),
            ratio: vs_skopeo.map_or("–".to_owned(), |r| format!("{r:.2} × skopeo")),
            target: "≤ 1.0 × skopeo copy",
            met: Some(vs_skopeo.is_some_and(|r| r <= 1.0) && ok(Tool::Regmirror)),
        },
        Row {
            scenario: &title,
            tool: "regmirror --once",
            median: format!("{} wall", fmt_median_secs(&times(Tool::Regmirror))),
            rounds: fmt_list(&times(Tool::Regmirror), fmt_secs),
            ratio: vs_pipe.map_or("–".to_owned(), |r| format!("{r:.2} × raw pipe")),
            target: "≤ 1.2 × raw pipe",
            met: Some(vs_pipe.is_some_and(|r| r <= 1.2) && ok(Tool::Regmirror)),
        },
        Row {
            scenario: &title,
            tool: "regmirror --once",
            median: format!("{} peak RSS", ours_rss.map_or("–".to_owned(), fmt_mib)),
            rounds: fmt_list(&rss(Tool::Regmirror), fmt_mib),
            ratio: "–".to_owned(),
            target: "≤ 32 MiB",
            // Every round, not only the median, must stay under the bound.
            met: Some(max_rss.is_some_and(|m| m <= 32.0)),
        },
        Row {
            scenario: &title,
            tool: "skopeo copy",
            median: format!("{} wall", fmt_median_secs(&times(Tool::Skopeo))),
            rounds: fmt_list(&times(Tool::Skopeo), fmt_secs),
            ratio: "1".to_owned(),
            target: "",
            met: None,
        },
        Row {
            scenario: &title,
            tool: "skopeo copy",
            median: format!(
                "{} peak RSS",
                median(&rss(Tool::Skopeo)).map_or("–".to_owned(), fmt_mib)
            ),
            rounds: fmt_list(&rss(Tool::Skopeo), fmt_mib),
            ratio: "–".to_owned(),
            target: "",
            met: None,
        },
        Row {
            scenario: &title,
            tool: "raw pipe (`curl | curl`)",
            median: format!("{} wall", fmt_median_secs(&times(Tool::Pipe))),
            rounds: fmt_list(&times(Tool::Pipe), fmt_secs),
            ratio: "–".to_owned(),
            target: "",
            met: None,
        },
    ];

    let mut also = String::from(
        "| tool | throughput (median) | CPU user+sys (median) | peak RSS (median) | exit codes |\n\
         |---|---|---|---|---|\n",
    );
    for tool in Tool::ALL {
        let measured = runs(tool);
        let name = match tool {
            Tool::Regmirror => "regmirror --once".to_owned(),
            Tool::Skopeo => format!(
                "skopeo copy ({})",
                skopeo_version.trim_start_matches("skopeo ")
            ),
            Tool::Pipe => "raw pipe (bash, 3 × curl)".to_owned(),
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
    for tool in Tool::ALL {
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
