//! One authorized request to a registry's API, sent by regmirror itself: the credentials
//! found for its repository, and a 401 answered once with fresh ones (a token may expire
//! between two requests, an ECR password be renewed).

use oci_client::{Reference, RegistryOperation};
use reqwest::header::AUTHORIZATION;
use reqwest::{RequestBuilder, Response, StatusCode};

use super::{Registries, RegistryError};

impl Registries {
    /// Sends the request `build` makes (method, URL, headers, body) for `operation` on
    /// `reference`'s repository; a 401 drops the cached credentials and tries once more. The
    /// response is the registry's, whatever its status. `action` and `subject` name the
    /// request in errors (`list tags`, `ghcr.io/org/app`).
    pub(super) async fn send_authorized(
        &self,
        reference: &Reference,
        operation: RegistryOperation,
        (action, subject): (&'static str, &str),
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let host = reference.resolve_registry();
        let mut refreshed = false;
        loop {
            let (authorization, ecr_generation) = self.authorization(reference, operation).await?;
            let mut request = build(&self.http);
            if let Some(header) = authorization {
                request = request.header(AUTHORIZATION, header);
            }
            let response = request
                .send()
                .await
                .map_err(|e| RegistryError::transport(action, subject, &e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                match ecr_generation {
                    Some(generation) => self.ecr.forget(host, generation).await,
                    None => self.tokens.forget(reference, operation).await,
                }
                continue;
            }
            return Ok(response);
        }
    }

    /// `http` or `https`, as this registry is spoken to.
    pub(super) fn scheme(&self, host: &str) -> &'static str {
        if self.plain_http.contains(host) {
            "http"
        } else {
            "https"
        }
    }
}
