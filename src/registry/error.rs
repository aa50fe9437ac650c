//! Registry errors that say what was being done, to what, and how it failed; retry decisions
//! read their type, never their text.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::reason::Reason;
use crate::registry::limits::error_body;
use crate::registry::waiting::secs;
use crate::untrusted;

/// The most characters of a failure shown: regmirror's own words around at most a few
/// clipped texts of the registry's. Every message is one line.
const MAX_FAILURE: usize = 1_000;

/// A registry request that failed: what was being done, to what, and how it failed.
///
/// Shown, it is one line of bounded length whatever the registry sent: the failure's texts
/// (error bodies, codes, names quoted in a protocol error) are escaped and clipped by
/// [`untrusted::line`], as is the subject.
#[derive(Debug, Clone, thiserror::Error)]
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
#[derive(Debug, Clone, thiserror::Error)]
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
    /// An answer larger than regmirror reads (see `registry::limits`): a broken or hostile
    /// registry, not a reason to retry.
    #[error("answer too large: {0}")]
    TooLarge(String),
    /// A request that did not complete in time, or a transfer that stopped moving; `waited`
    /// is charged to the image's `max_wait` before it is retried.
    #[error("{what} (after {})", secs(*.waited))]
    Stalled { waited: Duration, what: String },
    /// Something regmirror will not do, such as sending credentials to a plain-HTTP realm.
    #[error("refused: {0}")]
    Refused(String),
    /// Credentials could not be had: a credential helper that is missing or failed.
    #[error("{0}")]
    Credentials(String),
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
    /// The registry does not do this at all (`405`, `UNSUPPORTED`): deletes disabled, a
    /// read-only registry or a pull-through cache refusing pushes.
    #[error("the registry does not allow it: {0}")]
    Unsupported(String),
    /// A push onto a tag that already exists, refused because the target never moves a tag:
    /// an ECR repository with `IMMUTABLE` tags, a Harbor immutability rule. Never retried;
    /// the tag stays where it was.
    #[error("the target refuses to move an existing tag: {0}")]
    Immutable(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// An AWS API call (ECR's token or CreateRepository) failed; says which and why.
    #[error("{0}")]
    Aws(String),
    /// A file of an OCI image layout that could not be read or written, or that a layout may
    /// not hold (a link, a name outside it); the subject names the layout and the file.
    #[error("{0}")]
    FileSystem(String),
    /// Waited as long as `max_wait` allows for budget or retries; says for what, and the
    /// class of what it waited out (a budget is `rate_limited`, retries of a broken
    /// connection `unreachable`).
    #[error("gave up: {why}")]
    GaveUp { why: String, reason: Reason },
    /// A whole listing passed its overall deadline.
    #[error("{0}")]
    Overdue(crate::registry::waiting::Overdue),
}

impl Failure {
    /// The class of this failure, for reports, metrics and alerts.
    pub fn reason(&self) -> Reason {
        match self {
            Failure::NotFound => Reason::NotFound,
            Failure::Denied(_) | Failure::Credentials(_) | Failure::Aws(_) => Reason::Auth,
            Failure::RateLimited(_) => Reason::RateLimited,
            Failure::Status { status, .. } if *status >= 500 => Reason::Unreachable,
            Failure::Status { status: 408, .. } => Reason::Timeout,
            Failure::Status { .. } | Failure::Refused(_) | Failure::Unsupported(_) => {
                Reason::Refused
            }
            Failure::ReferencesMissing(_) => Reason::Refused,
            Failure::DigestMismatch(_) => Reason::Integrity,
            Failure::TooLarge(_) | Failure::Protocol(_) => Reason::InvalidUpstream,
            Failure::Stalled { .. } | Failure::Overdue(_) => Reason::Timeout,
            Failure::Transport(_) | Failure::Unreachable(_) => Reason::Unreachable,
            Failure::UntrustedCertificate(_) | Failure::Tls(_) | Failure::HttpsRequired => {
                Reason::Tls
            }
            Failure::Immutable(_) => Reason::Immutable,
            Failure::FileSystem(_) => Reason::Storage,
            Failure::GaveUp { reason, .. } => *reason,
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.action,
            untrusted::line(&self.subject, untrusted::NAME),
            untrusted::line(&self.failure.to_string(), MAX_FAILURE)
        )
    }
}

impl RegistryError {
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

    /// A blob's bytes that ended in an error while being written anywhere but a registry (a
    /// file, memory): a check of [`super::verify`] that failed (never retried), or a read
    /// that broke.
    pub fn from_stream(action: &'static str, subject: impl ToString, err: &std::io::Error) -> Self {
        let failure = match find::<StreamAbort>(err) {
            Some(StreamAbort::DigestMismatch(m)) => Failure::DigestMismatch(m.clone()),
            Some(StreamAbort::TooLarge(m)) => Failure::TooLarge(m.clone()),
            None => Failure::Transport(clip(&err.to_string())),
        };
        Self::with(action, subject, failure)
    }

