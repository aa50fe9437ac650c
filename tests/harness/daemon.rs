//! The daemon as its tests drive it: started and waited for, its HTTP endpoint found in its
//! log, conditions polled with patience, mirrors.toml replaced the way editors do.

use std::time::{Duration, Instant};

use super::cli::{RunExt, Sandbox, Spawned};

/// Long enough for a loaded CI machine; the conditions usually hold within a few seconds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `condition` every 50 ms until it holds; panics with `what` after [`PATIENCE`].
#[track_caller]
pub fn eventually(daemon: &Spawned, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "not within {PATIENCE:?}: {what}\n--- stderr ---\n{}",
        daemon.stderr()
    );
}

/// Starts the daemon on the sandbox's mirrors.toml and waits until it is scheduling.
pub fn start_daemon(sandbox: &Sandbox) -> Spawned {
    let mut daemon = sandbox.regmirror().start();
    assert!(
        daemon.wait_for_output("running: ", PATIENCE),
        "the daemon did not start\n{}",
        daemon.stderr()
    );
    daemon
}

/// Replaces mirrors.toml the way editors and config managers do: a new file renamed over it.
pub fn replace_config(sandbox: &Sandbox, toml: &str) {
    let temp = sandbox.write_file(".mirrors.toml.swp", toml);
    std::fs::rename(&temp, sandbox.path().join("mirrors.toml")).expect("rename over mirrors.toml");
}

/// The address the daemon's HTTP endpoint is serving on, from its log.
pub fn server_address(daemon: &mut Spawned) -> String {
    daemon.http_address(PATIENCE)
}

/// A blocking client that gives up after 10 s.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET {base}/metrics`: the metrics' text.
pub fn metrics(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// `GET {base}/healthz`: its JSON.
pub fn health(base: &str) -> serde_json::Value {
    http()
        .get(format!("{base}/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Posts `body` to `{base}/sync` as GitHub delivers a webhook: `X-GitHub-Event: event`, and
/// `X-Hub-Signature-256` the HMAC-SHA256 of the body keyed with `secret`.
pub fn deliver_signed(
    base: &str,
    secret: &[u8],
    event: &str,
    body: &[u8],
) -> reqwest::blocking::Response {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    http()
        .post(format!("{base}/sync"))
        .header("X-GitHub-Event", event)
        .header("X-Hub-Signature-256", signature)
        .header("Content-Type", "application/json")
        .body(body.to_vec())
        .send()
        .unwrap()
}
