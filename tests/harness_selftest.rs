//! Proves the test harness itself works, so a failing mirror test points at regmirror and
//! not at its tools: registries start, built images read back complete, the proxy forwards,
//! counts, rewrites `Location`, corrupts and holds, and the CLI runner captures and times out.

mod harness;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use harness::image::{OCI_INDEX, OCI_MANIFEST};
use harness::proxy::{corrupt_blob, fail_with, times, Endpoint};
use harness::remote::ACCEPT;
use harness::*;

fn raw_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[test]
fn registry_starts_empty_and_logs_to_its_own_file() {
    let registry = Registry::start();
    assert_eq!(head_manifest(&registry, "nothing/here", "latest"), None);
    assert_eq!(tags(&registry, "nothing/here"), Vec::<String>::new());
    assert!(registry.log().contains("GET /v2/"), "{}", registry.log());
}

#[test]
fn images_of_every_kind_push_and_read_back_complete() {
    let registry = Registry::start();
    let shared = Layer::random(2048);
    let images = [
        (
            "oci-multi",
            Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 2, 4096),
        ),
        (
            "docker-multi",
            Image::multi_arch(Flavor::Docker, &["linux/amd64", "linux/arm/v7"], 1, 1024),
        ),
        ("oci-single", Image::single(Flavor::Oci, 3, 1024)),
        ("docker-single", Image::single(Flavor::Docker, 1, 1024)),
        ("artifact", Image::artifact(512)),
        (
            "shared",
            ImageBuilder::new(Flavor::Oci).shared_layer(&shared).build(),
        ),
    ];
    for (repo, image) in &images {
        let pushed = image.push(&registry, repo, "v1");
        assert_eq!(pushed.digest, image.digest());
        assert_eq!(
            head_manifest(&registry, repo, "v1").as_deref(),
            Some(image.digest())
        );
        assert_eq!(tags(&registry, repo), vec!["v1".to_owned()]);
        check_complete(&registry, repo, "v1").unwrap_or_else(|e| panic!("{repo}: {e}"));
        let (bytes, content_type) = get_manifest(&registry, repo, &pushed.digest).unwrap();
        assert_eq!(sha256_digest(&bytes), pushed.digest);
        assert_eq!(content_type, pushed.media_type);
        for (digest, _) in &pushed.blobs {
            assert!(blob_exists(&registry, repo, digest), "{repo}: {digest}");
        }
    }
    let (oci_multi, _) = &images[0];
    let pushed = images[0].1.push(&registry, oci_multi, "v2");
    assert_eq!(pushed.media_type, OCI_INDEX);
    assert_eq!(pushed.manifests.len(), 2);
    assert_eq!(pushed.blobs.len(), 2 * (1 + 2));
    assert!(images[1].1.child_digest("linux/arm/v7").is_some());
    assert!(images[5]
        .1
        .blobs()
        .iter()
        .any(|(d, _)| d == shared.digest()));
    // Every build is distinct, even with identical parameters.
    assert_ne!(
        Image::single(Flavor::Oci, 1, 16).digest(),
        Image::single(Flavor::Oci, 1, 16).digest()
    );
}

#[test]
fn check_complete_names_the_missing_piece() {
    let registry = Registry::start();
    let image = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 2, 1024);
    let pushed = image.push(&registry, "broken", "v1");
    let (layer, _) = pushed.blobs.last().unwrap().clone();
    assert!(delete_blob(&registry, "broken", &layer));
    let error = check_complete(&registry, "broken", "v1").unwrap_err();
    assert!(error.contains(&layer), "{error}");

    assert!(delete_manifest(&registry, "broken", &pushed.manifests[0]));
    let error = check_complete(&registry, "broken", "v1").unwrap_err();
    assert!(error.contains(&pushed.manifests[0]), "{error}");
    assert!(check_complete(&registry, "broken", "nope").is_err());
}

