//! The registry protocol: oci-client for tokens, blobs and pushes; regmirror's own requests
//! for manifest HEADs and GETs, whose rate-limit headers pace every pull.
//!
//! One [`Registries`] serves every registry of a pass: one oci-client `Client` and one reqwest
//! client (one connection pool each) told which hosts speak plain HTTP, which extra CAs to
//! trust and which credentials go where; one pull [`Budget`](crate::registry::ratelimit::Budget) per
//! registry; and every request retried by [`crate::registry::retry`] within the image's `max_wait`.
//! Blob uploads are monolithic: one PUT with the known size whose body streams straight from
//! the source GET.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::Method;

mod auth;
mod error;
mod manifests;
pub mod ratelimit;
mod request;
pub mod retry;
pub mod tags;
pub mod waiting;

pub use error::{Failure, RegistryError};

use crate::aws::ecr::Ecr;
use crate::config::Config;
use crate::reference::{api_host, ImageRef, Repository};
use crate::registry::ratelimit::{Budgets, Gate, PullOutcome, RegistryUsage};
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
    /// For every registry but ECR ones, whose credentials change (see [`Registries::client_for`]).
    client: Client,
    /// For manifest requests, whose response headers oci-client does not expose.
    http: reqwest::Client,
    /// Credentials by API host; hosts not listed are reached anonymously.
    auth: BTreeMap<String, RegistryAuth>,
    tokens: auth::AuthCache,
    /// API hosts spoken to over plain HTTP.
    plain_http: BTreeSet<String>,
    /// Extra CA certificates (PEM), for the clients made for ECR registries.
    pems: Vec<Vec<u8>>,
    budgets: Arc<Budgets>,
    ecr: Ecr,
    /// One oci-client per ECR registry, with the credentials of the generation it was made for.
    ecr_clients: tokio::sync::Mutex<BTreeMap<String, (u64, Client)>>,
    /// Whether each anonymous registry asked so far answers without credentials.
    open: tokio::sync::Mutex<BTreeMap<String, bool>>,
    /// [`HEADS_PER_REGISTRY`] permits per API host.
    heads: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // RegistryAuth's own Debug redacts passwords and tokens.
        f.debug_struct("Registries")
            .field("auth", &self.auth)
            .field("plain_http", &self.plain_http)
            .finish_non_exhaustive()
    }
}

