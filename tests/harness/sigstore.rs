//! A throwaway Sigstore for tests of keyless `verify`: its own certificate authority (as
//! Fulcio), certificate-transparency log and transparency log (as Rekor), and the trusted
//! root that names them, so every check a keyless signature must pass can be made to fail.
//!
//! A [`Signer`] holds a short-lived certificate the CA issued to an identity through an OIDC
//! issuer, with an SCT from the CT log embedded as Fulcio embeds it. It signs images both ways
//! cosign does: the `sha256-<hex>.sig` tag (a simple signing payload; the certificate and the
//! log entry with its signed entry timestamp in the layer's annotations) and a Sigstore
//! bundle v0.3 attached as an OCI 1.1 referrer (a message signature over the manifest, the
//! entry with its promise and an inclusion proof under a signed checkpoint).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::{BitString, OctetString, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::Extension;

use super::cosign::{key, payload, put_signature};
use super::image::{Image, ImageBuilder};
use super::remote::Remote;

/// GitHub Actions' OIDC issuer, the one release workflows sign through.
pub const ACTIONS: &str = "https://token.actions.githubusercontent.com";
/// A release workflow's identity, as Fulcio writes it in the certificate's SAN.
pub const RELEASE: &str =
    "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.0.0";
/// A Sigstore bundle's media type, as cosign 3 attaches it (artifact and layer).
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The transparency log's origin line in its checkpoints, and the name its signature lines
/// carry (as Rekor's: the host, then its tree's ID).
const ORIGIN: &str = "rekor.regmirror.test - 1";
const LOG_NAME: &str = "rekor.regmirror.test";

/// A certificate authority, a CT log and a transparency log, all throwaway.
pub struct Sigstore {
    ca: SigningKey,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    ct: SigningKey,
    rekor: SigningKey,
}

/// Whether a signature is in the transparency log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    /// Logged, with the log's promise (and for a bundle, an inclusion proof).
    Logged,
    /// No log entry at all.
    Missing,
    /// An entry promised by a log the trusted root does not know.
    Forged,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn at(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).expect("a time")
}

/// `key` as rcgen signs with it.
fn key_pair(key: &SigningKey) -> KeyPair {
    let der = key.to_pkcs8_der().expect("a PKCS#8 key");
    KeyPair::try_from(der.as_bytes()).expect("rcgen takes a P-256 key")
}

fn spki(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("an SPKI")
        .as_bytes()
        .to_vec()
}

/// A log's ID: the SHA-256 of its key's SPKI.
fn log_id(key: &SigningKey) -> Vec<u8> {
    Sha256::digest(spki(key)).to_vec()
}

fn der_signature(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    let signature: Signature = key.sign(message);
    signature.to_der().as_bytes().to_vec()
}

