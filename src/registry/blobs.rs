//! Blobs: whether a repository holds one, mounting one from another repository, and
//! streaming one from source to target.
//!
//! A copy is the source `GET` feeding one monolithic target `PUT` chunk by chunk. On the way
//! the bytes are counted and hashed with the digest's own algorithm: a body longer than the
//! manifest says is cut off at once, and a digest that does not match stops the upload short
//! of its `Content-Length`, so the target never stores the blob. The transfer must keep
//! moving (see [`super::limits::stalled`]); one that stalls at either end is dropped and
//! retried. `Authorization` goes only to the registry's own host, never to a CDN a blob
//! redirects to or an upload location elsewhere.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::Reference;
use oci_client::RegistryOperation::{Pull, Push};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

use super::error::StreamAbort;
use super::limits::{human_bytes, read_body, stalled};
use super::{Failure, Registries, RegistryError};
use crate::digest::{self, Digester};
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
            self.exchange("HEAD blob", subject, &reference, Pull, head, answer)
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
            self.exchange("pull blob", subject, &reference, Pull, get, answer)
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
            .exchange("mount blob", &subject, &reference, Push, post, answer)
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

    /// One try: the source GET feeds the target PUT, watched for stalls.
    async fn copy_blob_once(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<u64, RegistryError> {
        let subject = format!("{from}@{digest}");
        let moved = Arc::new(AtomicU64::new(0));
        tokio::select! {
            copied = self.transfer(from, to, digest, size, moved.clone()) => copied,
            failure = stalled(&moved, size, self.deadlines) => {
                Err(RegistryError::with("copy blob", subject, failure))
            }
        }
    }

    async fn transfer(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<u64, RegistryError> {
        let body = self.download(from, digest, size, moved).await?;
        let location = self.start_upload(to, digest).await?;
        self.upload(
            from,
            to,
            digest,
            size,
            location,
            reqwest::Body::wrap_stream(body),
        )
        .await
    }

    /// The source's GET of a blob, as a stream that counts and checks its bytes and holds the
    /// last chunk back until the digest is known good.
    pub(super) async fn download(
        &self,
        from: &Repository,
        digest: &str,
        size: u64,
        moved: Arc<AtomicU64>,
    ) -> Result<HoldLast<Verified>, RegistryError> {
        let subject = format!("{from}@{digest}");
        let algorithm = digest::parse(digest).map_err(|e| {
            RegistryError::with("pull blob", &subject, Failure::Protocol(e.to_string()))
        })?;
        let source = blob_reference(from, digest);
        let source_url = self.blob_url(from, digest);
        // The answer's head within the request deadline; its body at the transfer's pace.
        let get = |http: &reqwest::Client| http.get(&source_url);
        let download = self
            .exchange("pull blob", &subject, &source, Pull, get, |r| async {
                Ok(r)
            })
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
        Ok(HoldLast::new(Verified {
            chunks: download.bytes_stream().boxed(),
            digester: Some(Digester::new(algorithm)),
            expected: digest.to_string(),
            size,
            seen: 0,
            moved,
            total: self.transferred.clone(),
        }))
    }

    /// The monolithic PUT of `body` (`size` bytes of blob `digest`) to an upload `location`
    /// of `to`. A refused upload names the target; a body that ends in an error (a digest
    /// mismatch at the source) fails it without the target committing anything.
    pub(super) async fn upload(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
        location: Url,
        body: reqwest::Body,
    ) -> Result<u64, RegistryError> {
        let subject = format!("{from}@{digest}");
        let pushed = format!("{to}@{digest}");
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
        let answer = put
            .send()
            .await
            .map_err(|e| RegistryError::transport("copy blob", &subject, &e))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(self.refusal("push blob", &pushed, to, answer).await);
        }
        Ok(size)
    }

    /// `POST …/blobs/uploads/`: where the blob's bytes are to be PUT, with `digest` added.
    pub(super) async fn start_upload(
        &self,
        to: &Repository,
        digest: &str,
    ) -> Result<Url, RegistryError> {
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
        self.exchange("push blob", &subject, &reference, Push, post, answer)
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

/// The source's bytes, counted and hashed as they pass: cut off past `size`, and ended with
/// an error instead of cleanly when the length or the digest is wrong.
pub(super) struct Verified {
    chunks: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    /// `None` once the end has been judged.
    digester: Option<Digester>,
    expected: String,
    size: u64,
    seen: u64,
    /// Bytes handed on, shared with the stall watch.
    moved: Arc<AtomicU64>,
    /// Bytes handed on by every transfer of the process, for a person watching.
    total: Arc<AtomicU64>,
}

impl Stream for Verified {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(digester) = this.digester.as_mut() else {
            return Poll::Ready(None);
        };
        let abort = |reason| Poll::Ready(Some(Err(std::io::Error::other(reason))));
        match this.chunks.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    this.digester = None;
                    return abort(StreamAbort::TooLarge(format!(
                        "the source sends more than the {} the manifest says",
                        human_bytes(this.size)
                    )));
                }
                digester.update(&chunk);
                this.moved.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                this.total.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.digester = None;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                let digester = this.digester.take().expect("checked above");
                if this.seen < this.size {
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "the source ended the blob after {} of {} bytes",
                        this.seen, this.size
                    )))));
                }
                let got = digester.finish();
                if got != this.expected {
                    return abort(StreamAbort::DigestMismatch(format!(
                        "expected {}, got {got}",
                        this.expected
                    )));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// Holds each chunk back until the next one arrives, so the last bytes of a blob are sent
/// only once the source stream has ended cleanly, which is when [`Verified`] has checked the
/// digest. On a mismatch the upload stops short of its Content-Length and the target never
/// commits the blob, whatever the target itself checks. Costs one chunk of memory.
pub(super) struct HoldLast<S> {
    chunks: S,
    held: Option<Bytes>,
    done: bool,
}

impl<S> HoldLast<S> {
    fn new(chunks: S) -> Self {
        HoldLast {
            chunks,
            held: None,
            done: false,
        }
    }
}

impl<S, E> Stream for HoldLast<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.chunks.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(this.held.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_chunk_waits_for_a_clean_end() {
        let chunks = |items: Vec<Result<&'static str, &'static str>>| {
            futures_util::stream::iter(items.into_iter().map(|i| i.map(Bytes::from)))
        };
        let ok: Vec<_> = HoldLast::new(chunks(vec![Ok("a"), Ok("b"), Ok("c")]))
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
        let bad: Vec<_> = HoldLast::new(chunks(vec![Ok("a"), Ok("b"), Err("digest")]))
            .collect()
            .await;
        assert_eq!(
            bad,
            [Ok(Bytes::from("a")), Err("digest")],
            "b is never sent"
        );
        let empty: Vec<Result<Bytes, ()>> =
            HoldLast::new(futures_util::stream::empty()).collect().await;
        assert!(empty.is_empty());
    }
}
