//! `verify = { key = … }`: only images a cosign signature made with the key vouches for enter
//! the target, with their signatures; the others fail alone, naming which check failed, and
//! leave the target's tag where it was.

mod harness;

use harness::cosign::{key, public_pem, sign};
use harness::*;

#[test]
fn only_what_the_key_signed_is_mirrored_and_each_refusal_says_why() {
    let source = Registry::start();
    let target = Registry::start();
    let (publisher, stranger) = (key(7), key(9));
    let images: Vec<Image> = (0..4).map(|_| Image::single(Flavor::Oci, 1, 512)).collect();
    for (i, image) in images.iter().enumerate() {
        image.push(&source, "app", &format!("{}", i + 1));
    }
    // 1: signed by the publisher. 2: unsigned. 3: signed by someone else. 4: the publisher's
    // signature of another image, copied onto this one's tag.
    sign(
        &source,
        "app",
        images[0].digest(),
        images[0].digest(),
        &publisher,
    );
    sign(
        &source,
        "app",
        images[2].digest(),
        images[2].digest(),
        &stranger,
    );
    sign(
        &source,
        "app",
        images[3].digest(),
        images[0].digest(),
        &publisher,
    );
    // The target's tag 2 holds an older image, which a refusal must leave in place.
    let older = Image::single(Flavor::Oci, 1, 256);
    older.push(&target, "m/app", "2");

    let sandbox = Sandbox::new();
    sandbox.write_file("cosign.pub", &public_pem(&publisher));
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{}/app\"\ntags = [\"1\", \"2\", \"3\", \"4\"]\n\
         verify = {{ key = \"cosign.pub\" }}\ntarget = \"{}/m/app\"\n",
        source.host(),
        target.host()
    ));
    let run = sandbox.regmirror().arg("--once").run();
    run.assert_code(1);
    run.assert_summary("mirrored 1, unchanged 0, failed 3");
    let failed = |tag: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with("FAILED") && l.contains(&format!("/app:{tag} →")))
            .unwrap_or_else(|| panic!("no failure for {tag}\n{}", run.output()))
            .to_string()
    };
    assert!(
        failed("2").contains("unverified: not copied: no signature ("),
        "{}",
        failed("2")
    );
    assert!(
        failed("3").contains("unverified: not copied: bad signature in"),
        "{}",
        failed("3")
    );
    assert!(
        failed("4").contains("signs another digest"),
        "{}",
        failed("4")
    );

    assert_eq!(
        head_manifest(&target, "m/app", "1").as_deref(),
        Some(images[0].digest())
    );
    let signature = format!("{}.sig", images[0].digest().replacen(':', "-", 1));
    assert!(
        head_manifest(&target, "m/app", &signature).is_some(),
        "the signature travels with the image"
    );
    assert_eq!(
        head_manifest(&target, "m/app", "2").as_deref(),
        Some(older.digest()),
        "a refused image leaves the target's tag alone"
    );
    for tag in ["3", "4"] {
        assert_eq!(head_manifest(&target, "m/app", tag), None, "{tag}");
    }

    // Unchanged and verified: nothing to check again, no pull.
    let proxy = Proxy::start(source.host());
    sandbox.write_config(&format!(
        "[[mirror]]\nsource = \"{}/app\"\ntags = [\"1\"]\n\
         verify = {{ key = \"cosign.pub\" }}\ntarget = \"{}/m/app\"\n",
        proxy.host(),
        target.host()
    ));
    let again = sandbox.regmirror().arg("--once").run();
    again.assert_success();
    assert_eq!(proxy.manifest_gets(), 0, "{:#?}", proxy.requests());
}

#[test]
fn a_key_file_that_is_not_a_public_key_is_a_config_error_with_its_line() {
    let sandbox = Sandbox::new();
    sandbox.write_file("cosign.pub", "not a key\n");
    sandbox.write_config(
        "[[mirror]]\nsource = \"r.example.com/app\"\ntags = [\"1\"]\n\
         verify = { key = \"cosign.pub\" }\ntarget = \"t.example.com/app\"\n",
    );
    let run = sandbox.regmirror().arg("check").run();
    run.assert_code(2);
    assert!(
        run.stderr.contains("mirrors.toml:4:") && run.stderr.contains("mirror.verify.key"),
        "{}",
        run.output()
    );
    assert!(
        run.stderr.contains("is not an ECDSA P-256 public key"),
        "{}",
        run.output()
    );
}
