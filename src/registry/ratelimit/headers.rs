//! What a registry's response says about its rate limit, in every dialect seen in the wild.
//!
//! - Docker Hub: `ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600`, and
//!   `ratelimit-reset` (delta-seconds) where a registry sends one.
//! - IETF draft: `RateLimit: limit=100, remaining=50, reset=30` with `RateLimit-Policy: 100;w=60`,
//!   and the later structured form `RateLimit: "default";r=50;t=30` with
//!   `RateLimit-Policy: "default";q=100;w=60`.
//! - GitHub style: `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch
//!   seconds).
//! - `Retry-After`: delta-seconds or an HTTP-date.
//!
//! Parsing never fails: a header that cannot be read is ignored, as if it were absent. A reset
//! or `Retry-After` further away than [`MAX_ANNOUNCED_WAIT`] is taken as that, and a window
//! longer than [`MAX_WINDOW`] as that: no registry means them, and arithmetic on them (an
//! instant, a time of day on the progress view) must never overflow. A window of 0 s means
//! nothing and is ignored.

use std::time::{Duration, SystemTime};

/// Values at or past this are epoch seconds, not delta-seconds (2001-09-09).
const EPOCH_THRESHOLD: u64 = 1_000_000_000;
/// The longest reset or `Retry-After` believed: a day, longer than any window seen (Docker
/// Hub's is six hours), short enough to add to any clock.
pub const MAX_ANNOUNCED_WAIT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest window believed: a week, beyond any seen (Docker Hub's is six hours, daily
/// quotas the longest known), short enough to add to any clock.
pub const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A registry's rate-limit state, as one response reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests allowed per window.
    pub limit: Option<u64>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// The window's length.
    pub window: Option<Duration>,
    /// Time from the response until the budget resets.
    pub reset: Option<Duration>,
    /// Time from the response before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl RateLimitInfo {
    /// Reads every known header form; `now` turns dates and epoch times into durations.
    pub fn from_headers(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Self {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        // GitHub style first, so that the more specific forms below win where both appear.
        let mut info = RateLimitInfo {
            limit: get("x-ratelimit-limit").and_then(number),
            remaining: get("x-ratelimit-remaining").and_then(number),
            reset: get("x-ratelimit-reset")
                .and_then(number)
                .and_then(|n| until(n, now)),
            ..RateLimitInfo::default()
        };

        // IETF draft.
        if let Some(policy) = get("ratelimit-policy") {
            let (quota, window) = policy_item(policy);
            info.limit = quota.or(info.limit);
            info.window = window.or(info.window);
        }
        if let Some(combined) = get("ratelimit") {
            for (key, value) in parameters(combined) {
                match key {
                    "limit" => info.limit = number(value).or(info.limit),
                    "remaining" | "r" => info.remaining = number(value).or(info.remaining),
                    "reset" | "t" => {
                        info.reset = number(value).map(Duration::from_secs).or(info.reset)
                    }
                    _ => {}
                }
            }
        }

        // Docker Hub (and the older IETF drafts' separate headers).
        if let Some(limit) = get("ratelimit-limit") {
            let (count, window) = policy_item(limit);
            info.limit = count.or(info.limit);
            info.window = window.or(info.window);
        }
        if let Some(remaining) = get("ratelimit-remaining") {
            let (count, window) = policy_item(remaining);
            info.remaining = count.or(info.remaining);
            info.window = window.or(info.window);
        }
        if let Some(reset) = get("ratelimit-reset")
            .and_then(number)
            .and_then(|n| until(n, now))
        {
            info.reset = Some(reset);
        }

        info.retry_after = get("retry-after").and_then(|v| retry_after(v, now));
        info.reset = info.reset.map(|d| d.min(MAX_ANNOUNCED_WAIT));
        info.retry_after = info.retry_after.map(|d| d.min(MAX_ANNOUNCED_WAIT));
        info.window = info
            .window
            .filter(|w| !w.is_zero())
            .map(|w| w.min(MAX_WINDOW));
        info
    }

    /// Whether the response said anything about a budget at all.
    pub fn is_known(&self) -> bool {
        self.remaining.is_some()
    }
}

/// `76;w=21600` or `"default";q=100;w=60` → (count, window).
fn policy_item(value: &str) -> (Option<u64>, Option<Duration>) {
    // Several policies may be listed, comma-separated: the first is the one in force.
    let first = value.split(',').next().unwrap_or(value);
    let mut parts = first.split(';').map(str::trim);
    let mut count = parts.next().and_then(number);
    let mut window = None;
    for part in parts {
        match part.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("w", v)) => window = number(v).map(Duration::from_secs),
            Some(("q", v)) => count = number(v).or(count),
            _ => {}
        }
    }
    (count, window)
}

