//! The daemon's HTTP endpoint against clients that misbehave and edits that break: a client
//! that never finishes its headers cannot keep the daemon from stopping, hundreds of idle
//! connections cannot take `/healthz` down, nor can connections that never send their headers
//! keep liveness probes out, bodies sent to `POST /sync` unauthenticated cost no memory, a
//! broken edit's secret never reaches `/healthz` or the log, and the bearer scheme is read
//! case-insensitively.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use harness::daemon::{eventually, http, replace_config, server_address, PATIENCE};
use harness::*;

/// A daemon with its endpoint on and nothing scheduled: only the endpoint is exercised.
fn endpoint_config(sandbox: &Sandbox, server: &str) {
    sandbox.write_config(&format!(
        "images = [\"127.0.0.1:9/app:1\"]\n[defaults]\ntarget = \"127.0.0.1:9/m\"\nrun_on_start = false\n\
         [server]\nlisten = \"127.0.0.1:0\"\n{server}"
    ));
}

/// Opens a connection and sends half a request's headers, never the rest.
fn half_a_request(address: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    stream
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off_and_cannot_hold_the_stop() {
    let sandbox = Sandbox::new();
    endpoint_config(&sandbox, "");
    let mut daemon = sandbox.regmirror().start();
    let address = server_address(&mut daemon);

    // One stalls and is cut off after the header deadline.
    let mut stalled = half_a_request(&address);
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let cut_off = started.elapsed();
    assert!(
        cut_off < Duration::from_secs(20),
        "still connected after {cut_off:?}"
    );

    // Another stalls, and the daemon is stopped meanwhile: it exits within its bound.
    let _held = half_a_request(&address);
    std::thread::sleep(Duration::from_millis(200));
    let stopping = Instant::now();
    daemon.terminate();
    let run = daemon.wait(Duration::from_secs(30));
    run.assert_success();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
}

/// `regmirror` (the daemon) under `ulimit -n limit`, as `LimitNOFILE=` would set it.
fn daemon_with_file_limit(sandbox: &Sandbox, limit: u32) -> Spawned {
    let inner = sandbox.regmirror();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\""))
        .arg(inner.get_program())
        .current_dir(sandbox.path())
        .stdin(std::process::Stdio::null());
    command.env_clear();
    for (name, value) in inner.get_envs() {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    for (name, value) in std::env::vars_os() {
        let cleared = inner.get_envs().any(|(n, _)| n == name.as_os_str());
        if !cleared {
            command.env(&name, value);
        }
    }
    command.start()
}

#[test]
fn hundreds_of_idle_connections_do_not_take_healthz_down() {
    let sandbox = Sandbox::new();
    endpoint_config(&sandbox, "");
    // Descriptors for a few dozen connections more than the daemon's own, no more.
    let mut daemon = daemon_with_file_limit(&sandbox, 160);
    let address = server_address(&mut daemon);
    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    assert!(idle.len() >= 200, "only {} connected", idle.len());

    // While they stay open, /healthz answers (within the header deadline, as the idle
    // connections the daemon took are cut off and the rest were closed at once).
    let client = http();
    eventually(
        &daemon,
        "/healthz answers beside 300 idle connections",
        || {
            client
                .get(format!("http://{address}/healthz"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        },
    );
    drop(idle);
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}

#[test]
fn a_broken_edit_never_shows_its_secret_in_healthz_the_status_page_or_the_log() {
    let sandbox = Sandbox::new();
    endpoint_config(&sandbox, "");
    let mut daemon = sandbox.regmirror().start();
    let address = server_address(&mut daemon);
    let secret = "Sup3r-S3cret-Pa55";
    // A password left without its username, and a misspelt one.
    let broken = format!(
        "images = [\"127.0.0.1:9/app:1\"]\n[defaults]\ntarget = \"127.0.0.1:9/m\"\nrun_on_start = false\n\
         [server]\nlisten = \"127.0.0.1:0\"\n[registries.\"x.io\"]\npassword = \"{secret}\"\n"
    );
    replace_config(&sandbox, &broken);
    let client = http();
    let health = || -> serde_json::Value {
        let answer = client.get(format!("http://{address}/healthz")).send();
        answer.unwrap().json().unwrap()
    };
    eventually(&daemon, "the broken edit is refused", || {
        health()["config_error"].is_string()
    });
    let error = health()["config_error"].as_str().unwrap().to_string();
    assert!(
        error.ends_with(
            "mirrors.toml:8:12: registries.\"x.io\".password is set but registries.\"x.io\".username is not"
        ),
        "{error}"
    );
    replace_config(
        &sandbox,
        &broken.replace("password = ", "username = \"u\"\npasswrod = "),
    );
    eventually(&daemon, "the second broken edit is refused", || {
        health()["config_error"]
            .as_str()
            .is_some_and(|e| e.contains("passwrod"))
    });
    let page = client.get(format!("http://{address}/")).send().unwrap();
    let page = page.text().unwrap();
    assert!(
        page.contains("id=\"config-error\"") && page.contains("passwrod"),
        "{page}"
    );
    assert!(!page.contains(secret), "{page}");
    daemon.terminate();
    let run = daemon.wait(PATIENCE);
    assert!(
        run.stderr.contains("password = \"<redacted>\""),
        "{}",
        run.stderr
    );
    assert!(!run.output().contains(secret), "{}", run.output());
    assert!(!error.contains(secret));
}

#[test]
fn the_bearer_scheme_is_read_whatever_its_case() {
    let sandbox = Sandbox::new();
    endpoint_config(&sandbox, "sync_token = \"t0ken\"\n");
    let mut daemon = sandbox.regmirror().start();
    let address = server_address(&mut daemon);
    let client = http();
    for (scheme, status) in [("bearer", 202), ("BEARER", 202), ("Basic", 401)] {
        let answer = client
            .post(format!("http://{address}/sync"))
            .header("Authorization", format!("{scheme} t0ken"))
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), status, "{scheme}");
    }
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}

