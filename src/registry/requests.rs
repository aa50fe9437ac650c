//! `requests_per_second`: every request to a registry spread out so that no second holds more
//! than its cap, whatever the pass's concurrency. Registries answer a burst past their abuse
//! limit with a bare 429 for everything from the address (Docker Hub's is "thousands of
//! requests a minute"); comparing thousands of tags by HEAD runs far faster than that.
//!
//! Requests are smoothed, never refused: each takes the next free instant, one interval after
//! the last one's, and waits for it. Pulls still follow their budget on top
//! ([`super::ratelimit`]). One cap per registry, shared by every mirror of the process.

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
}
