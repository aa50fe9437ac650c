//! The daemon, driven as a process the way systemd or a user runs it: schedules, live reloads,
//! a clean SIGTERM, the HTTP endpoint and the systemd notifications, against real registries.

mod harness;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::daemon::{eventually, http, replace_config, server_address, start_daemon, PATIENCE};
use harness::*;

/// How many times the log says `needle`.
fn count(daemon: &Spawned, needle: &str) -> usize {
    daemon.stderr().matches(needle).count()
}

#[test]
fn a_two_second_schedule_mirrors_an_image_and_follows_a_moved_tag() {
    let source = Registry::start();
    let target = Registry::start();
    let v1 = Image::single(Flavor::Oci, 2, 4096);
    let v2 = Image::multi_arch(Flavor::Docker, &["linux/amd64", "linux/arm64"], 2, 4096);
    v1.push(&source, "app", "stable");
    let sandbox = Sandbox::new();
    // Not on start: the first copy must come from the schedule.
    sandbox.write_config(&images_config(
        source.host(),
        target.host(),
        &["app:stable"],
        "schedule = \"*/2 * * * * *\"\nrun_on_start = false\n",
    ));
    let daemon = start_daemon(&sandbox);

    eventually(&daemon, "the first scheduled run copies v1", || {
        poll_manifest(&target, "app", "stable").as_deref() == Some(v1.digest())
    });
    assert!(
        daemon.stderr().contains("why=\"schedule\"") || daemon.stderr().contains("why=schedule"),
        "{}",
        daemon.stderr()
    );
    check_complete(&target, "app", "stable").unwrap();

    v2.push(&source, "app", "stable");
    eventually(&daemon, "a later run follows the tag to v2", || {
        poll_manifest(&target, "app", "stable").as_deref() == Some(v2.digest())
    });
    check_complete(&target, "app", "stable").unwrap();
    let unchanged_runs = count(&daemon, "run finished");
    eventually(&daemon, "runs go on, finding nothing to copy", || {
        count(&daemon, "run finished") >= unchanged_runs + 2
    });
    assert!(daemon.stderr().contains("unchanged"), "{}", daemon.stderr());
    // Each line of a scheduled run names its mirror once.
    let nested = daemon
        .stderr()
        .lines()
        .find(|line| line.contains("run finished") && line.matches("mirror{").count() != 1)
        .map(str::to_owned);
    assert_eq!(nested, None, "{}", daemon.stderr());
}

#[test]
fn an_edited_config_adds_an_image_and_a_broken_edit_keeps_the_old_schedule_running() {
    let source = Registry::start();
    let target = Registry::start();
    let app = Image::single(Flavor::Oci, 1, 2048);
    let tool = Image::single(Flavor::Docker, 1, 2048);
    app.push(&source, "app", "1");
    tool.push(&source, "tool", "1");
    let sandbox = Sandbox::new();
    let schedule = "schedule = \"*/2 * * * * *\"\n";
    sandbox.write_config(&images_config(
        source.host(),
        target.host(),
        &["app:1"],
        schedule,
    ));
    let mut daemon = start_daemon(&sandbox);
    eventually(&daemon, "app is mirrored on start", || {
        poll_manifest(&target, "app", "1").is_some()
    });

    // An edit adds an image: it is mirrored without a restart.
    replace_config(
        &sandbox,
        &images_config(source.host(), target.host(), &["app:1", "tool:1"], schedule),
    );
    eventually(&daemon, "the added image is mirrored", || {
        poll_manifest(&target, "tool", "1").as_deref() == Some(tool.digest())
    });
    assert!(
        daemon.stderr().contains("config reloaded"),
        "{}",
        daemon.stderr()
    );

    // A broken edit: logged with its line and column; the daemon and its schedule go on.
    let broken = format!(
        "{}concurrensy = 3\n",
        images_config(source.host(), target.host(), &["app:1", "tool:1"], schedule)
    );
    std::fs::write(sandbox.path().join("mirrors.toml"), broken).unwrap();
    eventually(&daemon, "the broken edit is reported", || {
        daemon.stderr().contains("config not reloaded")
    });
    let log = daemon.stderr();
    assert!(
        log.contains("mirrors.toml:5:1: unknown key `concurrensy`"),
        "{log}"
    );
    let app_v2 = Image::single(Flavor::Oci, 1, 2048);
    app_v2.push(&source, "app", "1");
    eventually(
        &daemon,
        "the old schedule still runs and follows the tag",
        || poll_manifest(&target, "app", "1").as_deref() == Some(app_v2.digest()),
    );
    assert!(daemon.is_running(), "{}", daemon.stderr());
}

