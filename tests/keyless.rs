//! Keyless `verify`: only images their named signer signed through the named OIDC issuer,
//! with a certificate chained to the trusted root, an SCT and a transparency-log entry, enter
//! the target; each other image fails alone, its outcome naming the check that failed. Both
//! homes of a signature: cosign's `.sig` tag and a Sigstore bundle among the referrers. The
//! signatures are the harness's own Sigstore's (tests/harness/sigstore.rs).

mod harness;

use harness::proxy::referrers_api;
use harness::sigstore::{Log, Sigstore, ACTIONS, RELEASE};
use harness::*;
use std::sync::{Arc, Mutex};

/// The verify line of a mirror that trusts `root.json` and the release workflow of any tag.
const KEYLESS: &str = "verify = { issuer = \"https://token.actions.githubusercontent.com\", \
     identity_regexp = 'https://github\\.com/acme/app/\\.github/workflows/release\\.yml@refs/tags/v.*', \
     trusted_root = \"root.json\" }";

fn config(source: &str, target: &str, tags: &[&str]) -> String {
    let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[mirror]]\nsource = \"{source}/app\"\ntags = [{}]\n{KEYLESS}\ntarget = \"{target}/m/app\"\n",
        tags.join(", ")
    )
}

/// The FAILED line of `tag` in `run`'s report.
fn failure(run: &harness::cli::Run, tag: &str) -> String {
    run.stdout
        .lines()
        .find(|l| l.starts_with("FAILED") && l.contains(&format!("/app:{tag} →")))
        .unwrap_or_else(|| panic!("no failure for {tag}\n{}", run.output()))
        .to_string()
}

/// The verified image 1 again, through a proxy that counts: unchanged, it is neither pulled
/// nor verified again.
fn unchanged_costs_no_pull(sandbox: &Sandbox, source: &Registry, target: &Registry) {
    let proxy = Proxy::start(source.host());
    sandbox.write_config(&config(proxy.host(), target.host(), &["1"]));
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    assert_eq!(proxy.manifest_gets(), 0, "{:#?}", proxy.requests());
}

/// `count` images pushed into `source`'s `app` as tags `1`, `2`…
fn pushed(source: &Registry, count: usize) -> Vec<Image> {
    let images: Vec<Image> = (0..count)
        .map(|_| Image::single(Flavor::Oci, 1, 256))
        .collect();
    for (i, image) in images.iter().enumerate() {
        image.push(source, "app", &format!("{}", i + 1));
    }
    images
}

const FORK: &str = "https://github.com/fork/app/.github/workflows/release.yml@refs/tags/v1.0.0";
const GOOGLE: &str = "https://accounts.google.com";