#[test]
fn htpasswd_registry_demands_credentials() {
    let registry = Registry::start_with(RegistryOptions::htpasswd("alice", "s3cret"));
    let response = raw_client()
        .get(format!("{}/v2/", registry.url()))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");

    // `&Registry` carries its credentials.
    let image = Image::single(Flavor::Docker, 1, 1024);
    image.push(&registry, "private/app", "v1");
    check_complete(&registry, "private/app", "v1").unwrap();
    let wrong = Remote::new(registry.host()).with_auth("alice", "wrong");
    let status = raw_client()
        .head(format!("{}/v2/private/app/manifests/v1", registry.url()))
        .basic_auth("alice", Some("wrong"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401, "{wrong:?}");
}

#[test]
fn tls_registry_serves_https_vouched_for_by_its_own_ca_only() {
    let registry = Registry::start_with(RegistryOptions::tls());
    assert!(registry.url().starts_with("https://"), "{}", registry.url());
    let pem = std::fs::read_to_string(registry.ca_pem().unwrap()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");

    // `&Registry` speaks HTTPS trusting the CA, for both names on the certificate.
    let image = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 1, 1024);
    image.push(&registry, "secure/app", "v1");
    check_complete(&registry, "secure/app", "v1").unwrap();
    let port = registry.host().rsplit(':').next().unwrap();
    let client = registry.tls_client().unwrap();
    let status = client
        .get(format!("https://localhost:{port}/v2/"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);

    // Nothing else trusts it, and plain HTTP gets Go's 400.
    let error = raw_client()
        .get(format!("{}/v2/", registry.url()))
        .send()
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    let plain = raw_client()
        .get(format!("http://{}/v2/", registry.host()))
        .send()
        .unwrap();
    assert_eq!(plain.status().as_u16(), 400);
}

#[test]
fn proxy_forwards_streams_counts_and_keeps_clients_on_the_proxy() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    // Pushing through the proxy only works if the upload Location points back at the proxy,
    // and a 4 MiB layer checks bodies stream through with their lengths.
    let image = Image::multi_arch(Flavor::Oci, &["linux/amd64", "linux/arm64"], 1, 4 << 20);
    let pushed = image.push(&proxy, "through/proxy", "v1");
    assert_eq!(proxy.blob_puts(), pushed.blobs.len());
    assert_eq!(proxy.manifest_puts(), 3);
    assert_eq!(proxy.count(Logged::is_upload_start), pushed.blobs.len());
    assert!(proxy
        .requests()
        .iter()
        .all(|r| r.status != 0 && r.status < 300));
    check_complete(&registry, "through/proxy", "v1").unwrap();

    proxy.clear();
    check_complete(&proxy, "through/proxy", "v1").unwrap();
    assert_eq!(proxy.manifest_gets(), 3);
    assert_eq!(proxy.count(Logged::is_blob_head), pushed.blobs.len());
    assert_eq!(proxy.blob_gets(), 0);
    assert_eq!(
        head_manifest(&proxy, "through/proxy", "v1").as_deref(),
        Some(image.digest())
    );
    assert_eq!(proxy.manifest_heads(), 1);
    assert_eq!(head_manifest(&proxy, "through/proxy", "missing"), None);
    let last = proxy.requests().pop().unwrap();
    assert_eq!((last.method.as_str(), last.status), ("HEAD", 404));
    assert_eq!(last.endpoint(), Endpoint::Manifest);
    assert_eq!(
        (last.repo(), last.reference()),
        ("through/proxy", "missing")
    );

    let (big, size) = pushed.blobs.iter().max_by_key(|(_, size)| *size).unwrap();
    let data = get_blob(&proxy, "through/proxy", big).unwrap();
    assert_eq!(
        (data.len() as u64, sha256_digest(&data)),
        (*size, big.clone())
    );
}

#[test]
fn proxy_corrupts_blob_bodies_on_request() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    let image = Image::single(Flavor::Oci, 1, 64 * 1024);
    let pushed = image.push(&registry, "app", "v1");
    let (layer, size) = pushed
        .blobs
        .iter()
        .max_by_key(|(_, size)| *size)
        .unwrap()
        .clone();

    proxy.add_rule(times(1, corrupt_blob(&layer)));
    let corrupted = get_blob(&proxy, "app", &layer).unwrap();
    assert_eq!(corrupted.len() as u64, size);
    assert_ne!(sha256_digest(&corrupted), layer);
    let intact = get_blob(&proxy, "app", &layer).unwrap();
    assert_eq!(sha256_digest(&intact), layer);
    assert_eq!(proxy.blob_gets(), 2);
}

