//! Amazon ECR's registry behaviour as proxy rules, in front of a real registry, with moto
//! standing in for ECR's API.
//!
//! [`EcrRegistry`] does what ECR does and a plain registry does not: every request but `/v2/`
//! needs `Authorization: Basic` with the password moto's `GetAuthorizationToken` hands out
//! (401 with a Basic challenge otherwise); a push into a repository that moto's ECR does not
//! hold is refused with 404 `NAME_UNKNOWN`, so a client must create repositories before it
//! pushes; a manifest PUT onto a tag that exists, in a repository moto holds as `IMMUTABLE`,
//! is refused as ECR refuses it ([`tag_immutable`]); and a manifest PUT is answered without
//! `Location`.
//!
//! [`immutable_tags`] is that refusal alone, for any registry: a target that never moves a
//! tag.
//!
//! [`AwsCalls`] counts the AWS API calls a client made, by operation, from a proxy in front of
//! moto.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine;

use super::cli::{Run, RunExt, Sandbox};
use super::moto::{Moto, RepositoryLookup};
use super::proxy::{Action, Proxy, RequestInfo, Rule};
use super::registry::Registry;
use super::remote::head_manifest;

/// The password moto's GetAuthorizationToken returns for its default account.
pub const MOTO_PASSWORD: &str = "123456789012-auth-token";

/// ECR's rules, for a proxy in front of a registry (add it first).
pub struct EcrRegistry {
    expected: String,
    lookup: RepositoryLookup,
    /// `host:port` of the registry behind the proxy, where a tag is looked for.
    upstream: String,
}

impl EcrRegistry {
    /// Requests must carry moto's token; pushes need the repository in `moto`'s ECR, and
    /// a tag of an `IMMUTABLE` one is never moved. `upstream` is the registry behind the proxy.
    pub fn new(moto: &Moto, upstream: &str) -> EcrRegistry {
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{MOTO_PASSWORD}"));
        EcrRegistry {
            expected: format!("Basic {pair}"),
            lookup: moto.repository_lookup(),
            upstream: upstream.to_owned(),
        }
    }
}

/// ECR's answer to a manifest PUT onto a tag that exists in an `IMMUTABLE` repository, as
/// docker, jib and kaniko users have quoted it: 400 `TAG_INVALID`.
pub fn tag_immutable(repo: &str, tag: &str) -> Action {
    Action::error(
        400,
        "TAG_INVALID",
        &format!(
            "The image tag '{tag}' already exists in the '{repo}' repository and cannot be \
             overwritten because the repository is immutable."
        ),
    )
}

/// A target whose tags never move: a manifest PUT onto a tag the registry at `upstream`
/// (behind the proxy) already holds is refused as ECR refuses it, whatever it would point
/// at, the same content included (as Harbor's rules and ECR refuse it). A PUT by digest, or
/// of a tag not there yet, goes through.
pub fn immutable_tags(upstream: &str) -> impl Rule {
    let upstream = upstream.to_owned();
    move |request: &RequestInfo| refuse_moving(&upstream, request)
}

/// ECR's refusal if `request` puts a manifest onto a tag that `upstream` holds.
fn refuse_moving(upstream: &str, request: &RequestInfo) -> Option<Action> {
    let tag = request.reference();
    if !request.is_manifest_put() || tag.contains(':') {
        return None;
    }
    let (host, repo, asked) = (
        upstream.to_owned(),
        request.repo().to_owned(),
        tag.to_owned(),
    );
    // A blocking look, on a thread of its own: rules run inside the proxy's runtime.
    let held = std::thread::spawn(move || head_manifest(host.as_str(), &repo, &asked).is_some())
        .join()
        .expect("the tag lookup thread");
    held.then(|| tag_immutable(request.repo(), tag))
}

impl Rule for EcrRegistry {
    fn decide(&mut self, request: &RequestInfo) -> Option<Action> {
        if request.header("authorization") != Some(self.expected.as_str()) {
            let mut action = Action::error(401, "DENIED", "Your authorization token has expired.");
            if let Action::Respond { headers, .. } = &mut action {
                headers.push((
                    "www-authenticate".into(),
                    "Basic realm=\"https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/\",service=\"ecr.amazonaws.com\"".into(),
                ));
            }
            return Some(action);
        }
        let pushing = request.is_upload_start() || request.is_manifest_put();
        let repository = pushing.then(|| (self.lookup)(request.repo())).flatten();
        if pushing && repository.is_none() {
            return Some(Action::error(
                404,
                "NAME_UNKNOWN",
                &format!(
                    "The repository with name '{}' does not exist in the registry with id '123456789012'",
                    request.repo()
                ),
            ));
        }
        if repository.is_some_and(|r| r.immutable) {
            if let Some(refused) = refuse_moving(&self.upstream, request) {
                return Some(refused);
            }
        }
        if request.is_manifest_put() {
            return Some(Action::ForwardWithout(vec!["location".into()]));
        }
        None
    }
}

/// AWS API calls seen by a proxy in front of moto, by operation (`CreateRepository`...).
#[derive(Debug, Clone, Default)]
pub struct AwsCalls(Arc<Mutex<BTreeMap<String, usize>>>);

impl AwsCalls {
    /// A rule that records each call's `X-Amz-Target` operation and lets it through.
    pub fn recorder(&self) -> impl Rule {
        let calls = self.0.clone();
        move |request: &RequestInfo| {
            if let Some(target) = request.header("x-amz-target") {
                let operation = target.rsplit('.').next().unwrap_or(target).to_string();
                *calls.lock().unwrap().entry(operation).or_default() += 1;
            }
            None
        }
    }

    pub fn count(&self, operation: &str) -> usize {
        self.0.lock().unwrap().get(operation).copied().unwrap_or(0)
    }
}

/// An "ECR" registry: a real registry behind ECR's rules, with moto as ECR's API (reached
/// through a proxy that counts the calls).
pub struct FakeEcr {
    _registry: Registry,
    /// The registry, answering as ECR does.
    pub proxy: Proxy,
    pub moto: Moto,
    /// moto, counting calls.
    pub api: Proxy,
    pub calls: AwsCalls,
}

impl FakeEcr {
    pub fn start() -> FakeEcr {
        let moto = Moto::start();
        let registry = Registry::start();
        let proxy = Proxy::start(registry.host());
        proxy.add_rule(EcrRegistry::new(&moto, registry.host()));
        let api = Proxy::start(moto.endpoint.trim_start_matches("http://"));
        let calls = AwsCalls::default();
        api.add_rule(calls.recorder());
        FakeEcr {
            _registry: registry,
            proxy,
            moto,
            api,
            calls,
        }
    }

    /// `regmirror --once` with the AWS environment pointing at the counting proxy.
    pub fn once(&self, sandbox: &Sandbox, config: &std::path::Path) -> Run {
        sandbox
            .regmirror()
            .envs(self.moto.env())
            .env("AWS_ENDPOINT_URL", format!("http://{}", self.api.host()))
            .arg("--once")
            .arg("--config")
            .arg(config)
            .run()
    }
}
