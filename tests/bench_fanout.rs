//! Benchmark, scenarios 8 and 9: what a copy is, beyond one source and one target.
//!
//! 8. Fan-out: the same images copied into one target and into two at once (`targets`):
//!    wall time, and the source's pulls and blob reads. Target: two targets cost at most
//!    1.25 × the time of one, and exactly the pulls of one.
//! 9. A platform subset: an eight-platform index, all of it against two platforms
//!    (`platforms = ["linux/amd64", "linux/arm64"]`), beside `skopeo copy --multi-arch all`
//!    (skopeo cannot copy a subset under a valid index: `--multi-arch system` copies one
//!    platform and drops the index, so it is shown too). Pulls, bytes moved, wall time.
//!
//! Every copy goes into fresh target registries; one counted round through proxies gives the
//! request counts, timed rounds talk to the registries directly.
//!
//! Ignored by default: `scripts/bench fanout` runs it in release mode.

mod bench;
mod harness;

use std::fmt::Write as _;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bench::measure::{
    measure, process_cpu, regmirror_in, require_tools, skopeo, strings, Measured,
};
use bench::report::{
    exits, fmt_bytes, fmt_list, fmt_median_secs, fmt_mib, fmt_secs, median, publish, render_rows,
    rss_mib, secs, Row,
};
use bench::{Settings, MIB};
use harness::*;

/// Source requests of one run: pulls, blob GETs, bytes of blobs served.
#[derive(Debug, Default, Clone, Copy)]
struct Read {
    pulls: usize,
    blob_gets: usize,
}

fn read(proxy: &Proxy) -> Read {
    Read {
        pulls: proxy.manifest_gets(),
        blob_gets: proxy.blob_gets(),
    }
}

/// The fan-out corpus: `images` two-platform images of three 1 MiB layers each.
fn fan_corpus(settings: &Settings) -> (Registry, Vec<String>) {
    let source = Registry::start();
    let count = if settings.quick { 4 } else { 20 };
    let size = if settings.quick { 64 * 1024 } else { MIB };
    let mut refs = Vec::new();
    for n in 0..count {
        let image = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 3, size);
        let repo = format!("bench/fan{n:02}");
        image.push(&source, &repo, "1");
        refs.push(format!("{repo}:1"));
    }
    (source, refs)
}

