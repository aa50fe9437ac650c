//! OCI image layouts as a source or a target (`oci:DIR`): what regmirror writes, skopeo and
//! containerd read; what skopeo writes, regmirror reads; and the air gap crossed both ways,
//! with tag rules, a platform subset, signatures and referrers, a kill mid-export, a second
//! writer and a corrupt blob.

mod harness;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::cli::skopeo;
use harness::proxy::referrers_api;
use harness::runtimes::{require, Containerd};
use harness::*;
use serde_json::Value;

const PLATFORMS: &[&str] = &["linux/amd64", "linux/arm64", "linux/s390x"];

/// The `ref.name` and digest of every named entry of `dir/index.json`.
fn names(dir: &Path) -> Vec<(String, String)> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| {
            let name = entry["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((
                name.to_string(),
                entry["digest"].as_str().unwrap().to_string(),
            ))
        })
        .collect()
}

/// The digest `dir/index.json` names `name` with.
fn named(dir: &Path, name: &str) -> Option<String> {
    names(dir)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, digest)| digest)
}

/// Every blob file of the layout, with its size.
fn blob_files(dir: &Path) -> BTreeSet<(String, u64)> {
    let mut files = BTreeSet::new();
    for entry in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        files.insert((
            entry.file_name().to_string_lossy().into_owned(),
            entry.metadata().unwrap().len(),
        ));
    }
    files
}

/// `skopeo inspect --raw` of an image in a layout: its manifest's digest, or skopeo's error.
fn skopeo_digest(home: &Path, reference: &str) -> Result<String, String> {
    require("skopeo", "skopeo");
    let run = skopeo(home).args(["inspect", "--raw", reference]).run();
    if !run.success() {
        return Err(run.output());
    }
    Ok(sha256_digest(run.stdout.as_bytes()))
}

/// The layout `dir` of a sandbox, as mirrors.toml names it.
fn layout_in(sandbox: &Sandbox, name: &str) -> (PathBuf, String) {
    let dir = sandbox.path().join(name);
    let written = format!("oci:{}", dir.display());
    (dir, written)
}

#[test]
fn skopeo_reads_what_regmirror_wrote_and_copies_it_back_with_equal_digests() {
    let source = Registry::start();
    let shared = Layer::random(64 * 1024);
    let app = ImageBuilder::new(Flavor::Oci)
        .platforms(PLATFORMS)
        .layers(1, 32 * 1024)
        .shared_layer(&shared)
        .build();
    let tool = ImageBuilder::new(Flavor::Docker)
        .single_platform("linux/amd64")
        .layers(1, 16 * 1024)
        .shared_layer(&shared)
        .build();
    app.push(&source, "team/app", "1.0");
    tool.push(&source, "team/tool", "2");
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&format!(
        "images = [\"{0}/team/app:1.0\", \"{0}/team/tool:2\"]\n[defaults]\ntarget = \"{layout}:mirror\"\n",
        source.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    // Messages name the image in the layout as skopeo does.
    assert!(
        run.stderr
            .contains(&format!("target={layout}:mirror/team/app:1.0")),
        "{}",
        run.output()
    );

    assert_eq!(
        named(&dir, "mirror/team/app:1.0").as_deref(),
        Some(app.digest())
    );
    assert_eq!(
        named(&dir, "mirror/team/tool:2").as_deref(),
        Some(tool.digest())
    );
    // Every blob once, whichever images share it: the layer both have is one file.
    let unique: BTreeSet<String> = app
        .blobs()
        .into_iter()
        .chain(tool.blobs())
        .map(|(digest, _)| digest)
        .collect();
    let manifests = 1 + PLATFORMS.len() + 1;
    assert_eq!(blob_files(&dir).len(), unique.len() + manifests);
    assert!(!dir.join(".regmirror/tmp").read_dir().unwrap().any(|_| true));

    // skopeo 1.9 reads OCI-typed entries of a layout only; the Docker-typed tool, kept byte
    // for byte (its digest unchanged), is read by regmirror and containerd.
    let reference = format!("{layout}:mirror/team/app:1.0");
    assert_eq!(
        skopeo_digest(sandbox.path(), &reference).unwrap(),
        app.digest()
    );
    let back = Registry::start();
    skopeo(sandbox.path())
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("{layout}:mirror/team/app:1.0"))
        .arg(format!("docker://{}/app:back", back.host()))
        .run()
        .assert_success();
    assert_eq!(
        head_manifest(&back, "app", "back").as_deref(),
        Some(app.digest())
    );
    check_complete(&back, "app", "back").unwrap();
}

