//! `tag_api` and `head_every` of a `[registries."host"]` section: whether tags are compared
//! through Docker Hub's tag API, where it is, and how often a pass HEADs every tag anyway.

use toml::Spanned;

use super::expand::Resolver;
use super::file::{RawRegistry, RawTagApi};
use super::{ConfigError, Endpoint, TagApi, DEFAULT_HEAD_EVERY, DOCKER_HUB_TAG_API};
use crate::reference::{canonical_registry, is_loopback, DOCKER_HUB};

impl Resolver<'_> {
    /// The section's tag API: as written, else Docker Hub's own for Docker Hub (unless an
    /// `endpoint` stands in front of it: machines that reach Docker Hub only through a proxy
    /// would spend a failed connection on every repository), else none.
    pub(super) fn tag_api(
        &self,
        name: &Spanned<String>,
        raw: &RawRegistry,
        endpoint: Option<&Endpoint>,
    ) -> Result<Option<TagApi>, ConfigError> {
        let key = |field: &str| format!("registries.{:?}.{field}", name.get_ref());
        let docker_hub = canonical_registry(name.get_ref()) == DOCKER_HUB;
        let head_every = match &raw.head_every {
            Some(text) => self.duration(text, &key("head_every"))?,
            None => DEFAULT_HEAD_EVERY,
        };
        let base = match raw.tag_api.as_ref().map(|t| (t.get_ref(), t.span())) {
            None if docker_hub && endpoint.is_none() => DOCKER_HUB_TAG_API.to_string(),
            None | Some((RawTagApi::Switch(false), _)) => {
                if let Some(set) = &raw.head_every {
                    return Err(self.at(
                        set.span(),
                        format!(
                            "{} is set but this registry compares by HEAD alone: it bounds how \
                             long {} may leave a moved tag unseen",
                            key("head_every"),
                            key("tag_api")
                        ),
                    ));
                }
                return Ok(None);
            }
            Some((RawTagApi::Switch(true), _)) if docker_hub => DOCKER_HUB_TAG_API.to_string(),
            Some((RawTagApi::Switch(true), span)) => {
                return Err(self.at(
                    span,
                    format!(
                        "{} = true: only Docker Hub's tag API is known; give the URL of a server \
                         that speaks it (\"https://hub.example.com\") or leave it out",
                        key("tag_api")
                    ),
                ))
            }
            Some((RawTagApi::At(url), span)) => {
                let written = Spanned::new(span.clone(), url.clone());
                self.tag_api_url(&written, &key("tag_api"))?
            }
        };
        Ok(Some(TagApi { base, head_every }))
    }

    /// `tag_api = "https://host[:port][/path]"`: HTTPS, or plain HTTP on loopback; no
    /// credentials, query or fragment.
    fn tag_api_url(&self, written: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let text = self.expand(written, key)?;
        let refuse = |why: &str| self.at(written.span(), format!("{key} {text:?}: {why}"));
        let url = reqwest::Url::parse(&text)
            .map_err(|_| refuse("not a URL; write it like \"https://hub.docker.com\""))?;
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&authority) => {}
            "http" => return Err(refuse("plain HTTP is allowed on loopback only")),
            _ => return Err(refuse("the scheme must be https: (or http: on loopback)")),
        }
        if host.is_empty() {
            return Err(refuse("names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(
                "holds credentials, which a tag API URL never carries",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("takes no query or fragment"));
        }
        Ok(format!(
            "{}://{authority}{}",
            url.scheme(),
            url.path().trim_end_matches('/')
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::resolve::tests::resolve_with;
    use super::*;
    use std::time::Duration;

    const BASE: &str =
        "images = [\"nginx:1\", \"127.0.0.1:5000/a/b:1\"]\n[defaults]\ntarget = \"r.io\"\n";

    fn tag_api(extra: &str, registry: &str) -> Option<TagApi> {
        let config = resolve_with(&format!("{BASE}{extra}"), &[]).unwrap();
        config.registries[registry].tag_api.clone()
    }

    #[test]
    fn docker_hub_has_its_tag_api_unless_switched_off_and_others_only_when_given_one() {
        let hub = tag_api("", "docker.io").unwrap();
        assert_eq!(hub.base, DOCKER_HUB_TAG_API);
        assert_eq!(hub.head_every, DEFAULT_HEAD_EVERY);
        assert_eq!(tag_api("", "127.0.0.1:5000"), None);
        let off = "[registries.\"docker.io\"]\ntag_api = false\n";
        assert_eq!(tag_api(off, "docker.io"), None);
        let proxied = "[registries.\"docker.io\"]\nendpoint = \"https://proxy.example.com/hub\"\n";
        assert_eq!(
            tag_api(proxied, "docker.io"),
            None,
            "off behind an endpoint"
        );
        let local = "[registries.\"127.0.0.1:5000\"]\ntag_api = \"http://127.0.0.1:6000/\"\nhead_every = \"1h\"\n";
        assert_eq!(
            tag_api(local, "127.0.0.1:5000"),
            Some(TagApi {
                base: "http://127.0.0.1:6000".to_string(),
                head_every: Duration::from_secs(3600)
            })
        );
    }

    #[test]
    fn a_tag_api_that_cannot_be_used_is_refused() {
        for (bad, expected) in [
            (
                "[registries.\"ghcr.io\"]\ntag_api = true\n",
                "only Docker Hub's tag API is known",
            ),
            (
                "[registries.\"docker.io\"]\ntag_api = \"http://hub.example.com\"\n",
                "plain HTTP is allowed on loopback only",
            ),
            (
                "[registries.\"docker.io\"]\ntag_api = \"https://u:p@hub.example.com\"\n",
                "holds credentials",
            ),
            (
                "[registries.\"docker.io\"]\ntag_api = false\nhead_every = \"1h\"\n",
                "compares by HEAD alone",
            ),
            (
                "[registries.\"docker.io\"]\nhead_every = \"often\"\n",
                "registries.\"docker.io\".head_every:",
            ),
            ("[registries.\"docker.io\"]\ntag_api = 3\n", "tag_api"),
        ] {
            let err = resolve_with(&format!("{BASE}{bad}"), &[]).unwrap_err();
            assert!(err.contains(expected), "{bad:?}\n{err}");
        }
    }
}
