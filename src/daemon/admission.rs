//! Who may `POST /sync`, and how much of their request is read to find out.
//!
//! Every pod that can reach the port can send a request, so nothing is read before it can
//! matter, and what is read is bounded:
//!
//! - `Authorization: Bearer <sync_token>` is checked from the headers alone; the body of such a
//!   request is never read.
//! - A body is read only when it can be a signed webhook: `webhook_secret` is set and the
//!   request carries `X-Hub-Signature-256: sha256=<64 hex digits>`. Then at most [`MAX_BODY`]
//!   bytes (a larger `Content-Length` is refused unread, and reading stops past it), within
//!   [`BODY_TIMEOUT`], and at most [`BODIES_AT_ONCE`] bodies at once: a request that finds
//!   none free waits [`BODY_QUEUE`] and is then answered 503.
//! - A valid signature seen lately ([`crate::daemon::deliveries`]) is answered as already
//!   handled.
//!
//! (Unbounded, 63 connections each sending 2 MB unauthenticated took an idle daemon from
//! 18 MB to 144 MB.)

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use futures_util::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::ServerSettings;
use crate::credentials::Secret;
use crate::daemon::deliveries::{Deliveries, Delivery};

/// The largest webhook body read. A GitHub `package` event is a few KiB; a package's long
/// description comes in it twice (Markdown and HTML), hence the margin.
pub const MAX_BODY: usize = 1024 * 1024;
/// Webhook bodies read at once: [`MAX_BODY`] each at most.
pub const BODIES_AT_ONCE: usize = 4;
/// How long a webhook waits for its turn to be read before it is answered 503.
pub const BODY_QUEUE: Duration = Duration::from_secs(2);
/// How long a webhook body may take to arrive once its turn has come.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What `POST /sync` keeps between requests.
#[derive(Debug)]
pub struct Admission {
    /// Turns to read a body ([`BODIES_AT_ONCE`]).
    bodies: Semaphore,
    deliveries: Deliveries,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            bodies: Semaphore::new(BODIES_AT_ONCE),
            deliveries: Deliveries::default(),
        }
    }
}

/// A request let in.
#[derive(Debug)]
pub enum Admitted {
    /// By the bearer token; its body was not read.
    Token,
    /// By a valid signature of `body`, not seen lately.
    Signed { body: Bytes, delivery: Delivery },
    /// By a valid signature of a delivery acted on lately: nothing is to run.
    Repeat,
}

/// Why a request was not let in; each maps to one status ([`Refusal::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("POST /sync is off: set server.sync_token or server.webhook_secret")]
    Off,
    #[error("no credentials: send Authorization: Bearer <token> or X-Hub-Signature-256")]
    NoCredentials,
    #[error("wrong bearer token")]
    WrongToken,
    #[error("X-Hub-Signature-256 is not sha256= and 64 hex digits")]
    MalformedSignature,
    #[error("X-Hub-Signature-256 does not match the body")]
    WrongSignature,
    #[error("the body is over {} KiB, more than a webhook sends", MAX_BODY / 1024)]
    TooLarge,
    #[error("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    TooSlow,
    #[error("the body could not be read")]
    Unreadable,
    #[error("too many webhook bodies are being read; try again shortly")]
    Busy,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Off => StatusCode::FORBIDDEN,
            Refusal::NoCredentials
            | Refusal::WrongToken
            | Refusal::MalformedSignature
            | Refusal::WrongSignature => StatusCode::UNAUTHORIZED,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::TooSlow => StatusCode::REQUEST_TIMEOUT,
            Refusal::Unreadable => StatusCode::BAD_REQUEST,
            Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl Admission {
    /// Checks a request to `POST /sync` against `settings`, reading `body` only if it can be
    /// a signed webhook.
    pub async fn admit(
        &self,
        settings: &ServerSettings,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Admitted, Refusal> {
        let (secret, signature) = match credentials(settings, headers)? {
            Credentials::Token => return Ok(Admitted::Token),
            Credentials::Signature { secret, signature } => (secret, signature),
        };
        let body = self.read(headers, body).await?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(&body);
        mac.verify_slice(&signature)
            .map_err(|_| Refusal::WrongSignature)?;
        let id = headers.get("x-github-delivery").map(|id| id.as_bytes());
        let delivery = Delivery::new(&signature, id);
        if self.deliveries.first_time(&delivery) {
            Ok(Admitted::Signed { body, delivery })
        } else {
            Ok(Admitted::Repeat)
        }
    }

    /// Forgets a delivery that was let in but refused further on (no mirror matched, shutting
    /// down), so that sending it again after a fix acts on it.
    pub fn forget(&self, delivery: &Delivery) {
        self.deliveries.forget(delivery);
    }

    /// The body, at most [`MAX_BODY`] bytes, read in its turn and within [`BODY_TIMEOUT`].
    async fn read(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|length| length > MAX_BODY as u64) {
            return Err(Refusal::TooLarge);
        }
        let _turn = tokio::time::timeout(BODY_QUEUE, self.bodies.acquire())
            .await
            .map_err(|_| Refusal::Busy)?
            .map_err(|_| Refusal::Busy)?;
        let capacity = announced.map_or(0, |length| length as usize);
        tokio::time::timeout(BODY_TIMEOUT, read_at_most(body, capacity))
            .await
            .map_err(|_| Refusal::TooSlow)?
    }
}

