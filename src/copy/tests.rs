//! The copy core against registries kept in memory ([`crate::store::memory`]): the order
//! that keeps a tag honest under a failure at each step, the ledgers, fan-out to several
//! targets, platform filtering and referrers. No server, no network: milliseconds each.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::manifest::{Descriptor, OCI_INDEX, OCI_MANIFEST};
use crate::registry::limits::Deadlines;
use crate::registry::Failure;
use crate::store::memory::{Memory, Op, Stored};

const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A source registry and two target registries, each its own memory.
struct World {
    source: Arc<Memory>,
    a: Arc<Memory>,
    b: Arc<Memory>,
}

impl World {
    fn new() -> World {
        World {
            source: Memory::new(true),
            a: Memory::new(true),
            b: Memory::new(true),
        }
    }

    /// A pass over these registries.
    fn pass(&self) -> PassContext {
        let stores = Stores::new(
            self.source.clone(),
            Deadlines::for_max_wait(Duration::from_secs(5)),
        )
        .with("a.test", self.a.clone())
        .with("b.test", self.b.clone());
        PassContext {
            stores: Arc::new(stores),
            ledger: Arc::default(),
            manifests: Arc::default(),
            listings: Arc::default(),
            dry_run: false,
            verdicts: Arc::default(),
            listed: Arc::default(),
            comparisons: Arc::default(),
        }
    }
}

fn repository(written: &str) -> Repository {
    Repository::parse(written, true).unwrap()
}

fn image(written: &str) -> ImageRef {
    ImageRef::parse(written).unwrap()
}

fn waiter() -> Waiter {
    Waiter::new(
        Arc::new(Semaphore::new(4)),
        Duration::from_secs(5),
        CancellationToken::new(),
    )
    .unwrap()
}

/// An image of `platform` (`os/arch`) in `repo`: its config and `layers` as blobs, its
/// manifest by digest. The manifest's digest and descriptor.
fn seed_image(memory: &Memory, repo: &Repository, platform: &str, layers: &[&str]) -> Descriptor {
    let (os, architecture) = platform.split_once('/').unwrap();
    let config = json!({"os": os, "architecture": architecture}).to_string();
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": memory.put_blob(repo, bytes), "size": bytes.len()});
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(CONFIG, config.as_bytes()),
        "layers": layers.iter().map(|l| descriptor(LAYER, l.as_bytes())).collect::<Vec<_>>(),
    })
    .to_string();
    let digest = memory.put_manifest(repo, body.as_bytes(), OCI_MANIFEST, None);
    Descriptor {
        media_type: OCI_MANIFEST.to_string(),
        digest,
        size: body.len() as u64,
        urls: Vec::new(),
        platform: Some(Platform::parse(platform).unwrap()),
        annotations: Default::default(),
        artifact_type: None,
    }
}

/// An index of `children` in `repo`, tagged `tag`; its digest.
fn seed_index(memory: &Memory, repo: &Repository, children: &[Descriptor], tag: &str) -> String {
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
    memory.put_manifest(repo, body.to_string().as_bytes(), OCI_INDEX, Some(tag))
}

/// `src.test/app:1`: an index of linux/amd64 and linux/arm64, each of a config and two
/// layers, one layer shared by both. The index's digest and its children.
fn two_platforms(memory: &Memory) -> (String, Vec<Descriptor>) {
    let repo = repository("src.test/app");
    let children = vec![
        seed_image(memory, &repo, "linux/amd64", &["base", "amd64 layer"]),
        seed_image(memory, &repo, "linux/arm64", &["base", "arm64 layer"]),
    ];
    (seed_index(memory, &repo, &children, "1"), children)
}

fn mirrored(outcome: &Result<Outcome, CopyError>) -> &CopyStats {
    match outcome {
        Ok(Outcome::Mirrored { stats, .. }) => stats,
        other => panic!("not mirrored: {other:?}"),
    }
}

/// Where in `stored` each thing landed in `repo`: (blob or manifest digest, or tag) → index.
fn position(stored: &[Stored], wanted: &Stored) -> usize {
    stored
        .iter()
        .position(|s| s == wanted)
        .unwrap_or_else(|| panic!("{wanted:?} never stored: {stored:?}"))
}

