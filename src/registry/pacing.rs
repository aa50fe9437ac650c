//! When a pull may go: the registry's budget allows it, refreshed by free HEADs.
//!
//! The budget ([`super::ratelimit::Budget`]) decides from its estimate; this is where the
//! estimate is refreshed before it is asked. A HEAD is free on Docker Hub, so one is sent
//! after every pause (a probe) and, near the bottom, right before every pull, one pull at a
//! time, since other processes on the same budget (shards of one list, other clients of the
//! account) may have spent what this one still counts. Before the last pull above the reserve,
//! which two such processes may both see, a short random pause and a second look: the one
//! that wakes second sees it gone.

use tokio::sync::MutexGuard;

use super::ratelimit::{Budget, Gate, Ticket};
use super::waiting::{WaitRefused, Waiter};
use super::{Failure, Registries, RegistryError};
use crate::reason::Reason;
use crate::reference::ImageRef;

impl Registries {
    /// Waits until `budget` lets a pull of `image` go, within the image's `max_wait`. Returns
    /// the pull's ticket, and near the bottom a guard to hold until the pull is answered. The
    /// guard is never held across a wait.
    pub(super) async fn clear_to_pull<'b>(
        &self,
        image: &ImageRef,
        budget: &'b Budget,
        waiter: &Waiter,
    ) -> Result<(Ticket, Option<MutexGuard<'b, ()>>), RegistryError> {
        let gave_up = |too_long: WaitRefused| {
            let reason = match too_long {
                WaitRefused::ShuttingDown => Reason::Stopped,
                WaitRefused::TooLong { .. } => Reason::RateLimited,
            };
            let why = too_long.to_string();
            RegistryError::with("pull manifest", image, Failure::GaveUp { why, reason })
        };
        let (mut waited, mut looked_twice) = (false, false);
        // Held from the first wait for budget until the pull goes or gives up.
        let mut waiting = None;
        loop {
            let serial = match budget.near_bottom() {
                true => Some(budget.one_at_a_time().await),
                false => None,
            };
            if waited || serial.is_some() {
                // A failed HEAD leaves the budget as it was.
                let _ = self.head(image).await;
            }
            let last = budget.last_pull_pause().filter(|_| serial.is_some());
            if let Some(pause) = last.filter(|_| !looked_twice) {
                looked_twice = true;
                // Not held while waiting: a wait hands the concurrency slot back and takes
                // one again, which images waiting for this guard may all be holding.
                drop(serial);
                waiter
                    .wait(pause, &budget.describe())
                    .await
                    .map_err(gave_up)?;
                continue;
            }
            let pause = match budget.try_take() {
                Gate::Go(ticket) => return Ok((ticket, serial)),
                Gate::Wait(pause) => pause,
            };
            drop(serial);
            waiting.get_or_insert_with(|| budget.waiting());
            waiter
                .wait(pause, &budget.describe())
                .await
                .map_err(gave_up)?;
            (waited, looked_twice) = (true, false);
        }
    }
}