#[test]
fn regmirror_reads_a_layout_skopeo_wrote_into_a_registry() {
    require("skopeo", "skopeo");
    let source = Registry::start();
    let app = Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 16 * 1024);
    app.push(&source, "team/app", "1.0");
    let sandbox = Sandbox::new();
    let (_, layout) = layout_in(&sandbox, "by-skopeo");
    skopeo(sandbox.path())
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{}/team/app:1.0", source.host()))
        .arg(format!("{layout}:team/app:1.0"))
        .run()
        .assert_success();
    let target = Registry::start();
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{layout}:team/app\"\ninclude = [\".*\"]\n[defaults]\ntarget = \"{}/copied\"\n",
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("mirrored 1, unchanged 0, failed 0");
    assert_eq!(
        head_manifest(&target, "copied/team/app", "1.0").as_deref(),
        Some(app.digest())
    );
    check_complete(&target, "copied/team/app", "1.0").unwrap();
}

#[test]
fn containerd_imports_a_tar_of_the_layout_under_its_names() {
    let containerd = Containerd::start();
    let source = Registry::start();
    let app = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 8 * 1024);
    let tool = Image::single(Flavor::Docker, 1, 8 * 1024);
    app.push(&source, "team/app", "1.0");
    tool.push(&source, "team/tool", "2");
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&format!(
        "images = [\"{0}/team/app:1.0\", \"{0}/team/tool:2\"]\n[defaults]\ntarget = \"{layout}\"\nlayout = \"registry\"\n",
        source.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();

    let archive = sandbox.path().join("transfer.tar");
    let mut tar = tar::Builder::new(fs::File::create(&archive).unwrap());
    tar.append_dir_all(".", &dir).unwrap();
    tar.finish().unwrap();
    drop(tar);
    containerd
        .ctr()
        .args(["images", "import", "--no-unpack", "--all-platforms"])
        .arg(&archive)
        .run()
        .assert_success();
    let host = source.host().replace(':', "-");
    for (name, image) in [
        (format!("{host}/team/app:1.0"), &app),
        (format!("{host}/team/tool:2"), &tool),
    ] {
        assert_eq!(named(&dir, &name).as_deref(), Some(image.digest()));
        assert_eq!(
            containerd.image_digest(&name).as_deref(),
            Some(image.digest()),
            "{name}: {}",
            containerd.ctr().args(["images", "ls"]).run().output()
        );
    }
}

/// The connected side of the air gap: a source with the referrers API (a stand-in in front of
/// distribution 2.8), its images, and what refers to them.
struct Connected {
    _upstream: Registry,
    source: Proxy,
    /// Tag rules pick v1.*, two of three platforms.
    filtered: Vec<(String, Image)>,
    /// Every platform, signed with a cosign tag and an SBOM referrer.
    signed: Image,
    signature: Image,
    sbom: Image,
    /// Refers to the amd64 child of v1.0.0, so it travels with the platform subset.
    child_sbom: Image,
}

