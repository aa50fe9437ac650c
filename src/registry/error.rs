//! Registry errors that say what was being done, to what, and how it failed; retry decisions
//! read their type, never their text.

use std::time::Duration;

use oci_client::errors::OciDistributionError;

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
    /// How long the registry asked us to wait (`Retry-After`), when it said.
    pub retry_after: Option<Duration>,
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
    /// No connection could be made at all: refused, or the name did not resolve.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// The registry's TLS certificate failed verification: its issuer, names or dates.
    #[error("TLS certificate not trusted: {0}")]
    UntrustedCertificate(String),
    /// The TLS handshake failed for another reason, such as a registry speaking plain HTTP.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// A 400 to plain HTTP, as a registry serving HTTPS answers it (`insecure = true`, or a
    /// loopback registry without `ca_file`).
    #[error(
        "answered plain HTTP with 400 Bad Request, as a registry serving HTTPS does; \
         set insecure = false or a ca_file for it to use HTTPS"
    )]
    HttpsRequired,
    /// A manifest push refused because the registry does not (yet) see what it references
    /// (`MANIFEST_BLOB_UNKNOWN`): just pushed, on storage that has not settled.
    #[error("the registry does not see what the manifest references: {0}")]
    ReferencesMissing(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// An AWS API call (ECR's token or CreateRepository) failed; says which and why.
    #[error("{0}")]
    Aws(String),
    /// Waited as long as `max_wait` allows for budget or retries; says for what.
    #[error("gave up: {0}")]
    GaveUp(String),
}

impl RegistryError {
    pub(super) fn new(
        action: &'static str,
        subject: impl ToString,
        err: OciDistributionError,
    ) -> Self {
        Self::with(action, subject, Failure::from(err))
    }

    pub fn with(action: &'static str, subject: impl ToString, failure: Failure) -> Self {
        RegistryError {
            action,
            subject: subject.to_string(),
            failure,
            retry_after: None,
        }
    }

    /// A request regmirror made itself that got no answer.
    pub(super) fn transport(
        action: &'static str,
        subject: impl ToString,
        err: &reqwest::Error,
    ) -> Self {
        Self::with(action, subject, request_failure(err))
    }

    /// An error answer to a request regmirror made itself: the status, and the registry's
    /// JSON error body when it sent one. `plain_http` says the request went without TLS.
    pub(super) fn from_response(
        action: &'static str,
        subject: impl ToString,
        status: u16,
        body: &[u8],
        plain_http: bool,
    ) -> Self {
        if plain_http && status == 400 && refuses_plain_http(body) {
            return Self::with(action, subject, Failure::HttpsRequired);
        }
        let (codes, message) = envelope(body);
        let code = codes.first().map(String::as_str).unwrap_or_default();
        let references_missing = codes.iter().any(|c| {
            c.eq_ignore_ascii_case("MANIFEST_BLOB_UNKNOWN")
                || (status == 400 && c.eq_ignore_ascii_case("BLOB_UNKNOWN"))
        });
        if references_missing {
            return Self::with(action, subject, Failure::ReferencesMissing(clip(&message)));
        }
        Self::with(action, subject, classify(Some(status), code, &message))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.failure, Failure::NotFound)
    }

    /// Whether trying again later could succeed: rate limits, server errors, broken connections.
    pub fn is_retryable(&self) -> bool {
        match &self.failure {
            Failure::RateLimited(_) | Failure::Transport(_) | Failure::Unreachable(_) => true,
            Failure::Status { status: 408, .. } => true,
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
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                classify(None, &code, &message)
            }
            E::ServerError { code, message, .. } => {
                let (codes, text) = envelope(message.as_bytes());
                classify(
                    Some(code),
                    codes.first().map(String::as_str).unwrap_or_default(),
                    &text,
                )
            }
            E::ImageManifestNotFoundError(_) => Failure::NotFound,
            E::UnauthorizedError { .. } => Failure::Denied("the registry answered 401".into()),
            E::AuthenticationFailure(reason) => Failure::Denied(clip(&reason)),
            E::DigestError(e) => Failure::DigestMismatch(e.to_string()),
            E::RequestError(e) => request_failure(&e),
            E::IoError(e) => Failure::Transport(e.to_string()),
            other => Failure::Protocol(clip(&other.to_string())),
        }
    }
}

/// The error codes and all messages of a registry's JSON error body; the body itself when it
/// is not one.
fn envelope(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) if !e.errors.is_empty() => (
            e.errors.iter().map(|e| e.code.clone()).collect(),
            e.errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        _ => (Vec::new(), String::from_utf8_lossy(body).into_owned()),
    }
}

