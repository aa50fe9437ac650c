//! Blobs: whether a repository holds one, mounting one from another repository, and the two
//! ends of a copy.
//!
//! A copy (`crate::store::transfer`) is a source `GET` feeding monolithic target `PUT`s chunk
//! by chunk. The download's bytes are checked as they pass ([`super::verify`]): a body longer
//! than the manifest says is cut off at once, and a digest that does not match stops the
//! upload short of its `Content-Length`, so the target never stores the blob.
//! `Authorization` goes only to the registry's own host, never to a CDN a blob redirects to
//! or an upload location elsewhere.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::Reference;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

use super::auth::Access::{Pull, Push};
use super::limits::read_body;
use super::requests::Kind;
use super::verify::{checked, Chunks};
use super::{Failure, Registries, RegistryError};
use crate::digest;
use crate::reference::{api_host, Repository};
use crate::registry::retry::retrying;
use crate::registry::waiting::Waiter;

impl Registries {
    /// Whether `repository` already holds the blob.
    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<bool, RegistryError> {
        let reference = blob_reference(repository, digest);
        let subject = format!("{repository}@{digest}");
        let url = self.blob_url(repository, digest);
        let subject = &subject;
        retrying(waiter, || {
            let answer = move |response: reqwest::Response| async move {
                match response.status() {
                    s if s.is_success() => Ok(true),
                    StatusCode::NOT_FOUND => Ok(false),
                    _ => Err(self
                        .refusal("HEAD blob", subject, repository, response)
                        .await),
                }
            };
            let head = |http: &reqwest::Client| http.head(&url);
            self.exchange(
                "HEAD blob",
                subject,
                &reference,
                (Pull, Kind::Blob),
                head,
                answer,
            )
        })
        .await
    }

    /// Reads a small blob whole (an image's config), at most `cap` bytes, checked against its
    /// digest. Not a pull: blob GETs are free on Docker Hub.
    pub async fn read_blob(
        &self,
        repository: &Repository,
        digest: &str,
        cap: usize,
        waiter: &Waiter,
    ) -> Result<Bytes, RegistryError> {
        let reference = blob_reference(repository, digest);
        let subject = format!("{repository}@{digest}");
        let url = self.blob_url(repository, digest);
        let subject = &subject;
        let algorithm = digest::parse(digest).map_err(|e| {
            RegistryError::with("pull blob", subject, Failure::Protocol(e.to_string()))
        })?;
        retrying(waiter, || {
            let answer = move |response: reqwest::Response| async move {
                let status = response.status();
                if !status.is_success() {
                    return Err(self
                        .refusal("pull blob", subject, repository, response)
                        .await);
                }
                let body = read_body(response, cap, "a config blob")
                    .await
                    .map_err(|failure| RegistryError::with("pull blob", subject, failure))?;
                let got = digest::of(algorithm, &body);
                if got != digest {
                    return Err(RegistryError::with(
                        "pull blob",
                        subject,
                        Failure::DigestMismatch(format!("expected {digest}, got {got}")),
                    ));
                }
                Ok(body)
            };
            let get = |http: &reqwest::Client| http.get(&url);
            self.exchange(
                "pull blob",
                subject,
                &reference,
                (Pull, Kind::Blob),
                get,
                answer,
            )
        })
        .await
    }

