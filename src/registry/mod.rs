//! The registry protocol, spoken by regmirror itself: manifest HEADs, GETs and PUTs (whose
//! rate-limit headers pace every pull), blobs, and the token flow, each request bounded in
//! size and time ([`limits`]) however the registry behaves.
//!
//! One [`Registries`] serves every registry of a pass: HTTP clients built once, each
//! registry's `ca_file` trusted for that registry alone ([`trust`]), redirects judged before
//! they are followed ([`redirect`]), which hosts speak plain HTTP and which credentials go
//! where; one pull [`Budget`](crate::registry::ratelimit::Budget) per registry; and every
//! request retried by [`crate::registry::retry`] within the image's `max_wait`. Blob uploads
//! are monolithic: one PUT with the known size whose body streams straight from the source
//! GET.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oci_client::Reference;
use reqwest::Method;

mod auth;
mod blobs;
mod delete;
mod error;
pub mod hub;
pub mod limits;
mod manifests;
mod pacing;
pub mod ratelimit;
mod redirect;
mod referrers;
pub mod requests;
pub mod retry;
pub mod tags;
mod token;
mod trust;
pub mod verify;
pub mod waiting;

pub use delete::Deleted;
pub use error::{Failure, RegistryError};

use crate::aws::ecr::Ecr;
use crate::config::{Config, Endpoint};
use crate::credentials::{Credentials, Helper, HelperLogins};
use crate::digest::{self, Algorithm};
use crate::reference::{api_host, ImageRef, Repository};
use crate::registry::limits::Deadlines;
use crate::registry::ratelimit::{Budgets, PullOutcome, RegistryUsage};
use crate::registry::retry::retrying;
use crate::registry::waiting::Waiter;

/// Sent with every request, so registry operators can tell who is calling.
const USER_AGENT: &str = concat!("regmirror/", env!("CARGO_PKG_VERSION"));
/// A registry that accepts a connection but says nothing for this long is treated as gone.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Manifest HEADs in flight to one registry at once, across the process. Comparing is only
/// HEADs, so it runs ahead of the copies (`defaults.concurrency`); this keeps it to what a
/// registry sees from a busy CI fleet, not a flood.
pub const HEADS_PER_REGISTRY: usize = 32;

/// Every registry of a pass.
pub struct Registries {
    /// The HTTP clients: each registry's CAs for that registry alone, system roots for the
    /// rest; one connection pool per CA set.
    clients: trust::Clients,
    /// Credentials by API host, from mirrors.toml or Docker's config.json.
    auth: BTreeMap<String, Credentials>,
    /// Credential helpers by API host, for hosts without `auth`; asked on first use.
    helpers: BTreeMap<String, Helper>,
    helper_logins: HelperLogins,
    tokens: auth::AuthCache,
    /// API hosts spoken to over plain HTTP.
    plain_http: BTreeSet<String>,
    budgets: Arc<Budgets>,
    ecr: Ecr,
    /// How long one request, and one stalled transfer, may take.
    deadlines: Deadlines,
    /// Where each API host with an `endpoint` is reached instead.
    endpoints: BTreeMap<String, Endpoint>,
    /// Registries that answered the referrers API with 404.
    without_referrers: referrers::WithoutReferrers,
    /// `requests_per_second` of each registry that has one, by API host.
    requests: requests::RequestCaps,
    /// `tag_api` of each registry that has one, by API host ([`hub`]).
    tag_apis: BTreeMap<String, crate::config::TagApi>,
    /// [`HEADS_PER_REGISTRY`] permits per API host.
    heads: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials' own Debug redacts passwords and tokens.
        f.debug_struct("Registries")
            .field("auth", &self.auth)
            .field("helpers", &self.helpers)
            .field("plain_http", &self.plain_http)
            .field("deadlines", &self.deadlines)
            .finish_non_exhaustive()
    }
}