/// What a request offers to be let in by.
enum Credentials<'a> {
    Token,
    /// The HMAC-SHA256 `X-Hub-Signature-256` claims for the body (32 bytes), and the key.
    Signature {
        secret: &'a Secret,
        signature: Vec<u8>,
    },
}

/// The request's credentials, from its headers alone: the right bearer token, or a
/// well-formed signature to check against the body. A wrong token is refused unless a
/// signature is offered beside it.
fn credentials<'a>(
    settings: &'a ServerSettings,
    headers: &HeaderMap,
) -> Result<Credentials<'a>, Refusal> {
    if settings.sync_token.is_none() && settings.webhook_secret.is_none() {
        return Err(Refusal::Off);
    }
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let mut refusal = Refusal::NoCredentials;
    if let (Some(token), Some(given)) = (&settings.sync_token, text("authorization")) {
        let given = bearer(given).unwrap_or_default();
        if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return Ok(Credentials::Token);
        }
        refusal = Refusal::WrongToken;
    }
    if let (Some(secret), Some(claimed)) = (&settings.webhook_secret, text("x-hub-signature-256")) {
        return claimed
            .strip_prefix("sha256=")
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .filter(|digest| digest.len() == 32)
            .map(|signature| Credentials::Signature { secret, signature })
            .ok_or(Refusal::MalformedSignature);
    }
    Err(refusal)
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive
/// (RFC 7235), so `bearer` and `BEARER` are the same.
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// `body` whole if it is at most [`MAX_BODY`] bytes; reading stops as soon as it is past.
async fn read_at_most(body: Body, capacity: usize) -> Result<Bytes, Refusal> {
    let mut read = Vec::with_capacity(capacity.min(MAX_BODY));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| Refusal::Unreadable)?;
        if read.len() + chunk.len() > MAX_BODY {
            return Err(Refusal::TooLarge);
        }
        read.extend_from_slice(&chunk);
    }
    Ok(read.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(token: Option<&str>, secret: Option<&str>) -> ServerSettings {
        ServerSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            sync_token: token.map(|t| Secret::new(t.to_string())),
            webhook_secret: secret.map(|s| Secret::new(s.to_string())),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn admit(
        settings: &ServerSettings,
        headers: &HeaderMap,
        body: impl Into<Body>,
    ) -> Result<Admitted, Refusal> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(Admission::default().admit(settings, headers, body.into()))
    }

    // GitHub's documented example: secret "It's a Secret to Everybody", payload
    // "Hello, World!".
    const SECRET: &str = "It's a Secret to Everybody";
    const SIGNED: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_signature_example_is_accepted() {
        let s = settings(None, Some(SECRET));
        let signed = headers(&[("x-hub-signature-256", SIGNED)]);
        let admitted = admit(&s, &signed, "Hello, World!").unwrap();
        assert!(
            matches!(&admitted, Admitted::Signed { body, .. } if body == "Hello, World!"),
            "{admitted:?}"
        );
        let refused = admit(&s, &signed, "Hello, World?").unwrap_err();
        assert_eq!(refused, Refusal::WrongSignature);
        for bad in [
            "sha256=00",
            "sha1=757107ea",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz",
        ] {
            let refused = admit(
                &s,
                &headers(&[("x-hub-signature-256", bad)]),
                "Hello, World!",
            );
            assert_eq!(
                refused.unwrap_err().status(),
                StatusCode::UNAUTHORIZED,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_delivery_is_acted_on_once() {
        let s = settings(None, Some(SECRET));
        let admission = Admission::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let deliver = |id: &str| {
            let given = headers(&[("x-hub-signature-256", SIGNED), ("x-github-delivery", id)]);
            runtime.block_on(admission.admit(&s, &given, Body::from("Hello, World!")))
        };
        let first = deliver("a1");
        let Ok(Admitted::Signed { delivery, .. }) = first else {
            panic!("{first:?}")
        };
        assert!(matches!(deliver("a1"), Ok(Admitted::Repeat)));
        assert!(matches!(deliver("b2"), Ok(Admitted::Repeat)), "a fresh id");
        admission.forget(&delivery);
        assert!(matches!(deliver("a1"), Ok(Admitted::Signed { .. })));
    }

    #[test]
    fn bearer_token_must_match_exactly_and_no_body_is_read() {
        let s = settings(Some("t0ken"), None);
        for good in ["Bearer t0ken", "bearer t0ken", "BEARER  t0ken "] {
            let given = headers(&[("authorization", good)]);
            let admitted = admit(&s, &given, unreadable_body());
            assert!(matches!(admitted, Ok(Admitted::Token)), "{good}");
        }
        for bad in [
            "Bearer t0ke",
            "Bearer t0ken2",
            "Basic t0ken",
            "t0ken",
            "Bearer ",
        ] {
            let refused = admit(&s, &headers(&[("authorization", bad)]), "");
            assert_eq!(refused.unwrap_err(), Refusal::WrongToken, "{bad}");
        }
        let refused = admit(&s, &HeaderMap::new(), "").unwrap_err();
        assert_eq!(refused, Refusal::NoCredentials);
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }

    /// A body whose first read fails: a request let in without reading it never notices.
    fn unreadable_body() -> Body {
        Body::from_stream(futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("read"))
        }))
    }

    #[test]
    fn without_a_token_or_secret_sync_is_off() {
        let refused = admit(
            &settings(None, None),
            &headers(&[("authorization", "Bearer x")]),
            "",
        );
        assert_eq!(refused.unwrap_err().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_body_is_read_only_for_a_signature_and_only_up_to_the_cap() {
        let s = settings(Some("t0ken"), Some(SECRET));
        // No signature, or a malformed one: refused before the body is touched.
        for given in [
            headers(&[]),
            headers(&[("authorization", "Bearer wrong")]),
            headers(&[("x-hub-signature-256", "sha256=00")]),
        ] {
            let refused = admit(&s, &given, unreadable_body()).unwrap_err();
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{given:?}");
        }
        // Announced too large: refused unread.
        let announced = headers(&[
            ("x-hub-signature-256", SIGNED),
            ("content-length", "1048577"),
        ]);
        let refused = admit(&s, &announced, unreadable_body()).unwrap_err();
        assert_eq!(refused, Refusal::TooLarge);
        // Not announced: read up to the cap, then refused.
        let endless = Body::from_stream(futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 * 1024]))
        }));
        let signed = headers(&[("x-hub-signature-256", SIGNED)]);
        assert_eq!(admit(&s, &signed, endless).unwrap_err(), Refusal::TooLarge);
        // At the cap: read, and checked.
        let full = vec![b'x'; MAX_BODY];
        assert_eq!(
            admit(&s, &signed, full).unwrap_err(),
            Refusal::WrongSignature
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_are_read_a_few_at_once_and_the_rest_wait_briefly() {
        let s = settings(None, Some(SECRET));
        let admission = std::sync::Arc::new(Admission::default());
        let signed = headers(&[("x-hub-signature-256", SIGNED)]);
        // Bodies that never end hold every turn.
        let mut held = Vec::new();
        for _ in 0..BODIES_AT_ONCE {
            let (admission, s, signed) = (admission.clone(), s.clone(), signed.clone());
            held.push(tokio::spawn(async move {
                let stalled = Body::from_stream(futures_util::stream::pending::<
                    Result<Bytes, std::io::Error>,
                >());
                admission.admit(&s, &signed, stalled).await
            }));
        }
        tokio::task::yield_now().await;
        let waited = tokio::time::Instant::now();
        let refused = admission
            .admit(&s, &signed, Body::from("Hello, World!"))
            .await;
        assert_eq!(refused.unwrap_err(), Refusal::Busy);
        assert_eq!(waited.elapsed(), BODY_QUEUE);
        for stalled in held {
            assert_eq!(stalled.await.unwrap().unwrap_err(), Refusal::TooSlow);
        }
        // Their turns are free again.
        let admitted = admission
            .admit(&s, &signed, Body::from("Hello, World!"))
            .await;
        assert!(matches!(admitted, Ok(Admitted::Signed { .. })));
    }
}