fn connected() -> Connected {
    let upstream = Registry::start();
    let listed = Arc::new(Mutex::new(Vec::new()));
    let source = Proxy::start(upstream.host());
    source.add_rule(referrers_api(listed.clone()));
    let mut filtered = Vec::new();
    for tag in ["v1.0.0", "v1.1.0", "v2.0.0"] {
        let image = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 16 * 1024);
        image.push(&upstream, "team/app", tag);
        filtered.push((tag.to_string(), image));
    }
    let signed = Image::multi_arch(Flavor::Oci, PLATFORMS, 1, 16 * 1024);
    signed.push(&upstream, "team/signed", "1");
    let signature = Image::artifact(256);
    let hex = signed.digest().trim_start_matches("sha256:").to_string();
    signature.push(&upstream, "team/signed", &format!("sha256-{hex}.sig"));
    let sbom = Image::referrer(&signed, None, "application/spdx+json");
    sbom.push_by_digest(&upstream, "team/signed");
    let first = &filtered[0].1;
    let amd64 = first.child_digest("linux/amd64").unwrap().to_string();
    let child_sbom = Image::referrer(first, Some(&amd64), "application/spdx+json");
    child_sbom.push_by_digest(&upstream, "team/app");
    {
        let mut listed = listed.lock().unwrap();
        listed.push((signed.digest().to_string(), sbom.descriptor()));
        listed.push((amd64, child_sbom.descriptor()));
    }
    Connected {
        _upstream: upstream,
        source,
        filtered,
        signed,
        signature,
        sbom,
        child_sbom,
    }
}

/// mirrors.toml of the connected side: both repositories into `layout`, by registry layout.
fn export_config(source: &str, layout: &str) -> String {
    format!(
        "[defaults]\ntarget = \"{layout}\"\nlayout = \"registry\"\nreferrers = true\n\
         [[mirror]]\nsource = \"{source}/team/app\"\ninclude = ['v1\\..*']\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\
         [[mirror]]\nsource = \"{source}/team/signed\"\ntags = [\"1\"]\n"
    )
}

/// mirrors.toml of the far side: every tag the layout has of both repositories, into
/// `target`.
fn import_config(layout: &str, written: &str, target: &str) -> String {
    format!(
        "[defaults]\ntarget = \"{target}/far\"\nreferrers = true\n\
         [[mirror]]\nsource = \"{layout}:{written}/team/app\"\ninclude = [\".*\"]\n\
         [[mirror]]\nsource = \"{layout}:{written}/team/signed\"\ninclude = [\".*\"]\n"
    )
}

#[test]
fn the_air_gap_round_trip_keeps_digests_platforms_signatures_and_referrers() {
    let near = connected();
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&export_config(near.source.host(), &layout));
    let export = sandbox.regmirror().arg("--once").run();
    export.assert_success();
    export.assert_summary("mirrored 3, unchanged 0, failed 0");
    let written = near.source.host().replace(':', "-");

    // The far side: a fresh registry fed from the layout alone.
    let far = Registry::start();
    sandbox.write_config(&import_config(&layout, &written, far.host()));
    let import = sandbox.regmirror().arg("--once").run();
    import.assert_success();
    import.assert_summary("mirrored 3, unchanged 0, failed 0");

    // Names in the layout are kept on the far side: `<prefix>/<name in the layout>`.
    let app = format!("far/{written}/team/app");
    let signed = format!("far/{written}/team/signed");
    let mut far_tags = tags(&far, &app);
    far_tags.retain(|t| !t.starts_with("sha256-"));
    far_tags.sort();
    assert_eq!(far_tags, ["v1.0.0", "v1.1.0"]);
    for (tag, image) in &near.filtered[..2] {
        let in_layout = named(&dir, &format!("{written}/team/app:{tag}")).unwrap();
        assert_eq!(
            head_manifest(&far, &app, tag).as_deref(),
            Some(in_layout.as_str())
        );
        // The filtered index: the source's children of the two platforms, byte for byte.
        let index: Value =
            serde_json::from_slice(&get_manifest(&far, &app, tag).unwrap().0).unwrap();
        let children: BTreeSet<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["digest"].as_str().unwrap())
            .collect();
        let wanted: BTreeSet<&str> = ["linux/amd64", "linux/arm64"]
            .iter()
            .map(|p| image.child_digest(p).unwrap())
            .collect();
        assert_eq!(children, wanted);
        check_complete(&far, &app, tag).unwrap();
    }
    // The signed image whole, its cosign tag, and both referrers, found again on the far
    // side (distribution 2.8 keeps them under the fallback tag).
    assert_eq!(
        head_manifest(&far, &signed, "1").as_deref(),
        Some(near.signed.digest())
    );
    let hex = near.signed.digest().trim_start_matches("sha256:");
    assert_eq!(
        head_manifest(&far, &signed, &format!("sha256-{hex}.sig")).as_deref(),
        Some(near.signature.digest())
    );
    let fallback_lists = |repo: &str, subject: &str, referrer: &Image| {
        let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
        let body = get_manifest(&far, repo, &tag)
            .unwrap_or_else(|| panic!("no {repo}:{tag}"))
            .0;
        let index: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            index["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["digest"] == referrer.digest()),
            "{repo}:{tag} does not list {}",
            referrer.digest()
        );
    };
    fallback_lists(&signed, near.signed.digest(), &near.sbom);
    let amd64 = near.filtered[0].1.child_digest("linux/amd64").unwrap();
    fallback_lists(&app, amd64, &near.child_sbom);
}