#[test]
fn proxy_answers_for_the_registry_when_told() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    Image::single(Flavor::Oci, 1, 128).push(&registry, "app", "v1");
    proxy.add_rule(fail_with(|r: &RequestInfo| r.is_manifest_get(), 429));
    proxy.add_rule(|r: &RequestInfo| {
        r.is_manifest_head().then(|| {
            Action::ForwardWithHeaders(vec![("ratelimit-remaining".into(), "7;w=21600".into())])
        })
    });
    let url = format!("http://{}/v2/app/manifests/v1", proxy.host());
    let response = raw_client()
        .get(&url)
        .header("accept", ACCEPT)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.text().unwrap().contains("\"errors\""));
    let response = raw_client()
        .head(&url)
        .header("accept", ACCEPT)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["ratelimit-remaining"], "7;w=21600");
    assert_eq!(response.headers()["content-type"], OCI_MANIFEST);
    assert!(response.headers().contains_key("docker-content-digest"));

    proxy.clear_rules();
    assert!(get_manifest(&proxy, "app", "v1").is_some());
    let statuses: Vec<u16> = proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200, 200]);
}

#[test]
fn proxy_holds_a_request_until_released() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    let holder = proxy.hold_on(|r| r.is_manifest_put() && r.reference() == "v1");
    let image = Image::multi_arch(Flavor::Docker, &["linux/amd64", "linux/arm64"], 1, 1024);
    let target = proxy.host().to_owned();
    let pusher = {
        let image = image.clone();
        thread::spawn(move || image.push(target.as_str(), "held", "v1"))
    };
    assert!(holder.wait(Duration::from_secs(10)));
    // Everything but the tag is there while the tag PUT is parked.
    assert_eq!(head_manifest(&registry, "held", "v1"), None);
    for child in image.children() {
        assert!(head_manifest(&registry, "held", &child.digest).is_some());
    }
    holder.release();
    pusher.join().unwrap();
    assert_eq!(
        head_manifest(&registry, "held", "v1").as_deref(),
        Some(image.digest())
    );
}

#[test]
fn dropping_a_holder_cuts_the_held_request_off() {
    let registry = Registry::start();
    let proxy = Proxy::start(registry.host());
    let holder = proxy.hold_on(|r| r.is_blob_put());
    let target = proxy.host().to_owned();
    let pusher = thread::spawn(move || {
        Image::single(Flavor::Oci, 1, 1024).push(target.as_str(), "cut", "v1");
    });
    assert!(holder.wait(Duration::from_secs(10)));
    drop(holder);
    assert!(pusher.join().is_err(), "the push should have failed");
    assert_eq!(head_manifest(&registry, "cut", "v1"), None);
    let held = proxy
        .requests()
        .into_iter()
        .find(Logged::is_blob_put)
        .unwrap();
    assert_eq!(held.status, 0);
    // The hold fired once: later requests pass.
    Image::single(Flavor::Oci, 1, 1024).push(&proxy, "cut", "v1");

    // A holder dropped before anything arrived holds nothing.
    drop(proxy.hold_on(|r| r.is_manifest_get()));
    assert!(get_manifest(&proxy, "cut", "v1").is_some());
}

#[test]
fn runner_captures_output_exit_codes_and_timeouts() {
    let run = Command::new("sh")
        .args(["-c", "echo out; echo err >&2; exit 3"])
        .run();
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (Some(3), "out\n", "err\n")
    );

    let started = Instant::now();
    let timed_out = std::panic::catch_unwind(|| {
        Command::new("sleep")
            .arg("30")
            .run_with_timeout(Duration::from_millis(300))
    });
    assert!(timed_out.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));

    let mut spawned = Command::new("sh")
        .args(["-c", "echo ready; exec sleep 30"])
        .start();
    assert!(spawned.wait_for_output("ready", Duration::from_secs(10)));
    assert!(spawned.is_running());
    spawned.terminate();
    let run = spawned.wait(Duration::from_secs(10));
    assert_eq!(run.code, None, "killed by SIGTERM");
    assert_eq!(run.stdout, "ready\n");
}

#[test]
fn regmirror_runs_in_a_sandbox_without_the_developers_environment() {
    let sandbox = Sandbox::new();
    let config = sandbox.write_config("# empty\n");
    assert!(config.ends_with("mirrors.toml"));
    let command = sandbox.regmirror();
    let envs: Vec<_> = command.get_envs().collect();
    let home = sandbox.path().as_os_str();
    assert!(envs.contains(&("HOME".as_ref(), Some(home))));
    assert!(envs.contains(&("RUST_LOG".as_ref(), None)));
    assert!(sandbox.path().join(".docker").is_dir());
    let mut command = command;
    let run = command.arg("--help").run();
    assert!(run.code.is_some(), "{}", run.output());
}