fn blob(repo: &str, digest: &str) -> Stored {
    Stored::Blob {
        repository: repo.to_string(),
        digest: digest.to_string(),
    }
}

fn manifest_at(repo: &str, digest: &str) -> Stored {
    Stored::Manifest {
        repository: repo.to_string(),
        digest: digest.to_string(),
    }
}

/// Every blob a child image manifest references, read back from the source.
fn blobs_of(memory: &Memory, repo: &Repository, child: &str) -> Vec<String> {
    let body = memory.manifest(repo, child).unwrap();
    match Manifest::parse(&body, None).unwrap() {
        Manifest::Image { blobs, .. } => blobs.into_iter().map(|b| b.digest).collect(),
        Manifest::Index { .. } => panic!("{child} is an index"),
    }
}

#[tokio::test]
async fn blobs_go_first_then_each_child_then_the_index_and_the_tag_last() {
    let world = World::new();
    let (index, children) = two_platforms(&world.source);
    let source = image("src.test/app:1");
    let target = image("a.test/mirror/app:1");
    let outcomes = mirror(
        &world.pass(),
        &source,
        std::slice::from_ref(&target),
        &CopyChoice::default(),
        &waiter(),
    )
    .await;
    let stats = mirrored(&outcomes[0]);
    // Five blobs: two configs, the shared base layer once, one layer of each platform.
    assert_eq!((stats.blobs_copied, stats.manifests_pushed), (5, 3));
    assert_eq!(stats.pulls, 3, "the index and its two children, once each");
    assert_eq!(world.a.tag(&target.repo(), "1"), Some(index.clone()));

    let stored = world.a.stored();
    let here = "a.test/mirror/app";
    let index_at = position(&stored, &manifest_at(here, &index));
    let tag_at = position(
        &stored,
        &Stored::Tag {
            repository: here.to_string(),
            tag: "1".to_string(),
        },
    );
    assert_eq!(tag_at, stored.len() - 1, "the tag is the last thing stored");
    for child in &children {
        let child_at = position(&stored, &manifest_at(here, &child.digest));
        assert!(
            child_at < index_at,
            "child {} after its index",
            child.digest
        );
        for b in blobs_of(&world.source, &source.repo(), &child.digest) {
            assert!(
                position(&stored, &blob(here, &b)) < child_at,
                "blob {b} after its manifest"
            );
        }
    }
}

#[tokio::test]
async fn an_unchanged_image_costs_one_head_each_side_and_no_pull() {
    let world = World::new();
    two_platforms(&world.source);
    let (source, target) = (image("src.test/app:1"), image("a.test/mirror/app:1"));
    let targets = std::slice::from_ref(&target);
    let choice = CopyChoice::default();
    mirrored(&mirror(&world.pass(), &source, targets, &choice, &waiter()).await[0]);
    let (heads, pulls, stored) = (
        world.source.count(Op::Head),
        world.source.count(Op::Pull),
        world.a.stored().len(),
    );
    let again = mirror(&world.pass(), &source, targets, &choice, &waiter()).await;
    assert!(
        matches!(again[0], Ok(Outcome::Unchanged { .. })),
        "{again:?}"
    );
    assert_eq!(world.source.count(Op::Head), heads + 1);
    assert_eq!(world.source.count(Op::Pull), pulls, "no pull");
    assert_eq!(world.a.stored().len(), stored, "nothing written");
}

/// The pass's context with `digest` listed for `source` by a tag API.
fn listing(world: &World, source: &ImageRef, digest: &str) -> PassContext {
    let listed = [(listed::ListedDigests::key(source), digest.to_string())];
    PassContext {
        listed: Arc::new(listed::ListedDigests::new(listed.into())),
        ..world.pass()
    }
}

