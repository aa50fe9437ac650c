//! The AWS side, against moto's server mode and real registries: the image list from an SSM
//! parameter (StringList, String, SecureString), a run with no config file, an edited
//! parameter honoured on the next pass, a missing parameter, a bad list failing `--once` and
//! the daemon alike, and `--shard`; ECR targets (repositories created with their settings
//! before the push, tokens from GetAuthorizationToken) against a registry behind ECR's rules.

mod harness;

use std::time::{Duration, Instant};

use harness::ecr::FakeEcr;
use harness::moto::Moto;
use harness::*;

const PARAMETER: &str = "/mirror/images";

/// `regmirror --once` with no config file: the list from SSM, the target from the flag.
fn file_less_once(sandbox: &Sandbox, moto: &Moto, target: &str, extra: &[&str]) -> Run {
    sandbox
        .regmirror()
        .envs(moto.env())
        .args(["--once", "--ssm-parameter", PARAMETER, "--target"])
        .arg(format!("{target}/mirror"))
        .args(extra)
        .run()
}

fn seed(registry: &Registry, names: &[&str]) -> Vec<Image> {
    names
        .iter()
        .map(|name| {
            let image = Image::single(Flavor::Oci, 1, 1024);
            image.push(registry, name, "1");
            image
        })
        .collect()
}

fn mirrored(target: &Registry, name: &str) -> Option<String> {
    head_manifest(target, &format!("mirror/{name}"), "1")
}

/// [`mirrored`] while a daemon may be writing the tag (see [`poll_manifest`]).
fn polled(target: &Registry, name: &str) -> Option<String> {
    poll_manifest(target, &format!("mirror/{name}"), "1")
}

#[test]
fn a_string_list_drives_a_file_less_run_and_an_edit_is_honoured_on_the_next() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let images = seed(&source, &["a", "b", "c"]);
    let s = source.host();
    moto.put_parameter(PARAMETER, "StringList", &format!("{s}/a:1,{s}/b:1"));
    let sandbox = Sandbox::new();
    assert!(!sandbox.path().join("mirrors.toml").exists());

    let run = file_less_once(&sandbox, &moto, target.host(), &[]);
    run.assert_success();
    run.assert_summary("mirrored 2, unchanged 0, failed 0");
    assert_eq!(mirrored(&target, "a").as_deref(), Some(images[0].digest()));
    assert_eq!(mirrored(&target, "b").as_deref(), Some(images[1].digest()));
    assert_eq!(mirrored(&target, "c"), None);

    moto.put_parameter(PARAMETER, "StringList", &format!("{s}/b:1,{s}/c:1"));
    let run = file_less_once(&sandbox, &moto, target.host(), &[]);
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 1, failed 0");
    assert_eq!(mirrored(&target, "c").as_deref(), Some(images[2].digest()));
}

#[test]
fn string_and_secure_string_forms_with_newlines_and_comments() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let images = seed(&source, &["a", "b"]);
    let s = source.host();
    let sandbox = Sandbox::new();
    for (kind, repo) in [("String", "a"), ("SecureString", "b")] {
        moto.put_parameter(
            PARAMETER,
            kind,
            &format!("# mirrored for CI\n{s}/{repo}:1\n\n  # that is all\n"),
        );
        let run = file_less_once(&sandbox, &moto, target.host(), &[]);
        run.assert_success();
        assert!(
            run.stdout.contains("mirrored 1, unchanged 0, failed 0"),
            "{kind}\n{}",
            run.output()
        );
    }
    assert_eq!(mirrored(&target, "a").as_deref(), Some(images[0].digest()));
    assert_eq!(mirrored(&target, "b").as_deref(), Some(images[1].digest()));
}

#[test]
fn a_secure_string_that_is_not_an_image_list_is_refused_without_echoing_it() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let images = seed(&source, &["own"]);
    let secret = "Sup3r-S3cret-Pa55!";
    moto.put_parameter("/prod/db/password", "SecureString", secret);
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/own:1\"]\n[defaults]\ntarget = \"{}/mirror\"\n[ssm]\nparameter = \"/prod/db/password\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox
        .regmirror()
        .envs(moto.env())
        .args(["--once", "-vv"])
        .run();
    run.assert_code(1);
    let expected =
        "FAILED      config: SSM parameter /prod/db/password: a SecureString whose entry 1 \
                    is not an image reference (its content is not shown)";
    assert!(run.stdout.contains(expected), "{}", run.output());
    assert!(!run.output().contains("Sup3r"), "{}", run.output());
    assert_eq!(
        mirrored(&target, "own").as_deref(),
        Some(images[0].digest())
    );
}