/// `regmirror --once` copying `refs` from `source` into every target (fresh registries).
fn fan_run(source: &str, refs: &[String], targets: &[&str]) -> Measured {
    let sandbox = Sandbox::new();
    let images: Vec<String> = refs.iter().map(|r| format!("\"{source}/{r}\"")).collect();
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}/mirror\"")).collect();
    let path = sandbox.write_config(&format!(
        "images = [{}]\n[defaults]\ntargets = [{}]\n",
        images.join(", "),
        targets.join(", ")
    ));
    let mut command = regmirror_in(&sandbox);
    command.arg("--once").arg("--config").arg(path);
    measure(&command, &sandbox.path().join("time.txt"))
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_8_two_targets_from_one_pull() {
    let settings = Settings::from_env();
    require_tools(false);
    let (source, refs) = fan_corpus(&settings);

    // Counted round: one target, then two, through a proxy before the source.
    let proxy = Proxy::start(source.host());
    let one_target = Registry::start();
    let counted_one = fan_run(proxy.host(), &refs, &[one_target.host()]);
    let one = read(&proxy);
    proxy.clear();
    let (a, b) = (Registry::start(), Registry::start());
    let counted_two = fan_run(proxy.host(), &refs, &[a.host(), b.host()]);
    let two = read(&proxy);
    let complete = refs.iter().all(|r| {
        let (repo, tag) = r.split_once(':').unwrap();
        let repo = format!("mirror/{repo}");
        check_complete(&a, &repo, tag).is_ok() && check_complete(&b, &repo, tag).is_ok()
    });

    // Timed rounds, each into fresh targets, one and two alternating: first with the source
    // on this machine, then with the source across a network link, as an upstream is.
    let remote = Proxy::start(source.host());
    let link = Link::new(REMOTE_DELAY, REMOTE_BYTES_PER_SECOND);
    remote.add_rule(move |_: &RequestInfo| Some(Action::Over(Arc::clone(&link))));
    let mut timed = Vec::new();
    for (via, delayed) in [(source.host(), false), (remote.host(), true)] {
        let (mut one_runs, mut two_runs) = (Vec::new(), Vec::new());
        for round in 0..settings.rounds {
            let order: [usize; 2] = if round % 2 == 0 { [1, 2] } else { [2, 1] };
            for count in order {
                let run = timed_run(&source, via, &refs, count);
                if count == 1 {
                    one_runs.push(run);
                } else {
                    two_runs.push(run);
                }
            }
        }
        timed.push((delayed, one_runs, two_runs));
    }

    let counted_ok = counted_one.ok() && counted_two.ok() && complete;
    let title = format!("8. {} two-platform images into two targets", refs.len());
    let remote_link = format!(
        "{} ms and {} away",
        REMOTE_DELAY.as_millis(),
        fmt_rate(REMOTE_BYTES_PER_SECOND)
    );
    let title_remote = format!("{title}, the source {remote_link}");
    let mut rows = Vec::new();
    for (delayed, one_runs, two_runs) in &timed {
        let (t1, t2) = (secs_of(one_runs), secs_of(two_runs));
        let ratio = median(&t2).zip(median(&t1)).map(|(two, one)| two / one);
        let all_ok = counted_ok && one_runs.iter().chain(two_runs).all(|(m, _)| m.ok());
        let scenario = if *delayed { &title_remote } else { &title };
        rows.push(Row {
            scenario,
            tool: "regmirror --once, one target",
            median: format!("{} wall", fmt_median_secs(&t1)),
            rounds: fmt_list(&t1, fmt_secs),
            ratio: "1".to_owned(),
            target: "",
            met: None,
        });
        rows.push(Row {
            scenario,
            tool: "regmirror --once, two targets",
            median: format!("{} wall", fmt_median_secs(&t2)),
            rounds: fmt_list(&t2, fmt_secs),
            ratio: ratio.map_or("–".to_owned(), |r| format!("{r:.2} × one target")),
            target: "≤ 1.25 × one target",
            met: Some(all_ok && ratio.is_some_and(|r| r <= 1.25)),
        });
    }
    rows.push(Row {
        scenario: &title,
        tool: "regmirror --once, two targets",
        median: format!(
            "{} pulls, {} blob reads (one target: {}, {})",
            two.pulls, two.blob_gets, one.pulls, one.blob_gets
        ),
        rounds: "counted round".to_owned(),
        ratio: "–".to_owned(),
        target: "the pulls of one target",
        met: Some(two.pulls == one.pulls && two.blob_gets == one.blob_gets),
    });
    let mut section = format!(
        "## 8. Two targets from one pull\n\n{} images, each an index over two platforms with \
         three layers of {} (random), copied into one fresh target, then into two fresh targets \
         at once (`targets = [a, b]`). {} timed rounds of each after one counted round through \
         a proxy before the source; then the same rounds with the source across a network \
         link: a proxy before it waits {} ms before each answer and passes every answer's \
         bytes through one shared {} wire. Every registry here shares this machine's cores; \
         an upstream is elsewhere, and it is the time the source takes that the targets' work \
         can overlap with. The proxies run in the benchmark's own process, whose CPU the table \
         below does not count.\n\n",
        refs.len(),
        fmt_bytes(if settings.quick {
            64 * 1024
        } else {
            MIB as u64
        }),
        settings.rounds,
        REMOTE_DELAY.as_millis(),
        fmt_rate(REMOTE_BYTES_PER_SECOND)
    );
    section.push_str(&render_rows(&rows));
    let rss = |runs: &[(Measured, Cpu)]| {
        let measured: Vec<Measured> = runs.iter().map(|(m, _)| m.clone()).collect();
        (
            median(&rss_mib(&measured)).map_or("–".to_owned(), fmt_mib),
            exits(&measured),
        )
    };
    let (_, local_one, local_two) = &timed[0];
    let ((rss_one, exits_one), (rss_two, exits_two)) = (rss(local_one), rss(local_two));
    writeln!(
        section,
        "\nPeak RSS (median, source on this machine): one target {rss_one}, two targets \
         {rss_two}; exit codes: {exits_one}, {exits_two}.\n",
    )
    .unwrap();
    let cpus = |runs: &[(Measured, Cpu)]| -> Vec<Cpu> { runs.iter().map(|(_, c)| *c).collect() };
    let (_, remote_one, remote_two) = &timed[1];
    section.push_str(&cpu_table(&[
        ("one target", &cpus(local_one)),
        ("two targets", &cpus(local_two)),
        (
            &format!("one target, the source {remote_link}"),
            &cpus(remote_one),
        ),
        (
            &format!("two targets, the source {remote_link}"),
            &cpus(remote_two),
        ),
    ]));
    if settings.quick {
        section.push_str("(BENCH_QUICK: reduced sizes.)\n");
    }
    publish(&section, &rows);
}

