//! How an image waits: calmly, within its `max_wait`, and without holding up other images.
//!
//! Comparing an image (two HEADs) needs no slot: it is cheap, and the registry layer bounds
//! the requests in flight to each registry. Copying one does: each image copies in one of
//! `defaults.concurrency` slots. When it must wait (for a registry's pull budget to reset, or
//! before retrying a refused request) it hands its slot back, so images from registries that are not throttled carry on, and takes one again when
//! it resumes. Every wait of an image counts against its `max_wait`; a wait that would pass it
//! is refused up front, with what it was for, instead of being slept through.
//!
//! A listing and an image also have an overall deadline ([`Waiter::within_deadline`], from
//! `max_wait`: see `registry::limits`), counted from the waiter's start, less the time spent
//! queued for a copy slot. Past it the work is dropped where it stands: a tag is pushed only
//! once everything it points at is in place, so a target tag keeps its old content or has the
//! complete new one, as when the process is killed.
//!
//! On shutdown every wait ends at once: an image that has not started never does, and one
//! waiting for budget or a retry gives up, while copies under way are left to finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::Future;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limits::{Deadlines, MIN_WHOLE, WHOLE_PER_MAX_WAIT};

/// A wait that is not made: the image fails with this.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WaitRefused {
    /// `max_wait` does not allow it.
    #[error("waited {} in all, and {} more for {reason} would pass max_wait ({})", secs(*.waited), secs(*.wanted), secs(*.max_wait))]
    TooLong {
        waited: Duration,
        wanted: Duration,
        max_wait: Duration,
        reason: String,
    },
    /// The process is shutting down.
    #[error("stopped waiting: regmirror is shutting down")]
    ShuttingDown,
}

/// What an overall deadline bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// A repository's tag listing, every page.
    Listing,
    /// One image, into all its targets: comparing, children, blobs, referrers, tags.
    Image,
}

/// A listing or an image that passed its overall deadline, and was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stopped: {} took longer than its overall deadline of {} ({WHOLE_PER_MAX_WAIT} × max_wait, at least {}{})",
    match .what { Whole::Listing => "the listing", Whole::Image => "the image" },
    secs(*.deadline),
    secs(MIN_WHOLE),
    match .what { Whole::Listing => "", Whole::Image => "; time queued for a copy slot not counted" },
)]
pub struct Overdue {
    pub what: Whole,
    pub deadline: Duration,
}

/// One image's share of the pass's concurrency, and its waiting so far.
#[derive(Debug)]
pub struct Waiter {
    slots: Arc<Semaphore>,
    slot: tokio::sync::Mutex<Option<OwnedSemaphorePermit>>,
    /// Set once the image has taken a slot to copy: a wait then takes one again on resuming.
    copying: AtomicBool,
    max_wait: Duration,
    waited: Mutex<Duration>,
    /// Cancelled on shutdown: ends every wait.
    stop: CancellationToken,
    /// When the image (or listing) began: its overall deadline counts from here.
    began: Instant,
    /// Time queued for a slot so far, which the overall deadline does not count.
    queued: Mutex<Duration>,
    /// Since when the image has been queued for a slot, while it is.
    queueing: watch::Sender<Option<Instant>>,
}

impl Waiter {
    /// A waiter for an image that has not taken a slot yet (it may compare without one);
    /// refused once `stop` is cancelled.
    pub fn new(
        slots: Arc<Semaphore>,
        max_wait: Duration,
        stop: CancellationToken,
    ) -> Result<Waiter, WaitRefused> {
        if stop.is_cancelled() {
            return Err(WaitRefused::ShuttingDown);
        }
        Ok(Waiter {
            slots,
            slot: tokio::sync::Mutex::new(None),
            copying: AtomicBool::new(false),
            max_wait,
            waited: Mutex::new(Duration::ZERO),
            stop,
            began: Instant::now(),
            queued: Mutex::new(Duration::ZERO),
            queueing: watch::Sender::new(None),
        })
    }

    /// Waits for a free slot of `slots`, then holds it; refused once `stop` is cancelled.
    pub async fn start(
        slots: Arc<Semaphore>,
        max_wait: Duration,
        stop: CancellationToken,
    ) -> Result<Waiter, WaitRefused> {
        let waiter = Waiter::new(slots, max_wait, stop)?;
        waiter.take_slot().await?;
        Ok(waiter)
    }

