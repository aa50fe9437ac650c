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
//! A listing is bounded like everything read from a registry: each page's size, the bytes of
//! all its pages together, the number of pages and of tags, and a `next` link may neither
//! leave the registry's host nor come back to a page already read. Names that are not tags
//! (the grammar's `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) are dropped as each page is parsed,
//! counted, and a few of them quoted (clipped, control characters escaped), so what a listing
//! holds is at most [`MAX_TAGS`] names of [`TAG_MAX`](crate::reference::TAG_MAX) bytes (12.2 MiB), whatever the pages
//! held. A page is parsed where it was read: a name is copied only once it is known to be a
//! tag.

use std::collections::HashSet;
use std::fmt;

use std::time::SystemTime;

use oci_client::Reference;
use reqwest::header::{HeaderMap, ACCEPT, LINK};
use reqwest::Url;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::auth::Access;
use super::limits::{human_bytes, read_body};
use super::ratelimit::RateLimitInfo;
use super::requests::Kind;
use super::retry::retrying;
use super::waiting::Waiter;
use super::{Failure, Registries, RegistryError};
use crate::reference::{api_host, is_tag, Repository};

/// Tags asked for per page: the most ECR accepts.
pub const PAGE_SIZE: usize = 1000;
/// The most bytes one page may take: 100,000 tags of 80 characters.
const MAX_PAGE_BYTES: usize = 8 << 20;
/// The most bytes all the pages of one listing may take: [`MAX_TAGS`] tags of [`TAG_MAX`](crate::reference::TAG_MAX)
/// characters, quoted and separated, are 13 MB; a registry sending more is sending
/// something else.
const MAX_LISTING_BYTES: usize = 32 << 20;
/// The most tags one repository may list; a registry that keeps paging past it is refused.
pub const MAX_TAGS: usize = 100_000;
/// The most pages one listing may take (a registry paging one tag at a time stops here).
const MAX_PAGES: usize = 2_000;
/// Names that are not tags a listing quotes (it counts them all).
const QUOTED_NAMES: usize = 3;
/// The most characters of such a name quoted.
const QUOTED_CHARS: usize = 40;

const ACTION: &str = "list tags";

/// Every tag a repository listed, and what listing it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// In the order the registry sent them (not necessarily sorted, whatever the spec says).
    pub tags: Vec<String>,
    /// Names the registry listed that are not tags: left out.
    pub left_out: LeftOut,
    /// Requests sent, retries included.
    pub requests: u64,
}

/// Names a listing left out because they are not tags: how many, and the first few quoted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub count: usize,
    /// At most [`QUOTED_NAMES`], each clipped to [`QUOTED_CHARS`] characters, quoted, with
    /// control characters escaped: safe to put in a log line or a report.
    pub quoted: Vec<String>,
}

impl LeftOut {
    /// Counts `name` as left out, quoting it if there is room.
    pub(crate) fn add(&mut self, name: &str) {
        self.count += 1;
        if self.quoted.len() < QUOTED_NAMES {
            self.quoted.push(quote(name));
        }
    }

    fn extend(&mut self, other: LeftOut) {
        self.count += other.count;
        let room = QUOTED_NAMES.saturating_sub(self.quoted.len());
        self.quoted.extend(other.quoted.into_iter().take(room));
    }
}

/// `"a2\u{1b}[31m… (9 more characters)"`, and `and 7 more` after the quoted ones.
impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted.join(", "))?;
        match self.count.saturating_sub(self.quoted.len()) {
            0 => Ok(()),
            more => write!(f, " and {more} more"),
        }
    }
}

/// `name` quoted for a message: one line of at most [`QUOTED_CHARS`] characters, control
/// characters escaped ([`crate::untrusted::line`]).
fn quote(name: &str) -> String {
    format!("\"{}\"", crate::untrusted::line(name, QUOTED_CHARS))
}