#[test]
fn sighup_reloads_and_a_touch_alone_does_not() {
    let source = Registry::start();
    let target = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&source, "app", "1");
    let sandbox = Sandbox::new();
    let config = images_config(source.host(), target.host(), &["app:1"], "");
    sandbox.write_config(&config);
    let daemon = start_daemon(&sandbox);
    eventually(&daemon, "the run on start finishes", || {
        count(&daemon, "run finished") == 1
    });
    // Same bytes written again: nothing to reload.
    sandbox.write_config(&config);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&daemon, "config reloaded"), 0, "{}", daemon.stderr());
    daemon.signal("HUP");
    eventually(&daemon, "SIGHUP reloads", || {
        count(&daemon, "config reloaded") == 1
    });
}

/// A daemon whose first copy (a multi-arch `app:1`) is held at its first blob upload.
struct HeldCopy {
    target: Registry,
    image: Image,
    holder: Holder,
    daemon: Spawned,
    // Kept alive for the test's duration (bind them by name: `..` would drop them at once).
    _source: Registry,
    _proxy: Proxy,
    _sandbox: Sandbox,
}

fn daemon_with_a_held_copy(grace: &str) -> HeldCopy {
    let source = Registry::start();
    let target = Registry::start();
    let proxy = Proxy::start(target.host());
    let image = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 2, 64 * 1024);
    image.push(&source, "app", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&images_config(
        source.host(),
        proxy.host(),
        &["app:1"],
        &format!("shutdown_grace = \"{grace}\"\n"),
    ));
    let holder = proxy.hold_on(|r| r.is_blob_put());
    let daemon = start_daemon(&sandbox);
    assert!(
        holder.wait(PATIENCE),
        "no upload started\n{}",
        daemon.stderr()
    );
    HeldCopy {
        target,
        image,
        holder,
        daemon,
        _source: source,
        _proxy: proxy,
        _sandbox: sandbox,
    }
}

#[test]
fn sigterm_lets_a_copy_under_way_finish_within_the_grace_period_and_exits_0() {
    let HeldCopy {
        target,
        image,
        holder,
        mut daemon,
        _source,
        _proxy,
        _sandbox,
    } = daemon_with_a_held_copy("30s");
    daemon.terminate();
    assert!(daemon.wait_for_output("shutting down", PATIENCE));
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.is_running(), "it waits for the copy under way");
    holder.release();
    let run = daemon.wait(PATIENCE);
    run.assert_success();
    assert_eq!(
        head_manifest(&target, "app", "1").as_deref(),
        Some(image.digest()),
        "{}",
        run.output()
    );
    check_complete(&target, "app", "1").unwrap();
}

#[test]
fn sigterm_abandons_a_stuck_copy_when_the_grace_period_ends_leaving_no_tag() {
    let HeldCopy {
        target,
        holder,
        daemon,
        _source,
        _proxy,
        _sandbox,
        ..
    } = daemon_with_a_held_copy("2s");
    let signalled = Instant::now();
    daemon.terminate();
    let run = daemon.wait(PATIENCE);
    let took = signalled.elapsed();
    run.assert_success();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM with a 2 s grace\n{}",
        run.output()
    );
    assert!(run.stderr.contains("grace period over"), "{}", run.output());
    assert!(
        tags(&target, "app").is_empty(),
        "no tag for the abandoned copy"
    );
    drop(holder);
}

