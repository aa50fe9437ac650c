//! `requests_per_second`: every request to a registry spread out so that no second holds more
//! than its cap, whatever the pass's concurrency. Registries answer a burst past their abuse
//! limit with a bare 429 for everything from the address (Docker Hub's is "thousands of
//! requests a minute"); comparing thousands of tags by HEAD runs far faster than that.
//!
//! Requests are smoothed, never refused: each takes the next free instant, one interval after
//! the last one's, and waits for it. Pulls still follow their budget on top
//! ([`super::ratelimit`]). One cap per registry, shared by every mirror of the process.
//!
//! Every request is also counted by [`Kind`] into its registry's [`RequestCounts`] (kept
//! with the pull budget, for the life of the process), which the report and `/metrics` show.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The caps of every registry that has one, by API host.
#[derive(Debug, Default)]
pub struct RequestCaps {
    by_host: BTreeMap<String, Cap>,
}

#[derive(Debug)]
struct Cap {
    /// Between two requests' starts.
    interval: Duration,
    /// When the next request may start.
    next: Mutex<Instant>,
}

impl RequestCaps {
    /// `caps`: each capped registry's API host and requests a second.
    pub fn new(caps: impl IntoIterator<Item = (String, u32)>) -> Self {
        let by_host = caps
            .into_iter()
            .filter(|(_, per_second)| *per_second > 0)
            .map(|(host, per_second)| {
                let cap = Cap {
                    interval: Duration::from_secs(1) / per_second,
                    next: Mutex::new(Instant::now()),
                };
                (host, cap)
            })
            .collect();
        RequestCaps { by_host }
    }

    /// Waits until a request to `host` may start (at once when it has no cap).
    pub async fn wait(&self, host: &str) {
        let Some(cap) = self.by_host.get(host) else {
            return;
        };
        let at = {
            let mut next = cap.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + cap.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// What a request to a registry was for, as the report and `/metrics` count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A manifest HEAD: comparing (free on Docker Hub).
    Head,
    /// A manifest GET: a pull.
    Get,
    /// A blob HEAD or GET.
    Blob,
    /// Writing: a manifest PUT, a blob mount, upload or PUT.
    Push,
    Delete,
    /// A tag-list page.
    List,
    Referrers,
    /// `GET /v2/`, asking how to authenticate.
    Ping,
    /// A token from the registry's auth server.
    Token,
    /// A page of Docker Hub's tag API.
    TagApi,
}

/// Requests sent to one registry, by [`Kind`] (retries included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub head: u64,
    pub get: u64,
    pub blob: u64,
    pub push: u64,
    pub delete: u64,
    pub list: u64,
    pub referrers: u64,
    pub ping: u64,
    pub token: u64,
    pub tag_api: u64,
}

impl RequestCounts {
    pub fn count(&mut self, kind: Kind) {
        *self.of_mut(kind) += 1;
    }

    fn of_mut(&mut self, kind: Kind) -> &mut u64 {
        match kind {
            Kind::Head => &mut self.head,
            Kind::Get => &mut self.get,
            Kind::Blob => &mut self.blob,
            Kind::Push => &mut self.push,
            Kind::Delete => &mut self.delete,
            Kind::List => &mut self.list,
            Kind::Referrers => &mut self.referrers,
            Kind::Ping => &mut self.ping,
            Kind::Token => &mut self.token,
            Kind::TagApi => &mut self.tag_api,
        }
    }

    /// Each kind's label (as `/metrics` and the report name it) and count.
    pub fn by_kind(&self) -> [(&'static str, u64); 10] {
        [
            ("head", self.head),
            ("get", self.get),
            ("blob", self.blob),
            ("push", self.push),
            ("delete", self.delete),
            ("list", self.list),
            ("referrers", self.referrers),
            ("ping", self.ping),
            ("token", self.token),
            ("tag_api", self.tag_api),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }

    /// What was counted after `before` (a reading of the same counts).
    pub fn since(&self, before: &RequestCounts) -> RequestCounts {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        RequestCounts {
            head: d(self.head, before.head),
            get: d(self.get, before.get),
            blob: d(self.blob, before.blob),
            push: d(self.push, before.push),
            delete: d(self.delete, before.delete),
            list: d(self.list, before.list),
            referrers: d(self.referrers, before.referrers),
            ping: d(self.ping, before.ping),
            token: d(self.token, before.token),
            tag_api: d(self.tag_api, before.tag_api),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_start_one_interval_apart_and_others_go_at_once() {
        let caps = RequestCaps::new([("hub".to_string(), 20), ("off".to_string(), 0)]);
        let start = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..41 {
            caps.wait("hub").await;
            starts.push(start.elapsed());
        }
        // 41 requests at 20 a second: the last starts 2 s after the first.
        assert_eq!(starts[40], Duration::from_secs(2));
        assert!(starts
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_millis(50)));
        let before = Instant::now();
        caps.wait("off").await;
        caps.wait("elsewhere").await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[test]
    fn counts_grow_by_kind_and_subtract_an_earlier_reading() {
        use Kind::*;
        let mut counts = RequestCounts::default();
        let all = [
            Head, Get, Blob, Push, Delete, List, Referrers, Ping, Token, TagApi,
        ];
        for kind in all {
            counts.count(kind);
        }
        counts.count(Kind::Head);
        let before = counts;
        counts.count(Kind::Head);
        counts.count(Kind::TagApi);
        assert_eq!(counts.total(), 13);
        let grew = counts.since(&before);
        assert_eq!((grew.head, grew.tag_api, grew.total()), (1, 1, 2));
        assert_eq!(before.by_kind()[0], ("head", 2));
    }
}
