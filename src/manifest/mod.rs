//! OCI and Docker manifests: what a manifest references, read from its raw bytes.
//!
//! regmirror never re-serialises a manifest it copies: the bytes pulled are the bytes pushed,
//! so digests survive. The only manifests it writes are its own: the filtered index of chosen
//! platforms ([`platform`]) and the referrers fallback index on a target without the referrers
//! API; what they list is still copied byte for byte. This module reads manifests to learn the
//! media type (sent back as Content-Type) and the descriptors to copy first: an index's child
//! manifests, an image's config and layers.
//! Artifacts (any config media type) are images to it. Docker schema 1 is refused.
//!
//! A manifest comes from a registry that may be hostile, so what it can make regmirror hold is
//! bounded while it is read: at most [`MAX_REFERENCES`] descriptors, counted as they are
//! parsed (the body itself is capped before it gets here, see `registry::limits`).

use serde::de::{Deserializer, Error as _, SeqAccess, Visitor};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod platform;

pub use platform::{Platform, Platforms};

use crate::digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// The manifest media types regmirror asks registries for, in every HEAD and GET.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The most descriptors (an index's children, or an image's layers) one manifest may list.
/// Real images list a few dozen; a 4 MiB manifest could list some 30,000, and each child of
/// an index costs a pull.
pub const MAX_REFERENCES: usize = 10_000;

/// Why a manifest cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("is a Docker schema 1 manifest, which is obsolete and not mirrored; rebuild or re-push the image with a current client")]
    SchemaV1,
    /// Its text can quote the manifest (a media type, a parser's complaint): shown clipped
    /// and escaped, as the registry's.
    #[error(
        "is not a manifest regmirror understands: {}",
        crate::untrusted::line(.0, crate::untrusted::TEXT)
    )]
    Malformed(String),
}

/// A blob or manifest a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// Set on foreign (non-distributable) layers, which live outside the registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// An index's child: the platform it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// An artifact's type, as the referrers API lists it.
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    /// Foreign layers (Windows base layers) are fetched from their `urls`, never from a
    /// registry, and registries accept manifests that reference them without the blob.
    pub fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type.contains("foreign") || self.media_type.contains("nondistributable"))
    }
}

/// What a manifest references, in the order it must reach the target before the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An OCI index or Docker manifest list: child manifests, each pushed by digest first.
    Index {
        media_type: String,
        children: Vec<Descriptor>,
    },
    /// An image or artifact: its config and layer blobs.
    Image {
        media_type: String,
        blobs: Vec<Descriptor>,
    },
}

impl Manifest {
    /// Reads raw manifest bytes. `content_type` is what the registry said, used when the
    /// manifest itself does not carry a `mediaType` (it is optional for OCI).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "schemaVersion")]
            schema_version: Option<i64>,
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<Bounded>,
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Bounded,
        }
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let declared = raw
            .media_type
            .clone()
            .or_else(|| content_type.map(|t| t.split(';').next().unwrap_or(t).trim().to_string()));
        if raw.schema_version == Some(1)
            || declared
                .as_deref()
                .is_some_and(|t| DOCKER_SCHEMA1.contains(&t))
        {
            return Err(ManifestError::SchemaV1);
        }
        if raw.schema_version != Some(2) {
            return Err(ManifestError::Malformed(format!(
                "schemaVersion is {:?}, expected 2",
                raw.schema_version
            )));
        }
        let manifest = match (raw.manifests, raw.config) {
            (Some(Bounded(children)), None) => Manifest::Index {
                media_type: declared.unwrap_or_else(|| OCI_INDEX.to_string()),
                children,
            },
            (None, Some(config)) => {
                let mut blobs = vec![config];
                blobs.extend(raw.layers.0.into_iter().filter(|l| !l.is_foreign()));
                Manifest::Image {
                    media_type: declared.unwrap_or_else(|| OCI_MANIFEST.to_string()),
                    blobs,
                }
            }
            (Some(_), Some(_)) => {
                return Err(ManifestError::Malformed(
                    "has both `manifests` and `config`".into(),
                ))
            }
            (None, None) => {
                return Err(ManifestError::Malformed(
                    "has neither `manifests` nor `config`".into(),
                ))
            }
        };
        for d in manifest.references() {
            check_digest(&d.digest)?;
        }
        Ok(manifest)
    }

    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Index { media_type, .. } | Manifest::Image { media_type, .. } => media_type,
        }
    }

    /// What it references: an index's children, or an image's config and layers.
    pub fn references(&self) -> &[Descriptor] {
        match self {
            Manifest::Index { children, .. } => children,
            Manifest::Image { blobs, .. } => blobs,
        }
    }
}

