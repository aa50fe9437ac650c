//! Amazon ECR: which registries are ECR, their short-lived credentials, and their repositories.
//!
//! ECR speaks the registry API with HTTP Basic auth: user `AWS`, and a password from
//! `GetAuthorizationToken` that lasts 12 hours. [`Ecr::credentials`] fetches it on first use
//! and again before it expires ([`renew_after`]), so a run that outlasts a token (waiting on
//! Docker Hub, say) never sends an expired one. Each fetch starts a new *generation*, which
//! tells the registry client to drop what it cached under the old password.
//!
//! ECR refuses a push into a repository that does not exist, so [`Ecr::ensure_repository`]
//! creates it (`CreateRepository`, with the settings of `[registries."host".create]`) before
//! the first push, once per repository per process; an image already up to date costs no call.
//!
//! A host is ECR when its name says so ([`EcrHost::parse`]) or when its `[registries]` entry
//! has `ecr = true` (VPC endpoints, proxies, and the tests' local registries).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ecr::operation::create_repository::CreateRepositoryError;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageFailureCode, ImageIdentifier,
    ImageScanningConfiguration, ImageTagMutability, Tag,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::credentials::{decode_auth, Credentials};

/// Renew a token at the latest this long before it expires...
const RENEW_MARGIN: Duration = Duration::from_secs(30 * 60);
/// ...or, for a short-lived one, after three quarters of its life.
const RENEW_FRACTION: u32 = 4;
/// A token that looks expired on arrival (a skewed clock) is used this long before asking again.
const EXPIRED_ON_ARRIVAL_REUSE: Duration = Duration::from_secs(60);
/// The longest a token is believed valid (ECR's last 12 hours): an absurd `expiresAt` is
/// taken as this, so adding it to the clock cannot overflow.
const MAX_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);

/// What an ECR registry's host name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    /// The AWS account (registry id), 12 digits.
    pub account: String,
    pub region: String,
}

impl EcrHost {
    /// `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]` or the dual-stack
    /// `<account>.dkr-ecr[-fips].<region>.on.aws`; `None` for any other host.
    pub fn parse(host: &str) -> Option<EcrHost> {
        let host = host.to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let (account, rest) = labels.split_first()?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let region = match rest {
            ["dkr", "ecr" | "ecr-fips", region, "amazonaws", "com"]
            | ["dkr", "ecr" | "ecr-fips", region, "amazonaws", "com", "cn"]
            | ["dkr-ecr" | "dkr-ecr-fips", region, "on", "aws"] => region,
            _ => return None,
        };
        let valid_region = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid_region.then(|| EcrHost {
            account: account.to_string(),
            region: region.to_string(),
        })
    }
}

/// How regmirror treats one ECR registry (from `[registries."host"]`, or the host's name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcrSettings {
    /// The region whose ECR API serves it; the AWS default chain's when `None`.
    pub region: Option<String>,
    /// The account owning it (`registryId`), when the host name tells; else the caller's.
    pub account: Option<String>,
    /// Settings for the repositories regmirror creates.
    pub create: RepositoryCreation,
}

impl EcrSettings {
    /// Settings for a host whose name says it is ECR.
    pub fn for_host(host: &EcrHost) -> EcrSettings {
        EcrSettings {
            region: Some(host.region.clone()),
            account: Some(host.account.clone()),
            create: RepositoryCreation::default(),
        }
    }
}

/// `[registries."host".create]`: how new repositories are set up; ECR's defaults where unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryCreation {
    pub scan_on_push: Option<bool>,
    /// `MUTABLE` or `IMMUTABLE`.
    pub tag_mutability: Option<String>,
    /// `AES256`, `KMS` or `KMS_DSSE`.
    pub encryption: Option<String>,
    /// The KMS key for `KMS`/`KMS_DSSE`; AWS's managed key when `None`.
    pub kms_key: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// The values `tag_mutability` accepts (ECR's own spelling; the config is case-insensitive).
pub const TAG_MUTABILITIES: &[&str] = &["MUTABLE", "IMMUTABLE"];
/// The values `encryption` accepts.
pub const ENCRYPTIONS: &[&str] = &["AES256", "KMS", "KMS_DSSE"];

/// An ECR API call that failed; names the registry and carries AWS's reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ECR {action} for {host}: {reason}")]
pub struct EcrError {
    pub action: &'static str,
    pub host: String,
    pub reason: String,
}

/// Basic-auth credentials for one ECR registry, and which fetch they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrCredentials {
    pub credentials: Credentials,
    /// Starts at 1 and grows with each fetch.
    pub generation: u64,
}

