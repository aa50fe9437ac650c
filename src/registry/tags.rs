//! Listing a repository's tags: `GET /v2/<name>/tags/list`, page after page.
//!
//! Registries differ (see the README): distribution 2.8 ignores `n` and answers every tag at
//! once, ECR pages 100 by default and refuses `n` over 1000, GHCR and Quay page with `Link`
//! headers, absolute or relative. So regmirror asks for 1000 at a time, follows
//! `Link: <…>; rel="next"` resolved against the URL it asked (its query is the registry's
//! business), and takes whatever page size comes back. Listing is not a pull, but it is a
//! request: each page goes through the one retry policy, so a 429 waits like any other, and
//! every request is counted per registry.
//!
//! A listing is bounded like everything read from a registry: each page's size, the number of
//! pages and of tags, and a `next` link may neither leave the registry's host nor come back
//! to a page already read.

use std::collections::HashSet;

use std::time::SystemTime;

use oci_client::{Reference, RegistryOperation};
use reqwest::header::{HeaderMap, ACCEPT, LINK};
use reqwest::Url;
use serde::Deserialize;

use super::limits::read_body;
use super::ratelimit::RateLimitInfo;
use super::retry::retrying;
use super::waiting::Waiter;
use super::{Failure, Registries, RegistryError};
use crate::reference::{api_host, Repository};

/// Tags asked for per page: the most ECR accepts.
pub const PAGE_SIZE: usize = 1000;
/// The most bytes one page may take: 100,000 tags of 80 characters.
const MAX_PAGE_BYTES: usize = 8 << 20;
/// The most tags one repository may list; a registry that keeps paging past it is refused.
pub const MAX_TAGS: usize = 100_000;
/// The most pages one listing may take (a registry paging one tag at a time stops here).
const MAX_PAGES: usize = 2_000;

const ACTION: &str = "list tags";

/// Every tag a repository listed, and what listing it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// In the order the registry sent them (not necessarily sorted, whatever the spec says).
    pub tags: Vec<String>,
    /// Requests sent, retries included.
    pub requests: u64,
}

/// One page as the registry sent it.
#[derive(Debug)]
struct Page {
    tags: Vec<String>,
    /// The `next` link, resolved against the page's URL.
    next: Option<Url>,
}

impl Registries {
    /// Lists every tag of `repository`, following the registry's pages.
    pub async fn list_tags(
        &self,
        repository: &Repository,
        waiter: &Waiter,
    ) -> Result<Listing, RegistryError> {
        let host = api_host(&repository.registry);
        let subject = repository.to_string();
        let fail = |failure| RegistryError::with(ACTION, &subject, failure);
        let first = self.url(
            host,
            &format!("{}/tags/list?n={PAGE_SIZE}", repository.repository),
        );
        let mut url = Url::parse(&first).map_err(|e| {
            fail(Failure::Protocol(format!(
                "cannot build the URL {first}: {e}"
            )))
        })?;
        let reference = Reference::with_tag(
            host.to_string(),
            repository.repository.clone(),
            "latest".into(),
        );
        let mut listing = Listing {
            tags: Vec::new(),
            requests: 0,
        };
        let mut visited = HashSet::new();
        loop {
            visited.insert(url.clone());
            let page = retrying(waiter, || {
                listing.requests += 1;
                self.budgets.of(host).count_tag_list();
                self.tags_page(&reference, &url, &subject)
            })
            .await?;
            listing.tags.extend(page.tags);
            if listing.tags.len() > MAX_TAGS {
                return Err(fail(Failure::Protocol(format!(
                    "the repository lists more than {MAX_TAGS} tags; regmirror reads at most that many"
                ))));
            }
            let Some(next) = page.next else {
                return Ok(listing);
            };
            if next.origin() != url.origin() {
                return Err(fail(Failure::Protocol(format!(
                    "the next page's link leads to another host ({next}); not followed"
                ))));
            }
            if visited.contains(&next) {
                return Err(fail(Failure::Protocol(format!(
                    "the next page's link leads back to a page already read ({next})"
                ))));
            }
            if visited.len() >= MAX_PAGES {
                return Err(fail(Failure::Protocol(format!(
                    "the listing did not end within {MAX_PAGES} pages"
                ))));
            }
            url = next;
        }
    }