/// One mapping from what a registry answered to how regmirror treats it.
fn classify(status: Option<u16>, code: &str, message: &str) -> Failure {
    let message = clip(message);
    let code_key = code.to_ascii_uppercase().replace('_', "");
    match (status, code_key.as_str()) {
        (_, "MANIFESTUNKNOWN" | "BLOBUNKNOWN" | "NAMEUNKNOWN") | (Some(404), _) => {
            Failure::NotFound
        }
        (_, "TOOMANYREQUESTS") | (Some(429), _) => Failure::RateLimited(message),
        (_, "UNAUTHORIZED" | "DENIED") | (Some(401 | 403), _) => Failure::Denied(message),
        (_, "DIGESTINVALID") => {
            Failure::DigestMismatch(format!("the target registry refused the upload: {message}"))
        }
        (Some(status), _) if code.is_empty() => Failure::Status { status, message },
        (Some(status), _) => Failure::Status {
            status,
            message: format!("{code}: {message}"),
        },
        (None, _) => Failure::Protocol(format!("{code}: {message}")),
    }
}

/// Whether a 400's body is what a server listening for TLS sends to plain HTTP: Go's (CNCF
/// distribution, Harbor, Zot) and nginx's texts, or nothing at all, as on a HEAD.
fn refuses_plain_http(body: &[u8]) -> bool {
    let body = String::from_utf8_lossy(body);
    body.trim().is_empty()
        || body.contains("HTTP request to an HTTPS server")
        || body.contains("plain HTTP request was sent to HTTPS port")
}

/// A reqwest error may carry, deep in its sources, the digest check that aborted a streamed
/// upload: that is a mismatch, not a network fault, and must not be retried as one. Nor is a
/// failed TLS handshake, which no retry fixes: it is told apart so its message says so.
fn request_failure(err: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(mismatch) = digest_error_in(e) {
            return Failure::DigestMismatch(mismatch.to_string());
        }
        if let Some(tls) = tls_error_in(e) {
            return tls_failure(tls);
        }
        source = e.source();
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        message = format!("{message}: {e}");
        source = e.source();
    }
    if err.is_connect() {
        Failure::Unreachable(clip(&message))
    } else {
        Failure::Transport(clip(&message))
    }
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

/// The rustls error that failed a handshake, if `e` is or wraps it. The TLS stream reports it
/// in an `io::Error`, which the connector wraps in another, each hiding it from `source()`.
fn tls_error_in<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut e = e;
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// What a failed handshake means for the user, with the setting that fixes the usual causes.
fn tls_failure(err: &rustls::Error) -> Failure {
    use rustls::{CertificateError, Error};
    match err {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => Failure::UntrustedCertificate(format!(
            "signed by a CA regmirror does not trust ({err}); \
             set ca_file for this registry to that CA's PEM"
        )),
        Error::InvalidCertificate(_) => Failure::UntrustedCertificate(err.to_string()),
        Error::InvalidMessage(_) => Failure::Tls(format!(
            "{err}; if the registry speaks plain HTTP, set insecure = true for it"
        )),
        _ => Failure::Tls(err.to_string()),
    }
}

fn clip(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_MESSAGE) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_failures_are_told_apart_by_type() {
        let err = |failure| RegistryError::with("x", "y", failure);
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
        assert!(!err(Failure::UntrustedCertificate(String::new())).is_retryable());
        assert!(!err(Failure::HttpsRequired).is_retryable());
    }

    #[test]
    fn a_400_to_plain_http_without_a_registry_error_says_https_is_wanted() {
        let failure = |body: &[u8], plain_http| {
            RegistryError::from_response("HEAD manifest", "x", 400, body, plain_http).failure
        };
        let go = b"Client sent an HTTP request to an HTTPS server.\n";
        assert!(matches!(failure(b"", true), Failure::HttpsRequired));
        assert!(matches!(failure(go, true), Failure::HttpsRequired));
        assert!(matches!(
            failure(b"", false),
            Failure::Status { status: 400, .. }
        ));
        let invalid =
            br#"{"errors":[{"code":"NAME_INVALID","message":"invalid repository name"}]}"#;
        assert!(matches!(
            failure(invalid, true),
            Failure::Status { status: 400, .. }
        ));
    }

    #[test]
    fn long_bodies_are_clipped_to_one_line() {
        let body = format!("<html>\n{}\n</html>", "x".repeat(1000));
        let shown = clip(&body);
        assert!(!shown.contains('\n'));
        assert!(shown.chars().count() <= MAX_MESSAGE + 1);
    }
}