#[test]
fn a_slow_mirror_does_not_hold_up_a_fast_one_and_skips_its_own_overlapping_runs() {
    let source_registry = Registry::start();
    let source = Proxy::start(source_registry.host());
    let target = Registry::start();
    let slow = Image::single(Flavor::Oci, 1, 8192);
    slow.push(&source_registry, "slow", "1");
    let mut fast = Image::single(Flavor::Docker, 1, 1024);
    fast.push(&source_registry, "fast", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        r#"[defaults]
target = "{target}"
concurrency = 2
[[mirror]]
name = "slow"
source = "{source}/slow:1"
schedule = "*/2 * * * * *"
[[mirror]]
name = "fast"
source = "{source}/fast:1"
schedule = "*/2 * * * * *"
"#,
        source = source.host(),
        target = target.host()
    ));
    // The slow mirror's blob download hangs until released.
    let holder = source.hold_on(|r| r.is_blob_get() && r.repo() == "slow");
    let daemon = start_daemon(&sandbox);
    assert!(holder.wait(PATIENCE), "the slow copy never started");

    for round in 0..2 {
        let next = Image::single(Flavor::Docker, 1, 1024);
        next.push(&source_registry, "fast", "1");
        fast = next;
        eventually(
            &daemon,
            &format!("fast mirror round {round} while slow hangs"),
            || poll_manifest(&target, "fast", "1").as_deref() == Some(fast.digest()),
        );
    }
    eventually(&daemon, "the slow mirror's next runs are skipped", || {
        daemon.stderr().contains("previous run still going")
    });
    assert!(tags(&target, "slow").is_empty());
    holder.release();
    eventually(&daemon, "the slow mirror finishes once released", || {
        poll_manifest(&target, "slow", "1").as_deref() == Some(slow.digest())
    });
}

#[test]
fn a_reload_refused_for_a_variables_value_never_shows_the_value() {
    const SECRET: &str = "s3cr3t-pr0xy";
    let sandbox = Sandbox::new();
    let config = |registries: &str| {
        format!(
            "images = [\"nginx:1\"]\n[defaults]\ntarget = \"127.0.0.1:1/m\"\nrun_on_start = false\n\
             [server]\nlisten = \"127.0.0.1:0\"\n{registries}"
        )
    };
    sandbox.write_config(&config(""));
    let mut daemon = sandbox
        .regmirror()
        .env(
            "PROXY_URL",
            format!("https://user:{SECRET}@proxy.example.com/hub"),
        )
        .start();
    let base = format!("http://{}", server_address(&mut daemon));
    replace_config(
        &sandbox,
        &config("[registries.\"docker.io\"]\nendpoint = \"${PROXY_URL}\"\n"),
    );
    eventually(&daemon, "the edit is refused", || {
        daemon.stderr().contains("config not reloaded")
    });
    let health = http()
        .get(format!("{base}/healthz"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&health).unwrap();
    let error = parsed["config_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{health}"));
    assert!(
        error.contains("endpoint \"${PROXY_URL}\": holds credentials"),
        "{error}"
    );
    assert!(!health.contains(SECRET), "{health}");
    assert!(!daemon.stderr().contains(SECRET), "{}", daemon.stderr());
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}

