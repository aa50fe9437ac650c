//! Registries that require a login: credentials from mirrors.toml (`${VAR}`s) or from Docker's
//! config.json, what a wrong password does to a pass, and that no secret reaches the logs at
//! any level or in either log format.

mod harness;

use base64::Engine;
use serde_json::Value;

use harness::*;

const SOURCE_USER: &str = "src-user";
const SOURCE_PASSWORD: &str = "s3cr3t-Pa55-w0rd-9f1c";
const TARGET_USER: &str = "dst-user";
const TARGET_PASSWORD: &str = "t4rg3t-Pa55-w0rd-7e2d";
const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

fn base64_of(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Docker's config.json with one `auths` entry per `(key, user, password)`.
fn docker_config(entries: &[(&str, &str, &str)]) -> String {
    let auths: serde_json::Map<String, Value> = entries
        .iter()
        .map(|(key, user, password)| {
            (
                (*key).to_owned(),
                serde_json::json!({ "auth": base64_of(user, password) }),
            )
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// `[registries."host"]` taking its login from `${<prefix>_USER}` and `${<prefix>_PASS}`.
fn registry_login(registry: &Registry, prefix: &str) -> String {
    format!(
        "[registries.\"{}\"]\nusername = \"${{{prefix}_USER}}\"\npassword = \"${{{prefix}_PASS}}\"\n",
        registry.host()
    )
}

fn source_and_target() -> (Registry, Registry) {
    let source = Registry::start_with(RegistryOptions::htpasswd(SOURCE_USER, SOURCE_PASSWORD));
    let target = Registry::start_with(RegistryOptions::htpasswd(TARGET_USER, TARGET_PASSWORD));
    (source, target)
}

#[track_caller]
fn assert_holds(target: &Registry, repo: &str, tag: &str, image: &Image) {
    assert_eq!(
        head_manifest(target, repo, tag).as_deref(),
        Some(image.digest()),
        "{repo}:{tag} should carry the source digest"
    );
    check_complete(target, repo, tag).unwrap_or_else(|e| panic!("{repo}:{tag}: {e}"));
}

/// Every form in which a secret could leak: the password itself, `user:password` as base64,
/// and the `Authorization` header value made from it.
fn secret_forms(user: &str, password: &str) -> Vec<String> {
    let encoded = base64_of(user, password);
    vec![password.to_owned(), format!("Basic {encoded}"), encoded]
}

#[track_caller]
fn assert_no_secret(run: &Run, credentials: &[(&str, &str)]) {
    for (user, password) in credentials {
        for secret in secret_forms(user, password) {
            for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                let leak = text
                    .lines()
                    .enumerate()
                    .find(|(_, line)| line.contains(&secret));
                if let Some((index, line)) = leak {
                    let line: String = line.chars().take(400).collect();
                    panic!("{stream} line {} contains {secret:?}:\n{line}", index + 1);
                }
            }
        }
    }
}

#[test]
fn credentials_from_mirrors_toml_variables_reach_both_registries() {
    let (source, target) = source_and_target();
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 4096);
    image.push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/team/app:1.0\"]\n[defaults]\ntarget = \"{}/mirror\"\n{}{}",
        source.host(),
        target.host(),
        registry_login(&source, "SRC"),
        registry_login(&target, "DST"),
    ));

    let run = sandbox
        .regmirror()
        .arg("--once")
        .env("SRC_USER", SOURCE_USER)
        .env("SRC_PASS", SOURCE_PASSWORD)
        .env("DST_USER", TARGET_USER)
        .env("DST_PASS", TARGET_PASSWORD)
        .run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0, failed 0");
    assert_holds(&target, "mirror/team/app", "1.0", &image);
    assert_no_secret(
        &run,
        &[
            (SOURCE_USER, SOURCE_PASSWORD),
            (TARGET_USER, TARGET_PASSWORD),
        ],
    );

    // The second pass logs in the same way to compare, and finds nothing to do.
    let again = sandbox
        .regmirror()
        .arg("--once")
        .env("SRC_USER", SOURCE_USER)
        .env("SRC_PASS", SOURCE_PASSWORD)
        .env("DST_USER", TARGET_USER)
        .env("DST_PASS", TARGET_PASSWORD)
        .run();
    again.assert_success();
    again.assert_summary("mirrored 0, unchanged 1, failed 0");
}

