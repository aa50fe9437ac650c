//! Pacing pulls by what each registry says of its budget.
//!
//! [`headers`] reads every rate-limit dialect into one [`RateLimitInfo`]; [`budget`] keeps,
//! per registry and for the whole process, the last known remaining count and decides before
//! each pull whether it may go now or must wait. A registry that sends no such headers is
//! never held back.

mod budget;
mod headers;

pub use budget::{Budget, Budgets, Gate, Pause, PullOutcome, RegistryUsage, Ticket, Waiting};
pub use headers::{RateLimitInfo, MAX_WINDOW};
