//! Manifest HEADs, GETs and PUTs, with the rate-limit headers each answer carries.
//!
//! Every exchange is bounded: one total deadline from sending to the last byte, a manifest
//! body of at most 4 MiB, an error body of at most 64 KiB (see [`super::limits`]). A
//! `Docker-Content-Digest` is checked like any other digest before it is used, since the next
//! request puts it in a URL.

use std::time::SystemTime;

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::auth::Access;
use super::limits::{read_body, MAX_MANIFEST_BYTES};
use super::requests::Kind;
use super::{Failure, Registries, RegistryError};
use crate::digest;
use crate::manifest;
use crate::reference::ImageRef;
use crate::registry::ratelimit::RateLimitInfo;

/// A manifest response that succeeded.
#[derive(Debug)]
pub(super) struct Answer {
    /// `Docker-Content-Digest`, when the registry sent it (checked well-formed).
    pub digest: Option<String>,
    /// `Content-Type`, when it is one of the manifest types regmirror asks for.
    pub media_type: Option<String>,
    /// Empty for a HEAD or a PUT.
    pub body: Bytes,
}

/// What one manifest request came back with, and what it said of the rate limit either way.
pub(super) struct Exchange {
    pub result: Result<Option<Answer>, RegistryError>,
    pub rate_limit: RateLimitInfo,
}

impl Registries {
    /// One manifest request; a PUT sends `upload` (body and media type). `Ok(None)` is a HEAD
    /// or GET answered 404. A 401 drops the cached token and tries once more with a fresh
    /// one, as a token may expire between two requests.
    pub(super) async fn manifest_request(
        &self,
        method: Method,
        image: &ImageRef,
        upload: Option<(Bytes, HeaderValue)>,
    ) -> Exchange {
        let (action, operation) = match method {
            Method::HEAD => ("HEAD manifest", (Access::Pull, Kind::Head)),
            Method::PUT => ("push manifest", (Access::Push, Kind::Push)),
            Method::DELETE => ("delete manifest", (Access::Delete, Kind::Delete)),
            _ => ("pull manifest", (Access::Pull, Kind::Get)),
        };
        let reading = method != Method::PUT;
        let reference = image.api_reference();
        let host = reference.resolve_registry();
        let tag_or_digest = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = self.url(
            host,
            &format!("{}/manifests/{tag_or_digest}", reference.repository()),
        );
        let plain_http = self.plain_http.contains(host);
        let mut rate_limit = RateLimitInfo::default();
        let rate_limit_seen = &mut rate_limit;
        let build = |http: &reqwest::Client| {
            let request = http.request(method.clone(), &url);
            match &upload {
                Some((body, media_type)) => request
                    .header(CONTENT_TYPE, media_type.clone())
                    .body(body.clone()),
                None => request.header(ACCEPT, manifest::ACCEPTED.join(", ")),
            }
        };
        let getting = method == Method::GET;
        let answer = |response: reqwest::Response| async move {
            let status = response.status();
            *rate_limit_seen = RateLimitInfo::from_headers(response.headers(), SystemTime::now());
            if status.is_success() {
                let digest = match response.headers().get("docker-content-digest") {
                    Some(value) if reading => Some(
                        checked_digest(value)
                            .map_err(|failure| RegistryError::with(action, image, failure))?,
                    ),
                    _ => None,
                };
                let media_type = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or_default().trim())
                    .filter(|v| manifest::ACCEPTED.contains(v))
                    .map(str::to_string);
                let body = match getting {
                    true => read_body(response, MAX_MANIFEST_BYTES, "a manifest")
                        .await
                        .map_err(|failure| RegistryError::with(action, image, failure))?,
                    false => Bytes::new(),
                };
                return Ok(Some(Answer {
                    digest,
                    media_type,
                    body,
                }));
            }
            if status == StatusCode::NOT_FOUND && reading {
                return Ok(None);
            }
            let err = RegistryError::from_answer(action, image, response, plain_http).await;
            if err.is_not_found() && reading {
                Ok(None)
            } else {
                Err(err)
            }
        };
        let result = self
            .exchange(action, image, &reference, operation, build, answer)
            .await
            .map_err(|mut err| {
                err.retry_after = rate_limit.retry_after;
                err
            });
        Exchange { result, rate_limit }
    }
}

/// A `Docker-Content-Digest` regmirror can use, or why not (its text clipped).
fn checked_digest(value: &HeaderValue) -> Result<String, Failure> {
    let text = String::from_utf8_lossy(value.as_bytes());
    digest::parse(&text)
        .map(|_| text.to_string())
        .map_err(|e| Failure::Protocol(format!("the registry sent Docker-Content-Digest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_header_that_could_change_a_url_is_refused() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            checked_digest(&HeaderValue::from_str(&good).unwrap()).unwrap(),
            good
        );
        let evil = HeaderValue::from_static("sha256:x/../../evil?q=");
        let refused = checked_digest(&evil).unwrap_err();
        assert!(refused.to_string().contains("invalid digest"), "{refused}");
    }
}