/// One page as the registry sent it, its names that are not tags left out.
#[derive(Debug)]
struct Page {
    tags: Vec<String>,
    left_out: LeftOut,
    /// Its size in bytes.
    bytes: usize,
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
            left_out: LeftOut::default(),
            requests: 0,
        };
        let mut visited = HashSet::new();
        let mut read = 0;
        loop {
            visited.insert(url.clone());
            let room = MAX_TAGS - listing.tags.len();
            let page = retrying(waiter, || {
                listing.requests += 1;
                self.budgets.of(host).count_tag_list();
                self.tags_page(&reference, &url, &subject, room)
            })
            .await?;
            listing.tags.extend(page.tags);
            listing.left_out.extend(page.left_out);
            read += page.bytes;
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
            if read >= MAX_LISTING_BYTES {
                return Err(fail(Failure::TooLarge(format!(
                    "a tag listing of {} in {} pages, with more to come; the limit is {}",
                    human_bytes(read as u64),
                    visited.len(),
                    human_bytes(MAX_LISTING_BYTES as u64)
                ))));
            }
            url = next;
        }
    }

    /// One page: its tags (at most `room` of them), and the link to the next one, if any.
    async fn tags_page(
        &self,
        reference: &Reference,
        url: &Url,
        subject: &str,
        room: usize,
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
            let (tags, left_out) = parse_tags(&body, room).map_err(|e| {
                let failure = match e {
                    PageError::TooManyTags => Failure::Protocol(format!(
                        "the repository lists more than {MAX_TAGS} tags; regmirror reads at most that many"
                    )),
                    PageError::Invalid(e) => {
                        Failure::Protocol(format!("the tag list is not valid: {e}"))
                    }
                };
                RegistryError::with(ACTION, subject, failure)
            })?;
            Ok(Page {
                tags,
                left_out,
                bytes: body.len(),
                next,
            })
        };
        let build =
            |http: &reqwest::Client| http.get(url.clone()).header(ACCEPT, "application/json");
        self.exchange(
            ACTION,
            &subject,
            reference,
            (Access::Pull, Kind::List),
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

/// Why a page's tags were not read.
#[derive(Debug, PartialEq, Eq)]
pub enum PageError {
    /// Not a tag list: what serde found wrong.
    Invalid(String),
    /// More tags than the listing had room for.
    TooManyTags,
}

/// The tags of a `tags/list` body, `{"name": "…", "tags": ["…", …]}` (`null` or missing tags,
/// an empty repository for some registries, are none), at most `room` of them; names that are
/// not tags are left out. Each name is checked where it lies in `body` and copied only if it
/// is a tag; other fields are skipped unread.
pub fn parse_tags(body: &[u8], room: usize) -> Result<(Vec<String>, LeftOut), PageError> {
    let mut kept = Kept {
        tags: Vec::new(),
        left_out: LeftOut::default(),
        room,
        overflowed: false,
    };
    let mut reader = serde_json::Deserializer::from_slice(body);
    let parsed = PageSeed(&mut kept)
        .deserialize(&mut reader)
        .and_then(|()| reader.end());
    match parsed {
        Ok(()) => Ok((kept.tags, kept.left_out)),
        Err(_) if kept.overflowed => Err(PageError::TooManyTags),
        Err(e) => Err(PageError::Invalid(e.to_string())),
    }
}

/// What parsing a page keeps.
struct Kept {
    tags: Vec<String>,
    left_out: LeftOut,
    room: usize,
    /// Set when a tag past `room` ended the parse.
    overflowed: bool,
}

/// The page's object: `tags` read into [`Kept`], any other field skipped.
struct PageSeed<'a>(&'a mut Kept);

/// A field of the page's object.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Tags,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tag list object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Tags => map.next_value_seed(TagsSeed(&mut *self.0))?,
                Field::Other => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `tags` array (or `null`).
struct TagsSeed<'a>(&'a mut Kept);

impl<'de> DeserializeSeed<'de> for TagsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for TagsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tags or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(TagSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One name of the array: kept if it is a tag and there is room, else counted.
struct TagSeed<'a>(&'a mut Kept);

impl<'de> DeserializeSeed<'de> for TagSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TagSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tag")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<(), E> {
        let kept = self.0;
        if !is_tag(name) {
            kept.left_out.add(name);
            return Ok(());
        }
        if kept.tags.len() >= kept.room {
            kept.overflowed = true;
            return Err(E::custom("too many tags"));
        }
        kept.tags.push(name.to_owned());
        Ok(())
    }
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

    fn tags_of(body: &[u8]) -> Vec<String> {
        parse_tags(body, MAX_TAGS).unwrap().0
    }

    #[test]
    fn tag_lists_parse_with_null_and_missing_tags() {
        assert_eq!(tags_of(br#"{"name":"a","tags":["1","2"]}"#), ["1", "2"]);
        assert!(tags_of(br#"{"name":"a","tags":null}"#).is_empty());
        assert!(tags_of(br#"{"name":"a"}"#).is_empty());
        assert!(tags_of(br#"{"tags":["v\u0031"],"name":{"x":[1]}}"#) == ["v1"]);
        assert!(parse_tags(br#"{"tags":[1]}"#, MAX_TAGS).is_err());
        assert!(parse_tags(b"<html>", MAX_TAGS).is_err());
        assert!(parse_tags(br#"{"tags":[]} x"#, MAX_TAGS).is_err());
    }

    #[test]
    fn names_that_are_not_tags_are_counted_and_a_few_quoted_clipped_and_escaped() {
        let long = "a".repeat(2 << 20);
        let body = serde_json::json!({
            "name": "x",
            "tags": [long, "1.0", "bad\u{1b}[31mred\n", "-dash", "t".repeat(129), "", "ok_2"],
        })
        .to_string();
        let (tags, left_out) = parse_tags(body.as_bytes(), MAX_TAGS).unwrap();
        assert_eq!(tags, ["1.0", "ok_2"]);
        assert_eq!(left_out.count, 5);
        assert_eq!(
            left_out.to_string(),
            format!(
                "\"{}… ({} more characters)\", \"bad\\u{{1b}}[31mred\\n\", \"-dash\" and 2 more",
                "a".repeat(QUOTED_CHARS),
                (2 << 20) - QUOTED_CHARS
            )
        );
        assert!(left_out.to_string().len() < 200);
        let mut all = LeftOut::default();
        all.extend(left_out.clone());
        all.extend(left_out);
        assert_eq!((all.count, all.quoted.len()), (10, QUOTED_NAMES));
    }

    #[test]
    fn a_page_past_the_room_left_is_refused() {
        let body = br#"{"tags":["a","b","c"]}"#;
        assert_eq!(parse_tags(body, 3).unwrap().0.len(), 3);
        assert_eq!(parse_tags(body, 2).unwrap_err(), PageError::TooManyTags);
    }
}
