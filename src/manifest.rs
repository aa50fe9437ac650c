//! OCI and Docker manifests: what a manifest references, read from its raw bytes.
//!
//! regmirror never re-serialises a manifest: the bytes pulled are the bytes pushed, so digests
//! survive. This module only reads them to learn the media type (sent back as Content-Type)
//! and the descriptors to copy first: an index's child manifests, an image's config and layers.
//! Artifacts (any config media type) are images to it. Docker schema 1 is refused.

use serde::Deserialize;

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

/// Why a manifest cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("is a Docker schema 1 manifest, which is obsolete and not mirrored; rebuild or re-push the image with a current client")]
    SchemaV1,
    #[error("is not a manifest regmirror understands: {0}")]
    Malformed(String),
}

/// A blob or manifest a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// Set on foreign (non-distributable) layers, which live outside the registry.
    #[serde(default)]
    pub urls: Vec<String>,
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
            manifests: Option<Vec<Descriptor>>,
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
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
            (Some(children), None) => Manifest::Index {
                media_type: declared.unwrap_or_else(|| OCI_INDEX.to_string()),
                children,
            },
            (None, Some(config)) => {
                let mut blobs = vec![config];
                blobs.extend(raw.layers.into_iter().filter(|l| !l.is_foreign()));
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

    fn references(&self) -> &[Descriptor] {
        match self {
            Manifest::Index { children, .. } => children,
            Manifest::Image { blobs, .. } => blobs,
        }
    }
}

/// Digests end up in URLs: accept only well-formed ones (`sha256:` + 64 hex, or sha512).
pub fn check_digest(digest: &str) -> Result<(), ManifestError> {
    let ok = match digest.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && digest.split_once(':').is_some_and(|(_, hex)| {
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Malformed(format!(
            "invalid digest {digest:?}"
        )))
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
        assert!(check_digest(&digest('F')).is_err());
        assert!(check_digest("md5:abc").is_err());
    }
}
