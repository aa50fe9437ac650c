//! The registry's side of authentication: what `/v2/` asks for, and bearer tokens from the
//! realm it names.
//!
//! Spoken by regmirror itself, so that where credentials go is its own decision:
//!
//! - A realm on another host is normal (`auth.docker.io` for Docker Hub). A realm reached over
//!   plain HTTP from a registry reached over HTTPS is refused outright: the password (or the
//!   token it buys) would cross the network in clear.
//! - Basic credentials are sent to the realm with a `GET` (the token spec's form); an identity
//!   token (Docker's `<token>` username) is exchanged with the OAuth2 form,
//!   `POST grant_type=refresh_token` (distribution's `spec/auth/oauth`).
//! - A redirect is followed only within the realm's origin (see [`super::redirect`]): one to
//!   another host or to plain HTTP fails the request, with nothing sent there.
//! - Answers are bounded in size ([`super::limits::MAX_TOKEN_BYTES`]) and, by the caller, in
//!   time.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{StatusCode, Url};

use super::error::clip;
use super::limits::{error_body, read_body, MAX_TOKEN_BYTES};
use super::{Failure, RegistryError};
use crate::credentials::Credentials;

/// Sent as `client_id` in OAuth2 token requests.
const CLIENT_ID: &str = "regmirror";
/// A bearer token is used for three quarters of its announced life, within these bounds:
/// long enough to matter, short enough that a refused stale token is rare (a 401 costs one
/// fresh token and nothing worse).
const MIN_TOKEN_LIFE: Duration = Duration::from_secs(10);
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(240);
/// The token spec's lifetime of a token whose answer does not say.
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);

/// How a registry wants to be spoken to, from the `WWW-Authenticate` of its `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    /// Nothing asked: requests go without credentials, or with basic ones when configured.
    Open,
    /// HTTP basic authentication on every request.
    Basic,
    /// Bearer tokens from `realm`, for `service`.
    Bearer { realm: Url, service: Option<String> },
}

impl Challenge {
    /// What `GET /v2/` answered. `plain_http` says the registry itself is reached without TLS.
    pub(super) fn from_answer(
        status: StatusCode,
        header: Option<&HeaderValue>,
        plain_http: bool,
    ) -> Result<Challenge, Failure> {
        let Some(header) = header else {
            return match status {
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    Err(Failure::Status {
                        status: s.as_u16(),
                        message: "answered /v2/ with an error".to_string(),
                    })
                }
                // Other answers without a challenge ask for nothing either.
                _ => Ok(Challenge::Open),
            };
        };
        let text = String::from_utf8_lossy(header.as_bytes());
        let challenges = parse(&text);
        let bearer = challenges
            .iter()
            .find(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
        let Some((_, params)) = bearer else {
            // Basic, or a scheme regmirror does not speak: basic credentials are all it has.
            return Ok(Challenge::Basic);
        };
        let param = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let realm = param("realm")
            .ok_or_else(|| Failure::Protocol("a Bearer challenge without a realm".to_string()))?;
        let url = Url::parse(&realm).map_err(|_| {
            Failure::Protocol(format!("token realm {:?} is not a URL", clip(&realm)))
        })?;
        match url.scheme() {
            "https" => {}
            "http" if plain_http => {}
            "http" => {
                return Err(Failure::Refused(format!(
                    "the registry is reached over HTTPS but names a plain-HTTP token realm, {}: \
                     credentials and tokens would cross the network in clear",
                    clip(url.as_str())
                )))
            }
            other => {
                return Err(Failure::Protocol(format!(
                    "token realm {} is neither https: nor http: but {other}:",
                    clip(url.as_str())
                )))
            }
        }
        Ok(Challenge::Bearer {
            realm: url,
            service: param("service"),
        })
    }
}

/// A bearer token and how long to use it.
pub(super) struct Token {
    pub header: HeaderValue,
    pub life: Duration,
}

/// Asks `realm` for a token for `scope`: anonymously, with basic credentials, or by
/// exchanging an identity token.
pub(super) async fn fetch(
    http: &reqwest::Client,
    realm: &Url,
    service: Option<&str>,
    scope: &str,
    login: Option<&Credentials>,
) -> Result<Token, Failure> {
    let request = match login.and_then(Credentials::identity_token) {
        Some(refresh) => {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
                ("client_id", CLIENT_ID),
                ("scope", scope),
            ];
            form.extend(service.map(|s| ("service", s)));
            http.post(realm.clone()).form(&form)
        }
        None => {
            let mut url = realm.clone();
            url.query_pairs_mut().append_pair("scope", scope);
            if let Some(service) = service {
                url.query_pairs_mut().append_pair("service", service);
            }
            let request = http.get(url);
            match login {
                Some(c) => request.header(
                    reqwest::header::AUTHORIZATION,
                    super::auth::basic(&c.username, c.password.expose()),
                ),
                None => request,
            }
        }
    };
    let response = request
        .send()
        .await
        .map_err(|e| RegistryError::transport("", "", &e).failure)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(Failure::Refused(refused_redirect(&response)));
    }
    if !status.is_success() {
        let body = error_body(response).await;
        let failure = RegistryError::from_response("", "", status.as_u16(), &body, false).failure;
        return Err(match failure {
            Failure::Denied(m) => Failure::Denied(format!("the token realm refused: {m}")),
            other => other,
        });
    }
    let body = read_body(response, MAX_TOKEN_BYTES, "a token answer").await?;
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let answer: Answer = serde_json::from_slice(&body)
        .map_err(|e| Failure::Protocol(format!("the token realm answered no token: {e}")))?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Protocol("the token realm answered no token".to_string()))?;
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        Failure::Protocol("the token realm answered a token that is not a header value".into())
    })?;
    header.set_sensitive(true);
    let announced = answer
        .expires_in
        .map_or(DEFAULT_TOKEN_LIFE, |s| Duration::from_secs(s.min(86_400)));
    Ok(Token {
        header,
        life: (announced * 3 / 4).clamp(MIN_TOKEN_LIFE, MAX_TOKEN_LIFE),
    })
}