impl Sigstore {
    /// A Sigstore whose keys derive from `seed` (two with other seeds trust nothing of each
    /// other's).
    pub fn new(seed: u8) -> Sigstore {
        let ca = key(seed);
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "regmirror tests");
        name.push(DnType::CommonName, format!("test fulcio {seed}"));
        ca_params.distinguished_name = name;
        ca_params.not_before = at(now() - 30 * 86_400);
        ca_params.not_after = at(now() + 3650 * 86_400);
        let ca_der = ca_params
            .self_signed(&key_pair(&ca))
            .expect("a CA certificate")
            .der()
            .to_vec();
        Sigstore {
            ca,
            ca_params,
            ca_der,
            ct: key(seed.wrapping_add(101)),
            rekor: key(seed.wrapping_add(151)),
        }
    }

    /// The same logs with another certificate authority (seeded by `seed`), which a root
    /// naming this one's does not trust: a rogue CA whose certificates are logged.
    pub fn rogue_ca(&self, seed: u8) -> Sigstore {
        Sigstore {
            ct: self.ct.clone(),
            rekor: self.rekor.clone(),
            ..Sigstore::new(seed)
        }
    }

    /// The trusted root (Sigstore's JSON) that names this CA and these logs.
    pub fn trusted_root(&self) -> String {
        let since = json!({"start": "2020-01-01T00:00:00Z"});
        let log = |base: &str, key: &SigningKey| {
            json!({
                "baseUrl": base,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": STANDARD.encode(spki(key)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": since,
                },
                "logId": {"keyId": STANDARD.encode(log_id(key))},
            })
        };
        json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log("https://rekor.regmirror.test", &self.rekor)],
            "certificateAuthorities": [{
                "subject": {"organization": "regmirror tests", "commonName": "test fulcio"},
                "uri": "https://fulcio.regmirror.test",
                "certChain": {"certificates": [{"rawBytes": STANDARD.encode(&self.ca_der)}]},
                "validFor": since,
            }],
            "ctlogs": [log("https://ctfe.regmirror.test", &self.ct)],
            "timestampAuthorities": [],
        })
        .to_string()
    }

    /// A signer with a ten-minute certificate issued a minute ago to `identity` (a URI, or an
    /// e-mail address) through `issuer`.
    pub fn signer(&self, identity: &str, issuer: &str) -> Signer<'_> {
        self.issue(identity, issuer, now() - 60)
    }

    /// A signer whose certificate had expired two hours before it signed.
    pub fn expired_signer(&self, identity: &str, issuer: &str) -> Signer<'_> {
        self.issue(identity, issuer, now() - 3 * 3600)
    }

    fn issue(&self, identity: &str, issuer: &str, from: i64) -> Signer<'_> {
        let key = key(identity.len() as u8 ^ 0x5a);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![match identity.contains("://") {
            true => SanType::URI(identity.try_into().expect("an IA5 URI")),
            false => SanType::Rfc822Name(identity.try_into().expect("an IA5 address")),
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.use_authority_key_identifier_extension = true;
        // Fulcio's OIDC issuer extension (1.3.6.1.4.1.57264.1.8), a DER UTF8String.
        let issuer_der = Utf8StringRef::new(issuer)
            .expect("UTF-8")
            .to_der()
            .expect("DER");
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
            issuer_der,
        )];
        params.not_before = at(from);
        params.not_after = at(from + 600);
        let ca_pair = key_pair(&self.ca);
        let authority = rcgen::Issuer::from_params(&self.ca_params, &ca_pair);
        let issued = params
            .signed_by(&key_pair(&key), &authority)
            .expect("a leaf certificate");
        let certificate = self.with_sct(issued.der(), from);
        Signer {
            sigstore: self,
            key,
            certificate,
        }
    }

    /// `leaf` with an SCT of the CT log embedded, over its precertificate (the certificate
    /// without the SCT list), then signed again by the CA: what Fulcio issues.
    fn with_sct(&self, leaf: &[u8], from: i64) -> Vec<u8> {
        let mut certificate = x509_cert::Certificate::from_der(leaf).expect("a certificate");
        let precertificate = certificate.tbs_certificate.to_der().expect("DER");
        let timestamp = (from as u64 + 1) * 1000;
        let mut signed = vec![0u8, 0u8];
        signed.extend(timestamp.to_be_bytes());
        signed.extend(1u16.to_be_bytes());
        signed.extend(Sha256::digest(spki(&self.ca)));
        signed.extend(&(precertificate.len() as u32).to_be_bytes()[1..]);
        signed.extend(&precertificate);
        signed.extend(0u16.to_be_bytes());
        let signature = der_signature(&self.ct, &signed);
        let mut sct = vec![0u8];
        sct.extend(log_id(&self.ct));
        sct.extend(timestamp.to_be_bytes());
        sct.extend(0u16.to_be_bytes());
        sct.extend([4u8, 3u8]);
        sct.extend((signature.len() as u16).to_be_bytes());
        sct.extend(&signature);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend((sct.len() as u16).to_be_bytes());
        list.extend(&sct);
        let inner = OctetString::new(list)
            .expect("octets")
            .to_der()
            .expect("DER");
        let extension = Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2"),
            critical: false,
            extn_value: OctetString::new(inner).expect("octets"),
        };
        certificate
            .tbs_certificate
            .extensions
            .get_or_insert_with(Vec::new)
            .push(extension);
        let tbs = certificate.tbs_certificate.to_der().expect("DER");
        let signature = der_signature(&self.ca, &tbs);
        certificate.signature = BitString::from_bytes(&signature).expect("bits");
        certificate.to_der().expect("DER")
    }
}