    /// Takes a slot to copy in, waiting for one to be free; refused once `stop` is cancelled,
    /// so no copy starts after it.
    pub async fn take_slot(&self) -> Result<(), WaitRefused> {
        self.copying.store(true, Ordering::SeqCst);
        let mut slot = self.slot.lock().await;
        if slot.is_none() {
            *slot = Some(self.acquire().await?);
        }
        if self.stop.is_cancelled() {
            return Err(WaitRefused::ShuttingDown);
        }
        Ok(())
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, WaitRefused> {
        let _queued = Queued::start(self);
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => Err(WaitRefused::ShuttingDown),
            permit = self.slots.clone().acquire_owned() => Ok(permit.expect("the slots are never closed")),
        }
    }

    /// Time this image has worked: since it began, less the time it queued for a slot.
    fn worked(&self) -> Duration {
        let queued = *self.queued.lock().unwrap_or_else(|p| p.into_inner());
        let queueing = self
            .queueing
            .borrow()
            .map_or(Duration::ZERO, |s| s.elapsed());
        self.began.elapsed().saturating_sub(queued + queueing)
    }

    /// Runs `work` (the whole listing or image this waiter is for) within its overall
    /// deadline; past it, `work` is dropped where it stands and the answer is [`Overdue`].
    pub async fn within_deadline<T>(
        &self,
        what: Whole,
        work: impl Future<Output = T>,
    ) -> Result<T, Overdue> {
        let deadline = Deadlines::for_max_wait(self.max_wait).whole;
        tokio::select! {
            biased;
            done = work => Ok(done),
            () = self.worked_for(deadline) => Err(Overdue { what, deadline }),
        }
    }

    /// Returns once the image has worked `limit` (see [`Waiter::worked`]).
    async fn worked_for(&self, limit: Duration) {
        let mut queueing = self.queueing.subscribe();
        loop {
            if queueing.borrow_and_update().is_some() {
                let _ = queueing.changed().await;
                continue;
            }
            let left = limit.saturating_sub(self.worked());
            if left.is_zero() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                _ = queueing.changed() => {}
            }
        }
    }

    /// Total time this image has waited.
    pub fn waited(&self) -> Duration {
        *self.waited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `spent` against `max_wait` as if it had been waited: time a request stalled.
    pub fn charge(&self, spent: Duration) {
        let mut waited = self.waited.lock().unwrap_or_else(|p| p.into_inner());
        *waited = waited.saturating_add(spent);
    }

    /// Whether waiting `wanted` more stays within `max_wait`.
    fn allows(&self, wanted: Duration, reason: &str) -> Result<(), WaitRefused> {
        if self.stop.is_cancelled() {
            return Err(WaitRefused::ShuttingDown);
        }
        let waited = self.waited();
        if waited.saturating_add(wanted) > self.max_wait {
            return Err(WaitRefused::TooLong {
                waited,
                wanted,
                max_wait: self.max_wait,
                reason: reason.to_string(),
            });
        }
        Ok(())
    }

    /// Sleeps `duration` with the slot handed back, if `max_wait` allows it.
    pub async fn wait(&self, duration: Duration, reason: &str) -> Result<(), WaitRefused> {
        self.allows(duration, reason)?;
        // Concurrent parts of one image (the children of an index) share its slot: the first to
        // wait hands it back, the first to resume takes one again.
        drop(self.slot.lock().await.take());
        tokio::select! {
            _ = self.stop.cancelled() => return Err(WaitRefused::ShuttingDown),
            _ = tokio::time::sleep(duration) => {}
        }
        self.charge(duration);
        if self.copying.load(Ordering::SeqCst) {
            let mut slot = self.slot.lock().await;
            if slot.is_none() {
                *slot = Some(self.acquire().await?);
            }
        }
        Ok(())
    }
}

/// A waiter's time in the queue for a slot, from its start to its drop (a queue left because
/// the image was dropped counts too).
struct Queued<'a>(&'a Waiter);

impl<'a> Queued<'a> {
    fn start(waiter: &'a Waiter) -> Self {
        waiter.queueing.send_replace(Some(Instant::now()));
        Queued(waiter)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(since) = self.0.queueing.send_replace(None) {
            let mut queued = self.0.queued.lock().unwrap_or_else(|p| p.into_inner());
            *queued = queued.saturating_add(since.elapsed());
        }
    }
}

