//! Authorization for the manifest requests regmirror sends itself.
//!
//! oci-client does the token dance (the `/v2/` challenge, then the realm); this cache keeps
//! what it yields per registry and repository, so a pass asks for a token once per repository
//! rather than once per request, and asks again only when the token is about to expire or a
//! registry answers 401. Header values are marked sensitive so no HTTP layer logs them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::HeaderValue;

use super::RegistryError;

/// Bearer tokens are kept this long: Docker Hub's last five minutes, and a refused stale token
/// costs a 401 and a refresh, nothing worse.
const BEARER_TTL: Duration = Duration::from_secs(240);

#[derive(Clone)]
struct Entry {
    header: Option<HeaderValue>,
    expires: Option<Instant>,
}

/// One repository's cached header; its lock is held while a token is fetched.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// Authorization headers by (API host, repository, pull or push).
#[derive(Default)]
pub(super) struct AuthCache {
    entries: Mutex<HashMap<(String, String, bool), Slot>>,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthCache(<redacted>)")
    }
}

impl AuthCache {
    fn slot(&self, reference: &Reference, operation: RegistryOperation) -> Slot {
        let key = (
            reference.resolve_registry().to_string(),
            reference.repository().to_string(),
            matches!(operation, RegistryOperation::Push),
        );
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.entry(key).or_default().clone()
    }

    /// The `Authorization` header for `operation` on `reference`'s repository, if one is
    /// needed.
    pub(super) async fn header(
        &self,
        client: &Client,
        reference: &Reference,
        credentials: &RegistryAuth,
        operation: RegistryOperation,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        let slot = self.slot(reference, operation);
        // Held across the fetch, so concurrent requests to one repository share one token.
        let mut entry = slot.lock().await;
        if let Some(cached) = entry
            .as_ref()
            .filter(|e| e.expires.is_none_or(|at| Instant::now() < at))
        {
            return Ok(cached.header.clone());
        }
        let token = client
            .auth(reference, credentials, operation)
            .await
            .map_err(|e| RegistryError::new("authenticate to", reference.resolve_registry(), e))?;
        let fresh = match (token, credentials) {
            (Some(token), _) => Entry {
                header: Some(sensitive(&format!("Bearer {token}"))),
                expires: Some(Instant::now() + BEARER_TTL),
            },
            (None, RegistryAuth::Basic(user, password)) => Entry {
                header: Some(basic(user, password)),
                expires: None,
            },
            (None, _) => Entry {
                header: None,
                expires: None,
            },
        };
        *entry = Some(fresh.clone());
        Ok(fresh.header)
    }

    /// Drops what is cached for `operation` on `reference`'s repository (after a 401).
    pub(super) async fn forget(&self, reference: &Reference, operation: RegistryOperation) {
        *self.slot(reference, operation).lock().await = None;
    }
}

/// A Basic `Authorization` header.
pub(super) fn basic(user: &str, password: &str) -> HeaderValue {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    sensitive(&format!("Basic {pair}"))
}

fn sensitive(value: &str) -> HeaderValue {
    let mut header = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}