#[test]
fn an_unchanged_export_pulls_nothing_and_writes_nothing_and_an_unchanged_import_pushes_nothing() {
    let near = connected();
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&export_config(near.source.host(), &layout));
    sandbox.regmirror().arg("--once").run().assert_success();
    let index_before = fs::metadata(dir.join("index.json"))
        .unwrap()
        .modified()
        .unwrap();
    let blobs_before = blob_files(&dir);
    std::thread::sleep(Duration::from_millis(20));

    near.source.clear();
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    again.assert_summary("mirrored 0, unchanged 3, failed 0");
    assert_eq!(
        near.source.manifest_gets(),
        0,
        "{:?}",
        near.source.requests()
    );
    assert_eq!(
        fs::metadata(dir.join("index.json"))
            .unwrap()
            .modified()
            .unwrap(),
        index_before
    );
    assert_eq!(blob_files(&dir), blobs_before);

    let far_registry = Registry::start();
    let far = Proxy::start(far_registry.host());
    let written = near.source.host().replace(':', "-");
    sandbox.write_config(&import_config(&layout, &written, far.host()));
    sandbox.regmirror().arg("--once").run().assert_success();
    far.clear();
    let unchanged = sandbox.regmirror().arg("--once").run();
    unchanged.assert_summary("mirrored 0, unchanged 3, failed 0");
    assert_eq!(far.manifest_puts(), 0);
    assert_eq!(far.count(|r| r.method == "PUT" || r.method == "POST"), 0);
}

#[test]
fn killed_mid_export_leaves_a_layout_skopeo_reads_and_a_rerun_finishes() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    let images: Vec<Image> = (0..3)
        .map(|_| Image::multi_arch(Flavor::Oci, PLATFORMS, 2, 32 * 1024))
        .collect();
    for (i, image) in images.iter().enumerate() {
        image.push(&upstream, &format!("app{i}"), "1");
    }
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&format!(
        "images = [\"{0}/app0:1\"]\n[defaults]\ntarget = \"{layout}\"\n",
        source.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    sandbox.write_config(&format!(
        "images = [\"{0}/app0:1\", \"{0}/app1:1\", \"{0}/app2:1\"]\n[defaults]\ntarget = \"{layout}\"\n",
        source.host()
    ));
    // Killed while a blob of a new image streams into the layout.
    let last_blob = images[2].blobs().last().unwrap().0.clone();
    let holder = source.hold_on(move |r| r.is_blob_get() && r.reference() == last_blob);
    let child = sandbox.regmirror().arg("--once").start();
    assert!(
        holder.wait(Duration::from_secs(60)),
        "the blob was never asked for"
    );
    let killed = child.kill();
    drop(holder);
    assert_ne!(killed.code, Some(0), "{}", killed.output());

    // Every name the layout has is a complete image skopeo reads.
    assert!(named(&dir, "app0:1").is_some());
    for (name, digest) in names(&dir) {
        assert_eq!(
            skopeo_digest(sandbox.path(), &format!("{layout}:{name}")).unwrap(),
            digest
        );
        let run = skopeo(sandbox.path())
            .args(["copy", "--all"])
            .arg(format!("{layout}:{name}"))
            .arg(format!(
                "dir:{}",
                sandbox
                    .path()
                    .join(format!("check-{}", name.replace([':', '/'], "-")))
                    .display()
            ))
            .run();
        run.assert_success();
    }
    assert_eq!(named(&dir, "app2:1"), None);

    let rerun = sandbox.regmirror().arg("--once").run();
    rerun.assert_success();
    for (i, image) in images.iter().enumerate() {
        assert_eq!(
            named(&dir, &format!("app{i}:1")).as_deref(),
            Some(image.digest())
        );
    }
    assert!(!dir.join(".regmirror/tmp").read_dir().unwrap().any(|_| true));
}

