//! Running the `regmirror` binary as a subprocess, the way users and schedulers do.
//!
//! Every run gets a private, empty `HOME` and `DOCKER_CONFIG`, so the developer's
//! `~/.docker/config.json`, `REGMIRROR_*`, `RUST_LOG`, AWS profile or proxy settings never
//! change a test's outcome. Runs have a timeout: a hung binary fails the test with its output.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long [`RunExt::run`] lets the binary work before killing it and failing the test.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Variables cleared from the child's environment, in addition to every `REGMIRROR_*` and
/// `AWS_*` variable: they would let the developer's setup leak into a test.
pub const CLEARED: &[&str] = &[
    "RUST_LOG",
    "REGISTRY_AUTH_FILE",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// `regmirror` with a clean environment whose `HOME` is `home` (`DOCKER_CONFIG` is
/// `home/.docker`, created empty). Tests add `REGMIRROR_*`/`AWS_*` variables themselves.
pub fn regmirror(home: &Path) -> Command {
    sandboxed(Command::new(env!("CARGO_BIN_EXE_regmirror")), home)
}

/// `command` (regmirror, or a shell running a recipe's script that calls it) with the clean
/// environment [`regmirror`] gives the binary.
pub fn sandboxed(mut command: Command, home: &Path) -> Command {
    let docker_config = home.join(".docker");
    fs::create_dir_all(&docker_config).expect("create DOCKER_CONFIG dir");
    for (name, _) in std::env::vars_os() {
        let cleared = name
            .to_str()
            .is_some_and(|n| n.starts_with("REGMIRROR_") || n.starts_with("AWS_"));
        if cleared {
            command.env_remove(&name);
        }
    }
    for name in CLEARED {
        command.env_remove(name);
    }
    command
        .env("HOME", home)
        .env("DOCKER_CONFIG", &docker_config)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1")
        .current_dir(home)
        .stdin(Stdio::null());
    command
}

/// A mirrors.toml of `images` (each `repo:tag`) on `source`, under `target`, with `defaults`
/// (more of `[defaults]`, and what follows it) at the end.
pub fn images_config(source: &str, target: &str, images: &[&str], defaults: &str) -> String {
    let list: Vec<String> = images.iter().map(|i| format!("\"{source}/{i}\"")).collect();
    format!(
        "images = [{}]\n[defaults]\ntarget = \"{target}\"\n{defaults}",
        list.join(", ")
    )
}

/// Writes `toml` to `dir/mirrors.toml` and returns its path.
/// Debian's `skopeo`, for side-by-side benchmarks, in a clean environment like regmirror's: a
/// private HOME and config directories under `home`, no proxies or auth files.
pub fn skopeo(home: &Path) -> Command {
    let mut command = Command::new("skopeo");
    for name in CLEARED {
        command.env_remove(name);
    }
    command
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .current_dir(home);
    command
}

pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("mirrors.toml");
    fs::write(&path, toml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A per-test directory that is both `HOME` for the binary and the place for its config.
#[derive(Debug)]
pub struct Sandbox {
    dir: TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("regmirror-test-")
            .tempdir()
            .expect("create sandbox dir");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `regmirror` with this sandbox as `HOME` and working directory.
    pub fn regmirror(&self) -> Command {
        regmirror(self.dir.path())
    }

    /// Writes `mirrors.toml` in the sandbox and returns its path.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        write_config(self.dir.path(), toml)
    }

    /// Writes any file (relative to the sandbox) and returns its path.
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        fs::write(&path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Writes `$DOCKER_CONFIG/config.json` (e.g. `{"auths":{...}}`) as the binary will see it.
    pub fn write_docker_config(&self, json: &str) -> PathBuf {
        self.write_file(".docker/config.json", json)
    }
}

/// The outcome of a finished run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The process's peak resident memory in KiB (`VmHWM`, a high-water mark kept by the
    /// kernel), as last read while it ran; `None` if it ended before it could be read.
    pub peak_rss_kib: Option<u64>,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics, showing both streams, unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "regmirror exited with {:?}, expected {code}\n{}",
            self.code,
            self.output()
        );
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Run {
        self.assert_code(0)
    }

    /// Asserts the report's summary says `summary`, e.g. `mirrored 1, unchanged 0, failed 0`.
    #[track_caller]
    pub fn assert_summary(&self, summary: &str) -> &Run {
        assert!(
            self.stdout.contains(summary),
            "the report does not say {summary:?}\n{}",
            self.output()
        );
        self
    }

    /// The report's `FAILED` lines, one per image that failed.
    pub fn failed_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("FAILED"))
            .collect()
    }

    /// Panics unless the process's peak resident memory stayed under `mib` MiB.
    #[track_caller]
    pub fn assert_peak_rss_under(&self, mib: u64) -> &Run {
        let peak = self
            .peak_rss_kib
            .unwrap_or_else(|| panic!("the peak memory was never read\n{}", self.output()));
        assert!(
            peak < mib * 1024,
            "peak resident memory {} MiB, over {mib} MiB\n{}",
            peak / 1024,
            self.output()
        );
        self
    }

    /// Both streams, labelled, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Running a [`Command`] with captured output and a timeout.