/// One signer: a key and the certificate the CA issued for it.
pub struct Signer<'a> {
    sigstore: &'a Sigstore,
    key: SigningKey,
    certificate: Vec<u8>,
}

/// A transparency-log entry as a signature carries it.
struct Entry {
    body: String,
    integrated_time: i64,
    log_id: Vec<u8>,
    promise: String,
}

impl Signer<'_> {
    fn certificate_pem(&self) -> String {
        let text = STANDARD.encode(&self.certificate);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    /// The hashedrekord entry of `signature` over an artifact of SHA-256 `hash` (hex).
    fn entry(&self, hash: &str, signature: &[u8], log: Log) -> Entry {
        self.logged(
            json!({
                "apiVersion": "0.0.1",
                "kind": "hashedrekord",
                "spec": {
                    "data": {"hash": {"algorithm": "sha256", "value": hash}},
                    "signature": {
                        "content": STANDARD.encode(signature),
                        "publicKey": {"content": STANDARD.encode(self.certificate_pem())},
                    },
                },
            }),
            log,
        )
    }

    /// `body` entered in the log, its promise signed by the log (or by a log nobody trusts,
    /// for [`Log::Forged`]).
    fn logged(&self, body: Value, log: Log) -> Entry {
        let body = STANDARD.encode(body.to_string());
        let rekor = match log {
            Log::Forged => key(222),
            _ => self.sigstore.rekor.clone(),
        };
        let integrated_time = now() - 30;
        let log_id = log_id(&self.sigstore.rekor);
        // The promise: the log's signature over the canonical JSON of the entry (keys in
        // order, no spaces).
        let promised = json!({
            "body": body,
            "integratedTime": integrated_time,
            "logID": hex::encode(&log_id),
            "logIndex": 0,
        });
        let promise = STANDARD.encode(der_signature(&rekor, promised.to_string().as_bytes()));
        Entry {
            body,
            integrated_time,
            log_id,
            promise,
        }
    }

    /// Pushes cosign's `.sig` manifest for the image `image_digest` into `repo`, keyless: a
    /// payload naming `signed_digest`, signed, with the certificate and the log entry in its
    /// annotations. `tamper`: the payload pushed is not the one signed.
    pub fn sign_tag(
        &self,
        remote: impl Into<Remote>,
        repo: &str,
        image_digest: &str,
        signed_digest: &str,
        log: Log,
        tamper: bool,
    ) {
        let remote = remote.into();
        let mut payload = payload(&remote, repo, signed_digest);
        let signature = der_signature(&self.key, &payload);
        let hash = hex::encode(Sha256::digest(&payload));
        let mut annotations = json!({
            "dev.cosignproject.cosign/signature": STANDARD.encode(&signature),
            "dev.sigstore.cosign/certificate": self.certificate_pem(),
        });
        if log != Log::Missing {
            let entry = self.entry(&hash, &signature, log);
            annotations["dev.sigstore.cosign/bundle"] = json!({
                "SignedEntryTimestamp": entry.promise,
                "Payload": {
                    "body": entry.body,
                    "integratedTime": entry.integrated_time,
                    "logIndex": 0,
                    "logID": hex::encode(&entry.log_id),
                },
            })
            .to_string()
            .into();
        }
        if tamper {
            let at = payload.len() - 3;
            payload[at] ^= 1;
        }
        put_signature(&remote, repo, image_digest, &payload, annotations);
    }

    /// Attaches to `image` in `repo` a Sigstore bundle v0.3 as cosign 3 `sign` makes it
    /// ([`Signer::dsse_bundle`]) and attaches it on a registry without the referrers API:
    /// pushed by digest and listed in the fallback index `sha256-<hex>`.
    pub fn attach_bundle(
        &self,
        remote: impl Into<Remote>,
        repo: &str,
        image: &Image,
        signed_digest: &str,
        log: Log,
    ) {
        let remote = remote.into();
        let artifact = self.dsse_bundle(image, signed_digest, log);
        artifact.push_by_digest(&remote, repo);
        let fallback = ImageBuilder::index_of(&[&artifact]);
        let tag = format!("sha256-{}", image.digest().trim_start_matches("sha256:"));
        fallback.push(&remote, repo, &tag);
    }

    /// A Sigstore bundle v0.3 over `signed_digest` as an OCI artifact whose subject is
    /// `image`, in its other form: a message signature over the manifest (`hashedrekord`).
    pub fn bundle(&self, image: &Image, signed_digest: &str, log: Log) -> Image {
        let hash = signed_digest.trim_start_matches("sha256:");
        let prehash = hex::decode(hash).expect("a SHA-256 digest");
        let signature: Signature = self.key.sign_prehash(&prehash).expect("a signature");
        let signature = signature.to_der().as_bytes().to_vec();
        let mut entries = Vec::new();
        if log != Log::Missing {
            let entry = self.entry(hash, &signature, log);
            entries.push(self.proven(entry, log, "hashedrekord"));
        }
        let bundle = json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": STANDARD.encode(&self.certificate)},
                "tlogEntries": entries,
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(&prehash)},
                "signature": STANDARD.encode(&signature),
            },
        });
        let data = Bytes::from(bundle.to_string());
        Image::referrer_holding(image, None, BUNDLE_V03, BUNDLE_V03, data)
    }

    /// A Sigstore bundle v0.3 as cosign 3 `sign` makes it: a DSSE envelope over an in-toto
    /// statement whose subject is `signed_digest`, its log entry of kind `dsse`.
    pub fn dsse_bundle(&self, image: &Image, signed_digest: &str, log: Log) -> Image {
        const IN_TOTO: &str = "application/vnd.in-toto+json";
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "", "digest": {"sha256": signed_digest.trim_start_matches("sha256:")}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1",
            "predicate": {},
        })
        .to_string();
        let mut pae = format!("DSSEv1 {} {IN_TOTO} {} ", IN_TOTO.len(), statement.len());
        pae.push_str(&statement);
        let signature = der_signature(&self.key, pae.as_bytes());
        let envelope = json!({
            "payload": STANDARD.encode(&statement),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": STANDARD.encode(&signature)}],
        });
        let mut entries = Vec::new();
        if log != Log::Missing {
            let body = json!({
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hex::encode(Sha256::digest(envelope.to_string())),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hex::encode(Sha256::digest(&statement)),
                    },
                    "signatures": [{
                        "signature": STANDARD.encode(&signature),
                        "verifier": STANDARD.encode(self.certificate_pem()),
                    }],
                },
            });
            let entry = self.logged(body, log);
            entries.push(self.proven(entry, log, "dsse"));
        }
        let bundle = json!({
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": STANDARD.encode(&self.certificate)},
                "tlogEntries": entries,
            },
            "dsseEnvelope": envelope,
        });
        let data = Bytes::from(bundle.to_string());
        Image::referrer_holding(image, None, BUNDLE_V03, BUNDLE_V03, data)
    }

    /// `entry` as a bundle holds it: with its promise and its inclusion proof, the log a tree
    /// of this one entry under a checkpoint the log signed.
    fn proven(&self, entry: Entry, log: Log, kind: &str) -> Value {
        let leaf = {
            let mut hasher = Sha256::new();
            hasher.update([0u8]);
            hasher.update(STANDARD.decode(&entry.body).expect("base64"));
            hasher.finalize().to_vec()
        };
        let root = STANDARD.encode(&leaf);
        let note = format!("{ORIGIN}\n1\n{root}\n");
        let rekor = match log {
            Log::Forged => key(222),
            _ => self.sigstore.rekor.clone(),
        };
        let mut signed = entry.log_id[..4].to_vec();
        signed.extend(der_signature(&rekor, note.as_bytes()));
        let checkpoint = format!("{note}\n\u{2014} {LOG_NAME} {}\n", STANDARD.encode(signed));
        json!({
            "logIndex": "0",
            "logId": {"keyId": STANDARD.encode(&entry.log_id)},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": entry.integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": entry.promise},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": root,
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": entry.body,
        })
    }
}