#[test]
fn credentials_from_docker_config_json_alone_are_enough() {
    let (source, target) = source_and_target();
    let image = Image::multi_arch(Flavor::Docker, PLATFORMS, 1, 4096);
    image.push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    // Docker files a registry under its bare host, or under a URL (as `docker login` of old
    // did): both must be found.
    let target_url = format!("http://{}", target.host());
    sandbox.write_docker_config(&docker_config(&[
        (source.host(), SOURCE_USER, SOURCE_PASSWORD),
        (&target_url, TARGET_USER, TARGET_PASSWORD),
    ]));
    sandbox.write_config(&format!(
        "images = [\"{}/team/app:1.0\"]\n[defaults]\ntarget = \"{}/mirror\"\n",
        source.host(),
        target.host(),
    ));

    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0, failed 0");
    assert_holds(&target, "mirror/team/app", "1.0", &image);
    assert_no_secret(
        &run,
        &[
            (SOURCE_USER, SOURCE_PASSWORD),
            (TARGET_USER, TARGET_PASSWORD),
        ],
    );
}

#[test]
fn mirrors_toml_credentials_win_over_docker_config_json() {
    let (source, target) = source_and_target();
    let image = Image::single(Flavor::Oci, 1, 2048);
    image.push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    sandbox.write_docker_config(&docker_config(&[
        (source.host(), SOURCE_USER, "stale-docker-password"),
        (target.host(), TARGET_USER, TARGET_PASSWORD),
    ]));
    sandbox.write_config(&format!(
        "images = [\"{}/team/app:1.0\"]\n[defaults]\ntarget = \"{}/mirror\"\n{}",
        source.host(),
        target.host(),
        registry_login(&source, "SRC"),
    ));
    let run = sandbox
        .regmirror()
        .arg("--once")
        .env("SRC_USER", SOURCE_USER)
        .env("SRC_PASS", SOURCE_PASSWORD)
        .run();
    run.assert_success();
    assert_holds(&target, "mirror/team/app", "1.0", &image);
}

#[test]
fn a_wrong_password_fails_that_image_and_the_others_still_mirror() {
    let locked = Registry::start_with(RegistryOptions::htpasswd(SOURCE_USER, SOURCE_PASSWORD));
    let open = Registry::start();
    let target = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&locked, "team/locked", "1.0");
    let fine = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 2048);
    fine.push(&open, "team/open", "1.0");
    let sandbox = Sandbox::new();
    let config = format!(
        "images = [\n  \"{}/team/locked:1.0\",\n  \"{}/team/open:1.0\",\n]\n[defaults]\ntarget = \"{}/mirror\"\n{}",
        locked.host(),
        open.host(),
        target.host(),
        registry_login(&locked, "SRC"),
    );
    sandbox.write_config(&config);

    let wrong = "wr0ng-Pa55-w0rd-4a7b";
    let run = sandbox
        .regmirror()
        .args(["--once", "-vv"])
        .env("SRC_USER", SOURCE_USER)
        .env("SRC_PASS", wrong)
        .run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
    let failed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with("FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.output());
    let line = failed[0];
    assert!(
        line.contains(&format!(
            "{0}/team/locked:1.0 → {1}/mirror/team/locked:1.0 (line 2): ",
            locked.host(),
            target.host()
        )),
        "the FAILED line names the image, its target and its line in mirrors.toml\n{}",
        run.output()
    );
    let reason = line.to_lowercase();
    assert!(
        reason.contains("access denied") && reason.contains("credentials"),
        "the reason should say access was denied and point at the credentials: {line}"
    );
    assert_holds(&target, "mirror/team/open", "1.0", &fine);
    assert_eq!(head_manifest(&target, "mirror/team/locked", "1.0"), None);
    assert_no_secret(
        &run,
        &[(SOURCE_USER, wrong), (SOURCE_USER, SOURCE_PASSWORD)],
    );
}