#[test]
fn a_missing_parameter_fails_the_run_naming_it_and_the_file_images_still_mirror() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let images = seed(&source, &["own"]);
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/own:1\"]\n[defaults]\ntarget = \"{}/mirror\"\n[ssm]\nparameter = \"/mirror/nowhere\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().envs(moto.env()).arg("--once").run();
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("FAILED      not_found: SSM parameter /mirror/nowhere: ")
            && run.stdout.contains("ParameterNotFound"),
        "{}",
        run.output()
    );
    assert_eq!(
        mirrored(&target, "own").as_deref(),
        Some(images[0].digest())
    );

    // An entry that is no image reference fails alone, named; so does a missing image.
    let s = source.host();
    moto.put_parameter(
        "/mirror/nowhere",
        "StringList",
        &format!("{s}/own:1,Not An Image,{s}/ghost:1"),
    );
    let run = sandbox.regmirror().envs(moto.env()).arg("--once").run();
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("\"Not An Image\": invalid image reference"),
        "{}",
        run.output()
    );
    assert!(run.stdout.contains("unchanged 1"), "{}", run.output());
    // A listed image that fails says where it was listed.
    assert!(
        run.stdout.contains("/ghost:1 → ")
            && run.stdout.contains("(SSM parameter /mirror/nowhere): "),
        "{}",
        run.output()
    );
}

#[test]
fn shards_split_a_list_with_no_overlap_and_no_gap() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let names = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"];
    seed(&source, &names);
    let s = source.host();
    let list: Vec<String> = names.iter().map(|n| format!("{s}/{n}:1")).collect();
    moto.put_parameter(PARAMETER, "StringList", &list.join(","));
    let sandbox = Sandbox::new();
    let mut total = 0;
    for shard in ["1/3", "2/3", "3/3"] {
        let run = file_less_once(&sandbox, &moto, target.host(), &["--shard", shard]);
        run.assert_success();
        // Each shard copies only its share: nothing is ever found already there.
        let line = run.stdout.lines().last().unwrap_or_default().to_string();
        assert!(
            line.contains("unchanged 0, failed 0"),
            "{shard}: {}",
            run.output()
        );
        let copied: usize = line
            .strip_prefix("mirrored ")
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        total += copied;
    }
    assert_eq!(total, names.len(), "every image once across the shards");
    for name in names {
        assert!(mirrored(&target, name).is_some(), "{name} was in no shard");
    }
}

