//! Authorization for every request regmirror sends.
//!
//! Each registry is asked once how it wants to be spoken to (`GET /v2/`, see [`token`]): open,
//! basic auth, or bearer tokens from a realm. Bearer tokens are kept per registry, repository
//! and operation, so a pass asks for one once per repository rather than once per request,
//! and asks again only when it is about to expire or a registry answers 401 (which also
//! re-asks `/v2/`). Header values are marked sensitive so no HTTP layer logs them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine;
use oci_client::Reference;
use reqwest::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

use super::limits::{until, within, Deadlines};
use super::ratelimit::{Budget, RateLimitInfo};
use super::requests::Kind;
use super::token::{self, Challenge};
use super::{Failure, Registries, RegistryError};
use crate::credentials::Credentials;

#[derive(Clone)]
struct Entry {
    header: Option<HeaderValue>,
    expires: Option<Instant>,
}

/// One repository's cached header; its lock is held while a token is fetched.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// What a request does to a repository, which is the token scope it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Access {
    Pull,
    /// Pushing reads too (a mount, a HEAD before a PUT), so its token covers both.
    Push,
    /// Deleting a manifest or tag: its own action in the token spec, which registries grant
    /// apart from push.
    Delete,
}

/// How each registry asked to be spoken to, and the headers that answer it.
#[derive(Default)]
pub(super) struct AuthCache {
    /// By API host.
    challenges: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Challenge>>>>>,
    /// By (API host, repository, push).
    entries: Mutex<HashMap<(String, String, Access), Slot>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCache(<redacted>)")
    }
}

/// What one registry is reached with.
pub(super) struct Reach<'a> {
    /// The registry's clients: its own CAs, if it has any.
    pub http: &'a super::trust::Pair,
    /// Spoken to without TLS.
    pub plain_http: bool,
    pub deadlines: Deadlines,
    /// `scheme://host[:port]` the API is asked at: the registry's own, or its `endpoint`'s.
    pub origin: String,
    /// The `endpoint`'s path before every repository name (with a trailing `/`), or empty.
    pub prefix: String,
    /// The registry's budget, which counts the requests asking how to authenticate.
    pub budget: Arc<Budget>,
}

impl AuthCache {
    fn slot(&self, reference: &Reference, operation: Access) -> Slot {
        let key = (
            reference.resolve_registry().to_string(),
            reference.repository().to_string(),
            operation,
        );
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.entry(key).or_default().clone()
    }

    /// How `host` wants to be spoken to; asked once, then remembered until a 401. One slot
    /// per host, so a registry slow to answer holds up only its own requests.
    pub(super) async fn challenge(
        &self,
        reach: &Reach<'_>,
        host: &str,
    ) -> Result<Challenge, RegistryError> {
        let slot = {
            let mut challenges = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
            challenges.entry(host.to_string()).or_default().clone()
        };
        let mut known = slot.lock().await;
        if let Some(known) = known.as_ref() {
            return Ok(known.clone());
        }
        let url = format!("{}/v2/", reach.origin);
        reach.budget.count_request(Kind::Ping);
        let asked = within(reach.deadlines.request, "authenticate to", &host, async {
            let response = reach
                .http
                .api
                .get(&url)
                .send()
                .await
                .map_err(|e| RegistryError::transport("authenticate to", host, &e))?;
            let status = response.status();
            let unanswered = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
            if unanswered && !response.headers().contains_key(WWW_AUTHENTICATE) {
                // Busy or broken: an error like any other answer's, retried the same way.
                let retry_after =
                    RateLimitInfo::from_headers(response.headers(), std::time::SystemTime::now())
                        .retry_after;
                let mut err =
                    RegistryError::from_answer("authenticate to", host, response, reach.plain_http)
                        .await;
                err.retry_after = retry_after;
                return Err(err);
            }
            Challenge::from_answer(
                response.status(),
                response.headers().get(WWW_AUTHENTICATE),
                reach.plain_http,
            )
            .map_err(|failure| RegistryError::with("authenticate to", host, failure))
        })
        .await?;
        tracing::debug!(
            registry = host,
            challenge = asked.kind(),
            "asked /v2/ how to authenticate"
        );
        *known = Some(asked.clone());
        Ok(asked)
    }

