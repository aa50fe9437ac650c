//! Docker Hub's tag API: `GET <base>/v2/namespaces/<ns>/repositories/<repo>/tags?page_size=100`
//! lists a repository's tags a hundred at a time, each with the digest the registry serves
//! for it (`{count, next, previous, results: [{name, digest, last_updated, …}]}`, `next` an
//! absolute URL). Comparing 5,000 unchanged tags then costs 50 requests instead of 5,000 HEADs.
//!
//! The API only ever *spares* HEADs: the pass skips the source HEAD of a tag whose listed
//! digest is what the target holds; a tag listed with another digest, or not listed, is
//! HEADed as before, and nothing is copied on the API's word. Its answer may lag the
//! registry, which `head_every` bounds (see `crate::run`).
//!
//! It is read anonymously and bounded like a tag listing: pages of at most 4 MiB, 32 MiB and
//! 1,000 pages in all, every page within the request deadline and the whole within
//! [`DEADLINE`] (or the listing's, if shorter); a `next` link must stay on the API's origin and never come back. Every request
//! waits for the registry's `requests_per_second` (Docker Hub's abuse limit counts the address,
//! whichever host is asked) and is counted as `tag_api`. A record whose name is not a tag or
//! whose digest is not a digest is left out (its tag is HEADed); any other surprise (a status
//! other than 200, a body that is not a page) is a [`TagApiError`], after which the pass
//! compares that repository by HEAD.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::Url;
use serde::Deserialize;

use super::limits::read_body;
use super::requests::Kind;
use super::Registries;
use crate::config::TagApi;
use crate::reference::{api_host, is_tag, Repository};

/// Records per page: the most Docker Hub serves.
pub const PAGE_SIZE: usize = 100;
/// One page: a hundred records with their `images` arrays are tens of KiB.
const MAX_PAGE_BYTES: usize = 4 << 20;
/// All the pages of one repository.
const MAX_LISTING_BYTES: usize = 32 << 20;
/// 100,000 tags, as a registry's own listing allows.
const MAX_PAGES: usize = 1_000;
/// All the pages of one repository: the API only spares HEADs, so an API slower than this is
/// not worth waiting for (at Docker Hub's default 30 requests a second, 1,000 pages take 34 s).
pub const DEADLINE: Duration = Duration::from_secs(300);

/// What the API listed of the tags asked about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TagDigests {
    /// The listed digest of each tag asked about that the API listed once, or twice alike.
    pub digests: HashMap<String, String>,
    /// Pages read.
    pub pages: usize,
    /// Records left out: a name that is not a tag, a digest that is not one, or a tag listed
    /// twice with two digests (it moved while the pages were read).
    pub left_out: usize,
}

/// Why the API's answer was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagApiError {
    #[error("{0} is not a Docker Hub name (namespace/repository)")]
    NotHubName(String),
    #[error("it answered HTTP {0}")]
    Status(u16),
    #[error("it could not be reached: {0}")]
    Transport(String),
    #[error("it did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("its answer is not a page of tags: {0}")]
    Format(String),
    #[error("its listing passed regmirror's bounds: {0}")]
    Bounds(String),
}

impl TagApiError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TagApiError::NotHubName(_) => "not_hub_name",
            TagApiError::Status(429) => "rate_limited",
            TagApiError::Status(_) => "status",
            TagApiError::Transport(_) => "unreachable",
            TagApiError::Timeout(_) => "timeout",
            TagApiError::Format(_) => "format",
            TagApiError::Bounds(_) => "bounds",
        }
    }
}

/// One page as the API sends it; only what regmirror reads.
#[derive(Deserialize)]
struct Page {
    count: Option<u64>,
    next: Option<String>,
    results: Vec<serde_json::Value>,
}

impl Registries {
    /// The tag API of `registry` (a name as written, `docker.io`), if it has one.
    pub fn tag_api(&self, registry: &str) -> Option<&TagApi> {
        self.tag_apis.get(api_host(registry))
    }

    /// The digests the tag API lists for the tags `wanted` of `repository`, reading pages
    /// until every wanted tag is found, the listing ends, or the pages left would cost more
    /// requests than the HEADs they could spare.
    pub async fn tag_api_digests(
        &self,
        api: &TagApi,
        repository: &Repository,
        wanted: &HashSet<String>,
    ) -> Result<TagDigests, TagApiError> {
        let whole = DEADLINE.min(self.deadlines.whole);
        tokio::time::timeout(whole, self.read_tag_api(api, repository, wanted))
            .await
            .unwrap_or(Err(TagApiError::Timeout(whole)))
    }