/// The most verbose logging regmirror has, once as text (`-vv`) and once as JSON with
/// `RUST_LOG=trace`, with credentials from both mirrors.toml and config.json: no secret in
/// either stream, and the logs really are at trace level.
#[test]
fn no_secret_reaches_the_logs_at_trace_level() {
    let (source, target) = source_and_target();
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 4096);
    image.push(&source, "team/app", "1.0");
    let secrets = [
        (SOURCE_USER, SOURCE_PASSWORD),
        (TARGET_USER, TARGET_PASSWORD),
    ];

    // Each run mirrors into its own prefix, so both do the whole copy (HEAD, GET, blobs,
    // manifests) rather than the second finding the image unchanged.
    let runs = [
        ("text", vec!["--once", "-vv"], None, "vv"),
        (
            "json",
            vec!["--once", "--log-format", "json"],
            Some("trace"),
            "json",
        ),
    ];
    for (format, args, rust_log, prefix) in runs {
        let sandbox = Sandbox::new();
        sandbox.write_docker_config(&docker_config(&[(
            target.host(),
            TARGET_USER,
            TARGET_PASSWORD,
        )]));
        sandbox.write_config(&format!(
            "images = [\"{}/team/app:1.0\"]\n[defaults]\ntarget = \"{}/{prefix}\"\n{}",
            source.host(),
            target.host(),
            registry_login(&source, "SRC"),
        ));
        let mut command = sandbox.regmirror();
        command
            .args(&args)
            .env("SRC_USER", SOURCE_USER)
            .env("SRC_PASS", SOURCE_PASSWORD);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let run = command.run();
        run.assert_success();
        assert_holds(&target, &format!("{prefix}/team/app"), "1.0", &image);

        let trace_marker = match format {
            "text" => " TRACE ",
            _ => "\"level\":\"TRACE\"",
        };
        let trace_lines = run
            .stderr
            .lines()
            .filter(|line| line.contains(trace_marker))
            .count();
        assert!(
            trace_lines > 0,
            "{format}: the logs should be at trace level, or this test proves nothing\n{}",
            run.output()
        );
        assert_no_secret(&run, &secrets);
        if format == "json" {
            for line in run.stderr.lines() {
                serde_json::from_str::<serde_json::Map<String, Value>>(line)
                    .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
            }
        }
    }
}

