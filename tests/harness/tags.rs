//! Tag listings as other registries page them, as a proxy rule in front of distribution 2.8
//! (which ignores `n` and `last` and answers every tag at once, unsorted).
//!
//! [`paged_tags`] reads the real registry's whole list, sorts it lexically as the spec says,
//! and answers one page of it with a `Link: <…>; rel="next"` to the rest, written the way a
//! chosen registry writes it. The page size honours the client's `n` (capped), or ignores it
//! as some registries do.

use super::proxy::{Action, Answer, RequestInfo, Rule};

/// How the `next` link is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStyle {
    /// `</v2/<repo>/tags/list?n=N&last=TAG>`: distribution 3.x, GHCR.
    Relative,
    /// `<http://host/v2/<repo>/tags/list?n=N&last=TAG>`: ECR (with an opaque `last`).
    Absolute,
    /// `<list?page=K>`, relative to the current path, with a token only the proxy can read:
    /// Quay-style; the client must treat the query as opaque.
    Opaque,
}

/// How pages are cut.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    /// The most tags per page, whatever the client asks for.
    pub page: usize,
    /// Ignore the client's `n` entirely (serve `page` per page even when it asks for fewer or
    /// more).
    pub ignore_n: bool,
    pub style: LinkStyle,
}

/// `GET /v2/<repo>/tags/list` answered page by page; `proxy_host` is the proxy's `host:port`
/// (for absolute links).
pub fn paged_tags(paging: Paging, proxy_host: &str) -> impl Rule {
    let proxy_host = proxy_host.to_owned();
    move |request: &RequestInfo| {
        if request.method != "GET" || request.endpoint() != super::proxy::Endpoint::Tags {
            return None;
        }
        let repo = request.repo().to_owned();
        let query = query_of(&request.path);
        let asked: Option<usize> = query
            .iter()
            .find(|(k, _)| k == "n")
            .and_then(|(_, v)| v.parse().ok());
        let size = match (paging.ignore_n, asked) {
            (false, Some(n)) => n.min(paging.page),
            _ => paging.page,
        }
        .max(1);
        let start_after: Option<String> = match paging.style {
            LinkStyle::Opaque => query
                .iter()
                .find(|(k, _)| k == "page")
                .map(|(_, v)| decode_token(v)),
            _ => query.iter().find(|(k, _)| k == "last").map(|(_, v)| {
                if paging.style == LinkStyle::Absolute {
                    decode_token(v)
                } else {
                    v.clone()
                }
            }),
        };
        let proxy_host = proxy_host.clone();
        Some(Action::Rewrite(Box::new(move |answer: Answer| {
            if answer.status != 200 {
                return answer;
            }
            let list: serde_json::Value =
                serde_json::from_slice(&answer.body).expect("the registry's tag list is JSON");
            let mut tags: Vec<String> = list["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            tags.sort();
            let from = match &start_after {
                Some(last) => tags.partition_point(|t| t <= last),
                None => 0,
            };
            let page: Vec<String> = tags[from..].iter().take(size).cloned().collect();
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            if from + page.len() < tags.len() {
                let last = page.last().cloned().unwrap_or_default();
                let link = match paging.style {
                    LinkStyle::Relative => {
                        format!("</v2/{repo}/tags/list?n={size}&last={last}>; rel=\"next\"")
                    }
                    LinkStyle::Absolute => format!(
                        "<http://{proxy_host}/v2/{repo}/tags/list?n={size}&last={}>; rel=\"next\"",
                        encode_token(&last)
                    ),
                    LinkStyle::Opaque => {
                        format!("<list?page={}>; rel=\"next\"", encode_token(&last))
                    }
                };
                headers.push(("link".to_owned(), link));
            }
            let body = serde_json::json!({ "name": repo, "tags": page });
            Answer {
                status: 200,
                headers,
                body: body.to_string().into_bytes(),
            }
        })))
    }
}

/// Answers `GET /v2/<repo>/tags/list` with every tag in one page but in reverse lexical order
/// and ignoring `n`, as some registries do (the spec's order is not to be relied on).
pub fn unsorted_tags() -> impl Rule {
    |request: &RequestInfo| {
        if request.method != "GET" || request.endpoint() != super::proxy::Endpoint::Tags {
            return None;
        }
        Some(Action::Rewrite(Box::new(|mut answer: Answer| {
            if answer.status == 200 {
                let mut list: serde_json::Value =
                    serde_json::from_slice(&answer.body).expect("tag list JSON");
                if let Some(tags) = list["tags"].as_array_mut() {
                    tags.sort_by(|a, b| b.as_str().cmp(&a.as_str()));
                }
                answer.body = list.to_string().into_bytes();
            }
            answer
        })))
    }
}

fn query_of(path: &str) -> Vec<(String, String)> {
    path.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A token the client cannot read as a tag: the tag's bytes in hex, reversed.
fn encode_token(tag: &str) -> String {
    tag.bytes().rev().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> String {
    let bytes: Vec<u8> = (0..token.len() / 2)
        .filter_map(|i| u8::from_str_radix(&token[2 * i..2 * i + 2], 16).ok())
        .rev()
        .collect();
    String::from_utf8(bytes).expect("a token this rule wrote")
}