/// `limit=100, remaining=50, reset=30` or `"default";r=50;t=30` → key/value pairs.
fn parameters(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value
        .split([',', ';'])
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// A non-negative integer, tolerating quotes (`"50"`); anything else is no value.
fn number(value: &str) -> Option<u64> {
    value.trim().trim_matches('"').parse().ok()
}

/// A reset given as delta-seconds or as epoch seconds, as a duration from `now`; `None` for a
/// time past what the clock can represent.
fn until(value: u64, now: SystemTime) -> Option<Duration> {
    if value >= EPOCH_THRESHOLD {
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(value))?;
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    } else {
        Some(Duration::from_secs(value))
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Some(seconds) = number(value) {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

    fn info(pairs: &[(&str, &str)]) -> RateLimitInfo {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        RateLimitInfo::from_headers(
            &headers,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn docker_hub() {
        let i = info(&[
            ("ratelimit-limit", "100;w=21600"),
            ("ratelimit-remaining", "76;w=21600"),
            ("docker-ratelimit-source", "203.0.113.7"),
        ]);
        assert_eq!(i.limit, Some(100));
        assert_eq!(i.remaining, Some(76));
        assert_eq!(i.window, Some(Duration::from_secs(21600)));
        assert_eq!(i.reset, None);
        assert!(i.is_known());
        assert_eq!(
            info(&[("RateLimit-Reset", "42")]).reset,
            Some(Duration::from_secs(42))
        );
    }

    #[test]
    fn ietf_drafts() {
        let i = info(&[
            ("RateLimit", "limit=100, remaining=50, reset=30"),
            ("RateLimit-Policy", "100;w=60"),
        ]);
        assert_eq!((i.limit, i.remaining), (Some(100), Some(50)));
        assert_eq!(
            (i.reset, i.window),
            (Some(Duration::from_secs(30)), Some(Duration::from_secs(60)))
        );
        let s = info(&[
            ("RateLimit", "\"default\";r=50;t=30"),
            ("RateLimit-Policy", "\"default\";q=100;w=60"),
        ]);
        assert_eq!((s.limit, s.remaining), (Some(100), Some(50)));
        assert_eq!(
            (s.reset, s.window),
            (Some(Duration::from_secs(30)), Some(Duration::from_secs(60)))
        );
        let old = info(&[
            ("RateLimit-Limit", "10"),
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "7"),
        ]);
        assert_eq!(
            (old.limit, old.remaining, old.reset),
            (Some(10), Some(0), Some(Duration::from_secs(7)))
        );
    }

    #[test]
    fn github_style_with_epoch_reset() {
        let i = info(&[
            ("X-RateLimit-Limit", "5000"),
            ("X-RateLimit-Remaining", "4999"),
            ("X-RateLimit-Reset", "1700000090"),
        ]);
        assert_eq!((i.limit, i.remaining), (Some(5000), Some(4999)));
        assert_eq!(i.reset, Some(Duration::from_secs(90)));
        let past = info(&[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1600000000"),
        ]);
        assert_eq!(
            past.reset,
            Some(Duration::ZERO),
            "a reset in the past is now"
        );
    }

    #[test]
    fn retry_after_as_seconds_and_as_a_date() {
        assert_eq!(
            info(&[("Retry-After", "120")]).retry_after,
            Some(Duration::from_secs(120))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        let date = info(&[("Retry-After", "Tue, 14 Nov 2023 22:14:05 GMT")]);
        assert_eq!(date.retry_after, Some(Duration::from_secs(45)));
        let past = info(&[("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(past.retry_after, Some(Duration::ZERO));
    }

    #[test]
    fn absurd_waits_are_clamped_to_a_day() {
        let huge = "18446744073709551615";
        let i = info(&[
            ("RateLimit", &format!("limit=5, remaining=0, reset={huge}")),
            ("Retry-After", huge),
        ]);
        assert_eq!(i.reset, Some(MAX_ANNOUNCED_WAIT));
        assert_eq!(i.retry_after, Some(MAX_ANNOUNCED_WAIT));
        let dated = info(&[("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT")]);
        assert_eq!(dated.retry_after, Some(MAX_ANNOUNCED_WAIT));
        assert!(std::time::Instant::now()
            .checked_add(MAX_ANNOUNCED_WAIT)
            .is_some());
    }

    #[test]
    fn absurd_windows_are_clamped_to_a_week_and_none_is_ignored() {
        // What a registry sent, and what was then 2,777,777,777 h on the progress view.
        let i = info(&[("ratelimit-remaining", "0;w=10000000000000")]);
        assert_eq!((i.remaining, i.window), (Some(0), Some(MAX_WINDOW)));
        for header in ["ratelimit-limit", "ratelimit-policy"] {
            let i = info(&[(header, "100;w=18446744073709551615")]);
            assert_eq!(i.window, Some(MAX_WINDOW), "{header}");
        }
        let week = info(&[("ratelimit-limit", "100;w=604800")]);
        assert_eq!(
            week.window,
            Some(Duration::from_secs(604_800)),
            "a week is believed"
        );
        let none = info(&[("ratelimit-remaining", "5;w=0")]);
        assert_eq!((none.remaining, none.window), (Some(5), None));
        assert!(chrono::Local::now()
            .checked_add_signed(chrono::TimeDelta::from_std(MAX_WINDOW).unwrap())
            .is_some());
    }

    #[test]
    fn garbage_is_ignored() {
        for (name, value) in [
            ("ratelimit-remaining", "lots"),
            ("ratelimit-remaining", "-1;w=60"),
            ("ratelimit-limit", ";;;w=;"),
            ("RateLimit", "limit=, remaining"),
            ("Retry-After", "soon"),
            ("X-RateLimit-Reset", "99999999999999999999999"),
            ("X-RateLimit-Reset", "18446744073709551615"),
        ] {
            let i = info(&[(name, value)]);
            assert_eq!(
                (i.remaining, i.retry_after, i.reset),
                (None, None, None),
                "{name}: {value}"
            );
        }
        assert!(!info(&[]).is_known());
    }

    proptest! {
        #[test]
        fn any_header_value_parses_without_panicking(
            name in prop::sample::select(vec![
                "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit",
                "ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining",
                "x-ratelimit-reset", "retry-after",
            ]),
            value in "[ -~]{0,60}",
        ) {
            if let Ok(value) = HeaderValue::from_str(&value) {
                let mut headers = HeaderMap::new();
                headers.insert(HeaderName::from_static(name), value);
                for now in [SystemTime::UNIX_EPOCH, SystemTime::now()] {
                    let _ = RateLimitInfo::from_headers(&headers, now);
                }
            }
        }

        #[test]
        fn docker_hub_values_round_trip(remaining in 0u64..1_000_000, window in 1u64..604_800) {
            let value = format!("{remaining};w={window}");
            let i = info(&[("ratelimit-remaining", value.as_str())]);
            prop_assert_eq!(i.remaining, Some(remaining));
            prop_assert_eq!(i.window, Some(Duration::from_secs(window)));
        }
    }
}