/// `--log-format json`: one JSON object per stderr line, and each image's result line carries
/// that image's source, whether it mirrored or failed.
#[test]
fn json_logs_are_one_object_per_line_with_the_image_on_each_result() {
    let locked = Registry::start_with(RegistryOptions::htpasswd(SOURCE_USER, SOURCE_PASSWORD));
    let open = Registry::start();
    let target = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&locked, "team/locked", "1.0");
    Image::single(Flavor::Docker, 1, 1024).push(&open, "team/open", "2.0");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/team/locked:1.0\", \"{}/team/open:2.0\"]\n[defaults]\ntarget = \"{}/mirror\"\n{}",
        locked.host(),
        open.host(),
        target.host(),
        registry_login(&locked, "SRC"),
    ));
    let run = sandbox
        .regmirror()
        .args(["--once", "--log-format", "json"])
        .env("SRC_USER", SOURCE_USER)
        .env("SRC_PASS", "wr0ng-Pa55-w0rd-4a7b")
        .run();
    run.assert_code(1);

    let lines: Vec<serde_json::Map<String, Value>> = run
        .stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}\n{}", run.output()))
        })
        .collect();
    assert!(!lines.is_empty(), "{}", run.output());

    // The per-image result is the event whose message is `mirrored`/`failed`/`unchanged`.
    let result_for = |source: &str| -> Vec<&serde_json::Map<String, Value>> {
        lines
            .iter()
            .filter(|line| {
                let message = line.get("message").and_then(Value::as_str);
                matches!(message, Some("mirrored" | "failed" | "unchanged"))
                    && serde_json::to_string(line).unwrap().contains(source)
            })
            .collect()
    };
    let open_source = format!("{}/team/open:2.0", open.host());
    let locked_source = format!("{}/team/locked:1.0", locked.host());
    let open_results = result_for(&open_source);
    let locked_results = result_for(&locked_source);
    assert_eq!(
        open_results.len(),
        1,
        "one result line for {open_source}\n{}",
        run.stderr
    );
    assert_eq!(
        locked_results.len(),
        1,
        "one result line for {locked_source}\n{}",
        run.stderr
    );
    assert_eq!(
        open_results[0]["message"], "mirrored",
        "{:?}",
        open_results[0]
    );
    assert_eq!(
        locked_results[0]["message"], "failed",
        "{:?}",
        locked_results[0]
    );
    // Source and target are fields of their own (of the `image` span), not only in a message.
    let mirrored_as = |repo: &str| format!("{}/mirror/{repo}", target.host());
    for (result, source, target) in [
        (open_results[0], &open_source, mirrored_as("team/open:2.0")),
        (
            locked_results[0],
            &locked_source,
            mirrored_as("team/locked:1.0"),
        ),
    ] {
        let fields = Value::Object(result.clone());
        assert_eq!(
            fields.pointer("/span/source").and_then(Value::as_str),
            Some(source.as_str()),
            "{fields}"
        );
        assert_eq!(
            fields.pointer("/span/target").and_then(Value::as_str),
            Some(target.as_str()),
            "{fields}"
        );
    }
    // The report on stdout stays text.
    assert!(run.stdout.contains("FAILED"), "{}", run.output());
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
}

/// The token flow of Docker Hub, GHCR and Quay: the source challenges with `Bearer realm=…`,
/// regmirror fetches a token with its credentials, and neither password nor token is logged.
#[test]
fn bearer_token_registries_work_with_and_without_credentials_and_tokens_stay_out_of_logs() {
    for credentials in [Some((SOURCE_USER, SOURCE_PASSWORD)), None] {
        let upstream = Registry::start();
        let source = Proxy::start(upstream.host());
        let (rule, tokens) = harness::hub::BearerAuth::new(source.host(), credentials);
        source.add_rule(rule);
        let target = Registry::start();
        let image = Image::multi_arch(Flavor::Docker, PLATFORMS, 2, 2048);
        image.push(&upstream, "org/app", "v1");

        let sandbox = Sandbox::new();
        let login = match credentials {
            Some(_) => format!(
                "[registries.\"{}\"]\nusername = \"${{SRC_USER}}\"\npassword = \"${{SRC_PASS}}\"\n",
                source.host()
            ),
            None => String::new(),
        };
        sandbox.write_config(&format!(
            "images = [\"{}/org/app:v1\"]\n[defaults]\ntarget = \"{}/m\"\n{login}",
            source.host(),
            target.host()
        ));
        let run = sandbox
            .regmirror()
            .arg("--once")
            .env("SRC_USER", SOURCE_USER)
            .env("SRC_PASS", SOURCE_PASSWORD)
            .env("RUST_LOG", "trace")
            .run();
        run.assert_success();
        assert_holds(&target, "m/org/app", "v1", &image);
        assert!(
            run.stderr.contains("TRACE"),
            "logs must be verbose for this test to mean anything"
        );
        assert_no_secret(&run, &[(SOURCE_USER, SOURCE_PASSWORD)]);
        let tokens = tokens.lock().unwrap();
        assert!(
            !tokens.issued.is_empty(),
            "the source must have demanded a token"
        );
        for token in &tokens.issued {
            assert!(
                !run.stderr.contains(token.as_str()),
                "token {token} leaked: {}",
                run.stderr
            );
            assert!(!run.stdout.contains(token.as_str()));
        }
        let unauthorized = source.count(|r| r.status == 401);
        assert!(
            unauthorized <= 2,
            "one challenge per token, not per request: {:#?}",
            source.requests()
        );
    }
}