    /// The `Authorization` header for `operation` on `reference`'s repository, if one is
    /// needed.
    pub(super) async fn header(
        &self,
        reach: &Reach<'_>,
        reference: &Reference,
        login: Option<&Credentials>,
        operation: Access,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let host = reference.resolve_registry();
        let (realm, service) = match self.challenge(reach, host).await? {
            Challenge::Bearer { realm, service } => (realm, service),
            // Basic auth when credentials are configured, sent even to a registry whose /v2/
            // is open, as some guard only their private repositories.
            Challenge::Open | Challenge::Basic => {
                return match login {
                    Some(c) if c.identity_token().is_some() => Err(RegistryError::with(
                        "authenticate to",
                        host,
                        Failure::Credentials(
                            "an identity token (username <token>) needs a registry that hands out \
                             bearer tokens, and this one does not"
                                .to_string(),
                        ),
                    )),
                    Some(c) => Ok(Some(basic(&c.username, c.password.expose()))),
                    None => Ok(None),
                };
            }
        };
        let slot = self.slot(reference, operation);
        // Held across the fetch, so concurrent requests to one repository share one token.
        let mut entry = slot.lock().await;
        if let Some(cached) = entry
            .as_ref()
            .filter(|e| e.expires.is_none_or(|at| Instant::now() < at))
        {
            return Ok(cached.header.clone());
        }
        // The repository as the API's host knows it: under an endpoint's path, if any.
        let repository = format!("{}{}", reach.prefix, reference.repository());
        let scope = match operation {
            Access::Pull => format!("repository:{repository}:pull"),
            Access::Push => format!("repository:{repository}:pull,push"),
            Access::Delete => format!("repository:{repository}:delete"),
        };
        reach.budget.count_request(Kind::Token);
        let fetched = within(reach.deadlines.request, "authenticate to", &host, async {
            token::fetch(&reach.http.token, &realm, service.as_deref(), &scope, login)
                .await
                .map_err(|failure| RegistryError::with("authenticate to", host, failure))
        })
        .await?;
        let fresh = Entry {
            header: Some(fetched.header),
            expires: Some(Instant::now() + fetched.life),
        };
        *entry = Some(fresh.clone());
        Ok(fresh.header)
    }

    /// Drops what is cached for `operation` on `reference`'s repository, and how its registry
    /// asked to be spoken to (after a 401).
    pub(super) async fn forget(&self, reference: &Reference, operation: Access) {
        *self.slot(reference, operation).lock().await = None;
        self.challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(reference.resolve_registry());
    }
}

impl Challenge {
    fn kind(&self) -> &'static str {
        match self {
            Challenge::Open => "open",
            Challenge::Basic => "basic",
            Challenge::Bearer { .. } => "bearer",
        }
    }
}

impl Registries {
    /// How requests to `host` are sent.
    fn reach(&self, host: &str) -> Reach<'_> {
        let plain_http = self.plain_http.contains(host);
        let (origin, prefix) = match self.endpoints.get(host) {
            Some(endpoint) => (endpoint.origin(), super::api_prefix(endpoint)),
            None => (
                format!("{}://{host}", if plain_http { "http" } else { "https" }),
                String::new(),
            ),
        };
        Reach {
            http: self.clients.of(host),
            plain_http,
            deadlines: self.deadlines,
            origin,
            prefix,
            budget: self.budgets.of(host),
        }
    }

    /// The `Authorization` header for `operation` on `reference`'s repository, if one is
    /// needed, and for ECR the generation of the credentials in it. ECR takes Basic auth
    /// straight away; other registries are asked how they want it.
    pub(super) async fn authorization(
        &self,
        reference: &Reference,
        operation: Access,
    ) -> Result<(Option<HeaderValue>, Option<u64>), RegistryError> {
        let (login, ecr_generation) = self.auth_for(reference).await?;
        if let (Some(generation), Some(c)) = (ecr_generation, &login) {
            return Ok((
                Some(basic(&c.username, c.password.expose())),
                Some(generation),
            ));
        }
        let reach = self.reach(reference.resolve_registry());
        let header = self
            .tokens
            .header(&reach, reference, login.as_ref(), operation)
            .await?;
        Ok((header, None))
    }

    /// One exchange: the request `build` makes, authorized for `operation` on `reference`'s
    /// repository, and its answer taken by `answer`, both within one deadline (getting the
    /// authorization has deadlines of its own). A 401 drops what authorized it and sends the
    /// request once more, freshly authorized, since a token may expire between two requests.
    pub(super) async fn exchange<T, F, Fut>(
        &self,
        action: &'static str,
        subject: &(dyn std::fmt::Display + Sync),
        reference: &Reference,
        (operation, kind): (Access, Kind),
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        answer: F,
    ) -> Result<T, RegistryError>
    where
        F: FnOnce(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut refreshed = false;
        loop {
            let (authorization, ecr_generation) = self.authorization(reference, operation).await?;
            // Always the registry's own origin (or its endpoint's): its own CAs.
            let mut request = build(&self.clients.of(reference.resolve_registry()).api);
            if let Some(header) = authorization {
                request = request.header(AUTHORIZATION, header);
            }
            // The registry's request cap, waited out before the request's own deadline starts.
            self.pace(reference.resolve_registry(), kind).await;
            let deadline = Instant::now() + self.deadlines.request;
            let response = until(deadline, self.deadlines.request, action, subject, async {
                request
                    .send()
                    .await
                    .map_err(|e| RegistryError::transport(action, subject, &e))
            })
            .await?;
            tracing::trace!(action, url = %response.url(), status = response.status().as_u16(), "registry answered");
            if response.status() == StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                let host = reference.resolve_registry();
                match ecr_generation {
                    Some(generation) => self.ecr.forget(host, generation).await,
                    None => self.tokens.forget(reference, operation).await,
                }
                continue;
            }
            return until(
                deadline,
                self.deadlines.request,
                action,
                subject,
                answer(response),
            )
            .await;
        }
    }
}

/// A Basic `Authorization` header.
pub(super) fn basic(user: &str, password: &str) -> HeaderValue {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    // Base64 is always a valid header value.
    let mut header = HeaderValue::from_str(&format!("Basic {pair}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}
