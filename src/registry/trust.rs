//! Which HTTP client a request goes out on, and so which CAs it trusts.
//!
//! A registry's `ca_file` is trusted for that registry alone: its API host, its `endpoint` and
//! the token realm its `/v2/` names, as containerd scopes `ca` to one host. Every request is
//! made on behalf of one registry, and goes out on that registry's clients only while it goes
//! where that registry is reached; anything else (an upload location on another host) uses
//! clients that trust the system's roots alone. So a CA added for an internal registry can never
//! stand in for Docker Hub, GHCR or ECR, or for their token realms.
//!
//! Clients are built once: one pair per distinct CA file content (registries sharing a CA
//! share its connections) and one pair without extra CAs. A pair is the client for registry
//! requests and the client for token requests, which differ only in the redirects they follow
//! (see [`super::redirect`]). A redirect is followed with the trust of the request it
//! answers, as containerd does; no credentials follow it to another host.

use std::collections::BTreeMap;
use std::path::Path;

use super::redirect;
use super::{CONNECT_TIMEOUT, READ_TIMEOUT, USER_AGENT};

/// The clients of one CA set.
#[derive(Clone)]
pub(super) struct Pair {
    /// Registry requests: redirects judged by [`redirect::registry_policy`].
    pub api: reqwest::Client,
    /// Token requests: redirects within the realm's origin only.
    pub token: reqwest::Client,
}

impl Pair {
    fn new(cas: &[reqwest::Certificate]) -> reqwest::Result<Pair> {
        let build = |policy| {
            let mut builder = reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .read_timeout(READ_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(policy);
            for ca in cas {
                builder = builder.add_root_certificate(ca.clone());
            }
            builder.build()
        };
        Ok(Pair {
            api: build(redirect::registry_policy())?,
            token: build(redirect::token_policy())?,
        })
    }
}

/// Every client of a pass.
#[derive(Clone)]
pub(super) struct Clients {
    /// System roots only: registries without a `ca_file`, and any host a registry sends a
    /// request on to outside its own (an upload location elsewhere).
    system: Pair,
    /// By API host: the pair trusting that registry's `ca_file`.
    scoped: BTreeMap<String, Pair>,
}

impl Clients {
    /// Clients for `cas`, each an API host and the `ca_file` it trusts; `name` and the file
    /// are named in an error. Fails on a CA file that cannot be read or used.
    pub(super) fn new<'a>(
        cas: impl IntoIterator<Item = (String, &'a str, &'a Path)>,
    ) -> Result<Clients, String> {
        let setup = |e: reqwest::Error| format!("cannot set up the HTTP client: {e}");
        let mut by_content: BTreeMap<Vec<u8>, Pair> = BTreeMap::new();
        let mut scoped = BTreeMap::new();
        for (host, name, ca) in cas {
            let data = std::fs::read(ca)
                .map_err(|e| format!("cannot read ca_file {} for {name}: {e}", ca.display()))?;
            let pair = match by_content.get(&data) {
                Some(pair) => pair.clone(),
                None => {
                    // Every certificate of a bundle, as containerd and curl read one.
                    let certificates = reqwest::Certificate::from_pem_bundle(&data)
                        .ok()
                        .filter(|found| !found.is_empty())
                        .ok_or_else(|| {
                            format!(
                                "cannot use ca_file {} for {name}: no PEM certificate in it",
                                ca.display()
                            )
                        })?;
                    let pair = Pair::new(&certificates).map_err(setup)?;
                    by_content.insert(data, pair.clone());
                    pair
                }
            };
            scoped.insert(host, pair);
        }
        Ok(Clients {
            system: Pair::new(&[]).map_err(setup)?,
            scoped,
        })
    }

    /// The clients for requests made on behalf of the registry at API `host` to where it is
    /// reached: its own host, its `endpoint`, or the realm its `/v2/` named.
    pub(super) fn of(&self, host: &str) -> &Pair {
        self.scoped.get(host).unwrap_or(&self.system)
    }

    /// The client for a request a registry sends on to a host of no registry's (an upload
    /// location elsewhere): system roots only.
    pub(super) fn elsewhere(&self) -> &reqwest::Client {
        &self.system.api
    }
}
