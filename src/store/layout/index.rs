//! A layout's `index.json`: every image it names, and the manifests kept findable without a
//! name (referrers).
//!
//! The file may come from untrusted media, so it is read as a registry's answers are: at most
//! [`MAX_INDEX_BYTES`], at most [`MAX_ENTRIES`] entries (stopped while parsing, before they are
//! all held), and an entry's digest is checked only when that entry is used, so one bad entry
//! fails its image and no other. Entries regmirror did not write are kept as they are when it
//! rewrites the file.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::manifest::{Bounded, Descriptor, OCI_INDEX};
use crate::reference::layout::REF_NAME;
use crate::reference::split_ref_name;

/// The largest `index.json` read: about 100,000 named images.
pub const MAX_INDEX_BYTES: usize = 32 << 20;
/// The most entries an `index.json` may list.
pub const MAX_ENTRIES: usize = 100_000;

/// A layout's `index.json`, parsed.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// In the file's order.
    entries: Vec<Descriptor>,
    /// The index's own annotations, kept.
    annotations: BTreeMap<String, String>,
    /// ref.name → position in `entries` (the last entry of a name wins, as skopeo reads it).
    by_name: HashMap<String, usize>,
}

/// `index.json` as written.
#[derive(Serialize)]
struct Written<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: &'a [Descriptor],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl Index {
    /// Reads `bytes` (at most [`MAX_INDEX_BYTES`], which the caller enforces while reading);
    /// says why when it is not an index.
    pub fn parse(bytes: &[u8]) -> Result<Index, String> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "schemaVersion")]
            schema_version: Option<i64>,
            manifests: Option<Bounded<MAX_ENTRIES>>,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        if bytes.len() > MAX_INDEX_BYTES {
            return Err(format!(
                "is {} bytes; regmirror reads at most {MAX_INDEX_BYTES}",
                bytes.len()
            ));
        }
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| format!("is not an image index: {e}"))?;
        if raw.schema_version != Some(2) {
            return Err(format!(
                "has schemaVersion {:?}, expected 2",
                raw.schema_version
            ));
        }
        let mut index = Index {
            entries: raw.manifests.map(|b| b.0).unwrap_or_default(),
            annotations: raw.annotations,
            by_name: HashMap::new(),
        };
        index.reindex();
        Ok(index)
    }

    /// The bytes of `index.json`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let written = Written {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: &self.entries,
            annotations: &self.annotations,
        };
        serde_json::to_vec(&written).expect("an index serialises")
    }

    /// The entry named `name` (`<repository>:<tag>`, or a bare tag).
    pub fn named(&self, name: &str) -> Option<&Descriptor> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// Every named entry's name, in the file's order (a name listed twice, once).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().enumerate().filter_map(|(i, entry)| {
            let name = entry.annotations.get(REF_NAME)?;
            (self.by_name.get(name) == Some(&i)).then_some(name.as_str())
        })
    }

    /// The tags of `repository`: names whose repository part it is, in the file's order.
    pub fn tags_of<'a>(&'a self, repository: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.names().filter_map(move |name| {
            let (repo, tag) = split_ref_name(name);
            (repo == repository).then_some(tag)
        })
    }

    /// Entries without a name: manifests kept findable by digest (regmirror's referrers, or
    /// whatever another tool keeps there).
    pub fn unnamed(&self) -> impl Iterator<Item = &Descriptor> {
        self.entries
            .iter()
            .filter(|entry| !entry.annotations.contains_key(REF_NAME))
    }

    /// Names `manifest` `name`, replacing whatever had the name; `false` when it already did.
    pub fn set_name(&mut self, name: &str, manifest: &Descriptor) -> bool {
        let mut entry = Descriptor {
            annotations: BTreeMap::from([(REF_NAME.to_string(), name.to_string())]),
            ..manifest.clone()
        };
        entry.platform = None;
        if self.named(name) == Some(&entry) && self.count_named(name) == 1 {
            return false;
        }
        match self.by_name.get(name) {
            Some(&at) => {
                self.entries[at] = entry;
                // Any other entry of the same name goes: one name, one image.
                let mut position = 0;
                self.entries.retain(|e| {
                    let keep = position == at
                        || e.annotations.get(REF_NAME).map(String::as_str) != Some(name);
                    position += 1;
                    keep
                });
            }
            None => self.entries.push(entry),
        }
        self.reindex();
        true
    }

    /// Drops every entry named `name` (what it named stays in `blobs/`); `false` when none was.
    pub fn remove_name(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| e.annotations.get(REF_NAME).map(String::as_str) != Some(name));
        self.reindex();
        self.entries.len() != before
    }

    /// Lists `manifest` without a name, unless it is already; `false` when it was.
    pub fn add_unnamed(&mut self, manifest: &Descriptor) -> bool {
        if self.unnamed().any(|e| e.digest == manifest.digest) {
            return false;
        }
        self.entries.push(manifest.clone());
        true
    }

    /// Entries in all.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn count_named(&self, name: &str) -> usize {
        self.entries
            .iter()
            .filter(|e| e.annotations.get(REF_NAME).map(String::as_str) == Some(name))
            .count()
    }

    fn reindex(&mut self) {
        self.by_name = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((e.annotations.get(REF_NAME)?.clone(), i)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OCI_MANIFEST;

    fn descriptor(c: char) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.to_string(),
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size: 10,
            urls: Vec::new(),
            platform: None,
            annotations: BTreeMap::new(),
            artifact_type: None,
        }
    }

    #[test]
    fn names_are_found_by_repository_and_the_last_of_a_name_wins() {
        let text = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{a}","size":1,"annotations":{{"{REF_NAME}":"mirror/nginx:1"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":1,"annotations":{{"{REF_NAME}":"mirror/nginx:2"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{c}","size":1,"annotations":{{"{REF_NAME}":"mirror/nginx:1"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{d}","size":1,"annotations":{{"{REF_NAME}":"v1"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"not a digest","size":1}}
            ],"annotations":{{"keep":"me"}}}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64),
            d = "d".repeat(64),
        );
        let index = Index::parse(text.as_bytes()).unwrap();
        assert_eq!(index.len(), 5);
        assert_eq!(
            index.named("mirror/nginx:1").unwrap().digest,
            descriptor('c').digest
        );
        assert_eq!(
            index.tags_of("mirror/nginx").collect::<Vec<_>>(),
            ["2", "1"]
        );
        assert_eq!(index.tags_of("").collect::<Vec<_>>(), ["v1"]);
        assert!(index.tags_of("nginx").next().is_none());
        // A bad digest is kept, to fail only the image that uses it.
        assert_eq!(index.unnamed().count(), 1);
        let again = Index::parse(&index.to_bytes()).unwrap();
        assert_eq!(
            again.annotations.get("keep").map(String::as_str),
            Some("me")
        );
        assert_eq!(again.len(), 5);
    }

    #[test]
    fn a_name_removed_is_gone_and_others_stay() {
        let mut index = Index::default();
        index.set_name("app:1", &descriptor('a'));
        index.set_name("app:2", &descriptor('a'));
        assert!(index.remove_name("app:1"));
        assert!(!index.remove_name("app:1"));
        assert!(index.named("app:1").is_none());
        assert_eq!(
            index.named("app:2").map(|d| d.digest.as_str()),
            Some(descriptor('a').digest.as_str())
        );
    }

    #[test]
    fn naming_replaces_the_name_once_and_reports_no_change() {
        let mut index = Index::default();
        assert!(index.set_name("app:1", &descriptor('a')));
        assert!(!index.set_name("app:1", &descriptor('a')));
        assert!(index.set_name("app:1", &descriptor('b')));
        assert_eq!(index.len(), 1);
        assert_eq!(index.named("app:1").unwrap().digest, descriptor('b').digest);
        assert!(index.add_unnamed(&descriptor('c')));
        assert!(!index.add_unnamed(&descriptor('c')));
        assert_eq!(index.unnamed().count(), 1);
        assert_eq!(index.names().collect::<Vec<_>>(), ["app:1"]);
    }

    #[test]
    fn hostile_indexes_are_refused_with_a_reason() {
        assert!(Index::parse(b"{\"schemaVersion\":1,\"manifests\":[]}")
            .unwrap_err()
            .contains("schemaVersion"));
        assert!(Index::parse(b"[]")
            .unwrap_err()
            .contains("not an image index"));
        let huge = vec![b' '; MAX_INDEX_BYTES + 1];
        assert!(Index::parse(&huge).unwrap_err().contains("at most"));
        let entry = format!(
            r#"{{"mediaType":"m","digest":"sha256:{}","size":1}}"#,
            "a".repeat(64)
        );
        let many = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            vec![entry; MAX_ENTRIES + 1].join(",")
        );
        assert!(Index::parse(many.as_bytes())
            .unwrap_err()
            .contains("more than 100000 descriptors"));
        assert_eq!(Index::parse(b"{\"schemaVersion\":2}").unwrap().len(), 0);
    }
}
