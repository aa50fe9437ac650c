//! Images built by the tests: random layers, realistic configs, OCI or Docker v2 media types,
//! single-platform, multi-arch or artifact; pushed with the copy order a mirror must keep
//! (blobs, child manifests by digest, then the tag). Reading back is in [`super::remote`].
//!
//! Every image is unique (each config carries a random nonce), so two builds never share a
//! digest unless a test shares a [`Layer`] on purpose.

use std::fmt;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::remote::{put_manifest, upload_blob, Remote};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ARTIFACT_CONFIG: &str = "application/vnd.example.artifact.config.v1+json";
pub const ARTIFACT_LAYER: &str = "application/vnd.example.data";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Which family of media types an image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// OCI image index / manifest / config / `tar+gzip` layers.
    Oci,
    /// Docker v2 schema 2 manifest list / manifest / container config / rootfs diff layers.
    Docker,
}

impl Flavor {
    pub fn index_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_INDEX,
            Flavor::Docker => DOCKER_LIST,
        }
    }

    pub fn manifest_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_MANIFEST,
            Flavor::Docker => DOCKER_MANIFEST,
        }
    }

    pub fn config_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_CONFIG,
            Flavor::Docker => DOCKER_CONFIG,
        }
    }

    pub fn layer_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_LAYER,
            Flavor::Docker => DOCKER_LAYER,
        }
    }
}

/// A gzip-compressed layer of random bytes; clone it into several images to share a blob.
#[derive(Clone)]
pub struct Layer {
    /// The compressed blob as stored in the registry.
    data: Bytes,
    /// Digest of `data`.
    digest: String,
    /// The digest of the uncompressed content, for the config's `rootfs.diff_ids`: random
    /// for [`Layer::random`] (registries and mirrors never check it), true for [`Layer::tar`].
    diff_id: String,
}

impl Layer {
    /// A layer whose uncompressed content is `size` random bytes (random bytes do not
    /// compress, so the blob is slightly larger than `size`).
    pub fn random(size: usize) -> Layer {
        let raw = random_bytes(size);
        // Stored (level 0) deflate: still valid gzip, and much faster in debug builds.
        let mut encoder = GzEncoder::new(Vec::with_capacity(size + 64), Compression::none());
        std::io::Write::write_all(&mut encoder, &raw).expect("gzip into memory");
        let data = Bytes::from(encoder.finish().expect("gzip into memory"));
        Layer {
            digest: sha256_digest(&data),
            // Nothing checks diff_ids against content; hashing `raw` would only cost time.
            diff_id: sha256_digest(&rand::random::<[u8; 32]>()),
            data,
        }
    }

    /// A real layer: a tar archive of `files` (path, content), gzip-compressed, with its true
    /// diff_id, for runtimes that unpack what they pull and check it (podman).
    pub fn tar(files: &[(&str, &[u8])]) -> Layer {
        let mut archive = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            archive
                .append_data(&mut header, path, *content)
                .expect("tar into memory");
        }
        let raw = archive.into_inner().expect("tar into memory");
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        std::io::Write::write_all(&mut encoder, &raw).expect("gzip into memory");
        let data = Bytes::from(encoder.finish().expect("gzip into memory"));
        Layer {
            digest: sha256_digest(&data),
            diff_id: sha256_digest(&raw),
            data,
        }
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("digest", &self.digest)
            .field("size", &self.data.len())
            .finish()
    }
}

/// `size` pseudo-random bytes from a randomly seeded xorshift: unique per call, and ~15 times
/// faster than `rand`'s ChaCha in the unoptimised builds tests run in.
fn random_bytes(size: usize) -> Vec<u8> {
    let mut state = rand::random::<u64>() | 1;
    let mut out = vec![0u8; size];
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out
}

/// A blob (config or layer) in push order.
#[derive(Clone)]
struct Blob {
    digest: String,
    data: Bytes,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.digest, self.data.len())
    }
}

/// A serialised manifest or index, exactly the bytes that are pushed.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
    /// `os/arch[/variant]` for children of an index; `None` for top-level manifests.
    pub platform: Option<String>,
}

impl Manifest {
    fn new(media_type: &str, value: &Value, platform: Option<String>) -> Manifest {
        let bytes = serde_json::to_vec_pretty(value).expect("serialise manifest");
        Manifest {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&bytes),
            bytes,
            platform,
        }
    }

    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.bytes.len(),
        })
    }
}

