//! Where a redirect may lead. The HTTP client follows a registry's redirects itself (a blob
//! GET is sent on to storage); these policies judge each hop before anything connects to it.
//!
//! - A registry's requests are never sent on to a link-local or cloud metadata address
//!   (`169.254.0.0/16`, `fe80::/10`, `fd00:ec2::254`), nor to loopback unless the request
//!   started there: a registry must not turn regmirror into a way to reach the host's own
//!   network. Only addresses written in the `Location` are judged: a name that resolves to one
//!   is not (the resolver is not asked twice).
//! - A token request is sent on only within the realm's origin (scheme, host and port), so a
//!   password or refresh token never follows a redirect to another host, nor into plain HTTP.
//!   Any other redirect is handed back to [`super::token`], which fails with it.

use std::net::{IpAddr, Ipv6Addr};

use reqwest::redirect::Policy;
use reqwest::Url;

/// Hops one request may take, as many as the HTTP client's own default allows.
const MAX_REDIRECTS: usize = 10;

/// A redirect not followed, and why: carried inside the HTTP client's error and recovered by
/// [`super::error`], so the image fails with the reason and is not retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct RedirectRefused(pub String);

/// For every registry request: hops judged by [`registry_hop`].
pub(super) fn registry_policy() -> Policy {
    Policy::custom(
        |attempt| match registry_hop(attempt.previous(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        },
    )
}

/// For token requests: hops within the realm's origin only; any other redirect is returned
/// as the answer.
pub(super) fn token_policy() -> Policy {
    Policy::custom(|attempt| {
        if token_hop(attempt.previous(), attempt.url()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Whether a registry request that went to `previous` (the first is where it started) may be
/// sent on to `next`.
pub(super) fn registry_hop(previous: &[Url], next: &Url) -> Result<(), RedirectRefused> {
    if previous.len() >= MAX_REDIRECTS {
        return Err(RedirectRefused(format!(
            "more than {MAX_REDIRECTS} redirects in a row; not followed"
        )));
    }
    let host = next.host_str().unwrap_or_default();
    if address(next).is_some_and(is_link_local_or_metadata) {
        return Err(RedirectRefused(format!(
            "a redirect to {host}, a link-local or cloud metadata address; not followed"
        )));
    }
    let started_on_loopback = previous.first().is_none_or(is_loopback);
    if is_loopback(next) && !started_on_loopback {
        let from = previous.first().and_then(Url::host_str).unwrap_or_default();
        return Err(RedirectRefused(format!(
            "a redirect from {from} to {host}, the host's own loopback; not followed"
        )));
    }
    Ok(())
}

/// Whether a token request that went to `previous` may be sent on to `next`: same origin,
/// within [`MAX_REDIRECTS`].
pub(super) fn token_hop(previous: &[Url], next: &Url) -> bool {
    previous.len() < MAX_REDIRECTS
        && previous
            .first()
            .is_some_and(|realm| realm.origin() == next.origin())
}

/// The address a URL names literally, IPv4-mapped IPv6 read as the IPv4 it maps. The URL
/// parser has already written any IPv4 form (`2852039166`, `0xa9.0xfe.0xa9.0xfe`) dotted.
fn address(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// `169.254.0.0/16` (the cloud metadata service at `169.254.169.254`, ECS's at
/// `169.254.170.2`), `fe80::/10`, and AWS's IPv6 metadata address `fd00:ec2::254`.
fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == AWS_METADATA_V6,
    }
}

/// Loopback by address (`127.0.0.0/8`, `::1`, and the unspecified `0.0.0.0`/`::`, which
/// reach the local host too) or by name (`localhost`, `*.localhost`).
fn is_loopback(url: &Url) -> bool {
    match address(url) {
        Some(IpAddr::V4(v4)) => v4.is_loopback() || v4.octets()[0] == 0,
        Some(IpAddr::V6(v6)) => v6.is_loopback() || v6.is_unspecified(),
        None => url.host_str().is_some_and(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn hop(from: &str, to: &str) -> Result<(), RedirectRefused> {
        registry_hop(&[url(from)], &url(to))
    }

    #[test]
    fn storage_elsewhere_is_followed() {
        for (from, to) in [
            (
                "https://r.io/v2/a/blobs/sha256:1",
                "https://cdn.example.com/x?sig=1",
            ),
            (
                "https://r.io/v2/a/blobs/sha256:1",
                "http://10.0.0.5:9000/bucket/x",
            ),
            (
                "http://127.0.0.1:5000/v2/a/blobs/x",
                "http://127.0.0.1:9000/x",
            ),
            ("http://localhost:5000/v2/a/blobs/x", "http://[::1]:9000/x"),
            ("https://r.io/v2/", "https://169.254.example.com/x"),
        ] {
            assert_eq!(hop(from, to), Ok(()), "{from} → {to}");
        }
    }

    #[test]
    fn link_local_and_metadata_addresses_are_refused_from_anywhere() {
        for to in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.170.2/v2/credentials",
            "http://[fe80::1]/x",
            "http://[febf::1]/x",
            "http://[fd00:ec2::254]/latest",
            "http://[::ffff:169.254.169.254]/x",
            // The URL parser reads these as 169.254.169.254.
            "http://2852039166/x",
            "http://0xa9.0xfe.0xa9.0xfe/x",
        ] {
            for from in ["https://r.io/v2/a/blobs/x", "http://127.0.0.1:5000/v2/"] {
                let refused = hop(from, to).unwrap_err();
                assert!(
                    refused.0.contains("link-local or cloud metadata"),
                    "{to}: {refused}"
                );
            }
        }
        assert_eq!(hop("https://r.io/", "http://[fec0::1]/x"), Ok(()));
    }

    #[test]
    fn loopback_is_refused_unless_the_request_started_there() {
        for to in [
            "http://127.0.0.1:8080/x",
            "http://127.1.2.3/x",
            "http://[::1]/x",
            "http://0.0.0.0:22/x",
            "http://localhost/x",
            "http://api.localhost./x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            let refused = hop("https://r.io/v2/a/blobs/x", to).unwrap_err();
            assert!(refused.0.contains("from r.io to"), "{to}: {refused}");
            assert!(refused.0.contains("loopback"), "{to}: {refused}");
            assert_eq!(hop("http://127.0.0.1:5000/v2/", to), Ok(()), "{to}");
        }
        // The start of the chain decides, not the hop before.
        let chain = [url("https://r.io/v2/x"), url("http://127.0.0.1:1/y")];
        assert!(registry_hop(&chain, &url("http://127.0.0.1:2/z")).is_err());
    }

    #[test]
    fn a_chain_ends_after_ten_hops() {
        let chain: Vec<Url> = (0..10).map(|i| url(&format!("https://r.io/{i}"))).collect();
        assert!(registry_hop(&chain[..9], &url("https://r.io/x")).is_ok());
        assert!(registry_hop(&chain, &url("https://r.io/x")).is_err());
        assert!(token_hop(&chain[..9], &url("https://r.io/x")));
        assert!(!token_hop(&chain, &url("https://r.io/x")));
    }

    #[test]
    fn token_requests_stay_within_the_realms_origin() {
        let realm = [url("https://auth.example.com/token?scope=x")];
        assert!(token_hop(&realm, &url("https://auth.example.com/v2/token")));
        for elsewhere in [
            "http://auth.example.com/token",
            "https://auth.example.com:8443/token",
            "https://evil.example.com/token",
            "https://example.com/token",
        ] {
            assert!(!token_hop(&realm, &url(elsewhere)), "{elsewhere}");
        }
        let plain = [url("http://127.0.0.1:5000/token")];
        assert!(token_hop(&plain, &url("http://127.0.0.1:5000/t2")));
        assert!(!token_hop(&plain, &url("http://127.0.0.1:5001/token")));
    }
}
