//! The checks against signatures real cosign made: with a key (containers/image's fixture),
//! keyless in a `.sig` layer (containers/image's Fulcio + Rekor fixture, 2023) and keyless in
//! a cosign 3 bundle (sigstore-rs's, kubewarden-controller v1.34.0 signed by its release
//! workflow, 2026). Each verifies against Sigstore's public-good root, offline, and fails when
//! one byte changes. Provenance: `tests/fixtures/sigstore/README.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePublicKey;

use super::*;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    crate::digest::of(crate::digest::Algorithm::Sha256, bytes)
}

fn keyless(issuer: &str, identity: Identity) -> Verify {
    Verify::Keyless(Keyless {
        issuer: issuer.to_string(),
        identity,
        root: TrustRoot::public_good().unwrap(),
    })
}

fn key(key: p256::ecdsa::VerifyingKey) -> Verify {
    Verify::Key(VerifyKey {
        path: "cosign.pub".into(),
        key,
    })
}

fn payload(digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": "example.com/app"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

fn signed_with(signature: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SIGNATURE.to_string(), signature.to_string())])
}

#[test]
fn a_key_signature_verifies_only_with_its_key_over_its_own_bytes_and_digest() {
    let signer = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
    let body = payload("sha256:aa");
    let signature: Signature = signer.sign(&body);
    let layer = signed_with(&STANDARD.encode(signature.to_der().as_bytes()));
    let mine = key(*signer.verifying_key());
    assert_eq!(check_layer(&mine, &body, &layer, "sha256:aa", "t"), Ok(()));
    let theirs = key(*other.verifying_key());
    let refused = check_layer(&theirs, &body, &layer, "sha256:aa", "t").unwrap_err();
    assert_eq!(refused.check(), "bad signature");
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    let refused = check_layer(&mine, &tampered, &layer, "sha256:aa", "t").unwrap_err();
    assert_eq!(refused.check(), "bad signature");
    let refused = check_layer(&mine, &body, &layer, "sha256:bb", "t").unwrap_err();
    assert_eq!(refused.check(), "digest mismatch");
    let garbage = signed_with("not base64!");
    assert!(check_layer(&mine, &body, &garbage, "sha256:aa", "t").is_err());
}

#[test]
fn a_key_signature_real_cosign_made_verifies_and_one_changed_byte_fails_it() {
    let pem = String::from_utf8(fixture("cosign/cosign.pub")).unwrap();
    let verify = key(p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim()).unwrap());
    let payload = fixture("cosign/payload.json");
    let layer = signed_with(&String::from_utf8(fixture("cosign/signature.b64")).unwrap());
    let manifest = sha256(&fixture("cosign/manifest.json"));
    assert_eq!(
        check_layer(&verify, &payload, &layer, &manifest, "t"),
        Ok(())
    );
    let mut changed = payload.clone();
    let last = changed.len() - 2;
    changed[last] ^= 1;
    assert!(check_layer(&verify, &changed, &layer, &manifest, "t").is_err());
}

/// containers/image's keyless layer: its payload and annotations.
fn fulcio_layer() -> (Vec<u8>, BTreeMap<String, String>) {
    #[derive(serde::Deserialize)]
    struct Layer {
        payload: String,
        annotations: BTreeMap<String, String>,
    }
    let file = fixture("sigstore/fulcio-rekor-signature-1");
    let json = file.splitn(2, |b| *b == b'\n').nth(1).unwrap();
    let layer: Layer = serde_json::from_slice(json).unwrap();
    (STANDARD.decode(layer.payload).unwrap(), layer.annotations)
}

const GITHUB_OAUTH: &str = "https://github.com/login/oauth";

#[test]
fn a_keyless_signature_real_cosign_made_verifies_offline_and_each_check_can_fail_it() {
    let (payload, annotations) = fulcio_layer();
    let image = sha256(&fixture("sigstore/fulcio-rekor-manifest.json"));
    let signer = keyless(GITHUB_OAUTH, Identity::Exact("mitr@redhat.com".into()));
    assert_eq!(
        check_layer(&signer, &payload, &annotations, &image, "t"),
        Ok(())
    );
    let pattern = Identity::Pattern(regex::Regex::new("^(?:.*@redhat\\.com)$").unwrap());
    let by_pattern = keyless(GITHUB_OAUTH, pattern);
    assert_eq!(
        check_layer(&by_pattern, &payload, &annotations, &image, "t"),
        Ok(())
    );

    let someone_else = keyless(GITHUB_OAUTH, Identity::Exact("eve@example.com".into()));
    let refused = check_layer(&someone_else, &payload, &annotations, &image, "t").unwrap_err();
    assert_eq!(refused.check(), "wrong identity", "{refused}");
    assert!(refused.to_string().contains("mitr@redhat.com"), "{refused}");
    let other_issuer = keyless(
        "https://accounts.google.com",
        Identity::Exact("mitr@redhat.com".into()),
    );
    let refused = check_layer(&other_issuer, &payload, &annotations, &image, "t").unwrap_err();
    assert_eq!(refused.check(), "wrong issuer", "{refused}");

    let mut tampered = payload.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 1;
    let refused = check_layer(&signer, &tampered, &annotations, &image, "t").unwrap_err();
    assert_eq!(refused.check(), "bad signature", "{refused}");

    let other = sha256(b"another image");
    let refused = check_layer(&signer, &payload, &annotations, &other, "t").unwrap_err();
    assert_eq!(refused.check(), "digest mismatch", "{refused}");

    let mut unlogged = annotations.clone();
    unlogged.remove("dev.sigstore.cosign/bundle");
    let refused = check_layer(&signer, &payload, &unlogged, &image, "t").unwrap_err();
    assert_eq!(refused.check(), "not in the log", "{refused}");

    // The log's promise no longer matches its entry when the logged time moves a second.
    let mut moved = annotations.clone();
    let entry = moved.get_mut("dev.sigstore.cosign/bundle").unwrap();
    let mut json: serde_json::Value = serde_json::from_str(entry).unwrap();
    let time = json["Payload"]["integratedTime"].as_i64().unwrap();
    json["Payload"]["integratedTime"] = (time + 1).into();
    *entry = json.to_string();
    let refused = check_layer(&signer, &payload, &moved, &image, "t").unwrap_err();
    assert_eq!(refused.check(), "not in the log", "{refused}");

    let mut keyed = annotations.clone();
    keyed.remove("dev.sigstore.cosign/certificate");
    let refused = check_layer(&signer, &payload, &keyed, &image, "t").unwrap_err();
    assert_eq!(refused.check(), "untrusted chain", "{refused}");
}