    async fn read_tag_api(
        &self,
        api: &TagApi,
        repository: &Repository,
        wanted: &HashSet<String>,
    ) -> Result<TagDigests, TagApiError> {
        let Some((namespace, name)) = repository
            .repository
            .split_once('/')
            .filter(|(_, name)| !name.contains('/'))
        else {
            return Err(TagApiError::NotHubName(repository.to_string()));
        };
        let first = format!(
            "{}/v2/namespaces/{namespace}/repositories/{name}/tags?page_size={PAGE_SIZE}",
            api.base
        );
        let mut url = Url::parse(&first).map_err(|e| TagApiError::Format(e.to_string()))?;
        let host = api_host(&repository.registry);
        let mut listed = TagDigests::default();
        let mut moved = HashSet::new();
        let (mut seen, mut read) = (0u64, 0usize);
        let mut visited = HashSet::new();
        loop {
            visited.insert(url.clone());
            self.pace(host, Kind::TagApi).await;
            let body = self.tag_api_page(&url).await?;
            read += body.len();
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| TagApiError::Format(crate::untrusted::line(&e.to_string(), 200)))?;
            listed.pages += 1;
            seen += page.results.len() as u64;
            for record in &page.results {
                take_record(record, wanted, &mut listed, &mut moved);
            }
            let unmatched = wanted
                .len()
                .saturating_sub(listed.digests.len() + moved.len());
            let Some(next) = page.next.filter(|_| unmatched > 0) else {
                return Ok(listed);
            };
            // Pages left, as `count` says (or at least one): worth reading only while fewer
            // than the HEADs they could spare.
            let left = page.count.map_or(1, |count| {
                count.saturating_sub(seen).div_ceil(PAGE_SIZE as u64)
            });
            if left as usize >= unmatched {
                return Ok(listed);
            }
            let next = url
                .join(&next)
                .map_err(|e| TagApiError::Format(format!("its next link: {e}")))?;
            if next.origin() != url.origin() || visited.contains(&next) {
                return Err(TagApiError::Bounds(format!(
                    "the next link leads off the API or back to a page read ({})",
                    crate::untrusted::line(next.as_str(), 120)
                )));
            }
            if visited.len() >= MAX_PAGES || read >= MAX_LISTING_BYTES {
                return Err(TagApiError::Bounds(format!(
                    "{} pages, {read} bytes, and more to come",
                    visited.len()
                )));
            }
            url = next;
        }
    }

    /// One page's body, at most [`MAX_PAGE_BYTES`], within the request deadline.
    async fn tag_api_page(&self, url: &Url) -> Result<bytes::Bytes, TagApiError> {
        let deadline = self.deadlines.request;
        let exchange = async {
            let response = self
                .clients
                .elsewhere()
                .get(url.clone())
                .header(ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| TagApiError::Transport(crate::untrusted::line(&e.to_string(), 200)))?;
            if response.status() != reqwest::StatusCode::OK {
                return Err(TagApiError::Status(response.status().as_u16()));
            }
            read_body(response, MAX_PAGE_BYTES, "a tag API page")
                .await
                .map_err(|failure| TagApiError::Bounds(failure.to_string()))
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(TagApiError::Timeout(deadline)))
    }
}

/// Takes one record's tag and digest if the tag is wanted and both are well formed; a tag
/// listed twice with two digests goes to `moved`, out of the digests.
fn take_record(
    record: &serde_json::Value,
    wanted: &HashSet<String>,
    listed: &mut TagDigests,
    moved: &mut HashSet<String>,
) {
    let name = record.get("name").and_then(|n| n.as_str());
    let digest = record.get("digest").and_then(|d| d.as_str());
    let (Some(name), Some(digest)) = (name, digest) else {
        listed.left_out += 1;
        return;
    };
    if !is_tag(name) || crate::digest::parse(digest).is_err() {
        listed.left_out += 1;
        return;
    }
    if !wanted.contains(name) || moved.contains(name) {
        return;
    }
    match listed.digests.get(name) {
        Some(before) if before != digest => {
            listed.digests.remove(name);
            moved.insert(name.to_string());
            listed.left_out += 1;
        }
        Some(_) => {}
        None => {
            listed.digests.insert(name.to_string(), digest.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn records_are_taken_when_wanted_and_well_formed_and_dropped_when_they_move() {
        let wanted: HashSet<String> = ["1", "2", "3", "4"].map(String::from).into();
        let mut listed = TagDigests::default();
        let mut moved = HashSet::new();
        for record in [
            json!({"name": "1", "digest": A, "images": []}),
            json!({"name": "2", "digest": "sha256:short"}),
            json!({"name": "-bad", "digest": A}),
            json!({"name": "3"}),
            json!({"name": 4, "digest": A}),
            json!({"name": "4", "digest": A}),
            json!({"name": "4", "digest": B}),
            json!({"name": "4", "digest": A}),
            json!({"name": "other", "digest": A}),
            json!({"name": "1", "digest": A}),
        ] {
            take_record(&record, &wanted, &mut listed, &mut moved);
        }
        assert_eq!(
            listed.digests,
            HashMap::from([("1".to_string(), A.to_string())])
        );
        assert_eq!(listed.left_out, 5);
        assert!(moved.contains("4"));
    }

    #[test]
    fn a_page_needs_its_results() {
        let page: Result<Page, _> = serde_json::from_slice(br#"{"count":1,"next":null}"#);
        assert!(page.is_err());
        let page: Page =
            serde_json::from_slice(br#"{"count":1,"next":null,"previous":null,"results":[{}]}"#)
                .unwrap();
        assert_eq!((page.count, page.results.len()), (Some(1), 1));
    }
}
