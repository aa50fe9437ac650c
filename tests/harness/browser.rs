//! A real browser: Debian's `chromium`, headless, loading a page as a person's browser does.
//! `--dump-dom` prints the document as the browser parsed it (elements as `<tag …>`, text
//! with its `<` written `&lt;`), so a test reads back what the browser built, not what the
//! server sent; `--screenshot` keeps a picture of it. The browser's console log (where a
//! Content-Security-Policy violation is reported) comes back with each load.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Long enough for a first start of chromium on a loaded CI machine.
const LOAD: Duration = Duration::from_secs(90);

/// What the browser made of a page.
#[derive(Debug)]
pub struct Loaded {
    /// The document as the browser built it, serialized.
    pub dom: String,
    /// The browser's log, console messages included.
    pub log: String,
}

/// Chromium, found on `PATH`; a test that needs it and cannot find it fails saying how to
/// install it (never skips).
pub fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        if let Some(found) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
        {
            return found;
        }
    }
    panic!(
        "chromium not found on PATH: the status page is tested in a real browser. Install it \
         with `apt-get install chromium` (Debian), or run scripts/test, which installs it"
    );
}

/// Loads `url` headless at a phone's width and returns its DOM and the browser's log.
pub fn dump_dom(url: &str) -> Loaded {
    let output = run(&["--dump-dom", url]);
    Loaded {
        dom: String::from_utf8_lossy(&output.stdout).into_owned(),
        log: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Loads `url` headless in a window of `width` × `height` and saves a PNG of it at `path`.
pub fn screenshot(url: &str, path: &Path, (width, height): (u32, u32)) {
    let _ = std::fs::remove_file(path);
    let shot = format!("--screenshot={}", path.display());
    let size = format!("--window-size={width},{height}");
    run(&[&shot, &size, url]);
    assert!(
        path.is_file(),
        "chromium wrote no screenshot at {}",
        path.display()
    );
}

/// Chromium headless with `args`, in a profile of its own (so tests can run side by side),
/// logging its console to stderr; its output goes to files, so a large page cannot fill a
/// pipe nobody reads while the test waits. Panics if it fails or outlasts [`LOAD`].
fn run(args: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("a chromium profile directory");
    let file = |name: &str| {
        let path = profile.path().join(name);
        (std::fs::File::create(&path).expect("an output file"), path)
    };
    let ((stdout, stdout_path), (stderr, stderr_path)) = (file("stdout"), file("stderr"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ))
        .args(args)
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > LOAD {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {args:?} took over {LOAD:?}\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: std::fs::read(&stdout_path).expect("chromium's stdout"),
        stderr: std::fs::read(&stderr_path).expect("chromium's stderr"),
    };
    assert!(
        output.status.success(),
        "chromium {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
