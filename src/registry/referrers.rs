//! The OCI 1.1 referrers API: `GET /v2/<name>/referrers/<digest>`, an index of the manifests
//! whose `subject` is that digest (signatures, attestations, SBOMs).
//!
//! A registry with the API answers 200 with an index (empty when nothing refers to the
//! digest); one without it answers 404, as distribution 2.8 does. A registry that said 404
//! once is not asked again in this process: clients then keep a fallback index under the
//! tag `sha256-<hex>`, which the tag listing finds.

use std::collections::BTreeMap;

use oci_client::Reference;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;

use super::auth::Access;
use super::limits::{read_body, MAX_MANIFEST_BYTES};
use super::requests::Kind;
use super::retry::retrying;
use super::waiting::Waiter;
use super::{Failure, Registries, RegistryError};
use crate::manifest::{Descriptor, Manifest, OCI_INDEX};
use crate::reference::{api_host, Repository};

const ACTION: &str = "list referrers";

impl Registries {
    /// What refers to `digest` in `repository` by the referrers API; `None` when the
    /// registry has no such API.
    pub async fn referrers(
        &self,
        repository: &Repository,
        digest: &str,
        waiter: &Waiter,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let host = api_host(&repository.registry);
        if self.lacks_referrers(host) {
            return Ok(None);
        }
        let subject = format!("{repository}@{digest}");
        let url = self.url(
            host,
            &format!("{}/referrers/{digest}", repository.repository),
        );
        let reference = Reference::with_digest(
            host.to_string(),
            repository.repository.clone(),
            digest.to_string(),
        );
        let plain_http = self.plain_http.contains(host);
        let subject = &subject;
        let answered = retrying(waiter, || {
            let answer = move |response: reqwest::Response| async move {
                let status = response.status();
                if status == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(
                        RegistryError::from_answer(ACTION, subject, response, plain_http).await,
                    );
                }
                let body = read_body(response, MAX_MANIFEST_BYTES, "a referrers index")
                    .await
                    .map_err(|failure| RegistryError::with(ACTION, subject, failure))?;
                match Manifest::parse(&body, Some(OCI_INDEX)) {
                    Ok(Manifest::Index { children, .. }) => Ok(Some(children)),
                    Ok(_) => Err(RegistryError::with(
                        ACTION,
                        subject,
                        Failure::Protocol("the referrers answer is not an index".to_string()),
                    )),
                    Err(e) => Err(RegistryError::with(
                        ACTION,
                        subject,
                        Failure::Protocol(format!("the referrers index {e}")),
                    )),
                }
            };
            let get = |http: &reqwest::Client| http.get(&url).header(ACCEPT, OCI_INDEX);
            self.exchange(
                ACTION,
                subject,
                &reference,
                (Access::Pull, Kind::Referrers),
                get,
                answer,
            )
        })
        .await?;
        if answered.is_none() {
            tracing::debug!(
                registry = host,
                "no referrers API: the fallback tags are used"
            );
            self.mark_without_referrers(host);
        }
        Ok(answered)
    }

    fn lacks_referrers(&self, host: &str) -> bool {
        self.without_referrers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .copied()
            .unwrap_or(false)
    }

    fn mark_without_referrers(&self, host: &str) {
        self.without_referrers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), true);
    }
}

/// Registries known to lack the referrers API, by API host.
pub(super) type WithoutReferrers = std::sync::Mutex<BTreeMap<String, bool>>;