/// Why a redirect from the realm was not followed, naming where it led (its origin only: the
/// rest may carry anything).
fn refused_redirect(response: &reqwest::Response) -> String {
    let target = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| response.url().join(l).ok())
        .map_or_else(
            || "nowhere usable".to_string(),
            |url| url.origin().ascii_serialization(),
        );
    format!(
        "the token realm redirects to {}: token requests follow no redirect to another \
         origin, so credentials stay with the realm the registry named",
        clip(&target)
    )
}

/// `WWW-Authenticate` → challenges, each a scheme and its parameters (RFC 7235: schemes and
/// parameter names case-insensitive, values tokens or quoted strings).
fn parse(value: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut challenges: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let word_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        if word_end == 0 {
            return challenges;
        }
        let word = &rest[..word_end];
        let after = rest[word_end..].trim_start();
        match (after.strip_prefix('='), challenges.last_mut()) {
            (Some(value), Some((_, params))) => {
                let (value, remainder) = parameter_value(value.trim_start());
                params.push((word.to_string(), value));
                rest = remainder;
            }
            // A parameter before any scheme: nothing to attach it to.
            (Some(value), None) => rest = parameter_value(value.trim_start()).1,
            (None, _) => {
                challenges.push((word.to_string(), Vec::new()));
                rest = after;
            }
        }
    }
}

/// A token or quoted string at the start of `text`, and what follows it.
fn parameter_value(text: &str) -> (String, &str) {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        return (value, "");
    }
    let end = text.find([',', ' ', '\t']).unwrap_or(text.len());
    (text[..end].to_string(), &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(value: &str, plain_http: bool) -> Result<Challenge, Failure> {
        Challenge::from_answer(
            StatusCode::UNAUTHORIZED,
            Some(&HeaderValue::from_str(value).unwrap()),
            plain_http,
        )
    }

    #[test]
    fn docker_hubs_challenge_is_read() {
        let c = challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
            false,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: Url::parse("https://auth.docker.io/token").unwrap(),
                service: Some("registry.docker.io".into()),
            }
        );
        let lower = challenge(r#"bearer REALM="https://a.io/t", service=x"#, false).unwrap();
        assert!(matches!(lower, Challenge::Bearer { service: Some(s), .. } if s == "x"));
        let both = challenge(
            r#"Basic realm="x", Bearer realm="https://a.io/t",service="s""#,
            false,
        );
        assert!(matches!(both, Ok(Challenge::Bearer { .. })));
        assert_eq!(
            challenge(r#"Basic realm="Registry Realm""#, false).unwrap(),
            Challenge::Basic
        );
    }

    #[test]
    fn a_plain_http_realm_is_refused_for_an_https_registry_only() {
        let http = r#"Bearer realm="http://auth.example.com/token",service="r""#;
        let refused = challenge(http, false).unwrap_err();
        assert!(matches!(refused, Failure::Refused(_)), "{refused}");
        assert!(refused.to_string().contains("in clear"), "{refused}");
        assert!(challenge(http, true).is_ok(), "a plain-HTTP registry");
        for bad in [
            r#"Bearer realm="file:///etc/passwd""#,
            r#"Bearer realm="not a url""#,
            r#"Bearer service="r""#,
        ] {
            assert!(
                matches!(challenge(bad, false), Err(Failure::Protocol(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn answers_without_a_challenge() {
        let open = Challenge::from_answer(StatusCode::OK, None, false);
        assert_eq!(open.unwrap(), Challenge::Open);
        let down = Challenge::from_answer(StatusCode::SERVICE_UNAVAILABLE, None, false);
        assert!(matches!(down, Err(Failure::Status { status: 503, .. })));
    }

    #[test]
    fn escapes_and_garbage_do_not_break_the_parser() {
        let parsed = parse(r#"Bearer realm="a\"b",x=y,, ,=z"#);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1[0], ("realm".to_string(), "a\"b".to_string()));
        for garbage in [
            "",
            "=",
            "\"",
            "Bearer realm=\"",
            ",,,",
            "a b c d=",
            "=x y=z",
        ] {
            let _ = parse(garbage);
        }
    }
}
