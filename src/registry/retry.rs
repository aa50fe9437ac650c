//! The one retry policy: jittered exponential backoff, `Retry-After` as a floor, bounded by
//! the image's `max_wait`.
//!
//! What is retried is decided by the error's type ([`RegistryError::is_retryable`]): 429s,
//! 5xx, timeouts and broken connections. Everything else fails at once. The time a stalled
//! request took before it was cut off counts against `max_wait` like a wait, so a registry
//! that stalls every answer fails the image within `max_wait` too. The schedule: 1 s, then
//! doubling up to 2 min, each interval randomised by ±50 % so that many clients refused at the
//! same moment do not come back at the same moment.
//!
//! The schedule is the few lines below rather than a crate: the `backoff` crate that served
//! it is unmaintained (RUSTSEC-2025-0012) and brought `instant` (RUSTSEC-2024-0384), and
//! `backon`'s jitter only adds, where this policy spreads both ways. `fastrand` draws the
//! jitter (no need for a cryptographic generator to spread retries).

use std::future::Future;
use std::time::Duration;

use crate::reason::Reason;
use crate::registry::waiting::{secs, WaitRefused, Waiter};
use crate::registry::{Failure, RegistryError};

const FIRST_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(120);
const JITTER: f64 = 0.5;
/// A registry that refuses connections is more likely down than busy: a few quick tries cover
/// a restart, and then the image fails now rather than after max_wait.
const UNREACHABLE_ATTEMPTS: usize = 3;
/// A manifest push refused for references the registry does not see yet (storage settling
/// after an upload, a concurrent identical push) is tried again after these short pauses, and
/// then fails: a reference that is really missing would never appear.
const SETTLE_PAUSES: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];

/// One operation's backoff: each interval jittered, the next one twice as long, up to
/// [`MAX_INTERVAL`]. There is no overall limit here: that is the image's max_wait, enforced by
/// its [`Waiter`] across all its waits.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The next interval, before jitter.
    next: Duration,
}

impl Schedule {
    /// The next interval to wait, jittered.
    fn next_interval(&mut self) -> Duration {
        let interval = jittered(self.next);
        self.next = (self.next * 2).min(MAX_INTERVAL);
        interval
    }
}

/// A fresh backoff schedule for one operation.
pub fn schedule() -> Schedule {
    Schedule {
        next: FIRST_INTERVAL,
    }
}

/// `base`, randomised by ±50 % through the same jitter as the retry schedule: how often a
/// paused registry is probed.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(1.0 - JITTER + 2.0 * JITTER * fastrand::f64())
}

/// How long to wait before the next attempt: the schedule's next interval, but never less
/// than what the registry asked for.
pub fn next_delay(schedule: &mut Schedule, retry_after: Option<Duration>) -> Duration {
    schedule
        .next_interval()
        .max(retry_after.unwrap_or(Duration::ZERO))
}