#[test]
fn a_second_process_writing_the_layout_is_refused_naming_the_holder() {
    let upstream = Registry::start();
    let source = Proxy::start(upstream.host());
    Image::single(Flavor::Oci, 1, 4096).push(&upstream, "app", "1");
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&format!(
        "images = [\"{}/app:1\"]\n[defaults]\ntarget = \"{layout}\"\n",
        source.host()
    ));
    let holder = source.hold_on(|r| r.is_manifest_head());
    let first = sandbox.regmirror().arg("--once").start();
    assert!(holder.wait(Duration::from_secs(60)));
    let second = sandbox.regmirror().arg("--once").run();
    second.assert_code(2);
    assert!(
        second.stderr.contains(&format!(
            "OCI image layout {} is being written by another process",
            dir.display()
        )) && second.stderr.contains(&format!("pid {}", first.pid())),
        "{}",
        second.output()
    );
    holder.release();
    first.wait(Duration::from_secs(60)).assert_success();
    // Reading the layout takes no lock.
    assert!(skopeo_digest(sandbox.path(), &format!("{layout}:app:1")).is_ok());
}

#[test]
fn a_corrupt_blob_in_a_layout_fails_only_its_image() {
    let source = Registry::start();
    let good = Image::single(Flavor::Oci, 2, 8 * 1024);
    let bad = Image::single(Flavor::Oci, 2, 8 * 1024);
    good.push(&source, "good", "1");
    bad.push(&source, "bad", "1");
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&format!(
        "images = [\"{0}/good:1\", \"{0}/bad:1\"]\n[defaults]\ntarget = \"{layout}\"\n",
        source.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    // A layer's bytes changed on the way (same length, one byte flipped).
    let (layer, _) = bad.blobs().last().unwrap().clone();
    let path = dir
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let far = Registry::start();
    sandbox.write_config(&format!(
        "images = [\"{layout}:good:1\", \"{layout}:bad:1\"]\n[defaults]\ntarget = \"{}/far\"\n",
        far.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 1");
    let failed = run.failed_lines().join("\n");
    assert!(
        failed.contains(&format!("{layout}:bad:1")) && failed.contains("does not match its digest"),
        "{}",
        run.output()
    );
    assert_eq!(
        head_manifest(&far, "far/good", "1").as_deref(),
        Some(good.digest())
    );
    assert_eq!(head_manifest(&far, "far/bad", "1"), None);
}

#[test]
fn prune_drops_a_layouts_entry_for_a_tag_gone_upstream_and_skopeo_still_reads_the_rest() {
    let source = Registry::start();
    let images: Vec<Image> = (0..3).map(|_| Image::single(Flavor::Oci, 1, 512)).collect();
    for (image, tag) in images.iter().zip(["1.0", "1.1", "1.2"]) {
        image.push(&source, "app", tag);
    }
    let sandbox = Sandbox::new();
    let (dir, layout) = layout_in(&sandbox, "transfer");
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{}/app\"\ninclude = ['1\\..*']\nprune = true\ntarget = \"{layout}:app\"\n",
        source.host()
    ));
    sandbox.regmirror().arg("--once").run().assert_success();
    assert!(named(&dir, "app:1.0").is_some());

    assert!(delete_manifest(&source, "app", images[0].digest()));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_success();
    run.assert_summary("pruned 1");
    assert_eq!(named(&dir, "app:1.0"), None, "{}", run.output());
    for (image, tag) in images.iter().zip(["1.0", "1.1", "1.2"]).skip(1) {
        assert_eq!(
            named(&dir, &format!("app:{tag}")).as_deref(),
            Some(image.digest())
        );
        assert_eq!(
            skopeo_digest(sandbox.path(), &format!("{layout}:app:{tag}")).unwrap(),
            image.digest()
        );
    }
}