/// `93.4 s`, `12 min 3 s`, `6 h`: durations as people read them in messages.
pub fn secs(d: Duration) -> String {
    let total = d.as_secs();
    match total {
        0..=59 => format!("{:.1} s", d.as_secs_f64()),
        60..=3599 if total % 60 == 0 => format!("{} min", total / 60),
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
        let waiter = Waiter::start(
            slots.clone(),
            Duration::from_secs(10),
            CancellationToken::new(),
        )
        .await
        .unwrap();
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

    #[tokio::test(start_paused = true)]
    async fn comparing_holds_no_slot_and_waits_take_one_only_once_copying() {
        let slots = Arc::new(Semaphore::new(1));
        let held = slots.clone().acquire_owned().await.unwrap();
        let waiter = Waiter::new(
            slots.clone(),
            Duration::from_secs(60),
            CancellationToken::new(),
        )
        .unwrap();
        // Every slot is taken, yet a comparing image waits (a retry) and resumes.
        waiter
            .wait(Duration::from_secs(1), "a retry")
            .await
            .unwrap();
        drop(held);
        waiter.take_slot().await.unwrap();
        assert_eq!(slots.available_permits(), 0, "copying holds a slot");
        waiter.wait(Duration::from_secs(1), "budget").await.unwrap();
        assert_eq!(
            slots.available_permits(),
            0,
            "and takes it again after a wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_deadline_stops_work_and_does_not_count_queueing_for_a_slot() {
        let slots = Arc::new(Semaphore::new(1));
        let max_wait = Duration::from_secs(5);
        let deadline = Deadlines::for_max_wait(max_wait).whole;
        assert_eq!(deadline, Duration::from_secs(20));
        let waiter = Waiter::new(slots.clone(), max_wait, CancellationToken::new()).unwrap();
        // Another image holds the only slot for an hour: queueing for it is not work.
        let held = slots.clone().acquire_owned().await.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(held);
        });
        let began = Instant::now();
        let endless = async {
            waiter.take_slot().await.unwrap();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let overdue = waiter
            .within_deadline(Whole::Image, endless)
            .await
            .unwrap_err();
        assert_eq!(began.elapsed(), Duration::from_secs(3600) + deadline);
        assert_eq!(
            overdue.to_string(),
            "stopped: the image took longer than its overall deadline of 20.0 s (4 × max_wait, \
             at least 10.0 s; time queued for a copy slot not counted)"
        );
        // Work that ends in time is not stopped.
        let waiter = Waiter::new(slots, max_wait, CancellationToken::new()).unwrap();
        let done = waiter
            .within_deadline(Whole::Listing, tokio::time::sleep(Duration::from_secs(19)))
            .await;
        assert_eq!(done, Ok(()));
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(secs(Duration::from_millis(93_400)), "1 min 33 s");
        assert_eq!(secs(Duration::from_millis(4_200)), "4.2 s");
        assert_eq!(secs(Duration::from_secs(6 * 3600)), "6 h");
        assert_eq!(secs(Duration::from_secs(3600 + 120)), "1 h 2 min");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_waits_at_once_and_refuses_new_starts() {
        let slots = Arc::new(Semaphore::new(1));
        let stop = CancellationToken::new();
        let waiter = Arc::new(
            Waiter::start(slots.clone(), Duration::from_secs(3600), stop.clone())
                .await
                .unwrap(),
        );
        let sleeping = tokio::spawn({
            let waiter = waiter.clone();
            async move { waiter.wait(Duration::from_secs(600), "budget").await }
        });
        // Another image queues for the slot the sleeping one handed back... and holds it.
        let holder = slots.clone().acquire_owned().await.unwrap();
        let queued = tokio::spawn(Waiter::start(
            slots.clone(),
            Duration::from_secs(3600),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = tokio::time::Instant::now();
        stop.cancel();
        let slept = sleeping.await.unwrap();
        assert!(matches!(slept, Err(WaitRefused::ShuttingDown)), "{slept:?}");
        assert!(matches!(
            queued.await.unwrap(),
            Err(WaitRefused::ShuttingDown)
        ));
        assert_eq!(tokio::time::Instant::now(), before, "no time passed");
        drop(holder);
        assert!(matches!(
            Waiter::start(slots, Duration::from_secs(1), stop).await,
            Err(WaitRefused::ShuttingDown)
        ));
    }
}