/// The link to the source in the second half of scenario 8: the wait before each answer (as
/// in scenario 7), and the bandwidth all answers share (400 Mbit/s).
const REMOTE_DELAY: Duration = Duration::from_millis(25);
const REMOTE_BYTES_PER_SECOND: u64 = 50 * MIB as u64;

/// A bandwidth as `50 MiB/s`.
fn fmt_rate(bytes_per_second: u64) -> String {
    format!("{}/s", fmt_bytes(bytes_per_second))
}

/// Wall times of timed runs, in seconds.
fn secs_of(runs: &[(Measured, Cpu)]) -> Vec<f64> {
    runs.iter().map(|(m, _)| m.took.as_secs_f64()).collect()
}

/// One timed run into `count` fresh targets, reading `source` through `via` (its own host or
/// a proxy's), with where its CPU went.
fn timed_run(source: &Registry, via: &str, refs: &[String], count: usize) -> (Measured, Cpu) {
    let targets: Vec<Registry> = (0..count).map(|_| Registry::start()).collect();
    let hosts: Vec<&str> = targets.iter().map(Registry::host).collect();
    let before = process_cpu(source.pid());
    let run = fan_run(via, refs, &hosts);
    let cpu = Cpu {
        regmirror: run.cpu.map_or(0.0, |d| d.as_secs_f64()),
        source: (process_cpu(source.pid()) - before).as_secs_f64(),
        targets: targets
            .iter()
            .map(|t| process_cpu(t.pid()).as_secs_f64())
            .sum(),
        wall: run.took.as_secs_f64(),
    };
    (run, cpu)
}

/// Where one timed run's CPU went, in seconds: regmirror, the source registry during the
/// run, the target registries from their start (fresh for the run).
#[derive(Debug, Clone, Copy)]
struct Cpu {
    regmirror: f64,
    source: f64,
    targets: f64,
    wall: f64,
}

impl Cpu {
    /// The share of the machine's cores that the processes measured kept busy.
    fn busy(&self) -> f64 {
        let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (self.regmirror + self.source + self.targets) / (cores * self.wall)
    }
}

/// The CPU of each configuration's rounds (medians), and how busy that kept the machine.
fn cpu_table(runs: &[(&str, &[Cpu])]) -> String {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = format!(
        "Where the CPU went (medians of the timed rounds; each process's user + system CPU \
         from `/proc/PID/stat`; busy is all of it over {cores} cores × wall time):\n\n\
         | run | regmirror | source registry | target registries | busy |\n\
         |---|---:|---:|---:|---:|\n"
    );
    for (name, cpus) in runs {
        let pick = |f: fn(&Cpu) -> f64| -> Vec<f64> { cpus.iter().map(f).collect() };
        let secs = |f: fn(&Cpu) -> f64| median(&pick(f)).map_or("–".to_owned(), fmt_secs);
        writeln!(
            table,
            "| {name} | {} | {} | {} | {} |",
            secs(|c| c.regmirror),
            secs(|c| c.source),
            secs(|c| c.targets),
            median(&pick(Cpu::busy)).map_or("–".to_owned(), |b| format!("{:.0} %", b * 100.0))
        )
        .unwrap();
    }
    table.push('\n');
    table
}

/// One way of copying the eight-platform index, measured.
struct Subset {
    tool: &'static str,
    runs: Vec<Measured>,
    read: Read,
    bytes: u64,
}