#[tokio::test]
async fn a_listed_digest_spares_the_source_head_only_while_the_target_holds_it() {
    let world = World::new();
    let (first, children) = two_platforms(&world.source);
    let (source, target) = (image("src.test/app:1"), image("a.test/mirror/app:1"));
    let targets = std::slice::from_ref(&target);
    let choice = CopyChoice::default();
    mirrored(&mirror(&world.pass(), &source, targets, &choice, &waiter()).await[0]);

    // Listed as the target holds it: unchanged, and the source hears nothing.
    let heads = world.source.count(Op::Head);
    let pass = listing(&world, &source, &first);
    let again = mirror(&pass, &source, targets, &choice, &waiter()).await;
    assert!(
        matches!(again[0], Ok(Outcome::Unchanged { .. })),
        "{again:?}"
    );
    assert_eq!(world.source.count(Op::Head), heads, "no HEAD at the source");
    assert_eq!(pass.comparisons.counts(), (1, 0));

    // Upstream moves; a listing that still shows the old digest lags, and is believed.
    let repo = repository("src.test/app");
    let moved = seed_index(&world.source, &repo, &children[..1], "1");
    let stale = listing(&world, &source, &first);
    let lagging = mirror(&stale, &source, targets, &choice, &waiter()).await;
    assert!(
        matches!(lagging[0], Ok(Outcome::Unchanged { .. })),
        "{lagging:?}"
    );
    assert_eq!(world.a.tag(&target.repo(), "1"), Some(first.clone()));

    // Once the listing shows the move, the source is HEADed, and the HEAD's digest copied.
    let fresh = listing(&world, &source, &moved);
    let caught = mirror(&fresh, &source, targets, &choice, &waiter()).await;
    mirrored(&caught[0]);
    assert_eq!(world.source.count(Op::Head), heads + 1);
    assert_eq!(fresh.comparisons.counts(), (0, 1));
    assert_eq!(world.a.tag(&target.repo(), "1"), Some(moved));
}