#[test]
fn a_bearer_registry_that_refuses_the_credentials_fails_that_image_with_a_clear_reason() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let (rule, _) =
        harness::hub::BearerAuth::new(source.host(), Some((SOURCE_USER, SOURCE_PASSWORD)));
    source.add_rule(rule);
    let target = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&upstream, "org/app", "v1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{}/org/app:v1\"]\n[defaults]\ntarget = \"{}\"\n[registries.\"{}\"]\nusername = \"{SOURCE_USER}\"\npassword = \"wrong\"\n",
        source.host(),
        target.host(),
        source.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    assert!(run.stdout.contains("access denied"), "{}", run.output());
}

/// Writes `docker-credential-<name>` into the sandbox's `bin/`: a shell script that logs the
/// server URL it is asked about, then answers with `script` (which sees it as `$server`).
fn helper(sandbox: &Sandbox, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let log = sandbox.path().join(format!("{name}.asked"));
    let path = sandbox.write_file(
        &format!("bin/docker-credential-{name}"),
        &format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nserver=$(cat)\necho \"$server\" >> '{}'\n{script}\n",
            log.display()
        ),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A helper answering `user`/`secret` for `server`, "not found" for any other.
fn knowing(server: &str, user: &str, secret: &str) -> String {
    format!(
        "case \"$server\" in\n  '{server}') printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}' \"$server\" ;;\n  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac"
    )
}

/// What the helper `name` was asked, one server URL a line.
fn asked(sandbox: &Sandbox, name: &str) -> String {
    std::fs::read_to_string(sandbox.path().join(format!("{name}.asked"))).unwrap_or_default()
}

/// `regmirror --once` with the sandbox's `bin/` first on `PATH`.
fn once_with_helpers(sandbox: &Sandbox) -> Run {
    let path = format!(
        "{}:{}",
        sandbox.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    sandbox
        .regmirror()
        .args(["--once", "-vv"])
        .env("PATH", path)
        .run()
}

#[test]
fn credential_helpers_log_in_per_registry_and_for_every_other() {
    let (source, target) = source_and_target();
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 2048);
    image.push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    helper(
        &sandbox,
        "per-registry",
        &knowing(source.host(), SOURCE_USER, SOURCE_PASSWORD),
    );
    helper(
        &sandbox,
        "store",
        &knowing(target.host(), TARGET_USER, TARGET_PASSWORD),
    );
    // credHelpers names the source's helper; credsStore holds everything else (the target),
    // and an `auths` entry without a secret says that a login went to the store.
    sandbox.write_docker_config(&format!(
        r#"{{"auths": {{"{target}": {{}}}}, "credsStore": "store", "credHelpers": {{"{source}": "per-registry"}}}}"#,
        source = source.host(),
        target = target.host()
    ));
    sandbox.write_config(&format!(
        "images = [\"{}/team/app:1.0\"]\n[defaults]\ntarget = \"{}/mirror\"\n",
        source.host(),
        target.host(),
    ));
    let run = once_with_helpers(&sandbox);
    run.assert_success();
    assert_holds(&target, "mirror/team/app", "1.0", &image);
    assert_no_secret(
        &run,
        &[
            (SOURCE_USER, SOURCE_PASSWORD),
            (TARGET_USER, TARGET_PASSWORD),
        ],
    );
    // Each helper asked about its own registry, once for the whole pass.
    assert_eq!(
        asked(&sandbox, "per-registry"),
        format!("{}\n", source.host())
    );
    assert_eq!(asked(&sandbox, "store"), format!("{}\n", target.host()));
}

#[test]
fn a_missing_failing_or_empty_helper_fails_its_registry_naming_both_never_going_anonymous() {
    let target = Registry::start();
    // One open registry per case: each image would mirror fine anonymously, so only a
    // helper that is heard can fail it.
    let cases = ["missing", "failing", "empty", "public"];
    let registries: Vec<Registry> = cases.iter().map(|_| Registry::start()).collect();
    for (case, registry) in cases.iter().zip(&registries) {
        Image::single(Flavor::Oci, 1, 1024).push(registry, case, "1");
    }
    let host = |case: &str| registries[cases.iter().position(|c| *c == case).unwrap()].host();
    let sandbox = Sandbox::new();
    helper(
        &sandbox,
        "locked",
        "echo 'the keychain is locked' >&2\nexit 1",
    );
    helper(&sandbox, "store", &knowing("nothing.example.com", "u", "p"));
    sandbox.write_docker_config(&format!(
        r#"{{"credsStore": "store", "credHelpers": {{"{}": "absent", "{}": "locked", "{}": "store"}}}}"#,
        host("missing"),
        host("failing"),
        host("empty")
    ));
    let images: Vec<String> = cases
        .iter()
        .map(|case| format!("\"{}/{case}:1\"", host(case)))
        .collect();
    sandbox.write_config(&format!(
        "images = [{}]\n[defaults]\ntarget = \"{}\"\n",
        images.join(", "),
        target.host()
    ));
    let run = once_with_helpers(&sandbox);
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 3");
    let failed = |case: &str| {
        let prefix = format!("FAILED      {}/{case}:1 →", host(case));
        let lines = run.failed_lines();
        let line = lines.iter().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("{case} did not fail\n{}", run.output()))
            .to_string()
    };
    let missing = failed("missing");
    let expected = format!(
        "credential helper docker-credential-absent (credHelpers in Docker's config.json) for {}: is not installed",
        host("missing")
    );
    assert!(missing.contains(&expected), "{missing}");
    let failing = failed("failing");
    assert!(failing.contains("docker-credential-locked"), "{failing}");
    assert!(
        failing.contains("failed: the keychain is locked"),
        "{failing}"
    );
    let empty = failed("empty");
    assert!(empty.contains("docker-credential-store"), "{empty}");
    assert!(empty.contains("holds no credentials for"), "{empty}");
    // The store, asked about a registry nobody logged in to, may say "not found": that one is
    // public, and reached anonymously.
    assert!(
        !run.stdout
            .contains(&format!("{}/public:1 →", host("public"))),
        "{}",
        run.output()
    );
    // ... as is the target: the store was asked about each, once.
    let mut store_asked: Vec<&str> = Vec::new();
    let text = asked(&sandbox, "store");
    store_asked.extend(text.lines());
    store_asked.sort();
    let mut expected = vec![host("empty"), host("public"), target.host()];
    expected.sort();
    assert_eq!(store_asked, expected);
    for case in ["missing", "failing", "empty"] {
        assert!(
            tags(&target, case).is_empty(),
            "{case} was mirrored anonymously"
        );
    }
}