#[test]
fn only_what_the_named_signer_signed_under_sig_tags_is_mirrored_and_each_refusal_names_its_check() {
    let source = Registry::start();
    let target = Registry::start();
    let sigstore = Sigstore::new(1);
    let rogue = sigstore.rogue_ca(2);
    let images: Vec<Image> = (0..10)
        .map(|_| Image::single(Flavor::Oci, 1, 256))
        .collect();
    for (i, image) in images.iter().enumerate() {
        image.push(&source, "app", &format!("{}", i + 1));
    }
    let digest = |i: usize| images[i - 1].digest();
    let release = sigstore.signer(RELEASE, ACTIONS);
    // 1: the release workflow's. 2: unsigned.
    release.sign_tag(&source, "app", digest(1), digest(1), Log::Logged, false);
    // 3: a fork's workflow. 4: the right identity through another issuer.
    let fork = sigstore.signer(FORK, ACTIONS);
    fork.sign_tag(&source, "app", digest(3), digest(3), Log::Logged, false);
    let google = sigstore.signer(RELEASE, GOOGLE);
    google.sign_tag(&source, "app", digest(4), digest(4), Log::Logged, false);
    // 5: the payload changed after signing. 6: a signature of image 1 under image 6's tag.
    release.sign_tag(&source, "app", digest(5), digest(5), Log::Logged, true);
    release.sign_tag(&source, "app", digest(6), digest(1), Log::Logged, false);
    // 7: never logged. 8: a certificate expired when it signed. 9: a rogue CA's certificate.
    // 10: a log entry promised by a log the root does not name.
    release.sign_tag(&source, "app", digest(7), digest(7), Log::Missing, false);
    let expired = sigstore.expired_signer(RELEASE, ACTIONS);
    expired.sign_tag(&source, "app", digest(8), digest(8), Log::Logged, false);
    let foreign = rogue.signer(RELEASE, ACTIONS);
    foreign.sign_tag(&source, "app", digest(9), digest(9), Log::Logged, false);
    release.sign_tag(&source, "app", digest(10), digest(10), Log::Forged, false);
    // The target's tag 3 holds an older image, which a refusal must leave in place.
    let older = Image::single(Flavor::Oci, 1, 128);
    older.push(&target, "m/app", "3");

    let sandbox = Sandbox::new();
    sandbox.write_file("root.json", &sigstore.trusted_root());
    let tags: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    sandbox.write_config(&config(source.host(), target.host(), &tags));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 9");
    let expect = [
        ("2", "not copied: no signature ("),
        ("3", "was made by https://github.com/fork/app/"),
        ("4", "names the issuer https://accounts.google.com, not"),
        ("5", "bad signature in"),
        ("6", "signs another digest"),
        ("7", "is not proven to be in the transparency log"),
        (
            "8",
            "is not trusted: it was not valid when the signature was made",
        ),
        ("9", "is not trusted: certificate chain is invalid"),
        ("10", "is not proven to be in the transparency log"),
    ];
    for (tag, says) in expect {
        let line = failure(&run, tag);
        assert!(
            line.contains("unverified: ") && line.contains(says),
            "{tag}: {line}"
        );
    }
    assert_eq!(
        head_manifest(&target, "m/app", "1").as_deref(),
        Some(digest(1))
    );
    let signature = format!("{}.sig", digest(1).replacen(':', "-", 1));
    assert!(
        head_manifest(&target, "m/app", &signature).is_some(),
        "the signature travels with the image, so the far side can verify again"
    );
    assert_eq!(
        head_manifest(&target, "m/app", "3").as_deref(),
        Some(older.digest()),
        "a refused image leaves the target's tag alone"
    );
    for tag in ["2", "4", "5", "6", "7", "8", "9", "10"] {
        assert_eq!(head_manifest(&target, "m/app", tag), None, "{tag}");
    }

    unchanged_costs_no_pull(&sandbox, &source, &target);
}

#[test]
fn a_sigstore_bundle_among_the_referrers_vouches_for_an_image_and_each_refusal_names_its_check() {
    let source = Registry::start();
    let target = Registry::start();
    let sigstore = Sigstore::new(3);
    let images = pushed(&source, 6);
    let release = sigstore.signer(RELEASE, ACTIONS);
    // 1: the release workflow's bundle. 2: a fork's. 3: a bundle of image 1 attached to 3.
    // 4: never logged. 5: a forged log. 6: an expired certificate.
    release.attach_bundle(&source, "app", &images[0], images[0].digest(), Log::Logged);
    let fork = sigstore.signer(FORK, ACTIONS);
    fork.attach_bundle(&source, "app", &images[1], images[1].digest(), Log::Logged);
    release.attach_bundle(&source, "app", &images[2], images[0].digest(), Log::Logged);
    release.attach_bundle(&source, "app", &images[3], images[3].digest(), Log::Missing);
    release.attach_bundle(&source, "app", &images[4], images[4].digest(), Log::Forged);
    let expired = sigstore.expired_signer(RELEASE, ACTIONS);
    expired.attach_bundle(&source, "app", &images[5], images[5].digest(), Log::Logged);

    let sandbox = Sandbox::new();
    sandbox.write_file("root.json", &sigstore.trusted_root());
    let tags = ["1", "2", "3", "4", "5", "6"];
    sandbox.write_config(&config(source.host(), target.host(), &tags));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 5");
    let expect = [
        ("2", "was made by https://github.com/fork/app/"),
        ("3", "signs another digest"),
        ("4", "is not proven to be in the transparency log"),
        ("5", "is not proven to be in the transparency log"),
        (
            "6",
            "is not trusted: it was not valid when the signature was made",
        ),
    ];
    for (tag, says) in expect {
        let line = failure(&run, tag);
        assert!(
            line.contains("Sigstore bundle") && line.contains(says),
            "{tag}: {line}"
        );
    }
    let first = images[0].digest();
    assert_eq!(head_manifest(&target, "m/app", "1").as_deref(), Some(first));
    let fallback = format!("sha256-{}", first.trim_start_matches("sha256:"));
    assert!(
        head_manifest(&target, "m/app", &fallback).is_some(),
        "the bundle travels with the image"
    );
    unchanged_costs_no_pull(&sandbox, &source, &target);
}

