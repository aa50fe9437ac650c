//! The status lines of a `--once` pass at a terminal, read from a real pseudo-terminal
//! (`script`), and their absence everywhere else.

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::hub::{HeaderStyle, PullLimit, PullLimitOptions};
use harness::proxy::{Action, RequestInfo};
use harness::*;
use regex::Regex;

/// A registry behind a budget of four pulls per six seconds, with two two-platform images
/// (six pulls): a pass has to wait once for it.
struct Throttled {
    _upstream: Registry,
    proxy: Proxy,
    name: &'static str,
}

impl Throttled {
    /// Images `<name>/app0:1` and `<name>/app1:1`.
    fn start(name: &'static str, headers: HeaderStyle) -> Throttled {
        let upstream = Registry::start();
        let proxy = Proxy::start(upstream.host());
        let (rule, _log) = PullLimit::new(PullLimitOptions {
            limit: 4,
            window: Duration::from_secs(6),
            headers,
            ..PullLimitOptions::default()
        });
        proxy.add_rule(rule);
        for i in 0..2 {
            let image = Image::multi_arch(Flavor::Docker, &["linux/amd64", "linux/arm64"], 1, 4096);
            image.push(&upstream, &format!("{name}/app{i}"), "1");
        }
        Throttled {
            _upstream: upstream,
            proxy,
            name,
        }
    }

    fn images(&self) -> Vec<String> {
        (0..2)
            .map(|i| format!("\"{}/{}/app{i}:1\"", self.proxy.host(), self.name))
            .collect()
    }
}

/// `regmirror args` run by `script` on a pseudo-terminal of 120 columns: everything the
/// terminal was sent, stdout and stderr together, with the run.
fn on_a_terminal(sandbox: &Sandbox, args: &str) -> (Run, String) {
    harness::runtimes::require("script", "bsdutils");
    let binary = env!("CARGO_BIN_EXE_regmirror");
    let typescript = sandbox.path().join("typescript");
    let mut script = harness::cli::sandboxed(Command::new("script"), sandbox.path());
    script
        .env("TERM", "xterm")
        .args(["--quiet", "--return", "--flush", "--command"])
        .arg(format!("stty cols 120 rows 40; exec {binary} {args}"))
        .arg(&typescript);
    let run = script.run();
    let screen = std::fs::read_to_string(&typescript)
        .unwrap_or_else(|e| panic!("script wrote no typescript ({e}): {}", run.output()));
    (run, screen)
}

#[test]
fn a_pass_at_a_terminal_shows_where_it_is_and_when_each_paused_registry_goes_on() {
    let said = Throttled::start("said", HeaderStyle::DockerHubWithReset);
    let unsaid = Throttled::start("unsaid", HeaderStyle::DockerHub);
    let target = Registry::start();
    let sandbox = Sandbox::new();
    let mut images = said.images();
    images.extend(unsaid.images());
    sandbox.write_config(&format!(
        "images = [{}]\n[defaults]\ntarget = \"{}\"\n",
        images.join(", "),
        target.host()
    ));
    let (run, screen) = on_a_terminal(&sandbox, "--once");
    run.assert_success();

    let status = Regex::new(r"images [0-3] of 4(: \d (mirrored|unchanged))?").unwrap();
    assert!(status.is_match(&screen), "no status line: {screen}");
    assert!(screen.contains(" streamed"), "no bytes: {screen}");
    // The registry that says when its budget resets: the time of the next pull.
    let at = Regex::new(&format!(
        r"{}: pull budget spent, next pull at \d\d:\d\d:\d\d \(in \d+\.\d s\)",
        regex::escape(said.proxy.host())
    ))
    .unwrap();
    assert!(at.is_match(&screen), "no reset time: {screen}");
    // The one that gives only its window (Docker Hub): the latest time, and the checks.
    let latest = Regex::new(&format!(
        r"{}: pull budget spent, next pull by \d\d:\d\d:\d\d \(in \d+\.\d s\), sooner if a check \(every \d+\.\d s\) finds budget",
        regex::escape(unsaid.proxy.host())
    ))
    .unwrap();
    assert!(latest.is_match(&screen), "no latest time: {screen}");
    // Log lines are still printed, above the view.
    assert!(
        screen.contains("pull budget spent: pausing"),
        "no log: {screen}"
    );
    // The view is gone before the report: nothing of it after the report's first line.
    let report = screen
        .find(&format!("{}: 6 pulls", said.proxy.host()))
        .or_else(|| screen.find(&format!("{}: 6 pulls", unsaid.proxy.host())))
        .unwrap_or_else(|| panic!("no report: {screen}"));
    let after = &screen[report..];
    assert!(
        after.contains("mirrored 4, unchanged 0, failed 0"),
        "{screen}"
    );
    assert!(
        !status.is_match(after),
        "the view outlived the pass: {after}"
    );
}

#[test]
fn no_view_in_a_pipe_with_json_logs_or_when_asked() {
    let upstream = Registry::start();
    // Each request slowed, so a pass lasts long enough for the view to be drawn.
    let proxy = Proxy::start(upstream.host());
    proxy.add_rule(|_: &RequestInfo| Some(Action::Delay(Duration::from_millis(100))));
    let target = Registry::start();
    Image::multi_arch(Flavor::Oci, &["linux/amd64"], 1, 1024).push(&upstream, "lib/app", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/lib/app:1\"]\n[defaults]\ntarget = \"{}\"\n",
        proxy.host(),
        target.host()
    ));
    let view = Regex::new(r"planning: |images \d of 1").unwrap();

    // The control: on a terminal the view is drawn.
    let (run, screen) = on_a_terminal(&sandbox, "--once --dry-run");
    run.assert_success();
    assert!(view.is_match(&screen), "no view on a terminal: {screen}");

    for args in [
        "--once --dry-run --no-progress",
        "--once --dry-run --log-format json",
    ] {
        let (run, screen) = on_a_terminal(&sandbox, args);
        run.assert_success();
        assert!(!view.is_match(&screen), "{args}: {screen}");
    }
    // Not a terminal: plain log lines, not a cursor movement among them.
    let run = sandbox.regmirror().args(["--once", "--dry-run"]).run();
    run.assert_success();
    assert!(!view.is_match(&run.stderr), "{}", run.output());
    assert!(!run.stderr.contains('\u{1b}'), "{}", run.output());
}