/// An image ready to push: a top manifest (index or manifest), its children and its blobs.
#[derive(Debug, Clone)]
pub struct Image {
    top: Manifest,
    /// Child manifests of an index, in index order; empty for a single manifest.
    children: Vec<Manifest>,
    /// Configs and layers, each digest once, in push order.
    blobs: Vec<Blob>,
}

/// What [`Image::push`] put in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Digest of the top manifest (the index for multi-arch images).
    pub digest: String,
    pub media_type: String,
    /// Digests of the child manifests, in index order; empty for a single manifest.
    pub manifests: Vec<String>,
    /// `(digest, size)` of every config and layer blob, each once.
    pub blobs: Vec<(String, u64)>,
}

/// Builds [`Image`]s; see also the shortcuts [`Image::single`] and [`Image::multi_arch`].
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    flavor: Flavor,
    /// Empty: a single manifest (linux/amd64). Otherwise an index with one child each.
    platforms: Vec<String>,
    /// Fresh random layers per platform manifest.
    layers: usize,
    layer_size: usize,
    /// Layers put first in every platform manifest (like a shared base image).
    shared: Vec<Layer>,
    /// The platform of a single-manifest image (`linux/amd64` unless set).
    single: String,
    /// Add an attestation manifest per platform, as BuildKit does (`unknown/unknown`).
    attestations: bool,
}

impl ImageBuilder {
    /// A single-platform image with one 1 KiB layer, unless changed.
    pub fn new(flavor: Flavor) -> ImageBuilder {
        ImageBuilder {
            flavor,
            platforms: Vec::new(),
            layers: 1,
            layer_size: 1024,
            shared: Vec::new(),
            single: "linux/amd64".to_owned(),
            attestations: false,
        }
    }

    /// An OCI index over `manifests` (their descriptors as a referrers index lists them, with
    /// `artifactType`): the OCI referrers fallback index, for instance.
    pub fn index_of(manifests: &[&Image]) -> Image {
        let entries: Vec<Value> = manifests.iter().map(|m| m.descriptor()).collect();
        let top = Manifest::new(
            OCI_INDEX,
            &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries }),
            None,
        );
        let mut blobs = Vec::new();
        for manifest in manifests {
            for blob in &manifest.blobs {
                add_blob(&mut blobs, blob.digest.clone(), blob.data.clone());
            }
        }
        Image {
            top,
            children: manifests.iter().map(|m| m.top.clone()).collect(),
            blobs,
        }
    }

    /// A single-manifest image for `platform` (its config says so).
    pub fn single_platform(mut self, platform: &str) -> ImageBuilder {
        self.single = platform.to_owned();
        self
    }

    /// With an attestation manifest per platform in the index, as BuildKit pushes them:
    /// platform `unknown/unknown`, annotated with the digest of the image it attests.
    pub fn with_attestations(mut self) -> ImageBuilder {
        self.attestations = true;
        self
    }

    /// Makes a multi-arch image: an index over one manifest per `os/arch[/variant]`.
    pub fn platforms(mut self, platforms: &[&str]) -> ImageBuilder {
        self.platforms = platforms.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// `count` fresh random layers of `size` uncompressed bytes per platform manifest.
    pub fn layers(mut self, count: usize, size: usize) -> ImageBuilder {
        self.layers = count;
        self.layer_size = size;
        self
    }

    /// Puts `layer` first in every platform manifest, so images can share a blob.
    pub fn shared_layer(mut self, layer: &Layer) -> ImageBuilder {
        self.shared.push(layer.clone());
        self
    }

    pub fn build(self) -> Image {
        let mut blobs = Vec::new();
        if self.platforms.is_empty() {
            let top = self.platform_manifest(&self.single.clone(), None, &mut blobs);
            return Image {
                top,
                children: Vec::new(),
                blobs,
            };
        }
        let mut children: Vec<Manifest> = self
            .platforms
            .iter()
            .map(|platform| self.platform_manifest(platform, Some(platform.clone()), &mut blobs))
            .collect();
        let mut entries: Vec<Value> = children
            .iter()
            .map(|child| {
                let mut entry = child.descriptor();
                entry["platform"] = platform_json(child.platform.as_deref().unwrap_or_default());
                entry
            })
            .collect();
        if self.attestations {
            let attested: Vec<String> = children.iter().map(|c| c.digest.clone()).collect();
            for digest in attested {
                let attestation = self.platform_manifest("unknown/unknown", None, &mut blobs);
                let mut entry = attestation.descriptor();
                entry["platform"] = platform_json("unknown/unknown");
                entry["annotations"] = json!({
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": digest,
                });
                entries.push(entry);
                children.push(attestation);
            }
        }
        let index_type = self.flavor.index_type();
        let top = Manifest::new(
            index_type,
            &json!({ "schemaVersion": 2, "mediaType": index_type, "manifests": entries }),
            None,
        );
        Image {
            top,
            children,
            blobs,
        }
    }

    fn platform_manifest(
        &self,
        platform: &str,
        label: Option<String>,
        blobs: &mut Vec<Blob>,
    ) -> Manifest {
        let mut layers = self.shared.clone();
        layers.extend((0..self.layers).map(|_| Layer::random(self.layer_size)));
        let config = config_json(platform, &layers);
        let config = Bytes::from(serde_json::to_vec(&config).expect("serialise config"));
        let config_digest = sha256_digest(&config);
        let layer_type = self.flavor.layer_type();
        let manifest_type = self.flavor.manifest_type();
        let value = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": self.flavor.config_type(),
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers.iter().map(|layer| json!({
                "mediaType": layer_type,
                "digest": layer.digest,
                "size": layer.data.len(),
            })).collect::<Vec<_>>(),
        });
        add_blob(blobs, config_digest, config);
        for layer in &layers {
            add_blob(blobs, layer.digest.clone(), layer.data.clone());
        }
        Manifest::new(manifest_type, &value, label)
    }
}