#[test]
fn metrics_and_healthz_change_after_a_pass() {
    let source = Registry::start();
    let target = Registry::start();
    Image::single(Flavor::Oci, 2, 4096).push(&source, "app", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&images_config(
        source.host(),
        target.host(),
        &["app:1"],
        "run_on_start = false\n[server]\nlisten = \"127.0.0.1:0\"\nsync_token = \"${SYNC_TOKEN}\"\n",
    ));
    let mut daemon = sandbox.regmirror().env("SYNC_TOKEN", "t0k3n").start();
    let base = format!("http://{}", server_address(&mut daemon));
    let client = http();

    let metrics = |client: &reqwest::blocking::Client| {
        client
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let before = metrics(&client);
    assert!(!before.contains("regmirror_images_total{"), "{before}");
    let health: serde_json::Value = client
        .get(format!("{base}/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["mirrors"][0]["last_run"], serde_json::Value::Null);

    let answer = client
        .post(format!("{base}/sync"))
        .bearer_auth("t0k3n")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    eventually(&daemon, "the pass shows in /metrics", || {
        metrics(&client).contains("regmirror_images_total{mirror=\"")
    });
    let after = metrics(&client);
    let mirror = format!("{}/app:1", source.host());
    for expected in [
        format!("regmirror_images_total{{mirror=\"{mirror}\",result=\"mirrored\"}} 1"),
        format!("regmirror_runs_total{{mirror=\"{mirror}\",result=\"success\"}} 1"),
        format!("regmirror_run_duration_seconds_count{{mirror=\"{mirror}\"}} 1"),
        format!("regmirror_last_success_timestamp_seconds{{mirror=\"{mirror}\"}}"),
        format!("regmirror_pulls_total{{registry=\"{}\"}} 1", source.host()),
        format!("regmirror_copied_bytes_total{{mirror=\"{mirror}\"}}"),
    ] {
        assert!(after.contains(&expected), "missing {expected}\n{after}");
    }
    let health: serde_json::Value = client
        .get(format!("{base}/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let last = &health["mirrors"][0]["last_run"];
    assert_eq!(last["result"], "ok", "{health}");
    assert_eq!(last["mirrored"], 1, "{health}");
    assert!(health["mirrors"][0]["last_success"].is_string(), "{health}");
}

#[test]
fn sync_needs_a_valid_signature_runs_the_named_mirror_and_ignores_a_replay() {
    let source = Registry::start();
    let target = Registry::start();
    let app = Image::single(Flavor::Oci, 1, 2048);
    app.push(&source, "app", "1");
    Image::single(Flavor::Oci, 1, 2048).push(&source, "other", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&images_config(
        source.host(),
        target.host(),
        &["app:1", "other:1"],
        "run_on_start = false\n[server]\nlisten = \"127.0.0.1:0\"\nwebhook_secret = \"${HOOK_SECRET}\"\n",
    ));
    let mut daemon = sandbox
        .regmirror()
        .env("HOOK_SECRET", "It's a Secret to Everybody")
        .start();
    let base = format!("http://{}", server_address(&mut daemon));
    let client = http();
    let mirror = format!("{}/app:1", source.host());
    let body = r#"{"action":"published","package":{"name":"app"}}"#;
    let sign = |secret: &str, body: &str| {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let post = |signature: Option<String>, delivery: &str| {
        let mut request = client
            .post(format!("{base}/sync"))
            .query(&[("mirror", mirror.as_str())])
            .header("X-GitHub-Delivery", delivery)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("X-Hub-Signature-256", signature);
        }
        request.send().unwrap()
    };

    for wrong in [Some(sign("not the secret", body)), None] {
        let answer = post(wrong, "d-0");
        assert_eq!(answer.status().as_u16(), 401);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&daemon, "run started"), 0, "{}", daemon.stderr());
    assert!(tags(&target, "app").is_empty());

    let answer = post(Some(sign("It's a Secret to Everybody", body)), "d-1");
    assert_eq!(answer.status().as_u16(), 202);
    let started: serde_json::Value = answer.json().unwrap();
    assert_eq!(started["started"][0], mirror.as_str());
    eventually(&daemon, "the signed request runs the mirror", || {
        poll_manifest(&target, "app", "1").as_deref() == Some(app.digest())
    });
    assert!(
        tags(&target, "other").is_empty(),
        "only the named mirror ran"
    );

    // The same delivery sent again, under its own id or a fresh one: answered, not acted on.
    eventually(&daemon, "the run finishes", || {
        count(&daemon, "run finished") == 1
    });
    for delivery in ["d-1", "d-2"] {
        let again = post(Some(sign("It's a Secret to Everybody", body)), delivery);
        assert_eq!(again.status().as_u16(), 200, "{delivery}");
        let answer: serde_json::Value = again.json().unwrap();
        assert!(
            answer["ignored"]
                .as_str()
                .is_some_and(|why| why.starts_with("already handled")),
            "{answer}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&daemon, "run started"), 1, "{}", daemon.stderr());

    let other_body = r#"{"action":"published","package":{"name":"nope"}}"#;
    let unknown = client
        .post(format!("{base}/sync?mirror=nope"))
        .header(
            "X-Hub-Signature-256",
            sign("It's a Secret to Everybody", other_body),
        )
        .body(other_body)
        .send()
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

/// Reads datagrams from a socket standing in for systemd's `$NOTIFY_SOCKET`.
fn notifications(socket: &UnixDatagram, until: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    while !seen.contains(until) && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('|');
        }
    }
    seen
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let source = Registry::start();
    let target = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&source, "app", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&images_config(source.host(), target.host(), &["app:1"], ""));
    let socket_path = sandbox.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = sandbox
        .regmirror()
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .start();

    let seen = notifications(&socket, "READY=1");
    assert!(
        seen.contains("READY=1\nSTATUS=running: 1 mirror (0 scheduled), 1 image"),
        "{seen}"
    );
    let seen = notifications(&socket, "WATCHDOG=1");
    assert!(seen.contains("WATCHDOG=1"), "{seen}");

    daemon.signal("HUP");
    let seen = notifications(&socket, "READY=1");
    let reloading = seen.find("RELOADING=1").unwrap_or_else(|| panic!("{seen}"));
    assert!(seen[reloading..].contains("MONOTONIC_USEC="), "{seen}");
    assert!(seen[reloading..].contains("READY=1"), "{seen}");

    daemon.terminate();
    let seen = notifications(&socket, "STOPPING=1");
    assert!(seen.contains("STOPPING=1"), "{seen}");
    daemon.wait(PATIENCE).assert_success();
    let _ = std::fs::remove_file(Path::new(&socket_path));
}

#[test]
fn a_port_in_use_stops_the_daemon_at_start_with_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"127.0.0.1:9/app:1\"]\n[defaults]\ntarget = \"127.0.0.1:9/m\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    let run = sandbox.regmirror().run();
    run.assert_code(2);
    assert!(
        run.stderr
            .contains(&format!("server.listen: cannot listen on 127.0.0.1:{port}")),
        "{}",
        run.output()
    );
}

#[test]
fn check_accepts_crontab_schedules_prints_the_next_three_runs_and_refuses_a_bad_one() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "images = [\"nginx:stable\"]\n[defaults]\ntarget = \"r.example.com/m\"\nschedule = \"0 3 * * *\"\n\
         [[mirror]]\nsource = \"ghcr.io/org/tool:v1\"\nschedule = \"30 */6 * * 1-5\"\ntimezone = \"America/New_York\"\n\
         [[mirror]]\nname = \"fast\"\nsource = \"ghcr.io/org/fast:v1\"\nschedule = \"*/30 * * * * *\"\n\
         [[mirror]]\nname = \"hourly\"\nsource = \"ghcr.io/org/h:v1\"\nschedule = \"@hourly\"\n",
    );
    let run = sandbox.regmirror().arg("check").run();
    run.assert_success();
    let line = |name: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}\n{}", run.output()))
            .to_string()
    };
    let daily = line("nginx:stable (line 1): \"0 3 * * *\" (UTC), next ");
    assert_eq!(daily.matches(" 03:00:00 UTC").count(), 3, "{daily}");
    let weekdays =
        line("ghcr.io/org/tool:v1 (line 6): \"30 */6 * * 1-5\" (America/New_York), next ");
    assert_eq!(weekdays.matches(":30:00 E").count(), 3, "{weekdays}");
    let fast = line("fast (line 10): \"*/30 * * * * *\" (UTC), next ");
    assert_eq!(
        fast.matches(":00 UTC").count() + fast.matches(":30 UTC").count(),
        3,
        "{fast}"
    );
    let hourly = line("hourly (line 14): \"@hourly\" (UTC), next ");
    assert_eq!(hourly.matches(":00:00 UTC").count(), 3, "{hourly}");

    sandbox.write_config(
        "images = [\"nginx:stable\"]\n[defaults]\ntarget = \"r.example.com/m\"\nschedule = \"0 3 * *\"\n",
    );
    let run = sandbox.regmirror().arg("check").run();
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("mirrors.toml:4:12: defaults.schedule: schedule \"0 3 * *\" has 4 fields"),
        "{}",
        run.output()
    );
}

