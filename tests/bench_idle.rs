//! Benchmark, scenario 5 of the performance issue: the idle daemon's memory, and
//! `regmirror check` on a config of 10,000 tags.
//!
//! How it measures: the idle daemon runs with one mirror scheduled far away; its `VmRSS` and
//! `VmHWM` are read from `/proc/<pid>/status` a few seconds after start, then it gets SIGTERM
//! and must exit 0. `check` runs under GNU time (see `tests/bench/measure.rs`) on two shapes of
//! the same number of tags, `images` entries and `[[mirror]]`s of 100 tags, and must count
//! them all. Nothing is copied: the registry started is only the daemon's configured source.
//!
//! Environment (see `tests/bench/mod.rs`): `BENCH_OUT`, `BENCH_SUMMARY`, `BENCH_ROUNDS`,
//! `BENCH_QUICK`, `BENCH_CHECK_TAGS`, `BENCH_REGMIRROR`.
//!
//! Ignored by default: `scripts/bench idle` runs it in release mode and puts its section and
//! summary rows into BENCHMARKS.md.

mod bench;
mod harness;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use bench::measure::{measure, regmirror_in, require_tools, Measured};
use bench::report::{
    cpu_secs, fmt_list, fmt_median_secs, fmt_mib, fmt_secs, median, publish, render_rows, rss_mib,
    secs, Row,
};
use bench::Settings;
use harness::*;

/// How long the idle daemon runs before its RSS is read.
const IDLE_SETTLE: Duration = Duration::from_secs(3);

/// How the binary's own pages stand when the daemon starts. Most of an idle daemon's RSS is
/// the executable's pages, and how many of them a start maps depends on the page cache: a
/// binary read from disk is mapped a read-ahead window at a time, one just written is all in
/// the cache already (in large folios, on kernels that make them) and is mapped in larger runs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Start {
    /// As at boot: the binary's pages are dropped from the page cache first
    /// (`dd iflag=nocache count=0`, `posix_fadvise(DONTNEED)` on the whole file).
    Cold,
    /// A copy of the binary written just before it starts, every page of it cached.
    JustCopied,
}

/// Memory of the idle daemon, in KiB, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
    /// Heap, stacks and relocated data: the process's own.
    anon: u64,
    /// Pages of the executable and libraries, shared with the page cache.
    file: u64,
}

fn memory_kib(pid: u32) -> Memory {
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
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// Starts the daemon with one mirror scheduled far away, waits, reads its memory, stops it.
fn idle_daemon(registry: &Registry, start: Start) -> Memory {
    let sandbox = Sandbox::new();
    let path = sandbox.write_config(&format!(
        "[defaults]\ntarget = \"{host}/mirror\"\nschedule = \"0 3 1 1 *\"\n\
         run_on_start = false\n\n[[mirror]]\nsource = \"{host}/bench/app\"\ntags = [\"v1\"]\n",
        host = registry.host()
    ));
    let measured = regmirror_in(&sandbox);
    // A just-copied binary goes beside the measured one, on its filesystem (the sandbox may
    // be a tmpfs, whose pages count as shared memory rather than file pages).
    let copy = Path::new(measured.get_program()).with_file_name("regmirror-idle-copy");
    let mut command = match start {
        Start::Cold => {
            let evicted = Command::new("dd")
                .arg(format!("if={}", measured.get_program().to_string_lossy()))
                .args(["of=/dev/null", "iflag=nocache", "count=0", "status=none"])
                .status();
            assert!(
                evicted.is_ok_and(|s| s.success()),
                "dd could not drop the binary from the page cache"
            );
            measured
        }
        Start::JustCopied => {
            fs::copy(measured.get_program(), &copy).expect("copy the binary");
            let mut command = harness::cli::sandboxed(Command::new(&copy), sandbox.path());
            command.args(measured.get_args());
            command
        }
    };
    let mut daemon = command.arg("--config").arg(path).start();
    thread::sleep(IDLE_SETTLE);
    assert!(
        daemon.is_running(),
        "the daemon exited early\n{}",
        daemon.stderr()
    );
    let memory = memory_kib(daemon.pid());
    daemon.terminate();
    daemon.wait(Duration::from_secs(10)).assert_success();
    if start == Start::JustCopied {
        let _ = fs::remove_file(&copy);
    }
    memory
}

/// A config of `tags` tags: as many `images` entries, or `[[mirror]]`s of 100 tags each.
fn check_config(tags: usize, as_mirrors: bool) -> String {
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

    let (mut cold, mut copied) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        cold.push(idle_daemon(&registry, Start::Cold));
        copied.push(idle_daemon(&registry, Start::JustCopied));
    }
    let mib = |runs: &[Memory], f: fn(&Memory) -> u64| -> Vec<f64> {
        runs.iter().map(|m| f(m) as f64 / 1024.0).collect()
    };
    let idle_rss = mib(&cold, |m| m.rss);
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
        let path = sandbox.write_config(&check_config(tags, as_mirrors));
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
        tool: "regmirror (daemon), started as at boot",
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
         `/proc/<pid>/status` {} s after start, then SIGTERM (exit 0), {} rounds. Started as \
         at boot: the binary's pages dropped from the page cache first (`dd iflag=nocache \
         count=0`), so the start reads it from disk as a service does after a reboot; just \
         copied: a copy written a moment before, every page cached. `check`: \
         wall time of `regmirror check --config mirrors.toml` (stdout to a pipe), \
         `defaults.schedule = \"0 3 * * *\"` in `Europe/Berlin`, {rounds} runs per shape.\n",
        IDLE_SETTLE.as_secs(),
        settings.rounds
    )
    .unwrap();
    section.push_str(&render_rows(&rows));
    section.push_str("\n| measure | median | rounds |\n|---|---|---|\n");
    for (start, runs) in [("started as at boot", &cold), ("just copied", &copied)] {
        for (what, f) in [
            ("VmRSS", (|m| m.rss) as fn(&Memory) -> u64),
            ("VmHWM (peak since start)", |m| m.hwm),
            ("RssAnon (heap, stacks, relocated data)", |m| m.anon),
            ("RssFile (the binary's and libraries' pages)", |m| m.file),
        ] {
            let values = mib(runs, f);
            writeln!(
                section,
                "| idle daemon, {start}: {what} | {} | {} |",
                median(&values).map_or("–".to_owned(), fmt_mib),
                fmt_list(&values, fmt_mib)
            )
            .unwrap();
        }
    }
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