    /// Asks the registry to link a blob it holds in `from` into `to`, without moving bytes.
    /// `false` when the registry declined (it then expects an upload).
    pub async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool {
        let reference = blob_reference(to, digest);
        let subject = format!("{to}@{digest}");
        let url = match Url::parse(&self.uploads_url(to)) {
            Ok(mut url) => {
                url.query_pairs_mut()
                    .append_pair("mount", digest)
                    .append_pair(
                        "from",
                        &self.api_repository(api_host(&from.registry), &from.repository),
                    );
                url
            }
            Err(_) => return false,
        };
        let post = |http: &reqwest::Client| http.post(url.clone());
        let answer = |response: reqwest::Response| async move {
            Ok(response.status() == StatusCode::CREATED)
        };
        let mounted = self
            .exchange(
                "mount blob",
                &subject,
                &reference,
                (Push, Kind::Push),
                post,
                answer,
            )
            .await;
        match mounted {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!(blob = digest, from = %from, to = %to, "mount declined; uploading instead");
                false
            }
            Err(e) => {
                tracing::debug!(blob = digest, from = %from, to = %to, error = %e, "cannot mount; uploading instead");
                false
            }
        }
    }

    /// The source's GET of a blob, as a stream that counts and checks its bytes and holds the
    /// last chunk back until the digest is known good ([`super::verify`]). One try: a copy
    /// is retried whole.
    pub async fn download(
        &self,
        from: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<Chunks, RegistryError> {
        let subject = format!("{from}@{digest}");
        let algorithm = digest::parse(digest).map_err(|e| {
            RegistryError::with("pull blob", &subject, Failure::Protocol(e.to_string()))
        })?;
        let source = blob_reference(from, digest);
        let source_url = self.blob_url(from, digest);
        // The answer's head within the request deadline; its body at the transfer's pace.
        let get = |http: &reqwest::Client| http.get(&source_url);
        let download = self
            .exchange(
                "pull blob",
                &subject,
                &source,
                (Pull, Kind::Blob),
                get,
                |r| async { Ok(r) },
            )
            .await?;
        let status = download.status();
        if !status.is_success() {
            return Err(self.refusal("pull blob", &subject, from, download).await);
        }
        if let Some(length) = download.content_length().filter(|&l| l != size) {
            return Err(RegistryError::with(
                "pull blob",
                &subject,
                Failure::Protocol(format!(
                    "registry sends {length} bytes, the manifest says {size}"
                )),
            ));
        }
        let chunks = download
            .bytes_stream()
            .map(|c| c.map_err(std::io::Error::other));
        Ok(checked(chunks.boxed(), algorithm, digest, size, moved))
    }

    /// The monolithic PUT of `chunks` (`size` bytes of blob `digest`) to an upload
    /// `location` of `to` ([`Registries::start_upload`]). A refused upload names the target; a
    /// body that ends in an error (a digest mismatch at the source) fails it without the
    /// target committing anything.
    pub async fn upload(
        &self,
        to: &Repository,
        digest: &str,
        size: u64,
        location: Url,
        chunks: Chunks,
    ) -> Result<u64, RegistryError> {
        let subject = format!("{to}@{digest}");
        let pushed = &subject;
        let body = reqwest::Body::wrap_stream(chunks);
        // The upload location may be anywhere; credentials, and the registry's own CAs, go
        // only to the registry itself.
        let own = self.same_host(&location, to);
        let http = if own {
            &self.clients.of(api_host(&to.registry)).api
        } else {
            self.clients.elsewhere()
        };
        let mut put = http
            .put(location.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        let target = blob_reference(to, digest);
        if own {
            let (authorization, _) = self.authorization(&target, Push).await?;
            if let Some(header) = authorization {
                put = put.header(AUTHORIZATION, header);
            }
        }
        // A refused upload names the target: the source served the blob.
        self.pace(api_host(&to.registry), Kind::Push).await;
        let answer = put
            .send()
            .await
            .map_err(|e| RegistryError::transport("copy blob", &subject, &e))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(self.refusal("push blob", pushed, to, answer).await);
        }
        Ok(size)
    }

    /// `POST …/blobs/uploads/`: where the blob's bytes are to be PUT, with `digest` added.
    pub async fn start_upload(&self, to: &Repository, digest: &str) -> Result<Url, RegistryError> {
        let subject = format!("{to}@{digest}");
        let reference = blob_reference(to, digest);
        let url = self.uploads_url(to);
        let post = |http: &reqwest::Client| http.post(&url);
        let answer = |response: reqwest::Response| async {
            let status = response.status();
            if status != StatusCode::ACCEPTED {
                return Err(self.refusal("push blob", &subject, to, response).await);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| Url::parse(&url).ok()?.join(l).ok());
            let mut location = location.ok_or_else(|| {
                RegistryError::with(
                    "push blob",
                    &subject,
                    Failure::Protocol("an upload started without a usable Location".to_string()),
                )
            })?;
            location.query_pairs_mut().append_pair("digest", digest);
            Ok(location)
        };
        self.exchange(
            "push blob",
            &subject,
            &reference,
            (Push, Kind::Push),
            post,
            answer,
        )
        .await
    }

    /// An error answer from `repository`'s registry, read no further than its first 64 KiB.
    async fn refusal(
        &self,
        action: &'static str,
        subject: &str,
        repository: &Repository,
        response: reqwest::Response,
    ) -> RegistryError {
        let plain_http = self.plain_http.contains(api_host(&repository.registry));
        RegistryError::from_answer(action, subject, response, plain_http).await
    }

    fn blob_url(&self, repository: &Repository, digest: &str) -> String {
        let host = api_host(&repository.registry);
        self.url(host, &format!("{}/blobs/{digest}", repository.repository))
    }

    fn uploads_url(&self, repository: &Repository) -> String {
        let host = api_host(&repository.registry);
        self.url(host, &format!("{}/blobs/uploads/", repository.repository))
    }

    /// Whether `url` is on the registry of `repository` (scheme, host and port).
    fn same_host(&self, url: &Url, repository: &Repository) -> bool {
        Url::parse(&self.uploads_url(repository)).is_ok_and(|own| {
            own.scheme() == url.scheme()
                && own.host_str() == url.host_str()
                && own.port_or_known_default() == url.port_or_known_default()
        })
    }
}

fn blob_reference(repository: &Repository, digest: &str) -> Reference {
    Reference::with_digest(
        api_host(&repository.registry).to_string(),
        repository.repository.clone(),
        digest.to_string(),
    )
}