#[test]
fn a_mirror_with_tag_rules_picks_up_a_tag_published_upstream_at_its_next_run() {
    let source = Registry::start();
    let target = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 1024);
    image.push(&source, "team/app", "1.0.0");
    image.tag(&source, "team/app", "1.1.0");
    image.tag(&source, "team/app", "1.1.0-rc.1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[defaults]\nschedule = \"*/2 * * * * *\"\n[server]\nlisten = \"127.0.0.1:0\"\n\n[[mirror]]\nname = \"app\"\nsource = \"{}/team/app\"\nsemver = \">=1.0.0\"\ntarget = \"{}/app\"\n",
        source.host(),
        target.host()
    ));
    let mut daemon = start_daemon(&sandbox);
    let base = format!("http://{}", server_address(&mut daemon));
    eventually(&daemon, "the first run mirrors the two releases", || {
        tags(&target, "app") == ["1.0.0", "1.1.0"]
    });
    let newer = Image::single(Flavor::Docker, 1, 1024);
    newer.push(&source, "team/app", "1.2.0");
    eventually(&daemon, "a later run finds the new release", || {
        poll_manifest(&target, "app", "1.2.0").as_deref() == Some(newer.digest())
    });
    // The tag that leaves the selection upstream stays in the target.
    assert!(tags(&target, "app").contains(&"1.0.0".to_string()));
    eventually(&daemon, "/healthz reports what the last run listed", || {
        let health: serde_json::Value = http()
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let tags = &health["mirrors"][0]["last_run"]["tags"];
        tags["listed"] == 4
            && tags["selected"] == 3
            && tags["selected_tags"] == serde_json::json!(["1.2.0", "1.1.0", "1.0.0"])
    });
    let metrics = http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("regmirror_tags_selected{mirror=\"app\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "regmirror_tag_list_requests_total{{registry=\"{}\"}}",
            source.host()
        )),
        "{metrics}"
    );
}

