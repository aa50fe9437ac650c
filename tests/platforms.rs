//! Only the platforms you run: a filtered index a real registry accepts, children byte for
//! byte, nothing spent when nothing changed.

mod harness;

use harness::*;

fn manifest_json(registry: &Registry, repo: &str, reference: &str) -> serde_json::Value {
    let (body, _) = get_manifest(registry, repo, reference).expect("manifest in the target");
    serde_json::from_slice(&body).expect("JSON manifest")
}

fn children_of(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_of_eight_platforms_make_an_index_the_registry_accepts_and_an_unchanged_rerun_pulls_nothing()
{
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let target = Registry::start();
    let oci = ImageBuilder::new(Flavor::Oci)
        .platforms(EIGHT_PLATFORMS)
        .layers(1, 1024)
        .build();
    let docker = ImageBuilder::new(Flavor::Docker)
        .platforms(&["linux/amd64", "linux/arm64/v8", "linux/arm/v7"])
        .build();
    oci.push(&upstream, "team/oci", "1");
    docker.push(&upstream, "team/docker", "1");
    let sandbox = Sandbox::new();
    let config = |platforms: &str| {
        format!(
            "images = [\"{0}/team/oci:1\", \"{0}/team/docker:1\"]\n[defaults]\ntarget = \"{1}/m\"\nplatforms = [{platforms}]\n",
            source.host(),
            target.host()
        )
    };
    // `linux/arm64` without its variant takes the `linux/arm64/v8` child.
    sandbox.write_config(&config("\"linux/amd64\", \"linux/arm64\""));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 2, unchanged 0, failed 0 in");
    assert_eq!(
        source.manifest_gets(),
        2 * 3,
        "each index and its two chosen children, no other platform"
    );
    for (image, repo) in [(&oci, "m/team/oci"), (&docker, "m/team/docker")] {
        let index = manifest_json(&target, repo, "1");
        let kept = [
            image.child_digest("linux/amd64").unwrap().to_owned(),
            image.child_digest("linux/arm64/v8").unwrap().to_owned(),
        ];
        assert_eq!(
            children_of(&index),
            kept,
            "{repo}: the chosen children, in order"
        );
        assert_eq!(
            index["mediaType"],
            image.media_type(),
            "{repo}: the source's type"
        );
        assert_eq!(
            index["annotations"]["io.regmirror.source.digest"],
            image.digest()
        );
        assert_eq!(
            index["annotations"]["io.regmirror.platforms"],
            "linux/amd64,linux/arm64"
        );
        assert_ne!(
            head_manifest(&target, repo, "1").as_deref(),
            Some(image.digest()),
            "{repo}: the top digest differs from upstream"
        );
        for child in &kept {
            // `image@sha256:<child>` means the same in the mirror as upstream.
            assert_eq!(
                head_manifest(&target, repo, child).as_deref(),
                Some(child.as_str())
            );
        }
        check_complete(&target, repo, "1").unwrap();
        let dropped = image.child_digest("linux/arm/v7").unwrap();
        assert_eq!(
            head_manifest(&target, repo, dropped),
            None,
            "{repo}: arm/v7 not copied"
        );
    }

    source.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    again.assert_summary("mirrored 0, unchanged 2, failed 0 in");
    assert_eq!(
        source.manifest_gets(),
        0,
        "an unchanged re-run pulls nothing"
    );

    // Another choice of platforms is another content: copied again; an index with none of
    // them is skipped, saying why, and is no failure.
    source.clear();
    sandbox.write_config(&config("\"linux/s390x\", \"linux/amd64/v2\""));
    let other = sandbox.regmirror().arg("--once").run();
    other.assert_success();
    other.assert_summary("mirrored 1, unchanged 0, skipped 1, failed 0 in");
    assert!(
        other.stdout.contains("skipped     ")
            && other.stdout.contains("team/docker:1")
            && other.stdout.contains("none of its platforms"),
        "{}",
        other.output()
    );
    let index = manifest_json(&target, "m/team/oci", "1");
    assert_eq!(
        children_of(&index),
        [oci.child_digest("linux/s390x").unwrap().to_owned()],
        "a choice naming a variant takes only that variant: amd64 children name none"
    );
}

#[test]
fn a_single_platform_image_is_copied_as_it_is_or_skipped_with_a_reason() {
    let upstream = Registry::start();
    let target = Registry::start();
    let amd = ImageBuilder::new(Flavor::Oci)
        .single_platform("linux/amd64")
        .build();
    let arm = ImageBuilder::new(Flavor::Docker)
        .single_platform("linux/arm64/v8")
        .build();
    amd.push(&upstream, "team/amd", "1");
    arm.push(&upstream, "team/arm", "1");
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "images = [\"{0}/team/amd:1\", \"{0}/team/arm:1\"]\n[defaults]\ntarget = \"{1}/m\"\nplatforms = [\"linux/amd64\"]\n",
        upstream.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0, skipped 1, failed 0 in");
    assert_eq!(
        head_manifest(&target, "m/team/amd", "1").as_deref(),
        Some(amd.digest()),
        "copied as it is"
    );
    assert!(tags(&target, "m/team/arm").is_empty());
    assert!(
        run.stdout.contains(
            "a single-platform image for linux/arm64/v8, not in platforms = [linux/amd64]"
        ),
        "{}",
        run.output()
    );
}

#[test]
fn attestations_follow_the_chosen_platforms_when_referrers_are_mirrored() {
    let upstream = Registry::start();
    let target = Registry::start();
    let image = ImageBuilder::new(Flavor::Oci)
        .platforms(&["linux/amd64", "linux/arm64", "linux/s390x"])
        .with_attestations()
        .build();
    image.push(&upstream, "team/app", "1");
    let sandbox = Sandbox::new();
    let config = |referrers: bool| {
        format!(
            "[[mirror]]\nsource = \"{}/team/app:1\"\ntarget = \"{}/app{}\"\nplatforms = [\"linux/amd64\"]\nreferrers = {referrers}\n",
            upstream.host(),
            target.host(),
            u8::from(referrers)
        )
    };
    sandbox.write_config(&config(false));
    sandbox.regmirror().arg("--once").run().assert_success();
    let without = manifest_json(&target, "app0", "1");
    assert_eq!(children_of(&without).len(), 1, "the image alone: {without}");
    sandbox.write_config(&config(true));
    sandbox.regmirror().arg("--once").run().assert_success();
    let with = manifest_json(&target, "app1", "1");
    let kept = children_of(&with);
    assert_eq!(kept.len(), 2, "the image and its attestation: {with}");
    assert_eq!(kept[0], image.child_digest("linux/amd64").unwrap());
    assert_eq!(
        with["manifests"][1]["annotations"]["vnd.docker.reference.digest"],
        kept[0].as_str()
    );
    check_complete(&target, "app1", "1").unwrap();
}
