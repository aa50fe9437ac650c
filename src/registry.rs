//! The registry protocol, through oci-client, with errors that say what failed and where.
//!
//! One [`Registries`] serves every registry of a pass: a single oci-client `Client` (one
//! connection pool, one token cache) told which hosts speak plain HTTP, which extra CAs to
//! trust, and which credentials go to which host. Blob uploads are monolithic: one PUT with
//! the known size whose body streams straight from the source GET.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::config::Config;
use crate::manifest;
use crate::reference::{api_host, ImageRef, Repository};

/// Sent with every request, so registry operators can tell who is calling.
const USER_AGENT: &str = concat!("regmirror/", env!("CARGO_PKG_VERSION"));
/// A registry that accepts a connection but says nothing for this long is treated as gone.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Registry error bodies can be whole HTML pages; keep messages to a line.
const MAX_MESSAGE: usize = 300;

/// A registry request that failed: what was being done, to what, and how it failed.
#[derive(Debug, thiserror::Error)]
#[error("{action} {subject}: {failure}")]
pub struct RegistryError {
    /// `HEAD manifest`, `pull manifest`, `copy blob`…
    pub action: &'static str,
    /// The image or blob it was done to.
    pub subject: String,
    pub failure: Failure,
}

/// How a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("not found")]
    NotFound,
    #[error("access denied: {0} (check the credentials for this registry)")]
    Denied(String),
    #[error("rate limited (HTTP 429): {0}")]
    RateLimited(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("content does not match its digest: {0}")]
    DigestMismatch(String),
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl RegistryError {
    fn new(action: &'static str, subject: impl ToString, err: OciDistributionError) -> Self {
        RegistryError {
            action,
            subject: subject.to_string(),
            failure: Failure::from(err),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.failure, Failure::NotFound)
    }

    /// Whether trying again later could succeed: rate limits, server errors, broken connections.
    pub fn is_retryable(&self) -> bool {
        match &self.failure {
            Failure::RateLimited(_) | Failure::Transport(_) => true,
            Failure::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

impl From<OciDistributionError> for Failure {
    fn from(err: OciDistributionError) -> Self {
        use OciDistributionError as E;
        match err {
            E::RegistryError { envelope, .. } => {
                let code = envelope
                    .errors
                    .first()
                    .map(|e| format!("{:?}", e.code))
                    .unwrap_or_default();
                let message = clip(
                    &envelope
                        .errors
                        .iter()
                        .map(|e| e.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                match code.to_ascii_uppercase().as_str() {
                    "MANIFESTUNKNOWN" | "MANIFEST_UNKNOWN" | "BLOBUNKNOWN" | "BLOB_UNKNOWN"
                    | "NAMEUNKNOWN" | "NAME_UNKNOWN" => Failure::NotFound,
                    "UNAUTHORIZED" | "DENIED" => Failure::Denied(message),
                    "TOOMANYREQUESTS" => Failure::RateLimited(message),
                    _ => Failure::Protocol(format!("{code}: {message}")),
                }
            }
            E::ServerError { code: 404, .. } | E::ImageManifestNotFoundError(_) => {
                Failure::NotFound
            }
            E::ServerError {
                code: 401 | 403,
                message,
                ..
            } => Failure::Denied(clip(&message)),
            E::ServerError {
                code: 429, message, ..
            } => Failure::RateLimited(clip(&message)),
            E::ServerError { message, .. } if message.contains("DIGEST_INVALID") => {
                Failure::DigestMismatch(format!(
                    "the target registry refused the upload: {}",
                    clip(&message)
                ))
            }
            E::ServerError { code, message, .. } => Failure::Status {
                status: code,
                message: clip(&message),
            },
            E::UnauthorizedError { .. } => Failure::Denied("the registry answered 401".into()),
            E::AuthenticationFailure(reason) => Failure::Denied(clip(&reason)),
            E::DigestError(e) => Failure::DigestMismatch(e.to_string()),
            E::RequestError(e) => request_failure(&e),
            E::IoError(e) => Failure::Transport(e.to_string()),
            other => Failure::Protocol(clip(&other.to_string())),
        }
    }
}

/// A reqwest error may carry, deep in its sources, the digest check that aborted a streamed
/// upload: that is a mismatch, not a network fault, and must not be retried as one.
fn request_failure(err: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(mismatch) = digest_error_in(e) {
            return Failure::DigestMismatch(mismatch.to_string());
        }
        source = e.source();
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        message = format!("{message}: {e}");
        source = e.source();
    }
    Failure::Transport(clip(&message))
}

/// The digest check oci-client's verifying stream raised, if `e` is or wraps it. The error
/// travels as an `io::Error` inside an `OciDistributionError` inside the body error, and
/// `io::Error` hides what it wraps from `source()`, so each layer is opened by hand.
fn digest_error_in<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e oci_client::errors::DigestError> {
    use oci_client::errors::DigestError;
    if let Some(d) = e.downcast_ref::<DigestError>() {
        return Some(d);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return digest_error_in_io(io);
    }
    match e.downcast_ref::<OciDistributionError>()? {
        OciDistributionError::DigestError(d) => Some(d),
        OciDistributionError::IoError(io) => digest_error_in_io(io),
        _ => None,
    }
}

fn digest_error_in_io(io: &std::io::Error) -> Option<&oci_client::errors::DigestError> {
    let inner: &(dyn std::error::Error + 'static) = io.get_ref()?;
    inner.downcast_ref()
}

fn clip(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

/// Every registry of a pass, behind one oci-client `Client`.
pub struct Registries {
    client: Client,
    /// Credentials by API host; hosts not listed are reached anonymously.
    auth: BTreeMap<String, RegistryAuth>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // RegistryAuth's own Debug redacts passwords and tokens.
        f.debug_struct("Registries")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Registries {
    /// Builds the client for every registry the config names. Fails only on an unreadable CA.
    pub fn new(config: &Config) -> Result<Self, String> {
        let mut plain_http = Vec::new();
        let mut extra_root_certificates = Vec::new();
        let mut auth = BTreeMap::new();
        for (name, settings) in &config.registries {
            let host = api_host(name).to_string();
            if settings.plain_http {
                plain_http.push(host.clone());
            }
            if let Some(ca) = &settings.ca_file {
                let data = std::fs::read(ca)
                    .map_err(|e| format!("cannot read ca_file {} for {name}: {e}", ca.display()))?;
                extra_root_certificates.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                });
            }
            if let Some(c) = &settings.credentials {
                auth.insert(
                    host,
                    RegistryAuth::Basic(c.username.clone(), c.password.expose().to_string()),
                );
            }
        }
        // try_from, not new: new() would swallow a bad CA and fall back to a default client.
        let client = Client::try_from(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http),
            extra_root_certificates,
            use_monolithic_push: true,
            read_timeout: Some(READ_TIMEOUT),
            connect_timeout: Some(CONNECT_TIMEOUT),
            user_agent: USER_AGENT,
            platform_resolver: None,
            ..ClientConfig::default()
        })
        .map_err(|e| format!("cannot set up the registry client (check each ca_file): {e}"))?;
        Ok(Registries { client, auth })
    }

    fn auth_for(&self, reference: &Reference) -> RegistryAuth {
        self.auth
            .get(reference.resolve_registry())
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    /// Makes the credentials of `reference`'s registry known to the client, for the blob calls
    /// that (unlike the manifest calls) do not take them as an argument.
    async fn ensure_auth(&self, reference: &Reference) {
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &self.auth_for(reference))
            .await;
    }

    /// The digest an image's manifest has now, by HEAD (free on Docker Hub); `None` if absent.
    pub async fn manifest_digest(&self, image: &ImageRef) -> Result<Option<String>, RegistryError> {
        let reference = image.api_reference();
        match self
            .client
            .fetch_manifest_digest(&reference, &self.auth_for(&reference))
            .await
        {
            Ok(digest) => Ok(Some(digest)),
            Err(e) => {
                let err = RegistryError::new("HEAD manifest", image, e);
                if err.is_not_found() {
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// GETs a manifest's raw bytes, verified against the digest (a pull on Docker Hub).
    pub async fn pull_manifest(&self, image: &ImageRef) -> Result<(Bytes, String), RegistryError> {
        let reference = image.api_reference();
        self.client
            .pull_manifest_raw(&reference, &self.auth_for(&reference), manifest::ACCEPTED)
            .await
            .map_err(|e| RegistryError::new("pull manifest", image, e))
    }

    /// PUTs a manifest byte for byte, under `image`'s tag, or its digest when it has no tag.
    pub async fn push_manifest(
        &self,
        image: &ImageRef,
        body: Bytes,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let reference = image.api_reference();
        self.ensure_auth(&reference).await;
        let content_type = media_type.parse().map_err(|_| RegistryError {
            action: "push manifest",
            subject: image.to_string(),
            failure: Failure::Protocol(format!("media type {media_type:?} is not a valid header")),
        })?;
        let reference = match image.tag.as_deref() {
            Some(tag) => Reference::with_tag(
                reference.resolve_registry().to_string(),
                reference.repository().to_string(),
                tag.to_string(),
            ),
            None => reference,
        };
        self.client
            .push_manifest_raw(&reference, body, content_type)
            .await
            .map(drop)
            .map_err(|e| RegistryError::new("push manifest", image, e))
    }

    /// Whether `repository` already holds the blob.
    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &str,
    ) -> Result<bool, RegistryError> {
        let reference = blob_reference(repository, digest);
        self.ensure_auth(&reference).await;
        self.client
            .blob_exists(&reference, digest)
            .await
            .map_err(|e| RegistryError::new("HEAD blob", format!("{repository}@{digest}"), e))
    }

    /// Asks the registry to link a blob it holds in `from` into `to`, without moving bytes.
    /// `false` when the registry declined (it then expects an upload).
    pub async fn mount_blob(&self, to: &Repository, from: &Repository, digest: &str) -> bool {
        let target = blob_reference(to, digest);
        self.ensure_auth(&target).await;
        match self
            .client
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

    /// Streams a blob from one repository into another: the source GET feeds the target PUT
    /// chunk by chunk, and the digest is checked as the bytes pass. A mismatch aborts the
    /// upload, so the target never stores it. Returns the bytes moved.
    pub async fn copy_blob(
        &self,
        from: &Repository,
        to: &Repository,
        digest: &str,
        size: u64,
    ) -> Result<u64, RegistryError> {
        let subject = || format!("{from}@{digest}");
        let source = blob_reference(from, digest);
        let target = blob_reference(to, digest);
        self.ensure_auth(&source).await;
        self.ensure_auth(&target).await;
        let download = self
            .client
            .pull_blob_stream(&source, digest)
            .await
            .map_err(|e| RegistryError::new("pull blob", subject(), e))?;
        if let Some(length) = download.content_length.filter(|&l| l != size) {
            return Err(RegistryError {
                action: "pull blob",
                subject: subject(),
                failure: Failure::Protocol(format!(
                    "registry sends {length} bytes, the manifest says {size}"
                )),
            });
        }
        let body = hold_last_chunk(download.stream.map_err(OciDistributionError::IoError)).boxed();
        self.client
            .push_blob_stream(&target, body, digest, Some(size))
            .await
            .map_err(|e| RegistryError::new("copy blob", subject(), e))?;
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

    #[test]
    fn retryable_failures_are_told_apart_by_type() {
        let err = |failure| RegistryError {
            action: "x",
            subject: "y".into(),
            failure,
        };
        assert!(err(Failure::RateLimited(String::new())).is_retryable());
        assert!(err(Failure::Status {
            status: 503,
            message: String::new()
        })
        .is_retryable());
        assert!(!err(Failure::Status {
            status: 400,
            message: String::new()
        })
        .is_retryable());
        assert!(!err(Failure::DigestMismatch(String::new())).is_retryable());
        assert!(!err(Failure::Denied(String::new())).is_retryable());
    }

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

    #[test]
    fn long_bodies_are_clipped_to_one_line() {
        let body = format!("<html>\n{}\n</html>", "x".repeat(1000));
        let shown = clip(&body);
        assert!(!shown.contains('\n'));
        assert!(shown.chars().count() <= MAX_MESSAGE + 1);
    }
}
