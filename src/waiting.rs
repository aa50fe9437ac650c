//! How an image waits: calmly, within its `max_wait`, and without holding up other images.
//!
//! Each image of a pass works in one of `defaults.concurrency` slots. When it must wait (for a
//! registry's pull budget to reset, or before retrying a refused request) it hands its slot
//! back, so images from registries that are not throttled carry on, and takes one again when
//! it resumes. Every wait of an image counts against its `max_wait`; a wait that would pass it
//! is refused up front, with what it was for, instead of being slept through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A wait that `max_wait` does not allow: the image fails with this.
#[derive(Debug, Clone, thiserror::Error)]
#[error("waited {} in all, and {} more for {reason} would pass max_wait ({})", secs(*.waited), secs(*.wanted), secs(*.max_wait))]
pub struct WaitTooLong {
    pub waited: Duration,
    pub wanted: Duration,
    pub max_wait: Duration,
    pub reason: String,
}

/// One image's share of the pass's concurrency, and its waiting so far.
#[derive(Debug)]
pub struct Waiter {
    slots: Arc<Semaphore>,
    slot: tokio::sync::Mutex<Option<OwnedSemaphorePermit>>,
    max_wait: Duration,
    waited: Mutex<Duration>,
}

impl Waiter {
    /// Waits for a free slot of `slots`, then holds it.
    pub async fn start(slots: Arc<Semaphore>, max_wait: Duration) -> Waiter {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the slots are never closed");
        Waiter {
            slots,
            slot: tokio::sync::Mutex::new(Some(permit)),
            max_wait,
            waited: Mutex::new(Duration::ZERO),
        }
    }

    /// Total time this image has waited.
    pub fn waited(&self) -> Duration {
        *self.waited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether waiting `wanted` more stays within `max_wait`.
    fn allows(&self, wanted: Duration, reason: &str) -> Result<(), WaitTooLong> {
        let waited = self.waited();
        if waited.saturating_add(wanted) > self.max_wait {
            return Err(WaitTooLong {
                waited,
                wanted,
                max_wait: self.max_wait,
                reason: reason.to_string(),
            });
        }
        Ok(())
    }

    /// Sleeps `duration` with the slot handed back, if `max_wait` allows it.
    pub async fn wait(&self, duration: Duration, reason: &str) -> Result<(), WaitTooLong> {
        self.allows(duration, reason)?;
        // Concurrent parts of one image (the children of an index) share its slot: the first to
        // wait hands it back, the first to resume takes one again.
        drop(self.slot.lock().await.take());
        tokio::time::sleep(duration).await;
        {
            let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
            *waited = waited.saturating_add(duration);
        }
        let mut slot = self.slot.lock().await;
        if slot.is_none() {
            *slot = Some(
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the slots are never closed"),
            );
        }
        Ok(())
    }
}

/// `93.4 s`, `12 min 3 s`, `6 h`: durations as people read them in messages.
pub fn secs(d: Duration) -> String {
    let total = d.as_secs();
    match total {
        0..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 => format!("{} min {} s", total / 60, total % 60),
        _ if total % 3600 == 0 => format!("{} h", total / 3600),
        _ => format!("{} h {} min", total / 3600, (total % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_hand_the_slot_back_and_count_against_max_wait() {
        let slots = Arc::new(Semaphore::new(1));
        let waiter = Waiter::start(slots.clone(), Duration::from_secs(10)).await;
        assert_eq!(slots.available_permits(), 0);
        // Another image wants the only slot: it gets it while this one waits.
        let other = tokio::spawn({
            let slots = slots.clone();
            async move {
                let _permit = slots.acquire_owned().await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        waiter.wait(Duration::from_secs(4), "budget").await.unwrap();
        assert!(
            other.is_finished(),
            "the other image worked during the wait"
        );
        assert_eq!(
            slots.available_permits(),
            0,
            "the slot is taken again on resuming"
        );
        assert_eq!(waiter.waited(), Duration::from_secs(4));
        waiter.wait(Duration::from_secs(6), "budget").await.unwrap();
        let err = waiter
            .wait(Duration::from_millis(1), "a retry of HTTP 429")
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("for a retry of HTTP 429 would pass max_wait (10.0 s)"),
            "{err}"
        );
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(secs(Duration::from_millis(93_400)), "1 min 33 s");
        assert_eq!(secs(Duration::from_millis(4_200)), "4.2 s");
        assert_eq!(secs(Duration::from_secs(6 * 3600)), "6 h");
        assert_eq!(secs(Duration::from_secs(3600 + 120)), "1 h 2 min");
    }
}
