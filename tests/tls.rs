//! `regmirror --once` against registries serving HTTPS with certificates from private CAs:
//! trusted through `ca_file`, refused without it, and plain HTTP sent to a TLS port.

mod harness;

use std::fs;

use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64"];

/// A `[registries]` entry trusting `registry`'s CA, copied into the sandbox as `name`: the
/// config names it relative to mirrors.toml.
fn trusting(sandbox: &Sandbox, registry: &Registry, name: &str) -> String {
    let pem = fs::read_to_string(registry.ca_pem().expect("a TLS registry")).unwrap();
    sandbox.write_file(name, &pem);
    format!(
        "[registries.\"{}\"]\nca_file = \"{name}\"\n",
        registry.host()
    )
}

/// The one `FAILED` line of a run.
fn failed_line(run: &Run) -> &str {
    let failed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{}", run.output());
    failed[0]
}

#[test]
fn a_multi_arch_image_mirrors_between_tls_registries_trusted_through_one_ca_bundle() {
    let source = Registry::start_with(RegistryOptions::tls());
    let target = Registry::start_with(RegistryOptions::tls());
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 4096);
    image.push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    // One bundle holding both CAs, as an organisation's CA file does: each registry's CA is
    // found wherever it stands in the file (the source's second).
    let bundle: String = [&target, &source]
        .iter()
        .map(|r| fs::read_to_string(r.ca_pem().expect("a TLS registry")).unwrap())
        .collect();
    sandbox.write_file("certs/bundle.pem", &bundle);
    // No `insecure`: a ca_file means HTTPS, though loopback registries default to plain HTTP.
    sandbox.write_config(&format!(
        "images = [\"{src}/team/app:1.0\"]\n[defaults]\ntarget = \"{dst}/mirror\"\n\
         [registries.\"{src}\"]\nca_file = \"certs/bundle.pem\"\n\
         [registries.\"{dst}\"]\nca_file = \"certs/bundle.pem\"\n",
        src = source.host(),
        dst = target.host(),
    ));

    sandbox.regmirror().arg("--once").run().assert_success();
    assert_eq!(
        head_manifest(&target, "mirror/team/app", "1.0").as_deref(),
        Some(image.digest())
    );
    check_complete(&target, "mirror/team/app", "1.0").unwrap();
}

#[test]
fn an_untrusted_certificate_fails_its_image_at_once_and_says_so_while_others_mirror() {
    let source = Registry::start_with(RegistryOptions::tls());
    let plain = Registry::start();
    let target = Registry::start_with(RegistryOptions::tls());
    Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 4096).push(&source, "team/app", "1.0");
    let other = Image::single(Flavor::Docker, 1, 1024);
    other.push(&plain, "team/other", "1.0");
    let sandbox = Sandbox::new();
    let src = source.host();
    // HTTPS to the source, but only the target's CA is trusted.
    sandbox.write_config(&format!(
        "images = [\"{src}/team/app:1.0\", \"{}/team/other:1.0\"]\n\
         [defaults]\ntarget = \"{}/mirror\"\n\
         [registries.\"{src}\"]\ninsecure = false\n{}",
        plain.host(),
        target.host(),
        trusting(&sandbox, &target, "target-ca.pem"),
    ));

    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    let failed = failed_line(&run);
    assert!(
        failed.contains(&format!("{src}/team/app:1.0 →")),
        "{failed}"
    );
    assert!(failed.contains("TLS certificate not trusted"), "{failed}");
    assert!(failed.contains("set ca_file for this registry"), "{failed}");
    // A certificate does not become trusted by asking again.
    assert!(!run.stderr.contains("will retry"), "{}", run.output());
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
    assert_eq!(
        head_manifest(&target, "mirror/team/other", "1.0").as_deref(),
        Some(other.digest())
    );
    assert_eq!(head_manifest(&target, "mirror/team/app", "1.0"), None);
}

#[test]
fn plain_http_sent_to_a_tls_registry_fails_with_a_hint_to_use_https() {
    let source = Registry::start_with(RegistryOptions::tls());
    let target = Registry::start();
    Image::single(Flavor::Docker, 1, 1024).push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    let src = source.host();
    sandbox.write_config(&format!(
        "images = [\"{src}/team/app:1.0\"]\n[defaults]\ntarget = \"{}\"\n\
         [registries.\"{src}\"]\ninsecure = true\n",
        target.host(),
    ));

    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    let failed = failed_line(&run);
    assert!(
        failed.contains(&format!("{src}/team/app:1.0 →")),
        "{failed}"
    );
    assert!(
        failed.contains("answered plain HTTP with 400 Bad Request, as a registry serving HTTPS"),
        "{failed}"
    );
    assert!(
        failed.contains("set insecure = false or a ca_file"),
        "{failed}"
    );
}

#[test]
fn a_ca_file_is_trusted_for_its_own_registry_only() {
    // One registry, two names: X (`127.0.0.1:port`) trusts the CA through its ca_file, Y
    // (`localhost:port`, the same certificate's other name) has none. Y stands for any other
    // registry, Docker Hub say, impersonated with a certificate from X's CA.
    let source = Registry::start_with(RegistryOptions::tls());
    let target = Registry::start();
    let image = Image::single(Flavor::Oci, 1, 2048);
    image.push(&source, "team/app", "1.0");
    image.push(&source, "team/other", "1.0");
    let x = source.host().to_string();
    let y = x.replace("127.0.0.1", "localhost");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{x}/team/app:1.0\", \"{y}/team/other:1.0\"]\n\
         [defaults]\ntarget = \"{}/mirror\"\n{}\
         [registries.\"{y}\"]\ninsecure = false\n",
        target.host(),
        trusting(&sandbox, &source, "x-ca.pem"),
    ));

    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
    let failed = failed_line(&run);
    assert!(
        failed.contains(&format!("{y}/team/other:1.0 →")),
        "{failed}"
    );
    assert!(failed.contains("TLS certificate not trusted"), "{failed}");
    assert_eq!(
        head_manifest(&target, "mirror/team/app", "1.0").as_deref(),
        Some(image.digest())
    );
    assert_eq!(head_manifest(&target, "mirror/team/other", "1.0"), None);
}