#[tokio::test]
async fn a_listed_digest_is_never_copied_on_its_word() {
    let world = World::new();
    let (index, _) = two_platforms(&world.source);
    let (source, target) = (image("src.test/app:1"), image("a.test/mirror/app:1"));
    let bogus = format!("sha256:{}", "0".repeat(64));
    let pass = listing(&world, &source, &bogus);
    let outcomes = mirror(
        &pass,
        &source,
        std::slice::from_ref(&target),
        &CopyChoice::default(),
        &waiter(),
    )
    .await;
    mirrored(&outcomes[0]);
    assert_eq!(
        world.a.tag(&target.repo(), "1"),
        Some(index),
        "the HEAD's digest, not the listing's"
    );
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_the_old_tag_where_it_was() {
    // Where a copy of the two-platform index can fail: a layer's upload started or its
    // bytes written, a child manifest, the index itself (pushed under the tag). The old
    // image shares its config with the new amd64 one, so that config is not copied.
    type Subject = fn(&[Descriptor], &[String]) -> String;
    let steps: [(Op, Subject); 4] = [
        (Op::CreateBlob, |_, layers| layers[2].clone()),
        (Op::WriteBlob, |_, layers| layers[1].clone()),
        (Op::Push, |children, _| children[1].digest.clone()),
        (Op::Push, |_, _| ":1".to_string()),
    ];
    for (op, matching) in steps {
        let world = World::new();
        let (_, children) = two_platforms(&world.source);
        let src = repository("src.test/app");
        let layers = blobs_of(&world.source, &src, &children[0].digest);
        let matching = matching(&children, &layers);
        // The target's tag points at an older image, complete.
        let old_repo = repository("a.test/mirror/app");
        let old = seed_image(&world.a, &old_repo, "linux/amd64", &["old"]);
        seed_index(&world.a, &old_repo, &[old], "1");
        let before = world.a.tag(&old_repo, "1");
        world
            .a
            .fail(op, &matching, Failure::Denied("no".to_string()));

        let outcomes = mirror(
            &world.pass(),
            &image("src.test/app:1"),
            &[image("a.test/mirror/app:1")],
            &CopyChoice::default(),
            &waiter(),
        )
        .await;
        assert!(outcomes[0].is_err(), "{op:?} {matching}: {outcomes:?}");
        assert_eq!(
            world.a.tag(&old_repo, "1"),
            before,
            "{op:?} {matching}: tag moved"
        );
        assert!(
            !world
                .a
                .stored()
                .iter()
                .any(|s| matches!(s, Stored::Tag { .. })),
            "{op:?} {matching}: a tag was pushed"
        );
    }
}

#[tokio::test]
async fn tags_of_one_content_pull_it_once_and_move_each_blob_once() {
    let world = World::new();
    let (index, children) = two_platforms(&world.source);
    let src = repository("src.test/app");
    seed_index(&world.source, &src, &children, "latest");
    let pass = world.pass();
    let choice = CopyChoice::default();
    let (one, latest) = (image("src.test/app:1"), image("src.test/app:latest"));
    let (to_one, to_latest) = (image("a.test/m/app:1"), image("a.test/m/app:latest"));
    let w = waiter();
    let (x, y) = tokio::join!(
        mirror(&pass, &one, std::slice::from_ref(&to_one), &choice, &w),
        mirror(
            &pass,
            &latest,
            std::slice::from_ref(&to_latest),
            &choice,
            &w
        ),
    );
    mirrored(&x[0]);
    mirrored(&y[0]);
    assert_eq!(world.source.count(Op::Pull), 3, "index and children once");
    assert_eq!(world.source.count(Op::OpenBlob), 5, "each blob read once");
    for tag in ["1", "latest"] {
        assert_eq!(world.a.tag(&to_one.repo(), tag), Some(index.clone()));
    }
}

#[tokio::test]
async fn a_refusing_target_fails_alone_and_the_source_is_read_once_for_both() {
    let world = World::new();
    let (index, _) = two_platforms(&world.source);
    world
        .b
        .fail(Op::Push, "", Failure::Denied("read-only".to_string()));
    let targets = [image("a.test/m/app:1"), image("b.test/m/app:1")];
    let outcomes = mirror(
        &world.pass(),
        &image("src.test/app:1"),
        &targets,
        &CopyChoice::default(),
        &waiter(),
    )
    .await;
    mirrored(&outcomes[0]);
    let refused = outcomes[1].as_ref().unwrap_err().to_string();
    assert!(refused.contains("read-only"), "{refused}");
    assert_eq!(world.a.tag(&targets[0].repo(), "1"), Some(index));
    assert_eq!(world.b.tag(&targets[1].repo(), "1"), None);
    assert_eq!(
        world.source.count(Op::OpenBlob),
        5,
        "one read for both targets"
    );
    assert_eq!(
        world.b.count(Op::WriteBlob),
        5,
        "b took the blobs, refused the manifests"
    );
}

/// ECR's refusal of a push onto an existing tag of an `IMMUTABLE` repository.
fn immutable() -> Failure {
    Failure::Immutable("The image tag '1' already exists in the 'm/app' repository and cannot be overwritten because the repository is immutable.".to_string())
}

#[tokio::test]
async fn a_tag_moved_upstream_into_an_immutable_target_is_its_own_outcome_and_costs_one_pull() {
    let world = World::new();
    let (index, _) = two_platforms(&world.source);
    // a's tag holds an older image and never moves; b takes the new one.
    let held = repository("a.test/m/app");
    let old = seed_image(&world.a, &held, "linux/amd64", &["old"]);
    let was = seed_index(&world.a, &held, &[old], "1");
    world.a.fail(Op::Push, "m/app:1", immutable());
    let source = image("src.test/app:1");
    let targets = [image("a.test/m/app:1"), image("b.test/m/app:1")];
    let choice = CopyChoice::default();
    let outcomes = mirror(&world.pass(), &source, &targets, &choice, &waiter()).await;
    let refused = Outcome::Immutable {
        was: was.clone(),
        upstream: index.clone(),
    };
    assert!(
        matches!(&outcomes[0], Ok(o) if *o == refused),
        "{outcomes:?}"
    );
    mirrored(&outcomes[1]);
    assert_eq!(world.a.tag(&held, "1"), Some(was.clone()), "the tag stays");
    assert_eq!(world.b.tag(&targets[1].repo(), "1"), Some(index.clone()));
    assert!(world.a.manifest(&held, &index).is_some(), "kept by digest");
    assert_eq!(
        world.a.count(Op::Push),
        4,
        "two children, the tag once, the index by digest"
    );

    // The next pass finds the content in the target by digest: no pull at the source, one
    // refused push, the same outcome.
    let (pulls, pushes) = (world.source.count(Op::Pull), world.a.count(Op::Push));
    let again = mirror(&world.pass(), &source, &targets[..1], &choice, &waiter()).await;
    assert!(matches!(&again[0], Ok(o) if *o == refused), "{again:?}");
    assert_eq!(world.source.count(Op::Pull), pulls, "no pull");
    assert_eq!(world.a.count(Op::Push), pushes + 1, "the tag, once");
}

#[tokio::test]
async fn a_refusal_as_immutable_of_a_tag_the_target_did_not_hold_stays_a_failure() {
    let world = World::new();
    two_platforms(&world.source);
    world.a.fail(Op::Push, "m/app:1", immutable());
    let outcomes = mirror(
        &world.pass(),
        &image("src.test/app:1"),
        &[image("a.test/m/app:1")],
        &CopyChoice::default(),
        &waiter(),
    )
    .await;
    let failed = outcomes[0].as_ref().unwrap_err().to_string();
    assert!(
        failed.contains("refuses to move an existing tag"),
        "{failed}"
    );
}

#[tokio::test]
async fn a_choice_of_platforms_copies_only_their_children_and_blobs() {
    let world = World::new();
    let (index, children) = two_platforms(&world.source);
    let src = repository("src.test/app");
    let choice = CopyChoice {
        platforms: Platforms::new(vec![Platform::parse("linux/arm64").unwrap()]),
        referrers: false,
        verify: None,
    };
    let target = image("a.test/m/app:1");
    let outcomes = mirror(
        &world.pass(),
        &image("src.test/app:1"),
        std::slice::from_ref(&target),
        &choice,
        &waiter(),
    )
    .await;
    mirrored(&outcomes[0]);
    let stored = world.a.tag(&target.repo(), "1").unwrap();
    assert_ne!(stored, index, "a filtered index of its own");
    let body = world.a.manifest(&target.repo(), &stored).unwrap();
    let Manifest::Index { children: kept, .. } = Manifest::parse(&body, None).unwrap() else {
        panic!("not an index");
    };
    assert_eq!(kept, vec![children[1].clone()]);
    assert_eq!(
        platform::recorded(&body),
        Some((index, "linux/arm64".to_string()))
    );
    // The amd64 config and layer; the base layer is arm64's too.
    let amd64 = blobs_of(&world.source, &src, &children[0].digest);
    let amd64_only = [&amd64[0], &amd64[2]];
    let arm64 = blobs_of(&world.source, &src, &children[1].digest);
    assert!(arm64.iter().all(|b| world.a.has_blob(&target.repo(), b)));
    assert!(!amd64_only
        .iter()
        .any(|b| world.a.has_blob(&target.repo(), b)));
    assert!(world
        .a
        .manifest(&target.repo(), &children[0].digest)
        .is_none());
}

#[tokio::test]
async fn referrers_follow_their_subject_by_api_or_by_fallback_tag() {
    for api in [true, false] {
        let world = World {
            a: Memory::new(api),
            ..World::new()
        };
        let src = repository("src.test/app");
        let subject = seed_image(&world.source, &src, "linux/amd64", &["app"]);
        let signature = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                       "digest": world.source.put_blob(&src, b"{}"), "size": 2},
            "layers": [{"mediaType": LAYER, "digest": world.source.put_blob(&src, b"sig"), "size": 3}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.size},
        })
        .to_string();
        let signature = world
            .source
            .put_manifest(&src, signature.as_bytes(), OCI_MANIFEST, None);
        let tagged = world.source.manifest(&src, &subject.digest).unwrap();
        world
            .source
            .put_manifest(&src, &tagged, OCI_MANIFEST, Some("1"));
        let target = image("a.test/m/app:1");
        let choice = CopyChoice {
            platforms: None,
            referrers: true,
            verify: None,
        };
        let outcomes = mirror(
            &world.pass(),
            &image("src.test/app:1"),
            std::slice::from_ref(&target),
            &choice,
            &waiter(),
        )
        .await;
        assert_eq!(mirrored(&outcomes[0]).referrers, 1, "api: {api}");
        let repo = target.repo();
        assert!(world.a.manifest(&repo, &signature).is_some(), "api: {api}");
        let hex = subject.digest.trim_start_matches("sha256:");
        let fallback = world.a.tag(&repo, &format!("sha256-{hex}"));
        assert_eq!(
            fallback.is_some(),
            !api,
            "fallback tag only without the API"
        );
    }
}

