//! Running a tool and measuring it.
//!
//! [`measure`] runs a command under GNU `/usr/bin/time -f '%M %U %S'`: peak RSS is the child's
//! `ru_maxrss` as `wait4` reports it (exact, not sampled), with its user and system CPU. Wall
//! time is taken here, from spawn to exit, polling every millisecond ([`run_timed`]).
//! [`regmirror_in`] and [`skopeo`] give the two tools the same clean environment.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, Run, RunExt, Sandbox};

/// GNU time: its `%M` is the exact peak RSS of the child, where polling `/proc` could miss it.
const TIME: &str = "/usr/bin/time";
/// How long one measured run may take before it is killed and reported as timed out.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// One run of one tool.
#[derive(Debug, Clone)]
pub struct Measured {
    pub took: Duration,
    /// Exit code; `None` when killed by a signal or the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// Peak resident set of the tool's process, in KiB (GNU time's `%M`).
    pub peak_rss_kib: Option<u64>,
    /// User plus system CPU time of the tool.
    pub cpu: Option<Duration>,
    pub output: String,
}

impl Measured {
    pub fn ok(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// Runs `inner` under GNU time to its end (or [`RUN_TIMEOUT`]), timing it from here.
/// `stats` is a scratch file for time's report.
pub fn measure(inner: &Command, stats: &Path) -> Measured {
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
    let (run, took, timed_out) = run_timed(&mut command, RUN_TIMEOUT);
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

/// Runs `command` to its end or until `timeout` has passed, then kills it, without panicking:
/// what it printed, how long it ran (from spawn to exit, polled every millisecond), and
/// whether it timed out.
pub fn run_timed(command: &mut Command, timeout: Duration) -> (Run, Duration, bool) {
    let (mut runs, took, timed_out) = run_timed_together(&mut [command], timeout);
    (runs.remove(0), took, timed_out)
}

/// [`run_timed`] for several commands started together (shards of one list, say): timed from
/// the first spawn to the last exit; any still running at `timeout` are killed.
pub fn run_timed_together(
    commands: &mut [&mut Command],
    timeout: Duration,
) -> (Vec<Run>, Duration, bool) {
    let started = Instant::now();
    let mut children: Vec<_> = commands.iter_mut().map(|c| c.start()).collect();
    while children.iter_mut().any(|c| c.is_running()) && started.elapsed() < timeout {
        thread::sleep(Duration::from_millis(1));
    }
    let took = started.elapsed();
    let mut timed_out = false;
    let runs = children
        .into_iter()
        .map(|mut child| {
            if child.is_running() {
                timed_out = true;
                // Under `time`, the tool is its child, and would outlive a kill of `time`.
                kill_children_of(child.pid());
                child.kill()
            } else {
                child.wait(Duration::from_secs(5))
            }
        })
        .collect();
    (runs, took, timed_out)
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
pub fn regmirror_in(sandbox: &Sandbox) -> Command {
    let command = sandbox.regmirror();
    match std::env::var_os("BENCH_REGMIRROR") {
        Some(program) => {
            let args: Vec<OsString> = command.get_args().map(OsStr::to_owned).collect();
            rebuild(&command, &program, &args)
        }
        None => command,
    }
}

/// User plus system CPU that process `pid` has used so far (fields 14 and 15 of
/// `/proc/PID/stat`, in clock ticks of `getconf CLK_TCK`).
pub fn process_cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').expect("a command name in /proc/PID/stat") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> u64 { fields[i - 3].parse().expect("a tick count") };
    let per_second: u64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    Duration::from_secs_f64((ticks(14) + ticks(15)) as f64 / per_second as f64)
}

/// SIGKILLs the direct children of `pid` (all of them started by this test).
fn kill_children_of(pid: u32) {
    let children =
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace() {
        let _ = Command::new("kill").args(["-s", "KILL", child]).status();
    }
}

/// `/usr/bin/time` must be GNU time; `scripts/bench` installs Debian's `time` package. With
/// `skopeo`, skopeo must be installed too, and its version is returned.
pub fn require_tools(skopeo: bool) -> Option<String> {
    let time = Command::new(TIME).args(["-f", "%M", "true"]).output();
    assert!(
        time.is_ok_and(|out| out.status.success()),
        "{TIME} is missing or not GNU time: install it with `apt-get install time`"
    );
    skopeo.then(skopeo_version)
}

/// skopeo's `--version` line (`skopeo version 1.9.3`); panics if skopeo is missing.
pub fn skopeo_version() -> String {
    match Command::new("skopeo").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!("skopeo is missing: install it with `apt-get install skopeo`"),
    }
}

/// skopeo with a clean environment like the harness gives regmirror: private HOME, no
/// proxies or auth files; `args` come after `skopeo --policy <accept anything>`.
pub fn skopeo(sandbox: &Sandbox, args: &[String]) -> Command {
    let policy = sandbox.write_file(
        "policy.json",
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    let mut command = harness::cli::skopeo(sandbox.path());
    command.arg("--policy").arg(policy).args(args);
    command
}

/// Owned arguments, for [`skopeo`] and for showing its command line.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}
