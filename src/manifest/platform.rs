//! Platforms, and the index regmirror writes when only some of them are mirrored.
//!
//! `platforms = ["linux/amd64", "linux/arm64"]` keeps the children of an index whose platform
//! matches one of them: os and architecture equal, and the variant equal when the choice names
//! one (`linux/arm64` matches `linux/arm64/v8`; an `arm64` child that names no variant is `v8`,
//! as containerd reads it). Attestation manifests (`unknown/unknown`, annotated with the digest
//! of the image they attest) follow that image when referrers are mirrored too.
//!
//! Registries refuse an index whose children are missing (distribution 2.8 always, 3.x by
//! default, Nexus), so the index pushed is a new one: the source's bytes with the dropped
//! children taken out and two annotations added, the source index's digest
//! ([`SOURCE_DIGEST`]) and the platforms chosen ([`PLATFORMS`]). They let the next pass see
//! that the target already holds this choice of this content, reading the target's index (no
//! pull) instead of pulling the source's. The children are kept byte for byte, so
//! `image@sha256:<child>` means the same in the mirror as upstream; the top digest differs.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Descriptor;

/// The annotation of a filtered index that names the source index's digest.
pub const SOURCE_DIGEST: &str = "io.regmirror.source.digest";
/// The annotation of a filtered index that lists the platforms kept.
pub const PLATFORMS: &str = "io.regmirror.platforms";
/// Docker's annotations on an attestation manifest: what it is and which child it attests.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";

/// A platform as an index's child names it, or as `platforms` chooses it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/architecture[/variant]`, as `platforms` writes it.
    pub fn parse(written: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = written.split('/').collect();
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        };
        match parts.as_slice() {
            [os, architecture] | [os, architecture, _] if valid(os) && valid(architecture) => {
                let variant = parts.get(2).map(|v| v.to_string());
                if variant.as_deref().is_some_and(|v| !valid(v)) {
                    return Err(format!("{written:?}: the variant is not a platform name"));
                }
                Ok(Platform {
                    os: os.to_string(),
                    architecture: architecture.to_string(),
                    variant,
                })
            }
            _ => Err(format!(
                "{written:?} is not a platform: write it os/architecture[/variant], like \"linux/amd64\" or \"linux/arm64/v8\""
            )),
        }
    }

    /// The variant, with the one a child that names none has by convention.
    fn variant_or_default(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            (_, Some(variant)) => Some(variant),
            ("arm64", None) => Some("v8"),
            _ => None,
        }
    }

    /// Whether this choice takes a child of platform `child`.
    pub fn takes(&self, child: &Platform) -> bool {
        self.os == child.os
            && self.architecture == child.architecture
            && (self.variant.is_none() || self.variant_or_default() == child.variant_or_default())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The platforms a mirror takes, in a canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platforms(Vec<Platform>);

impl Platforms {
    /// The choice `platforms` makes, sorted and without repeats; never empty.
    pub fn new(mut list: Vec<Platform>) -> Option<Platforms> {
        list.sort();
        list.dedup();
        (!list.is_empty()).then_some(Platforms(list))
    }

    /// How many platforms are chosen.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a choice holds at least one platform.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a child of platform `child` is taken.
    pub fn take(&self, child: &Platform) -> bool {
        self.0.iter().any(|p| p.takes(child))
    }

    /// The children of an index these platforms keep: the matching ones, and, when
    /// `attestations`, the attestation manifests of the kept ones.
    pub fn choose<'a>(
        &self,
        children: &'a [Descriptor],
        attestations: bool,
    ) -> Vec<&'a Descriptor> {
        let kept: Vec<&Descriptor> = children
            .iter()
            .filter(|c| c.platform.as_ref().is_some_and(|p| self.take(p)))
            .collect();
        let attests = |c: &Descriptor| {
            c.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some("attestation-manifest")
                && c.annotations
                    .get(REFERENCE_DIGEST)
                    .is_some_and(|d| kept.iter().any(|k| &k.digest == d))
        };
        children
            .iter()
            .filter(|c| kept.iter().any(|k| k.digest == c.digest) || (attestations && attests(c)))
            .collect()
    }
}

impl fmt::Display for Platforms {
    /// `linux/amd64,linux/arm64/v8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&shown.join(","))
    }
}