#[test]
#[ignore = "benchmark: run by scripts/bench"]
fn scenario_9_two_of_eight_platforms() {
    let settings = Settings::from_env();
    let skopeo_version = require_tools(true).unwrap_or_default();
    let source = Registry::start();
    let size = if settings.quick { 64 * 1024 } else { MIB };
    let image = ImageBuilder::new(Flavor::Oci)
        .platforms(EIGHT_PLATFORMS)
        .layers(2, size)
        .build();
    image.push(&source, "bench/eight", "1");
    let per_platform = |platforms: &[&str]| -> u64 {
        image.blobs().iter().map(|(_, size)| *size).sum::<u64>() * platforms.len() as u64
            / EIGHT_PLATFORMS.len() as u64
    };

    let regmirror = |platforms: Option<&str>, source_host: &str, target: &str| {
        let sandbox = Sandbox::new();
        let choice = platforms.map_or(String::new(), |p| format!("platforms = [{p}]\n"));
        let path = sandbox.write_config(&format!(
            "[[mirror]]\nsource = \"{source_host}/bench/eight:1\"\ntarget = \"{target}/eight\"\n{choice}"
        ));
        let mut command = regmirror_in(&sandbox);
        command.arg("--once").arg("--config").arg(path);
        measure(&command, &sandbox.path().join("time.txt"))
    };
    let skopeo_copy = |multi_arch: &str, source_host: &str, target: &str| {
        let sandbox = Sandbox::new();
        let command = skopeo(
            &sandbox,
            &strings(&[
                "copy",
                &format!("--multi-arch={multi_arch}"),
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                &format!("docker://{source_host}/bench/eight:1"),
                &format!("docker://{target}/eight:1"),
            ]),
        );
        measure(&command, &sandbox.path().join("time.txt"))
    };
    type Way<'a> = (&'static str, Box<dyn Fn(&str, &str) -> Measured + 'a>, u64);
    let two = "\"linux/amd64\", \"linux/arm64\"";
    let ways: Vec<Way> = vec![
        (
            "regmirror, platforms = [linux/amd64, linux/arm64]",
            Box::new(|s, t| regmirror(Some(two), s, t)),
            per_platform(&["amd64", "arm64"]),
        ),
        (
            "regmirror, every platform",
            Box::new(|s, t| regmirror(None, s, t)),
            per_platform(EIGHT_PLATFORMS),
        ),
        (
            "skopeo copy --multi-arch=all",
            Box::new(|s, t| skopeo_copy("all", s, t)),
            per_platform(EIGHT_PLATFORMS),
        ),
        (
            "skopeo copy --multi-arch=system (one platform, no index)",
            Box::new(|s, t| skopeo_copy("system", s, t)),
            per_platform(&["amd64"]),
        ),
    ];
    let mut measured = Vec::new();
    for (tool, way, bytes) in &ways {
        let proxy = Proxy::start(source.host());
        let counted_target = Registry::start();
        let counted = way(proxy.host(), counted_target.host());
        let read = read(&proxy);
        let mut runs = vec![];
        for _ in 0..settings.rounds {
            let t = Registry::start();
            runs.push(way(source.host(), t.host()));
        }
        runs.push(counted);
        measured.push(Subset {
            tool,
            runs,
            read,
            bytes: *bytes,
        });
    }
    let title = "9. two of eight platforms";
    let mut rows = Vec::new();
    let timed = |subset: &Subset| secs(&subset.runs[..subset.runs.len() - 1]);
    let all = timed(&measured[1]);
    for subset in &measured {
        let times = timed(subset);
        rows.push(Row {
            scenario: title,
            tool: subset.tool,
            median: format!(
                "{} wall; {} pulls, {} blob reads, {} of blobs",
                fmt_median_secs(&times),
                subset.read.pulls,
                subset.read.blob_gets,
                fmt_bytes(subset.bytes)
            ),
            rounds: fmt_list(&times, fmt_secs),
            ratio: median(&times)
                .zip(median(&all))
                .map_or("–".to_owned(), |(t, a)| {
                    format!("{:.2} × every platform", t / a)
                }),
            target: "",
            met: None,
        });
    }
    let subset = &measured[0];
    rows[0].target = "3 pulls, a quarter of the bytes";
    rows[0].met = Some(
        subset.read.pulls == 3
            && subset.read.blob_gets * 4 == measured[1].read.blob_gets
            && subset.runs.iter().all(Measured::ok),
    );
    let mut section = format!(
        "## 9. Two of eight platforms\n\nOne index over eight platforms, each image two layers \
         of {} (random). Each way copies it into a fresh target; {} timed rounds, then one \
         counted through a proxy before the source. {skopeo_version}.\n\n",
        fmt_bytes(size as u64),
        settings.rounds
    );
    section.push_str(&render_rows(&rows));
    let exit_codes: Vec<String> = measured
        .iter()
        .map(|m| format!("{}: {}", m.tool, exits(&m.runs)))
        .collect();
    writeln!(section, "\nExit codes: {}.\n", exit_codes.join("; ")).unwrap();
    if settings.quick {
        section.push_str("(BENCH_QUICK: reduced sizes.)\n");
    }
    publish(&section, &rows);
}