pub trait RunExt {
    /// Runs to completion within [`DEFAULT_TIMEOUT`].
    fn run(&mut self) -> Run;
    /// Runs to completion; kills it and panics with its output after `timeout`.
    fn run_with_timeout(&mut self, timeout: Duration) -> Run;
    /// Starts it in the background, for tests that signal or kill it mid-run.
    fn start(&mut self) -> Spawned;
}

impl RunExt for Command {
    fn run(&mut self) -> Run {
        self.run_with_timeout(DEFAULT_TIMEOUT)
    }

    fn run_with_timeout(&mut self, timeout: Duration) -> Run {
        self.start().wait(timeout)
    }

    fn start(&mut self) -> Spawned {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.get_program()));
        let stdout = Capture::start(child.stdout.take().map(Stream::Out));
        let stderr = Capture::start(child.stderr.take().map(Stream::Err));
        Spawned {
            child,
            stdout,
            stderr,
            peak_rss_kib: None,
        }
    }
}

enum Stream {
    Out(ChildStdout),
    Err(ChildStderr),
}

/// One output stream read on a background thread into a buffer the test can peek at.
#[derive(Debug)]
struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(stream: Option<Stream>) -> Capture {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let reader = stream.map(|mut stream| {
            let buffer = Arc::clone(&buffer);
            thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    let read = match &mut stream {
                        Stream::Out(out) => out.read(&mut chunk),
                        Stream::Err(err) => err.read(&mut chunk),
                    };
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buffer.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            })
        });
        Capture { buffer, reader }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    /// Waits for the stream to close (the child and anything it spawned have exited).
    fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.text()
    }
}

/// A `regmirror` running in the background; killed when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    stdout: Capture,
    stderr: Capture,
    /// The last `VmHWM` read from `/proc`, in KiB.
    peak_rss_kib: Option<u64>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Output so far, without waiting.
    pub fn stdout(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits until stdout or stderr contains `needle`; `false` after `timeout` or if the
    /// process exited without printing it.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return true;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // One last look: output may have landed just before the exit.
                return self.stdout().contains(needle) || self.stderr().contains(needle);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address the daemon's HTTP endpoint serves on, from its `serving /healthz` log line
    /// (so a config can listen on port 0).
    pub fn http_address(&mut self, timeout: Duration) -> String {
        assert!(
            self.wait_for_output("serving /healthz", timeout),
            "{}",
            self.stderr()
        );
        let log = self.stderr();
        let line = log
            .lines()
            .find(|l| l.contains("serving /healthz"))
            .expect("the serving line");
        let at = line.find("address=").expect("an address field") + "address=".len();
        line[at..]
            .split_whitespace()
            .next()
            .expect("an address")
            .to_string()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal by name (`"TERM"`, `"INT"`, `"HUP"`) with `kill(1)`, since the crate
    /// forbids the `unsafe` a direct `libc::kill` needs.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill -s {name}: {e}"));
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// SIGTERM: what schedulers and `docker stop` send.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGKILL, then collects what the process printed.
    pub fn kill(mut self) -> Run {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for killed child");
        self.collect(status)
    }

    /// The process's peak resident memory so far (`VmHWM`), remembered for the [`Run`].
    pub fn peak_rss_kib(&mut self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).ok();
        let now = status.as_deref().and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        });
        self.peak_rss_kib = self.peak_rss_kib.max(now);
        self.peak_rss_kib
    }

    /// Waits for the exit; kills it and panics with its output after `timeout`. The peak
    /// memory is read every 10 ms meanwhile (a high-water mark: no spike is missed, only
    /// one in the last 10 ms).
    pub fn wait(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        loop {
            self.peak_rss_kib();
            match self.child.try_wait().expect("poll child") {
                Some(status) => return self.collect(status),
                None if Instant::now() >= deadline => {
                    let run = self.kill();
                    panic!(
                        "regmirror still running after {timeout:?}; killed it\n{}",
                        run.output()
                    );
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn collect(&mut self, status: ExitStatus) -> Run {
        Run {
            code: status.code(),
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
            peak_rss_kib: self.peak_rss_kib,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