#[tokio::test]
async fn a_corrupt_source_blob_fails_the_image_and_lands_nowhere() {
    let world = World::new();
    let (_, children) = two_platforms(&world.source);
    let src = repository("src.test/app");
    let bad = blobs_of(&world.source, &src, &children[1].digest)[2].clone();
    world.source.corrupt(&bad);
    let targets = [image("a.test/m/app:1"), image("b.test/m/app:1")];
    let outcomes = mirror(
        &world.pass(),
        &image("src.test/app:1"),
        &targets,
        &CopyChoice::default(),
        &waiter(),
    )
    .await;
    for (outcome, (memory, target)) in outcomes
        .iter()
        .zip([(&world.a, &targets[0]), (&world.b, &targets[1])])
    {
        let Err(CopyError::Registry(e)) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(matches!(e.failure, Failure::DigestMismatch(_)), "{e}");
        assert!(
            e.subject.starts_with("src.test/app@"),
            "named after the source: {e}"
        );
        assert!(!memory.has_blob(&target.repo(), &bad));
        assert_eq!(memory.tag(&target.repo(), "1"), None);
    }
}

/// A `verify` for `key`'s public half.
fn verify_with(key: &p256::ecdsa::SigningKey) -> CopyChoice {
    CopyChoice {
        platforms: None,
        referrers: true,
        verify: Some(crate::signature::Verify::Key(crate::signature::VerifyKey {
            path: "cosign.pub".into(),
            key: *key.verifying_key(),
        })),
    }
}

