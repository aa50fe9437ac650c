//! Manifest HEADs, GETs and PUTs, sent by regmirror itself: HEADs and GETs so it can read the
//! rate-limit headers that oci-client does not expose, PUTs because oci-client's panics on a
//! push by digest answered without `Location` (ECR). Tokens and blobs stay oci-client's.

use std::time::SystemTime;

use bytes::Bytes;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use super::{auth, Registries, RegistryError};
use crate::manifest;
use crate::reference::ImageRef;
use crate::registry::ratelimit::RateLimitInfo;

/// A manifest response that succeeded.
#[derive(Debug)]
pub(super) struct Answer {
    /// `Docker-Content-Digest`, when the registry sent it.
    pub digest: Option<String>,
    /// Empty for a HEAD.
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
            Method::HEAD => ("HEAD manifest", RegistryOperation::Pull),
            Method::PUT => ("push manifest", RegistryOperation::Push),
            _ => ("pull manifest", RegistryOperation::Pull),
        };
        let reading = method != Method::PUT;
        let reference = image.api_reference();
        let host = reference.resolve_registry();
        let scheme = if self.plain_http.contains(host) {
            "http"
        } else {
            "https"
        };
        let tag_or_digest = reference.digest().or(reference.tag()).unwrap_or("latest");
        let url = format!(
            "{scheme}://{host}/v2/{}/manifests/{tag_or_digest}",
            reference.repository()
        );
        let mut refreshed = false;
        loop {
            let (authorization, ecr_generation) =
                match self.authorization(&reference, operation).await {
                    Ok(header) => header,
                    Err(e) => {
                        return Exchange {
                            result: Err(e),
                            rate_limit: RateLimitInfo::default(),
                        }
                    }
                };
            let mut request = self.http.request(method.clone(), &url);
            request = match &upload {
                Some((body, media_type)) => request
                    .header(CONTENT_TYPE, media_type.clone())
                    .body(body.clone()),
                None => request.header(ACCEPT, manifest::ACCEPTED.join(", ")),
            };
            if let Some(header) = authorization {
                request = request.header(AUTHORIZATION, header);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    return Exchange {
                        result: Err(RegistryError::transport(action, image, &e)),
                        rate_limit: RateLimitInfo::default(),
                    }
                }
            };
            let status = response.status();
            let rate_limit = RateLimitInfo::from_headers(response.headers(), SystemTime::now());
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                match ecr_generation {
                    Some(generation) => self.ecr.forget(host, generation).await,
                    None => self.tokens.forget(&reference, operation).await,
                }
                continue;
            }
            let digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(e) => {
                    return Exchange {
                        result: Err(RegistryError::transport(action, image, &e)),
                        rate_limit,
                    }
                }
            };
            let result = match status {
                s if s.is_success() => Ok(Some(Answer { digest, body })),
                StatusCode::NOT_FOUND if reading => Ok(None),
                s => {
                    let plain_http = scheme == "http";
                    let mut err =
                        RegistryError::from_response(action, image, s.as_u16(), &body, plain_http);
                    if err.is_not_found() && reading {
                        Ok(None)
                    } else {
                        err.retry_after = rate_limit.retry_after;
                        Err(err)
                    }
                }
            };
            return Exchange { result, rate_limit };
        }
    }
}

impl Registries {
    /// The `Authorization` header for `operation` on `reference`'s repository, if one is
    /// needed, and for ECR the generation of the credentials in it. ECR takes Basic auth
    /// straight away; other registries go through the token cache.
    pub(super) async fn authorization(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
    ) -> Result<(Option<HeaderValue>, Option<u64>), RegistryError> {
        let (credentials, ecr_generation) = self.auth_for(reference).await?;
        if let (Some(generation), RegistryAuth::Basic(user, password)) =
            (ecr_generation, &credentials)
        {
            return Ok((Some(auth::basic(user, password)), Some(generation)));
        }
        if matches!(credentials, RegistryAuth::Anonymous)
            && self.is_open(reference.resolve_registry()).await
        {
            return Ok((None, None));
        }
        let header = self
            .tokens
            .header(&self.client, reference, &credentials, operation)
            .await?;
        Ok((header, None))
    }
}

/// `sha256:<hex>` of some bytes.
pub(super) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