impl Registries {
    /// Builds the client for every registry the config names, pacing pulls with `budgets`
    /// (whose reserves it sets from the config). Fails only on a bad CA file.
    pub fn new(config: &Config, budgets: Arc<Budgets>) -> Result<Self, String> {
        let mut plain_http = BTreeSet::new();
        let mut auth = BTreeMap::new();
        let mut helpers = BTreeMap::new();
        let mut reserves = BTreeMap::new();
        let mut ecr = Vec::new();
        let mut endpoints = BTreeMap::new();
        let mut cas = Vec::new();
        let mut caps = Vec::new();
        let mut tag_apis = BTreeMap::new();
        for (name, settings) in &config.registries {
            let host = api_host(name).to_string();
            if let Some(per_second) = settings.requests_per_second {
                caps.push((host.clone(), per_second));
            }
            if let Some(api) = &settings.tag_api {
                tag_apis.insert(host.clone(), api.clone());
            }
            if let Some(ecr_settings) = &settings.ecr {
                ecr.push((host.clone(), ecr_settings.clone()));
            }
            if settings.plain_http {
                plain_http.insert(host.clone());
            }
            if let Some(endpoint) = &settings.endpoint {
                endpoints.insert(host.clone(), endpoint.clone());
            }
            if let Some(ca) = &settings.ca_file {
                cas.push((host.clone(), name.as_str(), ca.as_path()));
            }
            if let Some(c) = &settings.credentials {
                auth.insert(host.clone(), c.clone());
            } else if let Some(helper) = &settings.helper {
                helpers.insert(host.clone(), helper.clone());
            }
            reserves.insert(host, config.reserve(name));
        }
        Ok(Registries {
            clients: trust::Clients::new(cas)?,
            auth,
            helpers,
            helper_logins: HelperLogins::default(),
            tokens: auth::AuthCache::default(),
            plain_http,
            budgets: {
                budgets.set_reserves(config.rate_limit.reserve, reserves);
                budgets
            },
            ecr: Ecr::new(ecr),
            deadlines: Deadlines::for_max_wait(config.rate_limit.max_wait),
            heads: std::sync::Mutex::default(),
            requests: requests::RequestCaps::new(caps),
            tag_apis,
            endpoints,
            without_referrers: std::sync::Mutex::default(),
        })
    }

    /// Waits until a request of `kind` may go to `host` (its `requests_per_second`), and
    /// counts it: every request to a registry goes through here.
    async fn pace(&self, host: &str, kind: requests::Kind) {
        self.requests.wait(host).await;
        self.budgets.of(host).count_request(kind);
    }

    /// The pull budgets it paces with, for another set of clients to share.
    pub fn budgets(&self) -> Arc<Budgets> {
        self.budgets.clone()
    }

    /// The credentials for `reference`'s registry (`None`: anonymous), and for ECR the
    /// generation they belong to. A credential helper is asked here, on first use.
    async fn auth_for(
        &self,
        reference: &Reference,
    ) -> Result<(Option<Credentials>, Option<u64>), RegistryError> {
        let host = reference.resolve_registry();
        match self.ecr.credentials(host).await {
            Ok(Some(token)) => Ok((Some(token.credentials), Some(token.generation))),
            Ok(None) => {
                if let Some(credentials) = self.auth.get(host) {
                    return Ok((Some(credentials.clone()), None));
                }
                let Some(helper) = self.helpers.get(host) else {
                    return Ok((None, None));
                };
                let credentials = self.helper_logins.get(helper).await.map_err(|e| {
                    RegistryError::with(
                        "authenticate to",
                        host,
                        Failure::Credentials(e.to_string()),
                    )
                })?;
                Ok((credentials, None))
            }
            Err(e) => Err(RegistryError::with(
                "authenticate to",
                host,
                Failure::Aws(e.to_string()),
            )),
        }
    }