/// The index regmirror pushes instead of `body` (an index): only the children whose digests
/// are in `kept`, and the annotations that record `source_digest` and `platforms`.
pub fn filtered_index(
    body: &[u8],
    kept: &[&Descriptor],
    source_digest: &str,
    platforms: &Platforms,
) -> Result<Vec<u8>, String> {
    let mut index: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON index: {e}"))?;
    let Some(Value::Array(children)) = index.get_mut("manifests") else {
        return Err("an index without `manifests`".to_string());
    };
    children.retain(|child| {
        child
            .get("digest")
            .and_then(Value::as_str)
            .is_some_and(|d| kept.iter().any(|k| k.digest == d))
    });
    let annotations = index
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(annotations) = annotations else {
        return Err("`annotations` is not an object".to_string());
    };
    annotations.insert(SOURCE_DIGEST.into(), Value::String(source_digest.into()));
    annotations.insert(PLATFORMS.into(), Value::String(platforms.to_string()));
    serde_json::to_vec(&index).map_err(|e| e.to_string())
}

/// What a filtered index records: the source index's digest and the platforms it keeps;
/// `None` for any other manifest.
pub fn recorded(body: &[u8]) -> Option<(String, String)> {
    #[derive(Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
    }
    let annotated: Annotated = serde_json::from_slice(body).ok()?;
    Some((
        annotated.annotations.get(SOURCE_DIGEST)?.clone(),
        annotated.annotations.get(PLATFORMS)?.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(written: &str) -> Platform {
        Platform::parse(written).unwrap()
    }

    fn child(digest: char, platform: &str) -> Descriptor {
        let (os, rest) = platform.split_once('/').unwrap();
        let mut parts = rest.split('/');
        Descriptor {
            media_type: super::super::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            size: 100,
            urls: Vec::new(),
            platform: Some(Platform {
                os: os.into(),
                architecture: parts.next().unwrap().into(),
                variant: parts.next().map(Into::into),
            }),
            annotations: Default::default(),
            artifact_type: None,
        }
    }

    #[test]
    fn variants_are_optional_in_a_choice_and_arm64_means_v8() {
        assert!(platform("linux/arm64").takes(&platform("linux/arm64/v8")));
        assert!(platform("linux/arm64/v8").takes(&platform("linux/arm64")));
        assert!(!platform("linux/arm/v7").takes(&platform("linux/arm/v6")));
        assert!(platform("linux/arm").takes(&platform("linux/arm/v6")));
        assert!(!platform("linux/amd64").takes(&platform("windows/amd64")));
        for bad in [
            "linux",
            "Linux/amd64",
            "linux/amd64/",
            "linux/amd64/v8/x",
            "",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attestations_follow_the_images_they_attest_only_when_asked() {
        let amd = child('a', "linux/amd64");
        let arm = child('b', "linux/arm64/v8");
        let s390 = child('c', "linux/s390x");
        let attests = |of: &Descriptor, d: char| {
            let mut a = child(d, "unknown/unknown");
            a.annotations
                .insert(REFERENCE_TYPE.into(), "attestation-manifest".into());
            a.annotations
                .insert(REFERENCE_DIGEST.into(), of.digest.clone());
            a
        };
        let children = vec![
            amd.clone(),
            arm.clone(),
            s390.clone(),
            attests(&amd, 'd'),
            attests(&s390, 'e'),
        ];
        let choice =
            Platforms::new(vec![platform("linux/amd64"), platform("linux/arm64")]).unwrap();
        let digests = |kept: Vec<&Descriptor>| -> Vec<char> {
            kept.iter()
                .map(|d| d.digest.chars().last().unwrap())
                .collect()
        };
        assert_eq!(digests(choice.choose(&children, false)), ['a', 'b']);
        assert_eq!(digests(choice.choose(&children, true)), ['a', 'b', 'd']);
        assert_eq!(choice.to_string(), "linux/amd64,linux/arm64");
    }

    #[test]
    fn a_filtered_index_keeps_its_fields_and_records_its_source() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaa","size":1,"platform":{"os":"linux","architecture":"amd64"}},{"digest":"sha256:bbbb","size":2}],"annotations":{"org.opencontainers.image.created":"2026-01-01"}}"#;
        let mut keep = child('a', "linux/amd64");
        keep.digest = "sha256:aaaa".into();
        let choice = Platforms::new(vec![platform("linux/amd64")]).unwrap();
        let filtered = filtered_index(body, &[&keep], "sha256:source", &choice).unwrap();
        let value: Value = serde_json::from_slice(&filtered).unwrap();
        assert_eq!(value["manifests"].as_array().unwrap().len(), 1);
        assert_eq!(value["manifests"][0]["size"], 1);
        assert_eq!(
            value["annotations"]["org.opencontainers.image.created"],
            "2026-01-01"
        );
        assert_eq!(
            recorded(&filtered),
            Some(("sha256:source".to_string(), "linux/amd64".to_string()))
        );
        assert_eq!(recorded(body), None);
    }
}