/// Keeps a connection open that never finishes its headers, opening another as soon as the
/// daemon closes it, until `stop`.
fn keep_a_half_request_open(address: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut stream = half_a_request(address);
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
                _ => break, // closed by the daemon
            }
        }
    }
}

#[test]
fn connections_that_never_send_their_headers_cannot_keep_liveness_probes_out() {
    let sandbox = Sandbox::new();
    endpoint_config(&sandbox, "");
    let mut daemon = sandbox.regmirror().start();
    let address = server_address(&mut daemon);
    // As many as the daemon serves at once, each reopened the moment it is closed.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let (address, stop) = (address.clone(), stop.clone());
            thread::spawn(move || keep_a_half_request_open(&address, &stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(500));

    // The kubelet's probe: a new connection each time, 1 s to answer.
    let probe = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut answered = 0;
    for _ in 0..20 {
        let answer = probe.get(format!("http://{address}/healthz")).send();
        if answer.is_ok_and(|a| a.status().is_success()) {
            answered += 1;
        }
        thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in flood {
        attacker.join().unwrap();
    }
    eprintln!("{answered} of 20 probes answered");
    assert!(
        answered >= 19,
        "{answered} of 20 probes answered\n{}",
        daemon.stderr()
    );
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}

/// Sends a `POST /sync` with `headers` and a body of `size` bytes (chunked if no
/// `Content-Length` is among the headers) while reading the answer; its status, or 0 if the
/// daemon closed the connection without one.
fn post_sync_body(address: &str, headers: &str, size: usize) -> u16 {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let answer = thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
        status.unwrap_or(0)
    });
    let chunked = !headers.contains("Content-Length");
    let framing = if chunked {
        "Transfer-Encoding: chunked\r\n"
    } else {
        ""
    };
    let head =
        format!("POST /sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}{headers}\r\n");
    let chunk = vec![b'{'; 64 * 1024];
    let mut sent = stream.write_all(head.as_bytes());
    for _ in 0..size / chunk.len() {
        if sent.is_err() {
            break; // the daemon stopped reading: it answered
        }
        sent = if chunked {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            stream.write_all(&framed)
        } else {
            stream.write_all(&chunk)
        };
    }
    if chunked && sent.is_ok() {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
    answer.join().unwrap()
}

#[test]
fn bodies_posted_to_sync_are_read_only_when_signed_and_only_up_to_a_mebibyte() {
    let sandbox = Sandbox::new();
    endpoint_config(
        &sandbox,
        "sync_token = \"t0ken\"\nwebhook_secret = \"hook\"\n",
    );
    let mut daemon = sandbox.regmirror().start();
    let address = server_address(&mut daemon);
    let idle = daemon.peak_rss_kib().unwrap();
    let size = 2 * 1024 * 1024;
    let length = format!("Content-Length: {size}\r\n");
    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "ab".repeat(32));
    // 63 at once: unauthenticated, a wrong token, a (wrong) signature announcing its length,
    // and one sending its body chunked.
    let kinds = [
        (length.clone(), 401),
        (format!("{length}Authorization: Bearer nope\r\n"), 401),
        (format!("{length}{signature}"), 413),
        (signature.clone(), 413),
    ];
    let attack: Vec<_> = (0..63)
        .map(|n| {
            let (headers, expected) = kinds[n % kinds.len()].clone();
            let address = address.clone();
            thread::spawn(move || (post_sync_body(&address, &headers, size), expected))
        })
        .collect();
    let answers: Vec<(u16, u16)> = attack.into_iter().map(|a| a.join().unwrap()).collect();
    let peak = daemon.peak_rss_kib().unwrap();
    eprintln!(
        "idle {} MiB, peak {} MiB after 63 bodies of 2 MiB",
        idle / 1024,
        peak / 1024
    );
    // (Every body read whole: 115 MiB in the debug build, 144 MB in a release one.)
    assert!(
        peak < 64 * 1024,
        "peak resident memory {} MiB, over 64 MiB",
        peak / 1024
    );
    for (status, expected) in &answers {
        assert!(
            *status == *expected || *status == 0,
            "answered {status}, not {expected}: {answers:?}"
        );
    }
    assert!(
        answers.iter().filter(|(status, _)| *status != 0).count() >= 60,
        "{answers:?}"
    );

    // A webhook signed right is still read and acted on.
    let body = br#"{"zen":"Design for failure."}"#;
    let ping = harness::daemon::deliver_signed(&format!("http://{address}"), b"hook", "ping", body);
    assert_eq!(ping.status().as_u16(), 200);
    assert!(ping.text().unwrap().contains("pong"));
    daemon.terminate();
    daemon
        .wait(PATIENCE)
        .assert_success()
        .assert_peak_rss_under(64);
}