impl Registries {
    /// Builds the clients for every registry the config names, pacing pulls with `budgets`
    /// (whose reserves it sets from the config). Fails only on a bad CA file.
    pub fn new(config: &Config, budgets: Arc<Budgets>) -> Result<Self, String> {
        let mut plain_http = BTreeSet::new();
        let mut pems = Vec::new();
        let mut auth = BTreeMap::new();
        let mut reserves = BTreeMap::new();
        let mut ecr = Vec::new();
        for (name, settings) in &config.registries {
            let host = api_host(name).to_string();
            if let Some(ecr_settings) = &settings.ecr {
                ecr.push((host.clone(), ecr_settings.clone()));
            }
            if settings.plain_http {
                plain_http.insert(host.clone());
            }
            if let Some(ca) = &settings.ca_file {
                let data = std::fs::read(ca)
                    .map_err(|e| format!("cannot read ca_file {} for {name}: {e}", ca.display()))?;
                pems.push(data);
            }
            if let Some(c) = &settings.credentials {
                auth.insert(
                    host.clone(),
                    RegistryAuth::Basic(c.username.clone(), c.password.expose().to_string()),
                );
            }
            reserves.insert(host, config.reserve(name));
        }
        let mut http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .read_timeout(READ_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        for pem in &pems {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|e| format!("cannot use a ca_file as a certificate: {e}"))?;
            http = http.add_root_certificate(certificate);
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        let client = oci_client(&plain_http, &pems)?;
        Ok(Registries {
            client,
            http,
            auth,
            tokens: auth::AuthCache::default(),
            plain_http,
            pems,
            budgets: {
                budgets.set_reserves(config.rate_limit.reserve, reserves);
                budgets
            },
            ecr: Ecr::new(ecr),
            ecr_clients: tokio::sync::Mutex::default(),
            open: tokio::sync::Mutex::default(),
            heads: std::sync::Mutex::default(),
        })
    }

    /// The credentials for `reference`'s registry, and for ECR the generation they belong to.
    async fn auth_for(
        &self,
        reference: &Reference,
    ) -> Result<(RegistryAuth, Option<u64>), RegistryError> {
        let host = reference.resolve_registry();
        match self.ecr.credentials(host).await {
            Ok(Some(token)) => Ok((
                RegistryAuth::Basic(
                    token.credentials.username,
                    token.credentials.password.expose().to_string(),
                ),
                Some(token.generation),
            )),
            Ok(None) => Ok((
                self.auth
                    .get(host)
                    .cloned()
                    .unwrap_or(RegistryAuth::Anonymous),
                None,
            )),
            Err(e) => Err(RegistryError::with(
                "authenticate to",
                host,
                Failure::Aws(e.to_string()),
            )),
        }
    }

    /// The oci-client for `reference`'s registry, knowing its credentials (oci-client's blob
    /// calls do not take them as an argument). oci-client keeps the first credentials it is
    /// given for a registry, so an ECR registry gets a client of its own, made anew when its
    /// token is renewed.
    async fn client_for(&self, reference: &Reference) -> Result<Client, RegistryError> {
        let host = reference.resolve_registry();
        let (auth, generation) = self.auth_for(reference).await?;
        let Some(generation) = generation else {
            // Told of a registry, oci-client asks `/v2/` how to authenticate before every
            // request it cannot cache a token for, which is every request to an open one.
            if !matches!(auth, RegistryAuth::Anonymous) || !self.is_open(host).await {
                self.client.store_auth_if_needed(host, &auth).await;
            }
            return Ok(self.client.clone());
        };
        let mut clients = self.ecr_clients.lock().await;
        if let Some((made_for, client)) = clients.get(host) {
            if *made_for == generation {
                return Ok(client.clone());
            }
        }
        let client = oci_client(&self.plain_http, &self.pems)
            .map_err(|e| RegistryError::with("authenticate to", host, Failure::Protocol(e)))?;
        client.store_auth_if_needed(host, &auth).await;
        clients.insert(host.to_string(), (generation, client.clone()));
        Ok(client)
    }

    /// Whether `host` answers `/v2/` without asking for credentials; asked once per host.
    /// A registry that cannot be asked is taken as not open, which costs requests, not errors.
    pub(super) async fn is_open(&self, host: &str) -> bool {
        let mut open = self.open.lock().await;
        if let Some(known) = open.get(host) {
            return *known;
        }
        let scheme = if self.plain_http.contains(host) {
            "http"
        } else {
            "https"
        };
        let answer = self.http.get(format!("{scheme}://{host}/v2/")).send().await;
        let is_open = answer.is_ok_and(|response| {
            response.status().is_success()
                && !response
                    .headers()
                    .contains_key(reqwest::header::WWW_AUTHENTICATE)
        });
        tracing::debug!(
            registry = host,
            open = is_open,
            "asked /v2/ how to authenticate"
        );
        open.insert(host.to_string(), is_open);
        is_open
    }

    /// Readies `repository` to receive a push: on ECR, creates it if it does not exist.
    pub async fn prepare_push(&self, repository: &Repository) -> Result<(), RegistryError> {
        let host = api_host(&repository.registry);
        self.ecr
            .ensure_repository(host, &repository.repository)
            .await
            .map_err(|e| RegistryError::with("create", repository, Failure::Aws(e.to_string())))
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
        let answer = retrying(waiter, || self.head(image)).await?;
        match answer {
            None => Ok(None),
            Some(Some(digest)) => Ok(Some(digest)),
            // No Docker-Content-Digest on the HEAD: only the content itself can tell.
            Some(None) => {
                tracing::debug!(image = %image, "no digest on HEAD; reading the manifest to learn it");
                Ok(Some(self.pull_manifest(image, waiter).await?.1))
            }
        }
    }

    /// One HEAD, its rate-limit headers recorded: `None` if absent, `Some(None)` without digest.
    async fn head(&self, image: &ImageRef) -> Result<Option<Option<String>>, RegistryError> {
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
        exchange.result.map(|answer| answer.map(|a| a.digest))
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
            let ticket = loop {
                let pause = match budget.try_take() {
                    Gate::Go(ticket) => break ticket,
                    Gate::Wait(pause) => pause,
                };
                if let Err(too_long) = waiter.wait(pause, &budget.describe()).await {
                    return Err(RegistryError::with(
                        "pull manifest",
                        image,
                        Failure::GaveUp(too_long.to_string()),
                    ));
                }
                // A HEAD is free: it refreshes the budget without spending it. A failed probe
                // leaves the budget as it was.
                let _ = self.head(image).await;
            };
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
            let digest = manifests::sha256(&answer.body);
            if let Some(expected) = image
                .digest
                .as_deref()
                .or(answer.digest.as_deref())
                .filter(|e| *e != digest)
            {
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
    /// Sent by regmirror itself: oci-client's push panics when a registry answers a push by
    /// digest without `Location`, as ECR does.
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

    /// Whether `repository` already holds the blob.
    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<bool, RegistryError> {
        let reference = blob_reference(repository, digest);
        retrying(waiter, || async {
            self.client_for(&reference)
                .await?
                .blob_exists(&reference, digest)
                .await
                .map_err(|e| RegistryError::new("HEAD blob", format!("{repository}@{digest}"), e))
        })
        .await
    }

    /// Asks the registry to link a blob it holds in `from` into `to`, without moving bytes.
    /// `false` when the registry declined (it then expects an upload).
    pub async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool {
        let target = blob_reference(to, digest);
        let client = match self.client_for(&target).await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(blob = digest, to = %to, error = %e, "cannot mount; uploading instead");
                return false;
            }
        };
        match client
            .mount_blob(&target, &blob_reference(from, digest), digest)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(blob = digest, from = %from, to = %to, error = %e, "mount declined; uploading instead");
                false
            }
        }
    }

    /// Streams a blob from one repository into another, retried whole on transient failures.
    /// Returns the bytes moved.
    pub async fn copy_blob(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
        waiter: &Waiter,
    ) -> Result<u64, RegistryError> {
        retrying(waiter, || self.copy_blob_once(from, to, digest, size)).await
    }

    /// The source GET feeds the target PUT chunk by chunk, and the digest is checked as the
    /// bytes pass. A mismatch aborts the upload, so the target never stores it.
    async fn copy_blob_once(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<u64, RegistryError> {
        let subject = || format!("{from}@{digest}");
        let source = blob_reference(from, digest);
        let target = blob_reference(to, digest);
        let download = self
            .client_for(&source)
            .await?
            .pull_blob_stream(&source, digest)
            .await
            .map_err(|e| RegistryError::new("pull blob", subject(), e))?;
        if let Some(length) = download.content_length.filter(|&l| l != size) {
            return Err(RegistryError::with(
                "pull blob",
                subject(),
                Failure::Protocol(format!(
                    "registry sends {length} bytes, the manifest says {size}"
                )),
            ));
        }
        let body = hold_last_chunk(download.stream.map_err(OciDistributionError::IoError)).boxed();
        // A refused upload names the target: the source served the blob.
        self.client_for(&target)
            .await?
            .push_blob_stream(&target, body, digest, Some(size))
            .await
            .map_err(|e| match e {
                OciDistributionError::RegistryError { .. } => {
                    RegistryError::new("push blob", format!("{to}@{digest}"), e)
                }
                e => RegistryError::new("copy blob", subject(), e),
            })?;
        Ok(size)
    }
}