#[test]
fn an_identity_token_from_a_helper_is_exchanged_at_the_realm_for_a_bearer_token() {
    const REFRESH: &str = "refresh-t0ken-5e3f";
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let image = Image::single(Flavor::Docker, 1, 2048);
    image.push(&upstream, "org/app", "v1");
    // The realm: an OAuth2 token endpoint that takes only the refresh-token grant.
    let forms = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let realm_log = std::sync::Arc::new(std::sync::Mutex::new(None));
    let realm = {
        let (forms, realm_log) = (forms.clone(), realm_log.clone());
        harness::hostile::Hostile::start(move |request, body| {
            use harness::hostile::Reply;
            let form: Vec<(String, String)> =
                url::form_urlencoded::parse(body).into_owned().collect();
            forms
                .lock()
                .unwrap()
                .push((request.method.clone(), form.clone()));
            let field = |name: &str| {
                form.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let log: &Option<std::sync::Arc<std::sync::Mutex<harness::hub::TokenLog>>> =
                &realm_log.lock().unwrap();
            match (
                request.method.as_str(),
                field("grant_type"),
                field("refresh_token"),
                log,
            ) {
                ("POST", Some("refresh_token"), Some(REFRESH), Some(log)) => {
                    let (_, answer) = log.lock().unwrap().issue();
                    Reply::json(200, &answer)
                }
                _ => Reply::json(401, &serde_json::json!({"error": "invalid_grant"})),
            }
        })
    };
    let (rule, tokens) =
        harness::hub::BearerAuth::with_realm(&format!("http://{}/token", realm.host()));
    *realm_log.lock().unwrap() = Some(tokens.clone());
    source.add_rule(rule);

    let sandbox = Sandbox::new();
    helper(
        &sandbox,
        "oauth",
        &knowing(source.host(), "<token>", REFRESH),
    );
    sandbox.write_docker_config(&format!(
        r#"{{"credHelpers": {{"{}": "oauth"}}}}"#,
        source.host()
    ));
    sandbox.write_config(&format!(
        "images = [\"{}/org/app:v1\"]\n[defaults]\ntarget = \"{}\"\n",
        source.host(),
        target.host()
    ));
    let run = once_with_helpers(&sandbox);
    run.assert_success();
    assert_holds(&target, "org/app", "v1", &image);
    let forms = forms.lock().unwrap();
    assert!(!forms.is_empty(), "the realm was never asked");
    for (method, form) in forms.iter() {
        assert_eq!(method, "POST");
        let get = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("grant_type"), Some("refresh_token"));
        assert_eq!(get("client_id"), Some("regmirror"));
        assert_eq!(get("scope"), Some("repository:org/app:pull"));
    }
    assert!(!tokens.lock().unwrap().issued.is_empty());
    assert!(!run.output().contains(REFRESH), "{}", run.output());
}

