//! Docker Hub's tag API as a proxy rule, beside the registry API the proxy forwards:
//! `GET /v2/namespaces/<ns>/repositories/<repo>/tags?page_size=N[&page=K]` answered with
//! `{count, next, previous, results: [{name, digest, last_updated, tag_last_pushed, images}]}`,
//! pages of at most 100, `next` an absolute URL, as hub.docker.com answers.
//!
//! What it shows is what the test last told it ([`HubApi::show`]) or read from the real
//! registry ([`HubApi::refresh`]): a tag moved in the registry keeps its old digest here until
//! then, as the real API lags the registry. [`HubApi::fail`] makes it misbehave: a 429, a 5xx,
//! a 404 (a private repository), a record with a broken digest on every page, or a changed
//! format.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::proxy::{Action, RequestInfo, Rule};
use super::remote::{head_manifest, tags, Remote};

/// The most records per page, as Docker Hub serves.
pub const HUB_PAGE_SIZE: usize = 100;
const PATH: &str = "/v2/namespaces/";

/// How the API misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every request answered with this status (429, 503, 404…).
    Status(u16),
    /// The first record of every page carries a digest that is not one.
    BadRecord,
    /// Pages whose records are under `items`, not `results`.
    ChangedFormat,
}

#[derive(Debug, Default)]
struct State {
    /// What the API shows, by `namespace/repository`: tags and digests, in listing order.
    shown: BTreeMap<String, Vec<(String, String)>>,
    fault: Option<Fault>,
    /// Requests answered.
    requests: usize,
}

/// The tag API of one proxy; clones share it.
#[derive(Debug, Clone)]
pub struct HubApi {
    proxy_host: String,
    state: Arc<Mutex<State>>,
}

impl HubApi {
    /// The API served by the proxy at `proxy_host`; add [`HubApi::rule`] to it.
    pub fn new(proxy_host: &str) -> HubApi {
        HubApi {
            proxy_host: proxy_host.to_owned(),
            state: Arc::default(),
        }
    }

    /// `http://<proxy>`: what `tag_api` is set to.
    pub fn base(&self) -> String {
        format!("http://{}", self.proxy_host)
    }

    /// Shows `tag` of `repo` with `digest` (moved, or added at the end).
    pub fn show(&self, repo: &str, tag: &str, digest: &str) {
        let mut state = self.state.lock().unwrap();
        let shown = state.shown.entry(repo.to_owned()).or_default();
        match shown.iter_mut().find(|(t, _)| t == tag) {
            Some(entry) => entry.1 = digest.to_owned(),
            None => shown.push((tag.to_owned(), digest.to_owned())),
        }
    }

    /// Shows what the registry behind the proxy holds for `repo` now: every tag, HEADed.
    pub fn refresh(&self, registry: impl Into<Remote>, repo: &str) {
        let remote = registry.into();
        let listed: Vec<(String, String)> = tags(&remote, repo)
            .into_iter()
            .filter_map(|tag| head_manifest(&remote, repo, &tag).map(|digest| (tag, digest)))
            .collect();
        self.state
            .lock()
            .unwrap()
            .shown
            .insert(repo.to_owned(), listed);
    }

    /// From now on, misbehaves so (`None`: behaves).
    pub fn fail(&self, fault: Option<Fault>) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The proxy rule that answers the API's requests.
    pub fn rule(&self) -> impl Rule {
        let api = self.clone();
        move |request: &RequestInfo| api.answer(request)
    }

    fn answer(&self, request: &RequestInfo) -> Option<Action> {
        let rest = request.path.strip_prefix(PATH)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (namespace, repo) = path
            .strip_suffix("/tags")
            .or_else(|| path.strip_suffix("/tags/"))?
            .split_once("/repositories/")?;
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse::<usize>().ok())
        };
        let size = param("page_size").unwrap_or(10).clamp(1, HUB_PAGE_SIZE);
        let page = param("page").unwrap_or(1).max(1);
        let mut state = self.state.lock().unwrap();
        state.requests += 1;
        let fault = state.fault;
        if let Some(Fault::Status(status)) = fault {
            let body = serde_json::json!({"message": "injected", "errinfo": {}});
            return Some(json(status, &body));
        }
        let full = format!("{namespace}/{repo}");
        let Some(shown) = state.shown.get(&full) else {
            return Some(json(
                404,
                &serde_json::json!({"message": "object not found"}),
            ));
        };
        let start = (page - 1) * size;
        let mut results: Vec<serde_json::Value> = shown
            .iter()
            .skip(start)
            .take(size)
            .map(|(name, digest)| record(name, digest))
            .collect();
        if let (Some(Fault::BadRecord), Some(first)) = (fault, results.first_mut()) {
            first["digest"] = serde_json::json!("sha256:not-a-digest");
        }
        let link = |k: usize| {
            format!(
                "http://{}{PATH}{namespace}/repositories/{repo}/tags?page={k}&page_size={size}",
                self.proxy_host
            )
        };
        let next = (start + size < shown.len()).then(|| link(page + 1));
        let previous = (page > 1).then(|| link(page - 1));
        let key = if fault == Some(Fault::ChangedFormat) {
            "items"
        } else {
            "results"
        };
        let body = serde_json::json!({
            "count": shown.len(),
            "next": next,
            "previous": previous,
            key: results,
        });
        Some(json(200, &body))
    }
}

/// One tag as Docker Hub describes it.
fn record(name: &str, digest: &str) -> serde_json::Value {
    serde_json::json!({
        "creator": 7,
        "id": 1,
        "images": [{"architecture": "amd64", "os": "linux", "digest": digest, "size": 1024,
                    "status": "active", "last_pushed": "2026-01-01T00:00:00Z"}],
        "last_updated": "2026-01-01T00:00:00.000000Z",
        "last_updater_username": "test",
        "name": name,
        "repository": 1,
        "full_size": 1024,
        "v2": true,
        "tag_status": "active",
        "tag_last_pulled": "2026-01-01T00:00:00.000000Z",
        "tag_last_pushed": "2026-01-01T00:00:00.000000Z",
        "media_type": "application/vnd.oci.image.index.v1+json",
        "content_type": "image",
        "digest": digest,
    })
}

fn json(status: u16, body: &serde_json::Value) -> Action {
    Action::Respond {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    }
}