/// When a token valid for `valid_for` from now should be replaced.
pub fn renew_after(valid_for: Duration) -> Duration {
    if valid_for.is_zero() {
        return EXPIRED_ON_ARRIVAL_REUSE;
    }
    let valid_for = valid_for.min(MAX_VALIDITY);
    valid_for - RENEW_MARGIN.min(valid_for / RENEW_FRACTION)
}

/// One registry's current token; its lock is held while a new one is fetched, so concurrent
/// requests share one fetch.
#[derive(Debug, Default)]
struct TokenSlot {
    current: tokio::sync::Mutex<Option<(EcrCredentials, Instant)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl TokenSlot {
    /// The current credentials, fetched anew when there are none or they are due for renewal.
    /// `fetch` yields the credentials and how long they are valid from now.
    async fn get<F, Fut, E>(&self, fetch: F) -> Result<EcrCredentials, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Credentials, Duration), E>>,
    {
        let mut current = self.current.lock().await;
        if let Some((credentials, renew_at)) = current.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(credentials.clone());
            }
        }
        let (credentials, valid_for) = fetch().await?;
        let fresh = EcrCredentials {
            credentials,
            generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
        };
        *current = Some((fresh.clone(), Instant::now() + renew_after(valid_for)));
        Ok(fresh)
    }

    /// Drops the credentials of `generation` (refused by the registry), unless already replaced.
    async fn forget(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|(c, _)| c.generation == generation)
        {
            *current = None;
        }
    }
}

/// One ECR registry's state for the life of the process.
#[derive(Debug)]
struct Registry {
    settings: EcrSettings,
    client: OnceCell<aws_sdk_ecr::Client>,
    token: TokenSlot,
    /// Repositories known to exist (created, or found existing).
    ready: Mutex<HashSet<String>>,
    /// One per repository: concurrent images into one new repository create it once.
    creating: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    warned_clock: AtomicBool,
}

/// Every ECR registry of the config, by API host.
#[derive(Debug, Default)]
pub struct Ecr {
    registries: BTreeMap<String, Registry>,
}

impl Ecr {
    /// `hosts`: each ECR registry's API host and settings.
    pub fn new(hosts: impl IntoIterator<Item = (String, EcrSettings)>) -> Ecr {
        let registries = hosts
            .into_iter()
            .map(|(host, settings)| {
                let registry = Registry {
                    settings,
                    client: OnceCell::new(),
                    token: TokenSlot::default(),
                    ready: Mutex::new(HashSet::new()),
                    creating: Mutex::new(HashMap::new()),
                    warned_clock: AtomicBool::new(false),
                };
                (host, registry)
            })
            .collect();
        Ecr { registries }
    }

    pub fn is_ecr(&self, host: &str) -> bool {
        self.registries.contains_key(host)
    }

    fn registry(&self, host: &str) -> Option<&Registry> {
        self.registries.get(host)
    }

    async fn client(
        &self,
        host: &str,
        action: &'static str,
    ) -> Result<&aws_sdk_ecr::Client, EcrError> {
        let registry = self.registry(host).expect("callers check is_ecr");
        registry
            .client
            .get_or_try_init(|| async {
                let region_key = format!("[registries.{host:?}]");
                let config =
                    crate::aws::sdk_config(registry.settings.region.as_deref(), &region_key)
                        .await
                        .map_err(|reason| EcrError {
                            action,
                            host: host.to_string(),
                            reason,
                        })?;
                Ok(aws_sdk_ecr::Client::new(&config))
            })
            .await
    }