fn add_blob(blobs: &mut Vec<Blob>, digest: String, data: Bytes) {
    if !blobs.iter().any(|blob| blob.digest == digest) {
        blobs.push(Blob { digest, data });
    }
}

fn platform_json(platform: &str) -> Value {
    let mut parts = platform.split('/');
    let os = parts.next().unwrap_or("linux");
    let architecture = parts.next().unwrap_or("amd64");
    let mut value = json!({ "architecture": architecture, "os": os });
    if let Some(variant) = parts.next() {
        value["variant"] = json!(variant);
    }
    value
}

/// A realistic image config; the nonce label makes every image distinct.
fn config_json(platform: &str, layers: &[Layer]) -> Value {
    let mut config = platform_json(platform);
    config["created"] = json!("2024-01-01T00:00:00Z");
    config["config"] = json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/sh"],
        "Labels": { "org.regmirror.test.nonce": format!("{:032x}", rand::random::<u128>()) },
    });
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|layer| layer.diff_id.as_str()).collect::<Vec<_>>(),
    });
    config["history"] = layers
        .iter()
        .map(|_| json!({ "created": "2024-01-01T00:00:00Z", "created_by": "regmirror test" }))
        .collect();
    config
}

/// Eight platforms, about as many as the index of a widely used base image spans.
pub const EIGHT_PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/arm64/v8",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
];

impl Image {
    /// One manifest (linux/amd64) with `layers` random layers of `layer_size` bytes.
    pub fn single(flavor: Flavor, layers: usize, layer_size: usize) -> Image {
        ImageBuilder::new(flavor).layers(layers, layer_size).build()
    }

    /// An index over one manifest per platform (`"linux/amd64"`, `"linux/arm/v7"`, ...).
    pub fn multi_arch(
        flavor: Flavor,
        platforms: &[&str],
        layers_per_platform: usize,
        layer_size: usize,
    ) -> Image {
        ImageBuilder::new(flavor)
            .platforms(platforms)
            .layers(layers_per_platform, layer_size)
            .build()
    }