/// Digests end up in URLs: accept only well-formed ones that regmirror can verify.
pub fn check_digest(digest: &str) -> Result<(), ManifestError> {
    digest::parse(digest)
        .map(drop)
        .map_err(|e| ManifestError::Malformed(e.to_string()))
}

/// A list of descriptors that stops being read past `MAX` (a manifest's [`MAX_REFERENCES`]),
/// so a hostile manifest or layout index is refused before it is all held.
#[derive(Debug, Default)]
pub(crate) struct Bounded<const MAX: usize = MAX_REFERENCES>(pub Vec<Descriptor>);

impl<'de, const MAX: usize> Deserialize<'de> for Bounded<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Counting<const MAX: usize>;
        impl<'de, const MAX: usize> Visitor<'de> for Counting<MAX> {
            type Value = Bounded<MAX>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of descriptors")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bounded<MAX>, A::Error> {
                let mut list = Vec::new();
                while let Some(descriptor) = seq.next_element()? {
                    if list.len() == MAX {
                        return Err(A::Error::custom(format!(
                            "lists more than {MAX} descriptors, regmirror's limit"
                        )));
                    }
                    list.push(descriptor);
                }
                Ok(Bounded(list))
            }
        }
        deserializer.deserialize_seq(Counting::<MAX>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn an_index_lists_its_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
                {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":11}}]}}"#,
            digest('a'),
            digest('b')
        );
        let Manifest::Index {
            media_type,
            children,
        } = Manifest::parse(body.as_bytes(), None).unwrap()
        else {
            panic!("not an index")
        };
        assert_eq!(media_type, DOCKER_LIST);
        assert_eq!(children.len(), 2);
        assert_eq!(children[1].size, 11);
    }

    #[test]
    fn an_artifact_is_an_image_with_its_config_first_and_foreign_layers_left_out() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example.config","digest":"{}","size":2}},
               "layers":[{{"mediaType":"application/vnd.example.data","digest":"{}","size":5}},
                         {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{}","size":5,"urls":["https://x"]}}]}}"#,
            digest('c'),
            digest('d'),
            digest('e')
        );
        let m = Manifest::parse(
            body.as_bytes(),
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        )
        .unwrap();
        let Manifest::Image { media_type, blobs } = m else {
            panic!("not an image")
        };
        assert_eq!(media_type, OCI_MANIFEST);
        assert_eq!(
            blobs.iter().map(|b| &b.digest).collect::<Vec<_>>(),
            [&digest('c'), &digest('d')]
        );
    }

    #[test]
    fn schema1_is_refused_by_name() {
        let body = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert_eq!(Manifest::parse(body, None), Err(ManifestError::SchemaV1));
        let err = Manifest::parse(b"{}", Some(DOCKER_SCHEMA1[1])).unwrap_err();
        assert_eq!(err, ManifestError::SchemaV1);
        assert!(err.to_string().contains("schema 1"));
    }

    #[test]
    fn malformed_manifests_and_digests_are_refused() {
        for body in [
            "not json".to_string(),
            r#"{"schemaVersion":2}"#.to_string(),
            r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:../../x","size":1}]}"#.to_string(),
            format!(
                r#"{{"schemaVersion":3,"config":{{"digest":"{}","size":1}}}}"#,
                digest('a')
            ),
        ] {
            assert!(
                matches!(
                    Manifest::parse(body.as_bytes(), None),
                    Err(ManifestError::Malformed(_))
                ),
                "{body}"
            );
        }
        assert!(check_digest(&digest('f')).is_ok());
        assert!(check_digest(&format!("sha512:{}", "0".repeat(128))).is_ok());
        assert!(check_digest(&digest('F')).is_err());
        assert!(check_digest("md5:abc").is_err());
    }

    #[test]
    fn an_index_with_too_many_children_is_refused_while_it_is_read() {
        let child = format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}"#,
            digest('a')
        );
        let index = |n: usize| {
            format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                vec![child.as_str(); n].join(",")
            )
        };
        assert!(Manifest::parse(index(MAX_REFERENCES).as_bytes(), None).is_ok());
        let err = Manifest::parse(index(MAX_REFERENCES + 1).as_bytes(), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("lists more than 10000 descriptors"),
            "{err}"
        );
        let layers = format!(
            r#"{{"schemaVersion":2,"config":{child},"layers":[{}]}}"#,
            vec![child.as_str(); MAX_REFERENCES + 1].join(",")
        );
        assert!(Manifest::parse(layers.as_bytes(), None).is_err());
    }
}