/// Puts beside `digest` in `repo` a cosign signature of it made with `key`.
fn seed_signature(memory: &Memory, repo: &Repository, digest: &str, key: &p256::ecdsa::SigningKey) {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let payload = json!({"critical": {"image": {"docker-manifest-digest": digest}}}).to_string();
    let signature: p256::ecdsa::Signature = key.sign(payload.as_bytes());
    let encoded = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": memory.put_blob(repo, b"{}"), "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": memory.put_blob(repo, payload.as_bytes()),
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": encoded},
        }],
    })
    .to_string();
    let tag = digest.replacen(':', "-", 1) + ".sig";
    memory.put_manifest(repo, body.as_bytes(), OCI_MANIFEST, Some(&tag));
}

#[tokio::test]
async fn a_refusal_is_remembered_so_its_signature_is_not_pulled_again() {
    let world = World::new();
    let src = repository("src.test/app");
    let signed = seed_image(&world.source, &src, "linux/amd64", &["app"]);
    let body = world.source.manifest(&src, &signed.digest).unwrap();
    world
        .source
        .put_manifest(&src, &body, OCI_MANIFEST, Some("1"));
    let (publisher, stranger) = (
        p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap(),
        p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap(),
    );
    seed_signature(&world.source, &src, &signed.digest, &stranger);
    let choice = verify_with(&publisher);
    let pass = world.pass();
    let target = image("a.test/m/app:1");
    for round in 0..2 {
        let pulls = world.source.count(Op::Pull);
        let outcomes = mirror(
            &pass,
            &image("src.test/app:1"),
            std::slice::from_ref(&target),
            &choice,
            &waiter(),
        )
        .await;
        assert!(
            matches!(
                &outcomes[0],
                Err(CopyError::Unverified(
                    crate::signature::Unverified::BadSignature { .. }
                ))
            ),
            "{outcomes:?}"
        );
        let spent = world.source.count(Op::Pull) - pulls;
        assert_eq!(
            spent,
            u64::from(round == 0),
            "round {round}: the signature is read once"
        );
    }
    assert_eq!(world.a.tag(&target.repo(), "1"), None);

    // Signed by the publisher: copied, with its signature.
    seed_signature(&world.source, &src, &signed.digest, &publisher);
    let outcomes = mirror(
        &pass,
        &image("src.test/app:1"),
        std::slice::from_ref(&target),
        &choice,
        &waiter(),
    )
    .await;
    mirrored(&outcomes[0]);
    let signature = signed.digest.replacen(':', "-", 1) + ".sig";
    assert!(world.a.tag(&target.repo(), &signature).is_some());
}