/// kubewarden-controller v1.34.0's manifest digest, which its cosign 3 bundle signs.
const KUBEWARDEN: &str = "sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172";
const ACTIONS: &str = "https://token.actions.githubusercontent.com";
const RELEASE: &str = "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0";

#[test]
fn a_cosign_3_bundle_verifies_offline_and_one_changed_byte_fails_it() {
    let bundle = fixture("sigstore/cosign3-bundle.json");
    let release = keyless(ACTIONS, Identity::Exact(RELEASE.into()));
    assert_eq!(check_bundle(&release, &bundle, KUBEWARDEN, "b"), Ok(()));
    let tags = regex::Regex::new(
        "^(?:https://github\\.com/kubewarden/kubewarden-controller/\\.github/workflows/release\\.yml@refs/tags/v.*)$",
    )
    .unwrap();
    let any_tag = keyless(ACTIONS, Identity::Pattern(tags));
    assert_eq!(check_bundle(&any_tag, &bundle, KUBEWARDEN, "b"), Ok(()));

    let other = KUBEWARDEN.replace("c811", "c812");
    let refused = check_bundle(&release, &bundle, &other, "b").unwrap_err();
    assert_eq!(refused.check(), "digest mismatch", "{refused}");

    let fork = keyless(
        ACTIONS,
        Identity::Exact(RELEASE.replace("kubewarden/", "fork/")),
    );
    let refused = check_bundle(&fork, &bundle, KUBEWARDEN, "b").unwrap_err();
    assert_eq!(refused.check(), "wrong identity", "{refused}");

    // One byte of the DSSE signature changed.
    let text = String::from_utf8(bundle.clone()).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sig = json["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap();
    let mut raw = STANDARD.decode(sig).unwrap();
    raw[20] ^= 1;
    json["dsseEnvelope"]["signatures"][0]["sig"] = STANDARD.encode(raw).into();
    let changed = json.to_string().into_bytes();
    assert!(check_bundle(&release, &changed, KUBEWARDEN, "b").is_err());

    // A key's policy does not take a certificate's bundle.
    let signer = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let refused = check_bundle(&key(*signer.verifying_key()), &bundle, KUBEWARDEN, "b");
    assert!(refused.is_err());
}

#[test]
fn another_trusted_root_does_not_vouch_for_public_good_signatures() {
    let (payload, annotations) = fulcio_layer();
    let image = sha256(&fixture("sigstore/fulcio-rekor-manifest.json"));
    let staging = sigstore_verify::trust_root::SIGSTORE_STAGING_TRUSTED_ROOT;
    let root = Arc::new(TrustRoot::from_json("staging", staging).unwrap());
    let verify = Verify::Keyless(Keyless {
        issuer: GITHUB_OAUTH.to_string(),
        identity: Identity::Exact("mitr@redhat.com".into()),
        root,
    });
    let refused = check_layer(&verify, &payload, &annotations, &image, "t").unwrap_err();
    assert!(
        matches!(refused.check(), "untrusted chain" | "not in the log"),
        "{refused}"
    );
}

#[test]
fn a_bundle_signed_with_the_key_verifies_and_another_keys_does_not() {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let signer = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let image = sha256(b"an image manifest");
    let prehash = hex::decode(image.trim_start_matches("sha256:")).unwrap();
    let signature: Signature = signer.sign_prehash(&prehash).unwrap();
    let signature = STANDARD.encode(signature.to_der().as_bytes());
    let pem = signer
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    // As cosign 3 `sign --key` writes it: a key hint, a message signature, the hashedrekord
    // entry naming the key (its log promise is not required with a key).
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": image.trim_start_matches("sha256:")}},
            "signature": {"content": signature, "publicKey": {"content": STANDARD.encode(&pem)}},
        },
    });
    let bundle = serde_json::json!({
        "mediaType": BUNDLE_MEDIA_TYPES[0],
        "verificationMaterial": {
            "publicKey": {"hint": "a key"},
            "tlogEntries": [{
                "logIndex": "1",
                "logId": {"keyId": STANDARD.encode([9u8; 32])},
                "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                "integratedTime": "1700000000",
                "inclusionPromise": {"signedEntryTimestamp": STANDARD.encode([1u8; 70])},
                "canonicalizedBody": STANDARD.encode(body.to_string()),
            }],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(&prehash)},
            "signature": signature,
        },
    })
    .to_string()
    .into_bytes();
    let mine = key(*signer.verifying_key());
    assert_eq!(check_bundle(&mine, &bundle, &image, "b"), Ok(()));
    let other = key(*SigningKey::from_slice(&[9u8; 32]).unwrap().verifying_key());
    assert!(check_bundle(&other, &bundle, &image, "b").is_err());
    let refused = check_bundle(&mine, &bundle, &sha256(b"another"), "b").unwrap_err();
    assert_eq!(refused.check(), "digest mismatch", "{refused}");
}