#[test]
fn a_github_package_event_runs_the_mirrors_whose_source_is_that_package() {
    let source = Registry::start();
    let target = Registry::start();
    let app = Image::single(Flavor::Oci, 1, 1024);
    app.push(&source, "org/app", "v1");
    Image::single(Flavor::Oci, 1, 1024).push(&source, "org/other", "v1");
    let sandbox = Sandbox::new();
    let (src, dst) = (source.host(), target.host());
    sandbox.write_config(&format!(
        "[defaults]\nrun_on_start = false\ntarget = \"{dst}/m\"\n[server]\nlisten = \"127.0.0.1:0\"\nwebhook_secret = \"hook\"\n\n[[mirror]]\nname = \"app\"\nsource = \"{src}/org/app\"\ninclude = [\"v.*\"]\n\n[[mirror]]\nname = \"other\"\nsource = \"{src}/org/other\"\ninclude = [\"v.*\"]\n"
    ));
    let mut daemon = sandbox.regmirror().start();
    let base = format!("http://{}", server_address(&mut daemon));
    let deliver = |event: &str, body: &str| {
        harness::daemon::deliver_signed(&base, b"hook", event, body.as_bytes())
    };
    let ping = deliver("ping", r#"{"zen":"Keep it logically awesome."}"#);
    assert_eq!(ping.status().as_u16(), 200);

    // GHCR's shape: the version's package_url names the image.
    app.tag(&source, "org/app", "v2");
    let published = format!(
        r#"{{"action":"published","package":{{"name":"app","namespace":"org","package_type":"container","package_version":{{"package_url":"{src}/org/app:v2"}},"registry":{{"url":"https://{src}"}}}}}}"#
    );
    let answer = deliver("package", &published);
    assert_eq!(answer.status().as_u16(), 202);
    let started: serde_json::Value = answer.json().unwrap();
    assert_eq!(started["started"], serde_json::json!(["app"]));
    eventually(&daemon, "the package's mirror runs", || {
        tags(&target, "m/org/app") == ["v1", "v2"]
    });
    assert!(
        tags(&target, "m/org/other").is_empty(),
        "only that mirror ran"
    );

    // Without package_url: the registry's URL, the namespace and the name.
    let by_name = format!(
        r#"{{"action":"updated","package":{{"name":"other","namespace":"org","package_type":"CONTAINER","registry":{{"url":"http://{src}/"}}}}}}"#
    );
    let answer = deliver("package", &by_name);
    assert_eq!(answer.status().as_u16(), 202);
    eventually(&daemon, "the other mirror runs", || {
        tags(&target, "m/org/other") == ["v1"]
    });

    let unknown = format!(
        r#"{{"action":"published","package":{{"name":"nope","namespace":"org","package_type":"container","package_version":{{"package_url":"{src}/org/nope:1"}}}}}}"#
    );
    let answer = deliver("package", &unknown);
    assert_eq!(answer.status().as_u16(), 404);
    let reason: serde_json::Value = answer.json().unwrap();
    assert!(
        reason["error"]
            .as_str()
            .unwrap()
            .contains(&format!("no mirror's source is {src}/org/nope")),
        "{reason}"
    );
    let npm =
        r#"{"action":"published","package":{"name":"lib","namespace":"org","package_type":"npm"}}"#;
    assert_eq!(deliver("package", npm).status().as_u16(), 404);
    let deleted = r#"{"action":"deleted","package":{"name":"app","namespace":"org"}}"#;
    assert_eq!(deliver("package", deleted).status().as_u16(), 200);
}

/// GitHub's own example deliveries (tests/fixtures/github/), signed and posted as GitHub
/// posts them: a `package` and a `registry_package` event for
/// `ghcr.io/Codertocat/hello-world:` (the owner in its login's case, the tag empty), each of
/// which must start the mirror of `ghcr.io/codertocat/hello-world`. ghcr.io is the local
/// registry here, through an `endpoint`.
#[test]
fn githubs_example_package_and_registry_package_deliveries_start_their_mirror() {
    let ghcr = Registry::start();
    let target = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 1024);
    image.push(&ghcr, "codertocat/hello-world", "v1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[defaults]\nrun_on_start = false\ntarget = \"{dst}/m\"\n[server]\nlisten = \"127.0.0.1:0\"\nwebhook_secret = \"hook\"\n\n[registries.\"ghcr.io\"]\nendpoint = \"http://{ghcr}\"\n\n[[mirror]]\nname = \"hello\"\nsource = \"ghcr.io/codertocat/hello-world\"\ninclude = [\"v.*\"]\n",
        dst = target.host(),
        ghcr = ghcr.host()
    ));
    let mut daemon = sandbox.regmirror().start();
    let base = format!("http://{}", server_address(&mut daemon));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github");
    for (event, file, tag) in [
        ("package", "package.published.docker.json", "v1"),
        (
            "registry_package",
            "registry_package.published.docker.json",
            "v2",
        ),
    ] {
        image.tag(&ghcr, "codertocat/hello-world", tag);
        let body = std::fs::read(fixtures.join(file)).unwrap();
        let answer = harness::daemon::deliver_signed(&base, b"hook", event, &body);
        assert_eq!(answer.status().as_u16(), 202, "{event}");
        let started: serde_json::Value = answer.json().unwrap();
        assert_eq!(started["started"], serde_json::json!(["hello"]), "{event}");
        eventually(&daemon, &format!("the {event} event's mirror runs"), || {
            tags(&target, "m/codertocat/hello-world").contains(&tag.to_string())
        });
    }
    // Another owner's package matches nothing, and the answer names it as regmirror would.
    let other =
        String::from_utf8(std::fs::read(fixtures.join("package.published.docker.json")).unwrap())
            .unwrap()
            .replace(
                "ghcr.io/Codertocat/hello-world:",
                "ghcr.io/Someone/Else:1.0",
            );
    let answer = harness::daemon::deliver_signed(&base, b"hook", "package", other.as_bytes());
    assert_eq!(answer.status().as_u16(), 404);
    let reason: serde_json::Value = answer.json().unwrap();
    assert_eq!(
        reason["error"], "no mirror's source is ghcr.io/someone/else",
        "{reason}"
    );
}