#[test]
fn a_keyless_verify_without_its_signer_or_with_a_bad_root_is_a_config_error_with_its_line() {
    let sandbox = Sandbox::new();
    sandbox.write_file("root.json", &Sigstore::new(5).trusted_root());
    sandbox.write_config(&config("r.example.com", "t.example.com", &["1"]));
    let run = sandbox.regmirror().arg("check").run();
    run.assert_success();
    assert!(
        run.stdout.contains(
            "copied only when signed keyless by one matching \
             ^(?:https://github\\.com/acme/app/\\.github/workflows/release\\.yml@refs/tags/v.*)$ \
             through https://token.actions.githubusercontent.com, under "
        ) && run.stdout.contains("root.json"),
        "{}",
        run.output()
    );

    let cases = [
        (
            "verify = { issuer = \"https://token.actions.githubusercontent.com\" }",
            "mirror.verify: keyless needs `identity`",
        ),
        (
            "verify = { identity = \"x\" }",
            "mirror.verify: keyless needs `issuer`",
        ),
        (
            "verify = { issuer = \"i\", identity_regexp = \"(\" }",
            "mirror.verify.identity_regexp: not a regular expression",
        ),
        (
            "verify = { key = \"cosign.pub\", issuer = \"i\", identity = \"x\" }",
            "either `key` or `issuer`",
        ),
        (
            "verify = { issuer = \"i\", identity = \"x\", trusted_root = \"root.json\" }",
            "mirror.verify.trusted_root: ",
        ),
        ("verify = { }", "say whose signature"),
    ];
    sandbox.write_file("root.json", "{\"mediaType\": \"not a root\"}");
    for (line, says) in cases {
        sandbox.write_config(&format!(
            "[[mirror]]\nsource = \"r.example.com/app\"\ntags = [\"1\"]\n{line}\n\
             target = \"t.example.com/app\"\n"
        ));
        let run = sandbox.regmirror().arg("check").run();
        run.assert_code(2);
        assert!(
            run.stderr.contains("mirrors.toml:4:") && run.stderr.contains(says),
            "{line}\n{}",
            run.output()
        );
    }
}

#[test]
fn a_bundle_listed_by_the_referrers_api_vouches_for_an_image() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let listed = Arc::new(Mutex::new(Vec::new()));
    source.add_rule(referrers_api(listed.clone()));
    let target = Registry::start();
    let sigstore = Sigstore::new(4);
    let images = pushed(&upstream, 2);
    let release = sigstore.signer(RELEASE, ACTIONS);
    let fork = sigstore.signer(FORK, ACTIONS);
    for (image, signer) in images.iter().zip([&release, &fork]) {
        let bundle = signer.bundle(image, image.digest(), Log::Logged);
        bundle.push_by_digest(&upstream, "app");
        let subject = image.digest().to_string();
        listed.lock().unwrap().push((subject, bundle.descriptor()));
    }
    let sandbox = Sandbox::new();
    sandbox.write_file("root.json", &sigstore.trusted_root());
    sandbox.write_config(&config(source.host(), target.host(), &["1", "2"]));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
    assert!(failure(&run, "2").contains("was made by https://github.com/fork/app/"));
    let referrers = source.count(|r| r.path.contains("/referrers/"));
    assert!(
        referrers >= 2,
        "the bundles were found through the API: {referrers}"
    );
    assert_eq!(
        head_manifest(&target, "m/app", "1").as_deref(),
        Some(images[0].digest())
    );
}
