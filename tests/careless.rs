//! Operators' mistakes: a target with credentials or a lookalike host in it, `-vv` left on,
//! and a config directory that other programs keep busy. Each is refused clearly or made
//! harmless; none costs the secrets, the disk or the reloads.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::daemon::{eventually, replace_config, start_daemon, PATIENCE};
use harness::*;

#[test]
fn a_target_without_a_path_is_checked_like_any_other_and_never_echoes_credentials() {
    let decoy = Registry::start();
    let source = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&source, "app", "1");
    let sandbox = Sandbox::new();
    let images = format!("images = [\"{}/app:1\"]\n", source.host());
    // `host@elsewhere` would send everything to `elsewhere`.
    let lookalike = format!("registry.example.com@{}", decoy.host());
    sandbox.write_config(&images);
    let run = sandbox
        .regmirror()
        .args(["--once", "--target", &lookalike])
        .run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("--target: invalid target"),
        "{}",
        run.output()
    );
    assert!(tags(&decoy, "app").is_empty(), "pushed to the decoy");

    for target in [
        format!("u:s3cr3t-pa55@{}", decoy.host()),
        "registry.example.com:port".to_string(),
    ] {
        sandbox.write_config(&format!("{images}[defaults]\ntarget = \"{target}\"\n"));
        let run = sandbox.regmirror().arg("--once").run();
        run.assert_code(2);
        assert!(run.stderr.contains("invalid target"), "{}", run.output());
        assert!(!run.output().contains("s3cr3t"), "{}", run.output());
        let check = sandbox.regmirror().arg("check").run();
        check.assert_code(2);
    }
    assert!(tags(&decoy, "app").is_empty(), "pushed to the decoy");
}

#[test]
fn minus_vv_traces_regmirror_and_leaves_other_crates_at_info() {
    let source = Registry::start();
    let target = Registry::start();
    Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 1, 1024)
        .push(&source, "app", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/app:1\"]\n[defaults]\ntarget = \"{}\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().args(["--once", "-vv"]).run();
    run.assert_success();
    let traced: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains(" TRACE "))
        .collect();
    assert!(
        traced.iter().any(|l| l.contains("registry answered")),
        "regmirror's own trace is on\n{}",
        run.stderr
    );
    // regmirror's trace is one line per answer; the HTTP stack's would be dozens per request.
    let others: Vec<&&str> = traced
        .iter()
        .filter(|l| !l.contains("registry answered"))
        .collect();
    assert!(others.is_empty(), "other crates' trace: {others:#?}");
    // RUST_LOG still reaches them.
    let all = sandbox
        .regmirror()
        .args(["--once"])
        .env("RUST_LOG", "trace")
        .run();
    let count = all.stderr.matches(" TRACE ").count();
    assert!(count > traced.len(), "RUST_LOG=trace shows more: {count}");
}

#[test]
fn a_busy_config_directory_neither_starves_reloads_nor_is_re_read_for_every_file() {
    let source = Registry::start();
    let target = Registry::start();
    let first = Image::single(Flavor::Oci, 1, 1024);
    let second = Image::single(Flavor::Oci, 1, 1024);
    first.push(&source, "first", "1");
    second.push(&source, "second", "1");
    let sandbox = Sandbox::new();
    let config = |images: &str| {
        format!(
            "images = [{images}]\n[defaults]\ntarget = \"{}\"\n",
            target.host()
        )
    };
    let first_ref = format!("\"{}/first:1\"", source.host());
    sandbox.write_config(&config(&first_ref));
    let daemon = start_daemon(&sandbox);
    eventually(&daemon, "the first image is mirrored", || {
        poll_manifest(&target, "first", "1").is_some()
    });

    // Another program writes into the directory without pause, faster than any quiet period.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, noise) = (stop.clone(), sandbox.path().join("noise.log"));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&noise, format!("{:?}", std::time::Instant::now())).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let second_ref = format!("\"{}/second:1\"", source.host());
    replace_config(&sandbox, &config(&format!("{first_ref}, {second_ref}")));
    eventually(
        &daemon,
        "the edit is applied while the directory is busy",
        || poll_manifest(&target, "second", "1").is_some(),
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    daemon.terminate();
    let run = daemon.wait(PATIENCE);
    run.assert_success();
    assert_eq!(
        run.stderr.matches("config reloaded").count(),
        1,
        "{}",
        run.stderr
    );
}