#[test]
fn the_daemon_reads_the_parameter_every_run_and_follows_an_edit() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let images = seed(&source, &["a", "b"]);
    let s = source.host();
    moto.put_parameter(PARAMETER, "StringList", &format!("{s}/a:1"));
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[defaults]\ntarget = \"{}/mirror\"\nschedule = \"*/2 * * * * *\"\n[ssm]\nparameter = \"{PARAMETER}\"\n",
        target.host()
    ));
    let daemon = sandbox.regmirror().envs(moto.env()).start();
    let deadline = Instant::now() + Duration::from_secs(60);
    while polled(&target, "a").is_none() {
        assert!(
            Instant::now() < deadline,
            "a not mirrored\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto.put_parameter(PARAMETER, "StringList", &format!("{s}/a:1,{s}/b:1"));
    while polled(&target, "b").as_deref() != Some(images[1].digest()) {
        assert!(
            Instant::now() < deadline,
            "the edit was not followed\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        daemon.stderr().contains("mirror=ssm:/mirror/images"),
        "{}",
        daemon.stderr()
    );
}

/// The lines a `--once` report fails with (`FAILED      …`).
fn failed_lines(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|line| line.strip_prefix("FAILED      "))
        .map(str::to_string)
        .collect()
}

/// What the daemon's last run of the SSM parameter's mirror came to, once it has one:
/// its `result` and its `errors`.
fn last_ssm_run(daemon: &mut Spawned) -> (String, Vec<String>) {
    let base = format!("http://{}", harness::daemon::server_address(daemon));
    let mut last = None;
    harness::daemon::eventually(daemon, "a run of the SSM mirror", || {
        let health: serde_json::Value = harness::daemon::http()
            .get(format!("{base}/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let runs = health["mirrors"].as_array().cloned().unwrap_or_default();
        last = runs
            .into_iter()
            .find(|m| m["name"] == format!("ssm:{PARAMETER}"))
            .map(|m| m["last_run"].clone())
            .filter(|run| !run.is_null());
        last.is_some()
    });
    let last = last.unwrap();
    let errors = last["errors"].as_array().unwrap().iter();
    (
        last["result"].as_str().unwrap().to_string(),
        errors.map(|e| e.as_str().unwrap().to_string()).collect(),
    )
}

/// Issue 21: `--once` and the daemon build a pass through one path. Before, a parameter that
/// could not be read failed `--once` (exit 1) while the daemon's run of it was "ok", and an
/// entry that was no image failed `--once` but was only a warning in the daemon's log.
#[test]
fn a_bad_list_fails_a_once_pass_and_a_daemon_run_alike() {
    let moto = Moto::start();
    let source = Registry::start();
    let target = Registry::start();
    let images = seed(&source, &["own", "a"]);
    let s = source.host();
    let sandbox = Sandbox::new();
    let config = format!(
        "images = [\"{s}/own:1\"]\n[defaults]\ntarget = \"{}/mirror\"\n[ssm]\nparameter = \"{PARAMETER}\"\n\
         [server]\nlisten = \"127.0.0.1:0\"\n",
        target.host()
    );
    sandbox.write_config(&config);

    // The parameter does not exist yet: the read fails, the file's image is mirrored.
    let once = sandbox.regmirror().envs(moto.env()).arg("--once").run();
    once.assert_code(1);
    let failed = failed_lines(&once);
    assert!(
        failed.len() == 1
            && failed[0].starts_with(&format!("not_found: SSM parameter {PARAMETER}: ")),
        "{}",
        once.output()
    );
    assert!(failed[0].contains("ParameterNotFound"), "{}", once.output());
    let mut daemon = sandbox.regmirror().envs(moto.env()).start();
    let (result, errors) = last_ssm_run(&mut daemon);
    assert_eq!(result, "failed", "{}", daemon.stderr());
    assert!(
        errors.len() == 1
            && errors[0].starts_with(&format!("not_found: SSM parameter {PARAMETER}: ")),
        "{errors:?}"
    );
    assert!(errors[0].contains("ParameterNotFound"), "{errors:?}");
    drop(daemon);
    assert_eq!(
        mirrored(&target, "own").as_deref(),
        Some(images[0].digest())
    );

    // An entry that is no image fails alone, with the same line; the other is mirrored.
    moto.put_parameter(PARAMETER, "StringList", &format!("{s}/a:1,Not An Image"));
    let once = sandbox.regmirror().envs(moto.env()).arg("--once").run();
    once.assert_code(1);
    let failed = failed_lines(&once);
    assert!(
        failed.len() == 1 && failed[0].contains("\"Not An Image\": invalid image reference"),
        "{}",
        once.output()
    );
    assert_eq!(mirrored(&target, "a").as_deref(), Some(images[1].digest()));
    let mut daemon = sandbox.regmirror().envs(moto.env()).start();
    let (result, errors) = last_ssm_run(&mut daemon);
    assert_eq!(result, "failed", "{}", daemon.stderr());
    assert_eq!(errors, failed, "{}", daemon.stderr());
}

#[test]
fn ecr_repositories_are_created_with_their_settings_before_the_first_push() {
    let ecr = FakeEcr::start();
    let source = Registry::start();
    let app = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 2, 2048);
    app.push(&source, "lib/app", "1");
    let tool = Image::single(Flavor::Docker, 1, 1024);
    tool.push(&source, "lib/tool", "1");
    let (s, e) = (source.host(), ecr.proxy.host());
    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&format!(
        r#"images = ["{s}/lib/app:1", "{s}/lib/tool:1"]
[defaults]
target = "{e}/mirror"
[registries."{e}"]
ecr = true
region = "eu-west-1"
[registries."{e}".create]
scan_on_push = true
tag_mutability = "immutable"
encryption = "KMS"
tags = {{ team = "platform", "cost-center" = "42" }}
"#
    ));

    let check = sandbox
        .regmirror()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .run();
    check.assert_success();
    assert!(
        check
            .stdout
            .contains(&format!("{e}: Amazon ECR, region eu-west-1")),
        "{}",
        check.output()
    );

    let run = ecr.once(&sandbox, &config);
    run.assert_success();
    run.assert_summary("mirrored 2, unchanged 0, failed 0");
    // The push would have been refused (NAME_UNKNOWN) had the repositories not been there.
    assert_eq!(
        ecr.moto.ecr_repositories(),
        ["mirror/lib/app", "mirror/lib/tool"]
    );
    assert_eq!(
        head_manifest(ecr_direct(&ecr), "mirror/lib/app", "1").as_deref(),
        Some(app.digest())
    );
    assert_eq!(
        head_manifest(ecr_direct(&ecr), "mirror/lib/tool", "1").as_deref(),
        Some(tool.digest())
    );
    let (repository, tags) = ecr.moto.ecr_repository("mirror/lib/app");
    assert_eq!(
        repository
            .image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );
    assert_eq!(
        repository.image_tag_mutability().map(|m| m.as_str()),
        Some("IMMUTABLE")
    );
    assert_eq!(
        repository
            .encryption_configuration()
            .map(|c| c.encryption_type().as_str()),
        Some("KMS")
    );
    assert_eq!(
        tags,
        [
            ("cost-center".to_string(), "42".to_string()),
            ("team".to_string(), "platform".to_string())
        ]
    );
    // One token for the whole run, one creation per repository, and no request refused for
    // want of credentials (beyond the anonymous `/v2/` probe).
    assert_eq!(ecr.calls.count("GetAuthorizationToken"), 1);
    assert_eq!(ecr.calls.count("CreateRepository"), 2);
    let refused: Vec<_> = ecr
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.status == 401 && r.path != "/v2/")
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // Unchanged: a token to compare digests, and no creation; nothing written to the
    // immutable repositories, which would refuse a rewrite of the index.
    ecr.proxy.clear();
    let again = ecr.once(&sandbox, &config);
    again.assert_success();
    again.assert_summary("mirrored 0, unchanged 2, failed 0");
    assert_eq!(ecr.calls.count("GetAuthorizationToken"), 2);
    assert_eq!(ecr.calls.count("CreateRepository"), 2);
    assert_eq!(ecr.proxy.manifest_puts(), 0);

    // The repositories were created IMMUTABLE, and ECR keeps its tags: a tag moved upstream
    // is reported as such, and the other image is still compared.
    let moved = Image::single(Flavor::Docker, 1, 1024);
    moved.push(&source, "lib/tool", "1");
    let refused = ecr.once(&sandbox, &config);
    refused.assert_code(1);
    refused.assert_summary("mirrored 0, unchanged 1, immutable 1, failed 0");
    assert!(
        refused.stdout.contains(&format!(
            "immutable in target: upstream moved {} → {}",
            tool.digest(),
            moved.digest()
        )),
        "{}",
        refused.output()
    );
    assert_eq!(
        head_manifest(ecr_direct(&ecr), "mirror/lib/tool", "1").as_deref(),
        Some(tool.digest())
    );
}

