//! Signatures, attestations and SBOMs travel with the image (`referrers = true`): cosign's
//! tags, the OCI 1.1 fallback tag, and a source with the referrers API (a stand-in in front of
//! distribution 2.8, which has none) into a target without it.

mod harness;

use std::sync::{Arc, Mutex};

use harness::proxy::referrers_api;
use harness::proxy::Endpoint;
use harness::*;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64", "linux/s390x"];

/// `sha256-<hex>` of a digest, and the same with a suffix: the tag scheme.
fn scheme_tag(digest: &str, suffix: &str) -> String {
    format!("sha256-{}{suffix}", digest.trim_start_matches("sha256:"))
}

#[test]
fn cosign_tags_and_the_oci_fallback_tag_travel_with_the_image_and_a_later_signature_costs_one_pull()
{
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 1024);
    image.push(&upstream, "team/app", "1.0");
    // cosign's older scheme: artifacts tagged after the image's digest.
    let signature = Image::artifact(512);
    let attestation = Image::artifact(512);
    signature.push(&upstream, "team/app", &scheme_tag(image.digest(), ".sig"));
    attestation.push(&upstream, "team/app", &scheme_tag(image.digest(), ".att"));
    // OCI 1.1 without the API: the referrer pushed by digest, and the fallback index tagged.
    let sbom = Image::referrer(&image, None, "application/spdx+json");
    sbom.push_by_digest(&upstream, "team/app");
    let fallback = ImageBuilder::index_of(&[&sbom]);
    fallback.push(&upstream, "team/app", &scheme_tag(image.digest(), ""));
    // An unrelated image's signature is not this image's.
    let other = Image::single(Flavor::Oci, 1, 256);
    other.push(&upstream, "team/app", "other");
    Image::artifact(64).push(&upstream, "team/app", &scheme_tag(other.digest(), ".sig"));

    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{}/team/app\"\ntags = [\"1.0\"]\ntarget = \"{}/app\"\nreferrers = true\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0, failed 0 in");
    for (tag, artifact) in [
        (scheme_tag(image.digest(), ".sig"), &signature),
        (scheme_tag(image.digest(), ".att"), &attestation),
        (scheme_tag(image.digest(), ""), &fallback),
    ] {
        assert_eq!(
            head_manifest(&target, "app", &tag).as_deref(),
            Some(artifact.digest()),
            "{tag} travels with the image"
        );
        check_complete(&target, "app", &tag).unwrap();
    }
    assert_eq!(
        head_manifest(&target, "app", sbom.digest()).as_deref(),
        Some(sbom.digest()),
        "the referrer the fallback index lists, by digest"
    );
    assert_eq!(
        head_manifest(&target, "app", &scheme_tag(other.digest(), ".sig")),
        None,
        "another image's signature stays behind"
    );

    // Unchanged: no pull; the repository listed once.
    source.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    again.assert_summary("mirrored 0, unchanged 1, failed 0 in");
    assert_eq!(source.manifest_gets(), 0, "{:#?}", source.requests());
    assert_eq!(
        source.count(|r| r.endpoint() == Endpoint::Tags),
        1,
        "one listing for the tag scheme"
    );

    // A signature added upstream to the unchanged image: found by the next pass, one pull
    // (the signature's own manifest), the image itself not pulled.
    let resigned = Image::artifact(512);
    resigned.push(&upstream, "team/app", &scheme_tag(image.digest(), ".sig"));
    source.clear();
    let later = sandbox.regmirror().arg("--once").run();
    later.assert_success();
    later.assert_summary("mirrored 1, unchanged 0, failed 0 in");
    assert_eq!(
        head_manifest(&target, "app", &scheme_tag(image.digest(), ".sig")).as_deref(),
        Some(resigned.digest())
    );
    assert_eq!(source.manifest_gets(), 1, "{:#?}", source.requests());
}

#[test]
fn a_source_with_the_referrers_api_gives_a_target_without_it_a_fallback_index() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 1024);
    image.push(&upstream, "team/app", "1.0");
    let listed = Arc::new(Mutex::new(Vec::new()));
    source.add_rule(referrers_api(listed.clone()));
    let refer = |artifact: &Image, subject: &str| {
        artifact.push_by_digest(&upstream, "team/app");
        listed
            .lock()
            .unwrap()
            .push((subject.to_owned(), artifact.descriptor()));
    };
    let signature = Image::referrer(
        &image,
        None,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
    );
    let sbom = Image::referrer(&image, None, "application/spdx+json");
    refer(&signature, image.digest());
    refer(&sbom, image.digest());
    // Referrers of the children: the chosen platform's follows it, the dropped one's not.
    let amd = image.child_digest("linux/amd64").unwrap().to_owned();
    let s390 = image.child_digest("linux/s390x").unwrap().to_owned();
    let amd_attestation = Image::referrer(&image, Some(&amd), "application/vnd.in-toto+json");
    let s390_attestation = Image::referrer(&image, Some(&s390), "application/vnd.in-toto+json");
    refer(&amd_attestation, &amd);
    refer(&s390_attestation, &s390);

    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{}/team/app:1.0\"\ntarget = \"{}/app\"\nreferrers = true\nplatforms = [\"linux/amd64\"]\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    let fallback = |subject: &str| -> Vec<String> {
        match get_manifest(&target, "app", &scheme_tag(subject, "")) {
            Some((body, _)) => {
                let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
                index["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        assert!(d["artifactType"].is_string(), "{d}");
                        d["digest"].as_str().unwrap().to_owned()
                    })
                    .collect()
            }
            None => Vec::new(),
        }
    };
    let mut top = fallback(image.digest());
    top.sort();
    let mut want = vec![signature.digest().to_owned(), sbom.digest().to_owned()];
    want.sort();
    assert_eq!(
        top, want,
        "the image's referrers, in a fallback index the target's clients find"
    );
    assert_eq!(fallback(&amd), [amd_attestation.digest()]);
    assert!(
        fallback(&s390).is_empty(),
        "the dropped platform's referrers stay behind"
    );
    for artifact in [&signature, &sbom, &amd_attestation] {
        check_complete(&target, "app", artifact.digest()).unwrap();
    }
    assert_eq!(
        head_manifest(&target, "app", s390_attestation.digest()),
        None
    );

    // Unchanged, with a referrer added upstream: copied, the fallback index grown, one pull.
    let later = Image::referrer(&image, None, "application/vnd.example.provenance");
    refer(&later, image.digest());
    source.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    assert_eq!(fallback(image.digest()).len(), 3);
    assert_eq!(source.manifest_gets(), 1, "{:#?}", source.requests());
    source.clear();
    sandbox.regmirror().arg("--once").run().assert_success();
    assert_eq!(source.manifest_gets(), 0, "nothing new: no pull");
}
