//! A drop-in mirror, as a node sees it: regmirror fills a mirror with `docker.io` and
//! `ghcr.io` images (reached through `endpoint`s, since these machines reach neither), writes
//! the runtimes' settings with `regmirror clients`, and real runtimes configured with nothing
//! else pull the images by their upstream names from the mirror, digest for digest, with the
//! upstreams gone.

mod harness;

use std::path::Path;

use harness::runtimes::{require, Containerd};
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

/// The sha256 digest of a file's bytes.
fn digest_of_file(path: &Path) -> String {
    sha256_digest(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn containerd_skopeo_and_podman_pull_upstream_names_from_the_mirror_with_only_the_generated_settings(
) {
    // Upstreams: Docker Hub behind a proxy registry that serves it under /v2/hub/ (as
    // Artifactory's remote repositories do), GHCR at a host of its own.
    let hub_upstream = Registry::start();
    let hub = Proxy::start_under(hub_upstream.host(), "hub");
    let ghcr = Registry::start();
    let mirror_registry = Registry::start();
    let mirror = Proxy::start(mirror_registry.host());

    // Real tar layers: podman unpacks what it pulls and checks it against the config.
    let files = |name: &str| {
        Layer::tar(&[
            (&format!("etc/{name}"), name.as_bytes()),
            ("bin/app", &rand::random::<[u8; 32]>()),
        ])
    };
    let hello = ImageBuilder::new(Flavor::Docker)
        .layers(0, 0)
        .shared_layer(&files("hello"))
        .build();
    let multi = ImageBuilder::new(Flavor::Oci)
        .platforms(PLATFORMS)
        .layers(0, 0)
        .shared_layer(&files("multi"))
        .build();
    let tool = ImageBuilder::new(Flavor::Oci)
        .layers(0, 0)
        .shared_layer(&files("tool"))
        .shared_layer(&files("tool-data"))
        .build();
    hello.push(&hub_upstream, "library/hello", "1.0");
    multi.push(&hub_upstream, "library/multi", "2");
    tool.push(&ghcr, "org/tool", "v1");

    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        r#"
images = ["hello:1.0", "multi:2", "ghcr.io/org/tool:v1"]

[defaults]
target = "{mirror}/mirror"
layout = "registry"

[registries."docker.io"]
endpoint = "http://{hub}/hub"

[registries."ghcr.io"]
endpoint = "http://{ghcr}"
"#,
        mirror = mirror.host(),
        hub = hub.host(),
        ghcr = ghcr.host(),
    ));
    let filled = sandbox.regmirror().arg("--once").run();
    filled.assert_success();
    filled.assert_summary("mirrored 3, unchanged 0, failed 0 in");
    assert_eq!(
        head_manifest(&mirror_registry, "mirror/docker.io/library/hello", "1.0").as_deref(),
        Some(hello.digest())
    );
    assert!(
        hub.requests()
            .iter()
            .all(|r| r.path == "/v2/" || r.path.starts_with("/v2/hub/")),
        "every request to the endpoint goes under its path: {:#?}",
        hub.requests()
    );
    // The report and the budgets are Docker Hub's, whatever host answered.
    assert!(
        filled.stdout.contains("registry-1.docker.io: 4 pulls"),
        "{}",
        filled.output()
    );

    let clients = sandbox.path().join("clients");
    sandbox
        .regmirror()
        .args(["clients", "--out"])
        .arg(&clients)
        .run()
        .assert_success();

    // The upstreams go away: from here on only the mirror can answer.
    drop(hub);
    drop(hub_upstream);
    drop(ghcr);
    mirror.clear();

    // containerd, as the kubelet's CRI drives it: hosts.toml per registry.
    let containerd = Containerd::start();
    let hosts = clients.join("containerd/certs.d");
    for (reference, digest) in [
        ("docker.io/library/hello:1.0", hello.digest()),
        ("docker.io/library/multi:2", multi.digest()),
        ("ghcr.io/org/tool:v1", tool.digest()),
    ] {
        let fetched = containerd.fetch(&hosts, reference);
        assert!(
            fetched.success(),
            "ctr content fetch {reference}\n{}\n--- containerd ---\n{}",
            fetched.output(),
            containerd.log()
        );
        assert_eq!(
            containerd.image_digest(reference).as_deref(),
            Some(digest),
            "{reference} from the mirror at its upstream digest"
        );
    }
    // containerd resolves the tag (a HEAD), then fetches by digest.
    let served: Vec<String> = mirror
        .requests()
        .iter()
        .filter(|r| r.is_manifest_head() || r.is_manifest_get())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    for expected in [
        "HEAD /v2/mirror/docker.io/library/hello/manifests/1.0",
        "GET /v2/mirror/docker.io/library/hello/manifests/sha256:",
        "HEAD /v2/mirror/ghcr.io/org/tool/manifests/v1",
    ] {
        assert!(
            served.iter().any(|s| s.starts_with(expected)),
            "containerd asked the mirror `{expected}…` under the registry layout: {served:#?}"
        );
    }

    // skopeo (containers/image, as podman, CRI-O and buildah): the registries.conf drop-in.
    require("skopeo", "skopeo");
    let policy = sandbox.write_file(
        "policy.json",
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    let conf = clients.join("containers/registries.conf.d/50-regmirror.conf");
    for (reference, digest) in [
        ("docker.io/library/multi:2", multi.digest()),
        ("docker.io/library/hello:1.0", hello.digest()),
        ("ghcr.io/org/tool:v1", tool.digest()),
    ] {
        let dir = sandbox.path().join(reference.replace(['/', ':'], "_"));
        let copied = harness::cli::skopeo(sandbox.path())
            .arg("--registries-conf")
            .arg(&conf)
            .arg("--policy")
            .arg(&policy)
            .args(["copy", "--all", "--preserve-digests"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", dir.display()))
            .run();
        assert!(
            copied.success(),
            "skopeo copy {reference}\n{}",
            copied.output()
        );
        assert_eq!(
            digest_of_file(&dir.join("manifest.json")),
            digest,
            "{reference} through skopeo at its upstream digest"
        );
    }

    // podman, as root on a private storage, with the same drop-in as its registries.conf.
    require("podman", "podman");
    let podman = |args: &[&str]| {
        let mut command = std::process::Command::new("podman");
        command
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("HOME", sandbox.path())
            .env("XDG_RUNTIME_DIR", sandbox.path())
            .arg("--root")
            .arg(sandbox.path().join("podman/root"))
            .arg("--runroot")
            .arg(sandbox.path().join("podman/run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args);
        command.run()
    };
    let policy_arg = format!("--signature-policy={}", policy.display());
    for (reference, digest) in [
        ("docker.io/library/hello:1.0", hello.digest()),
        ("docker.io/library/multi:2", multi.digest()),
        ("ghcr.io/org/tool:v1", tool.digest()),
    ] {
        let pulled = podman(&["pull", "--quiet", &policy_arg, reference]);
        assert!(
            pulled.success(),
            "podman pull {reference}\n{}",
            pulled.output()
        );
        let inspected = podman(&[
            "image",
            "inspect",
            "--format",
            "{{.RepoDigests}}",
            reference,
        ]);
        let name = reference.rsplit_once(':').unwrap().0;
        assert!(
            inspected.stdout.contains(&format!("{name}@{digest}")),
            "podman pulled {reference} at its upstream digest {digest}\n{}",
            inspected.output()
        );
    }
}

#[test]
fn clients_refuses_the_path_layout_and_names_what_to_set() {
    let sandbox = Sandbox::new();
    sandbox.write_config("images = [\"nginx:1\"]\n[defaults]\ntarget = \"r.io/m\"\n");
    let run = sandbox.regmirror().arg("clients").run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("defaults.layout = \"registry\""),
        "{}",
        run.output()
    );
}