    /// An error answer to a request regmirror made itself, read from `response`: its status,
    /// and no more of its body than [`error_body`] reads. `plain_http` says the request went
    /// without TLS.
    pub(super) async fn from_answer(
        action: &'static str,
        subject: impl ToString,
        response: reqwest::Response,
        plain_http: bool,
    ) -> Self {
        let status = response.status().as_u16();
        let body = error_body(response).await;
        Self::from_response(action, subject, status, &body, plain_http)
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
        if refuses_to_move_a_tag(status, &codes, &message) {
            return Self::with(action, subject, Failure::Immutable(clip(&message)));
        }
        Self::with(action, subject, classify(Some(status), code, &message))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self.failure, Failure::NotFound)
    }

    /// Whether the target refused to move an existing tag ([`Failure::Immutable`]).
    pub fn is_immutable(&self) -> bool {
        matches!(self.failure, Failure::Immutable(_))
    }

    /// The class of this failure, for reports, metrics and alerts.
    pub fn reason(&self) -> Reason {
        self.failure.reason()
    }

    /// Whether trying again later could succeed: rate limits, server errors, broken connections.
    pub fn is_retryable(&self) -> bool {
        match &self.failure {
            Failure::RateLimited(_)
            | Failure::Transport(_)
            | Failure::Unreachable(_)
            | Failure::Stalled { .. } => true,
            Failure::Status { status: 408, .. } => true,
            Failure::Status { status, .. } => *status >= 500,
            _ => false,
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

/// Whether an error answer is a target refusing to move a tag it holds, told by what each
/// registry is known to send, never by a status alone (a 400 or 412 says many things):
///
/// - ECR, an `IMMUTABLE` repository (or tag): 400 `TAG_INVALID`, "The image tag '1.0'
///   already exists in the 'app' repository and cannot be overwritten because the repository
///   is immutable." (newer regions: "because the tag is immutable").
/// - Harbor 2.x, a tag immutability rule: 412 `PRECONDITION`, "Failed to process request due
///   to 'app:1.0' configured as immutable."; Harbor 1.10 sent the same text with `DENIED`.
///
/// Artifactory's refusal of an overwrite without the Delete/Overwrite permission says only
/// `MANIFEST_INVALID` or 403: it stays the failure it says it is.
fn refuses_to_move_a_tag(status: u16, codes: &[String], message: &str) -> bool {
    let coded = |wanted: &[&str]| {
        codes
            .iter()
            .any(|c| wanted.iter().any(|w| c.eq_ignore_ascii_case(w)))
    };
    let refused = match status {
        400 => coded(&["TAG_INVALID"]),
        412 => coded(&["PRECONDITION", "DENIED"]),
        _ => false,
    };
    refused && message.to_ascii_lowercase().contains("immutable")
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
        (_, "UNSUPPORTED") | (Some(405), _) => Failure::Unsupported(message),
        (_, "UNAUTHORIZED" | "DENIED") | (Some(401 | 403), _) => Failure::Denied(message),
        (_, "DIGESTINVALID") => {
            Failure::DigestMismatch(format!("the target registry refused the upload: {message}"))
        }
        (Some(status), _) if code.is_empty() => Failure::Status { status, message },
        (Some(status), _) => Failure::Status {
            status,
            message: format!("{}: {message}", untrusted::line(code, untrusted::NAME)),
        },
        (None, _) => Failure::Protocol(format!(
            "{}: {message}",
            untrusted::line(code, untrusted::NAME)
        )),
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

/// Why a streamed body was cut short by regmirror itself: carried inside the HTTP client's
/// error (as an `io::Error`) and recovered by [`request_failure`], so a digest mismatch is
/// never retried as a network fault.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum StreamAbort {
    #[error("{0}")]
    DigestMismatch(String),
    #[error("{0}")]
    TooLarge(String),
}

/// A reqwest error may carry, deep in its sources, the check that aborted a streamed body:
/// that is a mismatch, not a network fault, and must not be retried as one. Nor is a redirect
/// regmirror would not follow, or a failed TLS handshake, which no retry fixes: each is told
/// apart so its message says so.
fn request_failure(err: &reqwest::Error) -> Failure {
    match find::<StreamAbort>(err) {
        Some(StreamAbort::DigestMismatch(m)) => return Failure::DigestMismatch(m.clone()),
        Some(StreamAbort::TooLarge(m)) => return Failure::TooLarge(m.clone()),
        None => {}
    }
    if let Some(refused) = find::<super::redirect::RedirectRefused>(err) {
        return Failure::Refused(refused.to_string());
    }
    if let Some(tls) = find::<rustls::Error>(err) {
        return tls_failure(tls);
    }
    let mut message = err.to_string();
    let mut source = StdError::source(err);
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

/// The first `T` among `e` and its sources. An `io::Error` hides what it wraps from
/// `source()` (the TLS stream and a body stream both report through one), so each is opened
/// by hand.
pub(super) fn find<'e, T: StdError + 'static>(e: &'e (dyn StdError + 'static)) -> Option<&'e T> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(found) = find::<T>(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
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

/// A registry's text on one line of at most [`untrusted::TEXT`] characters: error bodies can
/// be whole HTML pages (their runs of white space become one space), and hostile ones
/// anything at all (control characters are escaped).
pub(super) fn clip(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    untrusted::line(&line, untrusted::TEXT)
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
        assert!(!err(Failure::TooLarge(String::new())).is_retryable());
        assert!(!err(Failure::Refused(String::new())).is_retryable());
        assert!(!err(Failure::Immutable(String::new())).is_retryable());
        assert!(err(Failure::Stalled {
            waited: Duration::from_secs(1),
            what: String::new()
        })
        .is_retryable());
    }

    #[test]
    fn an_abort_inside_an_io_error_inside_another_error_is_found() {
        let abort = std::io::Error::other(StreamAbort::DigestMismatch("x".into()));
        let outer = std::io::Error::other(abort);
        let found = find::<StreamAbort>(&outer);
        assert!(matches!(found, Some(StreamAbort::DigestMismatch(m)) if m == "x"));
        assert!(find::<StreamAbort>(&std::io::Error::other("plain")).is_none());
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
        assert!(shown.chars().count() <= untrusted::TEXT + 30, "{shown}");
    }

    #[test]
    fn a_hostile_error_text_is_shown_on_one_line_escaped_and_clipped() {
        let body = format!(
            r#"{{"errors":[{{"code":"DENIED\u001b[2J","message":"no\r\u001b[32mOK {}"}}]}}"#,
            "x".repeat(1 << 20)
        );
        let err = RegistryError::from_response(
            "HEAD manifest",
            "r.io/app:1",
            403,
            body.as_bytes(),
            false,
        );
        let shown = err.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown}");
        // White space (the CR) becomes a space; any other control character an escape.
        assert!(shown.contains("no \\u{1b}[32mOK"), "{shown}");
        assert!(shown.len() < 1_000, "{}", shown.len());
        // A code is clipped too, and any failure built from a registry's words.
        let err = RegistryError::from_response(
            "HEAD manifest",
            "x",
            500,
            format!(
                r#"{{"errors":[{{"code":"{}","message":"m"}}]}}"#,
                "C".repeat(1 << 20)
            )
            .as_bytes(),
            false,
        );
        assert!(err.to_string().len() < 1_000);
        let err = RegistryError::with(
            "list tags",
            "x",
            Failure::Protocol(format!("\x1b[2K{}", "n".repeat(1 << 20))),
        );
        let shown = err.to_string();
        assert!(
            shown.len() < MAX_FAILURE + 100 && !shown.contains('\x1b'),
            "{shown}"
        );
    }

    #[test]
    fn a_tag_refused_as_immutable_is_told_by_ecrs_and_harbors_own_answers() {
        let failure = |status, body: &str| {
            RegistryError::from_response(
                "push manifest",
                "x/app:1.0",
                status,
                body.as_bytes(),
                false,
            )
            .failure
        };
        // ECR, as docker, jib and kaniko users have quoted it.
        let ecr = r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag '1.0' already exists in the 'mirror/app' repository and cannot be overwritten because the repository is immutable."}]}"#;
        let ecr_tag = r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag '1.0' already exists in the 'mirror/app' repository and cannot be overwritten because the tag is immutable."}]}"#;
        // Harbor 2.x (errors.PreconditionCode, sent as 412) and 1.10.
        let harbor = r#"{"errors":[{"code":"PRECONDITION","message":"Failed to process request due to 'app:1.0' configured as immutable."}]}"#;
        let harbor_1_10 = r#"{"errors":[{"code":"DENIED","message":"Failed to process request due to 'app:1.0' configured as immutable."}]}"#;
        for (status, body) in [
            (400, ecr),
            (400, ecr_tag),
            (412, harbor),
            (412, harbor_1_10),
        ] {
            let failure = failure(status, body);
            assert!(
                matches!(&failure, Failure::Immutable(m) if m.contains("immutable")),
                "{status} {body}: {failure:?}"
            );
        }
        assert!(RegistryError::with("push manifest", "x", failure(400, ecr)).is_immutable());

        // The same codes without the word, or the word under another code or status, are
        // what they say: distribution's TAG_INVALID is a tag that does not match the URI.
        let distribution =
            r#"{"errors":[{"code":"TAG_INVALID","message":"manifest tag did not match URI"}]}"#;
        assert!(matches!(
            failure(400, distribution),
            Failure::Status { status: 400, .. }
        ));
        let policy = r#"{"errors":[{"code":"PROJECTPOLICYVIOLATION","message":"current image with 2 vulnerabilities cannot be pulled due to configured policy"}]}"#;
        assert!(matches!(
            failure(412, policy),
            Failure::Status { status: 412, .. }
        ));
        let harbor_elsewhere = harbor.replace("PRECONDITION", "UNKNOWN");
        assert!(matches!(
            failure(500, &harbor_elsewhere),
            Failure::Status { status: 500, .. }
        ));
        assert!(matches!(failure(403, harbor_1_10), Failure::Denied(_)));
        let artifactory = r#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":{"description":"HTTP 403 Forbidden"}}]}"#;
        assert!(matches!(
            failure(400, artifactory),
            Failure::Status { status: 400, .. }
        ));
        assert!(matches!(
            failure(400, "immutable"),
            Failure::Status { status: 400, .. }
        ));
    }
}