    /// One page: its tags and the link to the next one, if any.
    async fn tags_page(
        &self,
        reference: &Reference,
        url: &Url,
        subject: &str,
    ) -> Result<Page, RegistryError> {
        let plain_http = url.scheme() == "http";
        let mut retry_after = None;
        let retry_after_seen = &mut retry_after;
        let answer = |response: reqwest::Response| async move {
            let status = response.status();
            *retry_after_seen =
                RateLimitInfo::from_headers(response.headers(), SystemTime::now()).retry_after;
            if !status.is_success() {
                return Err(
                    RegistryError::from_answer(ACTION, subject, response, plain_http).await,
                );
            }
            let next = next_link(response.headers(), url);
            let body = read_body(response, MAX_PAGE_BYTES, "a tag list page")
                .await
                .map_err(|failure| RegistryError::with(ACTION, subject, failure))?;
            let tags = parse_tags(&body).map_err(|e| {
                RegistryError::with(
                    ACTION,
                    subject,
                    Failure::Protocol(format!("the tag list is not valid: {e}")),
                )
            })?;
            Ok(Page { tags, next })
        };
        let build =
            |http: &reqwest::Client| http.get(url.clone()).header(ACCEPT, "application/json");
        self.exchange(
            ACTION,
            &subject,
            reference,
            RegistryOperation::Pull,
            build,
            answer,
        )
        .await
        .map_err(|mut err| {
            err.retry_after = retry_after;
            err
        })
    }
}

/// The tags of a `tags/list` body: `{"name": "…", "tags": ["…", …]}`; `null` tags (an empty
/// repository, for some registries) are none.
pub fn parse_tags(body: &[u8]) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct TagList {
        #[serde(default)]
        tags: Option<Vec<String>>,
    }
    serde_json::from_slice::<TagList>(body)
        .map(|list| list.tags.unwrap_or_default())
        .map_err(|e| e.to_string())
}

/// The `rel="next"` target of the `Link` headers, resolved against `base`. Several links may
/// share a header, separated by commas, each `<uri>; param; param`.
pub fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let is_next = params.split(';').any(|param| {
                let Some((name, value)) = param.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            });
            is_next.then(|| base.join(target).ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn links(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(LINK, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn next_links_resolve_against_the_request_url() {
        let base = Url::parse("https://r.io/v2/org/app/tags/list?n=1000").unwrap();
        let cases = [
            // distribution 3.x and GHCR: a path with a query.
            (
                r#"</v2/org/app/tags/list?last=v9&n=1000>; rel="next""#,
                "https://r.io/v2/org/app/tags/list?last=v9&n=1000",
            ),
            // ECR: absolute, with an opaque token.
            (
                r#"<https://r.io/v2/org/app/tags/list?last=ukD72mdD%2F&n=1000>; rel="next""#,
                "https://r.io/v2/org/app/tags/list?last=ukD72mdD%2F&n=1000",
            ),
            // Quay style: relative to the current path, rel unquoted.
            (
                "<list?next_page=abc>; rel=next",
                "https://r.io/v2/org/app/tags/list?next_page=abc",
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                next_link(&links(&[header]), &base)
                    .map(String::from)
                    .as_deref(),
                Some(expected),
                "{header}"
            );
        }
    }

    #[test]
    fn only_the_next_relation_is_followed() {
        let base = Url::parse("https://r.io/v2/a/tags/list").unwrap();
        assert_eq!(
            next_link(&links(&[r#"</v2/a/tags/list?p=0>; rel="prev""#]), &base),
            None
        );
        assert_eq!(
            next_link(
                &links(&[r#"</x?p=0>; rel="prev", </y?p=2>; rel="next""#]),
                &base
            )
            .map(String::from)
            .as_deref(),
            Some("https://r.io/y?p=2")
        );
        assert_eq!(
            next_link(&links(&["</z>; title=\"next\""]), &base),
            None,
            "a parameter other than rel"
        );
        assert_eq!(next_link(&links(&["garbage"]), &base), None);
    }

    #[test]
    fn tag_lists_parse_with_null_and_missing_tags() {
        assert_eq!(
            parse_tags(br#"{"name":"a","tags":["1","2"]}"#).unwrap(),
            ["1", "2"]
        );
        assert!(parse_tags(br#"{"name":"a","tags":null}"#)
            .unwrap()
            .is_empty());
        assert!(parse_tags(br#"{"name":"a"}"#).unwrap().is_empty());
        assert!(parse_tags(br#"{"tags":[1]}"#).is_err());
        assert!(parse_tags(b"<html>").is_err());
    }
}