/// Runs `attempt` until it succeeds, fails for good, or waiting again would pass max_wait.
pub async fn retrying<T, F, Fut>(waiter: &Waiter, mut attempt: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RegistryError>>,
{
    let mut schedule = schedule();
    let mut unreachable = 0;
    let mut settles = SETTLE_PAUSES.iter();
    loop {
        let err = match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if let Failure::Stalled { waited, .. } = &err.failure {
            waiter.charge(*waited);
        }
        let delay = match &err.failure {
            Failure::ReferencesMissing(_) => match settles.next() {
                Some(pause) => *pause,
                None => return Err(err),
            },
            _ if !err.is_retryable() => return Err(err),
            Failure::Unreachable(_) => {
                unreachable += 1;
                if unreachable >= UNREACHABLE_ATTEMPTS {
                    return Err(err);
                }
                next_delay(&mut schedule, err.retry_after)
            }
            _ => next_delay(&mut schedule, err.retry_after),
        };
        tracing::info!(error = %err, retry_in = %secs(delay), "will retry");
        if let Err(too_long) = waiter
            .wait(delay, &format!("a retry after: {}", err.failure))
            .await
        {
            let reason = match too_long {
                WaitRefused::ShuttingDown => Reason::Stopped,
                WaitRefused::TooLong { .. } => err.reason(),
            };
            let why = too_long.to_string();
            return Err(RegistryError {
                failure: Failure::GaveUp { why, reason },
                ..err
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    async fn waiter(max_wait: Duration) -> Waiter {
        let slots = Arc::new(Semaphore::new(1));
        let stop = tokio_util::sync::CancellationToken::new();
        Waiter::start(slots, max_wait, stop).await.unwrap()
    }

    fn refused(retry_after: Option<Duration>) -> RegistryError {
        RegistryError {
            retry_after,
            ..RegistryError::with(
                "pull manifest",
                "x.io/a:1",
                Failure::RateLimited("slow down".into()),
            )
        }
    }

    #[test]
    fn delays_grow_vary_and_respect_retry_after() {
        let mut a = schedule();
        let mut b = schedule();
        let first: Vec<_> = (0..6).map(|_| next_delay(&mut a, None)).collect();
        let second: Vec<_> = (0..6).map(|_| next_delay(&mut b, None)).collect();
        assert_ne!(first, second, "jitter makes two schedules differ");
        assert!(first[0] >= Duration::from_millis(500) && first[0] <= Duration::from_millis(1500));
        assert!(first[5] > first[0]);
        let floor = next_delay(&mut schedule(), Some(Duration::from_secs(30)));
        assert_eq!(floor, Duration::from_secs(30));
    }

    #[test]
    fn the_schedule_doubles_from_one_second_to_two_minutes_spread_both_ways() {
        for _ in 0..200 {
            let mut s = schedule();
            let mut base = FIRST_INTERVAL;
            for _ in 0..12 {
                let interval = next_delay(&mut s, None);
                assert!(
                    interval >= base / 2 && interval <= base * 3 / 2,
                    "{interval:?} from {base:?}"
                );
                base = (base * 2).min(MAX_INTERVAL);
            }
            assert_eq!(s.next, MAX_INTERVAL);
        }
        let spread: Vec<Duration> = (0..200)
            .map(|_| jittered(Duration::from_secs(60)))
            .collect();
        assert!(
            spread.iter().any(|d| *d < Duration::from_secs(45)),
            "jitter reaches below"
        );
        assert!(
            spread.iter().any(|d| *d > Duration::from_secs(75)),
            "and above"
        );
    }

    #[test]
    fn the_crates_with_advisories_that_drew_the_schedule_stay_out_of_the_tree() {
        // backoff: unmaintained (RUSTSEC-2025-0012); instant, which it brought: RUSTSEC-2024-0384.
        let lock = include_str!("../../Cargo.lock");
        for name in ["backoff", "instant"] {
            let entry = format!("\nname = \"{name}\"\n");
            assert!(!lock.contains(&entry), "{name} is back in Cargo.lock");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_until_success() {
        let waiter = waiter(Duration::from_secs(600)).await;
        let attempts = AtomicUsize::new(0);
        let value = retrying(&waiter, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(refused(Some(Duration::from_secs(7)))),
                _ => Ok("done"),
            }
        })
        .await
        .unwrap();
        assert_eq!(value, "done");
        assert!(
            waiter.waited() >= Duration::from_secs(14),
            "Retry-After is a floor"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_registry_gets_a_few_tries_not_max_wait() {
        let waiter = waiter(Duration::from_secs(6 * 3600)).await;
        let attempts = AtomicUsize::new(0);
        let err = retrying(&waiter, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(RegistryError::with(
                "HEAD manifest",
                "x",
                Failure::Unreachable("refused".into()),
            ))
        })
        .await
        .unwrap_err();
        assert!(matches!(err.failure, Failure::Unreachable(_)));
        assert_eq!(attempts.load(Ordering::SeqCst), UNREACHABLE_ATTEMPTS);
        assert!(waiter.waited() < Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_refused_for_missing_references_is_tried_twice_more_after_short_pauses() {
        let waiter = Waiter::new(
            Arc::new(Semaphore::new(1)),
            Duration::from_secs(600),
            tokio_util::sync::CancellationToken::new(),
        )
        .unwrap();
        let unsettled = || {
            RegistryError::from_response(
                "push manifest",
                "r.io/app:1",
                400,
                br#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
                false,
            )
        };
        assert!(matches!(unsettled().failure, Failure::ReferencesMissing(_)));
        let attempts = AtomicUsize::new(0);
        let settled = retrying(&waiter, || async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(unsettled()),
                _ => Ok(()),
            }
        })
        .await;
        assert!(settled.is_ok());
        assert_eq!(waiter.waited(), SETTLE_PAUSES.iter().sum::<Duration>());

        let attempts = AtomicUsize::new(0);
        let missing = retrying(&waiter, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(unsettled())
        })
        .await
        .unwrap_err();
        assert!(matches!(missing.failure, Failure::ReferencesMissing(_)));
        assert_eq!(attempts.load(Ordering::SeqCst), 1 + SETTLE_PAUSES.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_counts_against_max_wait() {
        let waiter = waiter(Duration::from_secs(10)).await;
        let attempts = AtomicUsize::new(0);
        let err = retrying(&waiter, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(RegistryError::with(
                "pull manifest",
                "x",
                Failure::Stalled {
                    waited: Duration::from_secs(10),
                    what: "no complete answer in time".into(),
                },
            ))
        })
        .await
        .unwrap_err();
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "no second try past max_wait"
        );
        assert!(matches!(err.failure, Failure::GaveUp { .. }), "{err}");
        assert!(
            err.to_string().contains("no complete answer in time"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_max_wait_saying_why_and_fails_fast_on_other_errors() {
        let waiter = waiter(Duration::from_secs(60)).await;
        let err = retrying(&waiter, || async {
            Err::<(), _>(refused(Some(Duration::from_secs(45))))
        })
        .await
        .unwrap_err();
        assert!(matches!(err.failure, Failure::GaveUp { .. }), "{err}");
        assert!(
            err.to_string().contains("would pass max_wait (1 min)"),
            "{err}"
        );

        let attempts = AtomicUsize::new(0);
        let denied = retrying(&waiter, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(RegistryError::with(
                "pull manifest",
                "x",
                Failure::Denied("no".into()),
            ))
        })
        .await
        .unwrap_err();
        assert!(matches!(denied.failure, Failure::Denied(_)));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