    /// Credentials for `host`, `None` when it is not ECR; fetched when due (see module doc).
    pub async fn credentials(&self, host: &str) -> Result<Option<EcrCredentials>, EcrError> {
        let Some(registry) = self.registry(host) else {
            return Ok(None);
        };
        let fetch = || async {
            let fail = |reason: String| EcrError {
                action: "GetAuthorizationToken",
                host: host.to_string(),
                reason,
            };
            let client = self.client(host, "GetAuthorizationToken").await?;
            let answer = client
                .get_authorization_token()
                .send()
                .await
                .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
            let data = answer
                .authorization_data()
                .first()
                .ok_or_else(|| fail("the answer holds no authorization data".to_string()))?;
            let credentials = data
                .authorization_token()
                .and_then(decode_auth)
                .ok_or_else(|| fail("the token is not base64 `user:password`".to_string()))?;
            let expires = data
                .expires_at()
                .and_then(|at| SystemTime::try_from(*at).ok())
                .ok_or_else(|| fail("the answer says no expiry".to_string()))?;
            let valid_for = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            if valid_for.is_zero() && !registry.warned_clock.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    registry = host,
                    expires = %humantime::format_rfc3339_seconds(expires),
                    "ECR token arrived already expired: is this machine's clock right? \
                     Asking for a new one every {} s",
                    EXPIRED_ON_ARRIVAL_REUSE.as_secs()
                );
            }
            tracing::debug!(
                registry = host,
                valid_for_s = valid_for.as_secs(),
                "fetched an ECR token"
            );
            Ok((credentials, valid_for))
        };
        registry.token.get(fetch).await.map(Some)
    }

    /// After the registry refused the credentials of `generation`: fetch anew next time.
    pub async fn forget(&self, host: &str, generation: u64) {
        if let Some(registry) = self.registry(host) {
            registry.token.forget(generation).await;
        }
    }

    /// Makes sure `repository` exists in `host` before a push, creating it when missing.
    /// Without permission to create, it logs that once and carries on: the repository may
    /// exist, and if not the push says so.
    pub async fn ensure_repository(&self, host: &str, repository: &str) -> Result<(), EcrError> {
        let Some(registry) = self.registry(host) else {
            return Ok(());
        };
        let known = |registry: &Registry| {
            let ready = registry.ready.lock().unwrap_or_else(|p| p.into_inner());
            ready.contains(repository)
        };
        if known(registry) {
            return Ok(());
        }
        let lock = {
            let mut creating = registry.creating.lock().unwrap_or_else(|p| p.into_inner());
            creating.entry(repository.to_string()).or_default().clone()
        };
        let _held = lock.lock().await;
        if known(registry) {
            return Ok(());
        }
        let client = self.client(host, "CreateRepository").await?;
        let request =
            create_request(client, &registry.settings, repository).map_err(|reason| EcrError {
                action: "CreateRepository",
                host: host.to_string(),
                reason,
            })?;
        match request.send().await {
            Ok(_) => {
                tracing::info!(registry = host, repository, "created ECR repository");
            }
            Err(e) => match e.as_service_error() {
                Some(CreateRepositoryError::RepositoryAlreadyExistsException(_)) => {}
                Some(denied) if denied.code() == Some("AccessDeniedException") => {
                    tracing::warn!(
                        registry = host,
                        repository,
                        error = %DisplayErrorContext(&e),
                        "not allowed to create the ECR repository; pushing in case it exists \
                         (allow ecr:CreateRepository, or create it)"
                    );
                }
                _ => {
                    return Err(EcrError {
                        action: "CreateRepository",
                        host: host.to_string(),
                        reason: format!("{repository}: {}", DisplayErrorContext(&e)),
                    })
                }
            },
        }
        registry
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repository.to_string());
        Ok(())
    }
}

impl Ecr {
    /// Deletes `tag` from `repository` in `host` with BatchDeleteImage, which takes the tag
    /// alone (the image stays while another tag names it). `false` when ECR had no such tag.
    pub async fn delete_tag(
        &self,
        host: &str,
        repository: &str,
        tag: &str,
    ) -> Result<bool, EcrError> {
        let registry = self.registry(host).expect("callers check is_ecr");
        let fail = |reason: String| EcrError {
            action: "BatchDeleteImage",
            host: host.to_string(),
            reason: format!("{repository}:{tag}: {reason}"),
        };
        let client = self.client(host, "BatchDeleteImage").await?;
        let answer = client
            .batch_delete_image()
            .repository_name(repository)
            .set_registry_id(registry.settings.account.clone())
            .image_ids(ImageIdentifier::builder().image_tag(tag).build())
            .send()
            .await
            .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
        if let Some(failure) = answer.failures().first() {
            return match failure.failure_code() {
                Some(ImageFailureCode::ImageNotFound) => Ok(false),
                code => Err(fail(format!(
                    "{}: {}",
                    code.map(|c| c.as_str()).unwrap_or("failed"),
                    failure.failure_reason().unwrap_or_default()
                ))),
            };
        }
        Ok(!answer.image_ids().is_empty())
    }
}

/// The CreateRepository request for `repository` with the registry's creation settings.
fn create_request(
    client: &aws_sdk_ecr::Client,
    settings: &EcrSettings,
    repository: &str,
) -> Result<
    aws_sdk_ecr::operation::create_repository::builders::CreateRepositoryFluentBuilder,
    String,