#[test]
fn docker_hubs_login_goes_to_its_endpoint_only_when_the_section_says_so() {
    // Docker Hub is reached through a proxy registry (open: it asks for nothing), which
    // records every Authorization header it is sent.
    let upstream = Registry::start();
    let proxy = Proxy::start(upstream.host());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recording = seen.clone();
    proxy.add_rule(move |request: &RequestInfo| {
        if let Some(header) = request.header("authorization") {
            recording.lock().unwrap().push(header.to_owned());
        }
        None
    });
    let image = Image::single(Flavor::Oci, 1, 1024);
    image.push(&upstream, "team/app", "1.0");
    let target = Registry::start();
    let sandbox = Sandbox::new();
    sandbox.write_docker_config(&docker_config(&[(
        "https://index.docker.io/v1/",
        SOURCE_USER,
        SOURCE_PASSWORD,
    )]));
    let config = |extra: &str| {
        format!(
            "images = [\"team/app:1.0\"]\n[defaults]\ntarget = \"{}/mirror\"\n\
             [registries.\"docker.io\"]\nendpoint = \"http://{}\"\n{extra}",
            target.host(),
            proxy.host()
        )
    };

    // The login config.json holds for Docker Hub is not the proxy's to see.
    sandbox.write_config(&config(""));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0, failed 0");
    assert!(proxy.count(Logged::is_manifest_get) >= 1);
    assert_eq!(*seen.lock().unwrap(), Vec::<String>::new());

    // Unless the section hands it over.
    sandbox.write_config(&config("endpoint_gets_docker_login = true\n"));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 0, unchanged 1, failed 0");
    let basic = format!("Basic {}", base64_of(SOURCE_USER, SOURCE_PASSWORD));
    let seen = seen.lock().unwrap();
    assert!(
        !seen.is_empty() && seen.iter().all(|h| *h == basic),
        "{seen:?}"
    );
    assert_no_secret(&run, &[(SOURCE_USER, SOURCE_PASSWORD)]);
}