    /// An OCI artifact: config of type [`ARTIFACT_CONFIG`], one [`ARTIFACT_LAYER`] blob of
    /// `size` random bytes.
    pub fn artifact(size: usize) -> Image {
        let data = Bytes::from(random_bytes(size));
        let config = json!({ "nonce": format!("{:032x}", rand::random::<u128>()) });
        let config = Bytes::from(serde_json::to_vec(&config).expect("serialise config"));
        let value = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": ARTIFACT_CONFIG,
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": ARTIFACT_LAYER,
                "digest": sha256_digest(&data),
                "size": data.len(),
                "annotations": { "org.opencontainers.image.title": "data.bin" },
            }],
        });
        Image::one_oci_manifest(&value, [config, data])
    }

    /// An OCI 1.1 artifact that refers to `subject` (its top manifest, or `child` of it): a
    /// signature, SBOM or attestation of type `artifact_type`, as cosign 3 and oras push them.
    pub fn referrer(subject: &Image, child: Option<&str>, artifact_type: &str) -> Image {
        let data = Bytes::from(random_bytes(256));
        Image::referrer_holding(subject, child, artifact_type, ARTIFACT_LAYER, data)
    }

    /// [`Image::referrer`] whose one layer is `data`, of `layer_type` (a Sigstore bundle's
    /// JSON, say).
    pub fn referrer_holding(
        subject: &Image,
        child: Option<&str>,
        artifact_type: &str,
        layer_type: &str,
        data: Bytes,
    ) -> Image {
        let empty = Bytes::from_static(b"{}");
        let subject = match child {
            Some(digest) => subject
                .children
                .iter()
                .find(|c| c.digest == digest)
                .expect("a child of the subject")
                .descriptor(),
            None => subject.top.descriptor(),
        };
        let value = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": sha256_digest(&empty),
                "size": empty.len(),
            },
            "layers": [{
                "mediaType": layer_type,
                "digest": sha256_digest(&data),
                "size": data.len(),
            }],
            "subject": subject,
        });
        Image::one_oci_manifest(&value, [empty, data])
    }

    /// An image of one OCI manifest, `value`, and the blobs it names.
    fn one_oci_manifest(value: &serde_json::Value, blobs: [Bytes; 2]) -> Image {
        Image {
            top: Manifest::new(OCI_MANIFEST, value, None),
            children: Vec::new(),
            blobs: blobs
                .into_iter()
                .map(|data| Blob {
                    digest: sha256_digest(&data),
                    data,
                })
                .collect(),
        }
    }

    /// The descriptor of the top manifest, with `artifactType` when it has one: what a
    /// referrers index lists.
    pub fn descriptor(&self) -> Value {
        let mut descriptor = self.top.descriptor();
        let value: Value = serde_json::from_slice(&self.top.bytes).expect("JSON manifest");
        if let Some(kind) = value.get("artifactType") {
            descriptor["artifactType"] = kind.clone();
        }
        descriptor
    }

    /// Pushes blobs and the manifest by digest, with no tag (as a referrer is pushed).
    pub fn push_by_digest(&self, remote: impl Into<Remote>, repo: &str) {
        let remote = remote.into();
        for blob in &self.blobs {
            upload_blob(&remote, repo, &blob.digest, blob.data.clone());
        }
        put_manifest(&remote, repo, &self.top.digest, &self.top);
    }

    /// Digest of the top manifest (what a tag points at).
    pub fn digest(&self) -> &str {
        &self.top.digest
    }

    pub fn media_type(&self) -> &str {
        &self.top.media_type
    }

    /// The top manifest (index or manifest).
    pub fn top(&self) -> &Manifest {
        &self.top
    }

    /// Child manifests of an index, in index order.
    pub fn children(&self) -> &[Manifest] {
        &self.children
    }

    /// Digest of the child manifest for `platform` (`"linux/arm64"`), if the index has one.
    pub fn child_digest(&self, platform: &str) -> Option<&str> {
        self.children
            .iter()
            .find(|child| child.platform.as_deref() == Some(platform))
            .map(|child| child.digest.as_str())
    }

    /// `(digest, size)` of every config and layer, each once.
    pub fn blobs(&self) -> Vec<(String, u64)> {
        self.blobs
            .iter()
            .map(|blob| (blob.digest.clone(), blob.data.len() as u64))
            .collect()
    }

    /// Points `tag` of `repo` at this image, which [`Image::push`] already put there: one
    /// manifest PUT.
    pub fn tag(&self, remote: impl Into<Remote>, repo: &str, tag: &str) {
        put_manifest(&remote.into(), repo, tag, &self.top);
    }

    /// `(digest, bytes)` of every config and layer, each once, for a server that serves them.
    pub fn blob_data(&self) -> Vec<(String, Bytes)> {
        self.blobs
            .iter()
            .map(|blob| (blob.digest.clone(), blob.data.clone()))
            .collect()
    }

    /// Pushes blobs, then child manifests by digest, then the top manifest under `tag`.
    /// Panics with the registry's answer on any failure.
    pub fn push(&self, remote: impl Into<Remote>, repo: &str, tag: &str) -> Pushed {
        let remote = remote.into();
        for blob in &self.blobs {
            upload_blob(&remote, repo, &blob.digest, blob.data.clone());
        }
        for child in &self.children {
            put_manifest(&remote, repo, &child.digest, child);
        }
        put_manifest(&remote, repo, tag, &self.top);
        Pushed {
            digest: self.top.digest.clone(),
            media_type: self.top.media_type.clone(),
            manifests: self.children.iter().map(|c| c.digest.clone()).collect(),
            blobs: self.blobs(),
        }
    }
}