    /// `scheme://host/v2/<path>` for an API host, or the same at its `endpoint`, under the
    /// endpoint's path.
    fn url(&self, host: &str, path: &str) -> String {
        if let Some(endpoint) = self.endpoints.get(host) {
            return format!("{}/v2/{}{path}", endpoint.origin(), api_prefix(endpoint));
        }
        let scheme = if self.plain_http.contains(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2/{path}")
    }

    /// A repository's name as the host that serves `host`'s API knows it: under its
    /// endpoint's path, if it has one (`docker-remote/library/nginx`).
    fn api_repository(&self, host: &str, repository: &str) -> String {
        match self.endpoints.get(host) {
            Some(endpoint) => format!("{}{repository}", api_prefix(endpoint)),
            None => repository.to_string(),
        }
    }

    /// Readies `repository` to receive a push: on ECR, creates it if it does not exist.
    pub async fn prepare_push(&self, repository: &Repository) -> Result<(), RegistryError> {
        let host = api_host(&repository.registry);
        self.ecr
            .ensure_repository(host, &repository.repository)
            .await
            .map_err(|e| RegistryError::with("create", repository, Failure::Aws(e.to_string())))
    }

    /// Registries whose pulls wait for their budget now.
    pub fn pauses(&self) -> Vec<crate::registry::ratelimit::Pause> {
        self.budgets.pauses()
    }

    /// What was spent so far at each registry pulled from, waited for or listed.
    pub fn usage(&self) -> Vec<RegistryUsage> {
        self.budgets.usage()
    }

    /// The digest an image's manifest has now, by HEAD (free on Docker Hub); `None` if absent.
    pub async fn manifest_digest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<Option<String>, RegistryError> {
        Ok(self
            .manifest_head(image, waiter)
            .await?
            .map(|head| head.digest))
    }

    /// What a HEAD tells of an image's manifest (free on Docker Hub): its digest and, when the
    /// registry says it, its media type; `None` if absent.
    pub async fn manifest_head(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<Option<Head>, RegistryError> {
        let answer = retrying(waiter, || self.head(image)).await?;
        match answer {
            None => Ok(None),
            Some((Some(digest), media_type)) => Ok(Some(Head { digest, media_type })),
            // No Docker-Content-Digest on the HEAD: only the content itself can tell.
            Some((None, media_type)) => {
                tracing::debug!(image = %image, "no digest on HEAD; reading the manifest to learn it");
                let digest = self.pull_manifest(image, waiter).await?.1;
                Ok(Some(Head { digest, media_type }))
            }
        }
    }

    /// One HEAD, its rate-limit headers recorded: `None` if absent, else its digest (if it
    /// said one) and media type.
    async fn head(
        &self,
        image: &ImageRef,
    ) -> Result<Option<(Option<String>, Option<String>)>, RegistryError> {
        let host = api_host(&image.registry);
        let permits = {
            let mut heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            heads
                .entry(host.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(HEADS_PER_REGISTRY)))
                .clone()
        };
        let _permit = permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let budget = self.budgets.of(host);
        let ticket = budget.ticket();
        let exchange = self.manifest_request(Method::HEAD, image, None).await;
        budget.observe(&exchange.rate_limit, ticket);
        exchange
            .result
            .map(|answer| answer.map(|a| (a.digest, a.media_type)))
    }

    /// GETs a manifest's raw bytes, verified against its digest: a pull on Docker Hub, so it
    /// goes only when the registry's budget allows, waiting (with free HEAD probes) when not.
    pub async fn pull_manifest(
        &self,
        image: &ImageRef,
        waiter: &Waiter,
    ) -> Result<(Bytes, String), RegistryError> {
        let budget = self.budgets.of(api_host(&image.registry));
        retrying(waiter, || async {
            let (ticket, _one_at_a_time) = self.clear_to_pull(image, &budget, waiter).await?;
            let exchange = self.manifest_request(Method::GET, image, None).await;
            let outcome = match &exchange.result {
                Ok(Some(_)) => PullOutcome::Served,
                Err(e) if matches!(e.failure, Failure::RateLimited(_)) => PullOutcome::Refused,
                _ => PullOutcome::Failed,
            };
            budget.finish(&exchange.rate_limit, outcome, ticket);
            let answer = exchange
                .result?
                .ok_or_else(|| RegistryError::with("pull manifest", image, Failure::NotFound))?;
            // Checked with the algorithm the expected digest names (sha256 or sha512).
            let expected = image.digest.as_deref().or(answer.digest.as_deref());
            let algorithm = match expected {
                Some(expected) => digest::parse(expected).map_err(|e| {
                    RegistryError::with("pull manifest", image, Failure::Protocol(e.to_string()))
                })?,
                None => Algorithm::Sha256,
            };
            let digest = digest::of(algorithm, &answer.body);
            if let Some(expected) = expected.filter(|e| *e != digest) {
                return Err(RegistryError::with(
                    "pull manifest",
                    image,
                    Failure::DigestMismatch(format!("expected {expected}, got {digest}")),
                ));
            }
            Ok((answer.body, digest))
        })
        .await
    }

    /// PUTs a manifest byte for byte, under `image`'s tag, or its digest when it has no tag.
    pub async fn push_manifest(
        &self,
        image: &ImageRef,
        body: Bytes,
        media_type: &str,
        waiter: &Waiter,
    ) -> Result<(), RegistryError> {
        let content_type: reqwest::header::HeaderValue = media_type.parse().map_err(|_| {
            RegistryError::with(
                "push manifest",
                image,
                Failure::Protocol(format!("media type {media_type:?} is not a valid header")),
            )
        })?;
        // By tag when it has one, else by digest (an index's children).
        let image = image.named();
        retrying(waiter, || async {
            let upload = Some((body.clone(), content_type.clone()));
            self.manifest_request(Method::PUT, &image, upload)
                .await
                .result
                .map(drop)
        })
        .await
    }
}

/// What a HEAD tells of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub digest: String,
    /// Its media type, when the store said it (an index, or an image).
    pub media_type: Option<String>,
}

/// An endpoint's path as it precedes repository names: `docker-remote/`, or empty.
fn api_prefix(endpoint: &Endpoint) -> String {
    if endpoint.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", endpoint.prefix)
    }
}