/// Holds each chunk back until the next one arrives, so the last bytes of a blob are sent
/// only once the source stream has ended cleanly, which is when oci-client's verifying stream
/// has checked the digest. On a mismatch the upload stops short of its Content-Length and the
/// target never commits the blob, whatever the target itself checks. Costs one chunk of memory.
fn hold_last_chunk<S, E>(chunks: S) -> impl futures_util::Stream<Item = Result<Bytes, E>>
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
{
    futures_util::stream::unfold(
        (chunks, None::<Bytes>, false),
        |(mut chunks, mut held, done)| async move {
            if done {
                return None;
            }
            loop {
                match chunks.next().await {
                    Some(Ok(chunk)) => match held.replace(chunk) {
                        Some(previous) => return Some((Ok(previous), (chunks, held, false))),
                        None => continue,
                    },
                    Some(Err(e)) => return Some((Err(e), (chunks, None, true))),
                    None => return held.map(|last| (Ok(last), (chunks, None, true))),
                }
            }
        },
    )
}

/// An oci-client told which hosts speak plain HTTP and which extra CAs to trust.
fn oci_client(plain_http: &BTreeSet<String>, pems: &[Vec<u8>]) -> Result<Client, String> {
    // try_from, not new: new() would swallow a bad CA and fall back to a default client.
    Client::try_from(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http.iter().cloned().collect()),
        extra_root_certificates: pems
            .iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data: data.clone(),
            })
            .collect(),
        use_monolithic_push: true,
        read_timeout: Some(READ_TIMEOUT),
        connect_timeout: Some(CONNECT_TIMEOUT),
        user_agent: USER_AGENT,
        platform_resolver: None,
        ..ClientConfig::default()
    })
    .map_err(|e| format!("cannot set up the registry client (check each ca_file): {e}"))
}

fn blob_reference(repository: &Repository, digest: &str) -> Reference {
    Reference::with_digest(
        api_host(&repository.registry).to_string(),
        repository.repository.clone(),
        digest.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_chunk_waits_for_a_clean_end() {
        let chunks = |items: Vec<Result<&'static str, &'static str>>| {
            futures_util::stream::iter(items.into_iter().map(|i| i.map(Bytes::from)))
        };
        let ok: Vec<_> = hold_last_chunk(chunks(vec![Ok("a"), Ok("b"), Ok("c")]))
            .collect()
            .await;
        assert_eq!(
            ok,
            [
                Ok(Bytes::from("a")),
                Ok(Bytes::from("b")),
                Ok(Bytes::from("c"))
            ]
        );
        let bad: Vec<_> = hold_last_chunk(chunks(vec![Ok("a"), Ok("b"), Err("digest")]))
            .collect()
            .await;
        assert_eq!(
            bad,
            [Ok(Bytes::from("a")), Err("digest")],
            "b is never sent"
        );
        let empty: Vec<Result<Bytes, ()>> = hold_last_chunk(futures_util::stream::empty())
            .collect()
            .await;
        assert!(empty.is_empty());
    }
}