> {
    let create = &settings.create;
    let mut request = client
        .create_repository()
        .repository_name(repository)
        .set_registry_id(settings.account.clone());
    if let Some(scan) = create.scan_on_push {
        request = request.image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(scan)
                .build(),
        );
    }
    if let Some(mutability) = &create.tag_mutability {
        request = request.image_tag_mutability(ImageTagMutability::from(mutability.as_str()));
    }
    if let Some(encryption) = &create.encryption {
        let configuration = EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::from(encryption.as_str()))
            .set_kms_key(create.kms_key.clone())
            .build()
            .map_err(|e| e.to_string())?;
        request = request.encryption_configuration(configuration);
    }
    for (key, value) in &create.tags {
        let tag = Tag::builder()
            .key(key)
            .value(value)
            .build()
            .map_err(|e| e.to_string())?;
        request = request.tags(tag);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use base64::Engine;

    use super::*;
    use crate::credentials::Secret;

    #[test]
    fn ecr_hosts_are_recognised_by_name() {
        let ecr = |account: &str, region: &str| {
            Some(EcrHost {
                account: account.to_string(),
                region: region.to_string(),
            })
        };
        let cases = [
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                ecr("123456789012", "eu-west-1"),
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                ecr("123456789012", "cn-north-1"),
            ),
            (
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                ecr("123456789012", "us-east-1"),
            ),
            (
                "123456789012.dkr-ecr.us-west-2.on.aws",
                ecr("123456789012", "us-west-2"),
            ),
            (
                "123456789012.DKR.ECR.eu-west-1.AMAZONAWS.COM",
                ecr("123456789012", "eu-west-1"),
            ),
            ("12345678901.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("12345678901x.dkr.ecr.eu-west-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io", None),
            ("public.ecr.aws", None),
            ("registry-1.docker.io", None),
            ("123456789012.dkr.ecr..amazonaws.com", None),
        ];
        for (host, expected) in cases {
            assert_eq!(EcrHost::parse(host), expected, "{host}");
        }
    }

    #[test]
    fn tokens_are_renewed_ahead_of_expiry() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        // ECR's 12 hours: renewed half an hour early.
        assert_eq!(renew_after(hours(12)), hours(12) - RENEW_MARGIN);
        // Short-lived: after three quarters of its life.
        assert_eq!(renew_after(Duration::from_secs(8)), Duration::from_secs(6));
        assert_eq!(renew_after(hours(1)), Duration::from_secs(45 * 60));
        // Expired on arrival: used briefly, not fetched in a loop.
        assert_eq!(renew_after(Duration::ZERO), EXPIRED_ON_ARRIVAL_REUSE);
        // An expiry in the year 292 billion: a day, which any clock can add.
        let absurd = renew_after(Duration::from_secs(i64::MAX as u64));
        assert_eq!(absurd, MAX_VALIDITY - RENEW_MARGIN);
        assert!(std::time::Instant::now().checked_add(absurd).is_some());
    }

    fn token(password: &str) -> Credentials {
        Credentials {
            username: "AWS".to_string(),
            password: Secret::new(password),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_lived_token_is_fetched_again_within_one_long_run() {
        let slot = TokenSlot::default();
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, ()>((token(&format!("p{n}")), Duration::from_secs(8)))
        };
        let first = slot.get(fetch).await.unwrap();
        assert_eq!(
            (first.generation, first.credentials.password.expose()),
            (1, "p1")
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            slot.get(fetch).await.unwrap(),
            first,
            "still fresh at 5 s of 8"
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        let second = slot.get(fetch).await.unwrap();
        assert_eq!(
            (second.generation, second.credentials.password.expose()),
            (2, "p2")
        );
        // Hours of waiting: one fetch per renewal, never one per request.
        for _ in 0..3600 {
            tokio::time::advance(Duration::from_secs(1)).await;
            slot.get(fetch).await.unwrap();
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2 + 600,
            "renewed every 6 s for an hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_fetch_and_a_refusal_forgets_only_its_token() {
        let slot = Arc::new(TokenSlot::default());
        let fetches = Arc::new(AtomicU32::new(0));
        let get = |slot: Arc<TokenSlot>, fetches: Arc<AtomicU32>| async move {
            slot.get(|| async {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, ()>((token("p"), Duration::from_secs(3600)))
            })
            .await
            .unwrap()
        };
        let all =
            futures_util::future::join_all((0..8).map(|_| get(slot.clone(), fetches.clone())))
                .await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(all.iter().all(|c| c.generation == 1));
        // A request refused with generation 1 forgets it; a late refusal of 1 does not drop 2.
        slot.forget(1).await;
        assert_eq!(get(slot.clone(), fetches.clone()).await.generation, 2);
        slot.forget(1).await;
        assert_eq!(get(slot.clone(), fetches.clone()).await.generation, 2);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn tokens_decode_and_never_print() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("AWS:eyJwYXlsb2Fk");
        let credentials = decode_auth(&encoded).unwrap();
        assert_eq!(credentials.username, "AWS");
        assert_eq!(credentials.password.expose(), "eyJwYXlsb2Fk");
        assert!(!format!("{credentials:?}").contains("eyJ"));
        assert_eq!(decode_auth("not base64!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWS");
        assert_eq!(decode_auth(&no_colon), None);
    }
}