#[test]
fn an_ecr_token_that_cannot_be_had_fails_each_image_naming_the_registry_and_aws_error() {
    let ecr = FakeEcr::start();
    let source = Registry::start();
    Image::single(Flavor::Oci, 1, 512).push(&source, "lib/a", "1");
    let (s, e) = (source.host(), ecr.proxy.host());
    let sandbox = Sandbox::new();
    let config = sandbox.write_config(&format!(
        "images = [\"{s}/lib/a:1\"]\n[defaults]\ntarget = \"{e}/mirror\"\n[registries.\"{e}\"]\necr = true\n"
    ));
    ecr.api.add_rule(|request: &RequestInfo| {
        (request.header("x-amz-target").is_some_and(|t| t.ends_with("GetAuthorizationToken")))
            .then(|| Action::Respond {
                status: 400,
                headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
                body: br#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#.to_vec(),
            })
    });
    let run = ecr.once(&sandbox, &config);
    run.assert_code(1);
    let failed = run.failed_lines().join("\n");
    assert!(
        failed.contains(&format!("ECR GetAuthorizationToken for {e}"))
            && failed.contains("UnrecognizedClientException"),
        "{}",
        run.output()
    );
    assert!(ecr.moto.ecr_repositories().is_empty());
}

/// The registry behind the fake ECR, reached without its rules (to read back what was pushed).
fn ecr_direct(ecr: &FakeEcr) -> Remote {
    Remote::new(ecr.proxy.upstream())
}
