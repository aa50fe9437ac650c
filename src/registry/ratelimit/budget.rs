//! One pull budget per registry, shared by all work in the process.
//!
//! Before a pull (a manifest GET) the budget is asked for a pull: it answers go, or wait this
//! long and ask again. Each pull let through is taken off the estimate at once, so eight
//! concurrent images cannot all spend the last pull. Responses arrive out of order: a HEAD sent
//! before three GETs may be answered after them, reporting a count those GETs already spent.
//! So every request carries a [`Ticket`] (how many pulls had been sent, and how many of them
//! were still unanswered, when it went out), and a reported count is lowered by the pulls sent
//! since and by those unanswered then: the registry may have counted them after it answered,
//! even when their own answers arrive first. The estimate errs low, never high. When remaining
//! is at or below the reserve, the registry's pulls wait: until the reset time when the registry gives one,
//! otherwise between free HEAD probes at jittered intervals bounded by the window. The pause is
//! logged once when it starts and once when it ends, not once per probe.
//!
//! Other processes may spend the same budget (shards of one list, other clients on the
//! account), so an estimate goes stale. Near the bottom ([`Budget::near_bottom`]) each pull is
//! preceded by a free HEAD that refreshes it, one pull at a time ([`Budget::one_at_a_time`]),
//! so two processes can collide only in the moment between one's HEAD and its GET. That moment
//! matters for the last pull above the reserve, which both may see at once: once a budget is
//! seen to be spent by someone else too, a process pauses a short random while before taking
//! it and looks again ([`Budget::last_pull_pause`]), so the one that wakes second sees it gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::RateLimitInfo;
use crate::registry::requests::{Kind, RequestCounts};
use crate::registry::retry::jittered;
use crate::registry::waiting::secs;

/// Probe interval when the registry names no window.
const DEFAULT_PROBE: Duration = Duration::from_secs(60);
/// Probe intervals stay within these, whatever the window: often enough to notice a reset,
/// rarely enough not to look like polling.
const MIN_PROBE: Duration = Duration::from_secs(1);
const MAX_PROBE: Duration = Duration::from_secs(15 * 60);
/// Slack after an announced reset, so the first pull does not race the registry's clock.
const AFTER_RESET: Duration = Duration::from_millis(250);
/// Within this many pulls of the reserve (or a tenth of the limit, if more), each pull is
/// checked against the registry first.
const NEAR_BOTTOM: u64 = 5;
/// Before the last pull above a shared budget's reserve, a pause of about this long (±50 %)
/// and a second look: far longer than a HEAD and its GET, short beside a window.
const LAST_PULL_PAUSE: Duration = Duration::from_secs(1);

/// What was under way when a request went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Pulls sent so far, this one included when the request is a pull.
    sent: u64,
    /// Other pulls sent and not yet answered: the registry may count them before or after it
    /// answers this request, whatever order the answers arrive in.
    unanswered: u64,
}

/// What the budget says about a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send it, and hand the ticket to [`Budget::finish`] with the answer.
    Go(Ticket),
    /// Wait this long, probe (HEAD) and ask again.
    Wait(Duration),
}

/// How a pull that was let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    Served,
    /// Answered 429.
    Refused,
    /// Failed otherwise (network, 5xx, 404…).
    Failed,
}

/// What a pass spent at one registry, for the end-of-run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUsage {
    pub registry: String,
    pub pulls: u64,
    pub refused: u64,
    /// Wall-clock time the registry's pulls were paused for budget.
    pub paused: Duration,
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    /// The window the limit counts over, as last announced.
    pub window: Option<Duration>,
    /// How long until the registry said its budget resets, when it said.
    pub resets_in: Option<Duration>,
    /// Tag-list requests (not pulls, but requests all the same).
    pub tag_lists: u64,
    /// Pulls waiting for the budget now (see [`Budget::waiting`]).
    pub waiting: u64,
    /// Every request sent to it, by kind.
    pub requests: RequestCounts,
}

impl RegistryUsage {
    /// Whether its pull budget was touched: pulls spent, refused or waited for, or tags
    /// listed. The report's per-registry line is for these.
    pub fn budget_touched(&self) -> bool {
        self.pulls > 0
            || self.refused > 0
            || !self.paused.is_zero()
            || self.tag_lists > 0
            || self.waiting > 0
    }
}

/// Every registry's budget, created on first use. One per process: the daemon keeps it
/// across passes and config reloads, since a registry's limit counts the whole IP.
#[derive(Debug, Default)]
pub struct Budgets {
    by_host: Mutex<HashMap<String, Arc<Budget>>>,
    reserves: Mutex<Reserves>,
}

#[derive(Debug, Default)]
struct Reserves {
    /// `reserve` by API host; hosts not listed use `default`.
    by_host: BTreeMap<String, u64>,
    default: u64,
}

impl Reserves {
    fn of(&self, host: &str) -> u64 {
        self.by_host.get(host).copied().unwrap_or(self.default)
    }
}

impl Budgets {
    pub fn new(default_reserve: u64, reserves: BTreeMap<String, u64>) -> Self {
        let budgets = Budgets::default();
        budgets.set_reserves(default_reserve, reserves);
        budgets
    }

    /// Sets the pulls left unspent, also for budgets already in use (a reloaded config).
    pub fn set_reserves(&self, default_reserve: u64, reserves: BTreeMap<String, u64>) {
        let reserves = Reserves {
            by_host: reserves,
            default: default_reserve,
        };
        let by_host = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        for (host, budget) in by_host.iter() {
            budget.reserve.store(reserves.of(host), Ordering::Relaxed);
        }
        *self.reserves.lock().unwrap_or_else(|p| p.into_inner()) = reserves;
    }

    /// The budget of the registry served by `host`.
    pub fn of(&self, host: &str) -> Arc<Budget> {
        let mut by_host = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        by_host
            .entry(host.to_string())
            .or_insert_with(|| {
                let reserve = self
                    .reserves
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .of(host);
                Arc::new(Budget::new(host, reserve))
            })
            .clone()
    }

    /// Registries where the pass pulled or waited, by name.
    pub fn usage(&self) -> Vec<RegistryUsage> {
        let by_host = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        let mut usage: Vec<_> = by_host
            .values()
            .map(|b| b.usage())
            .filter(|u| u.budget_touched() || u.requests.total() > 0)
            .collect();
        usage.sort_by(|a, b| a.registry.cmp(&b.registry));
        usage
    }

    /// Registries whose pulls are paused now, and when each expects to go on: for a person
    /// watching the pass.
    pub fn pauses(&self) -> Vec<Pause> {
        let by_host = self.by_host.lock().unwrap_or_else(|p| p.into_inner());
        let mut pauses: Vec<Pause> = by_host.values().filter_map(|b| b.pause()).collect();
        pauses.sort_by(|a, b| a.registry.cmp(&b.registry));
        pauses
    }
}

/// A registry whose pulls wait for its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub registry: String,
    /// How long the pulls have waited so far.
    pub paused_for: Duration,
    /// How long until the registry said its budget resets; `None` when it did not say (the
    /// pulls wait for free HEAD probes to show budget).
    pub resumes_in: Option<Duration>,
    /// Without a reset time but with a window (Docker Hub's sliding 6 h): every pull counted
    /// now has left the window by then, so the budget is back at the latest.
    pub at_the_latest_in: Option<Duration>,
    /// How often a free HEAD checks for budget when no reset time is known.
    pub checked_every: Duration,
}

/// One registry's budget.
#[derive(Debug)]
pub struct Budget {
    host: String,
    reserve: AtomicU64,
    state: Mutex<State>,
    /// Held from a refreshing HEAD to its pull's answer, near the bottom.
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Pulls left now, as best known: the last report, less the pulls sent since. `None`
    /// until a response says, or once a reset time has passed.
    remaining: Option<u64>,
    /// Pulls sent so far: what tickets count.
    sent: u64,
    /// Pulls sent and not yet answered.
    unanswered: u64,
    limit: Option<u64>,
    window: Option<Duration>,
    resets_at: Option<Instant>,
    pulls: u64,
    refused: u64,
    /// Tag-list requests: not pulls, but counted so the report shows every request type.
    tag_lists: u64,
    /// Every request, by kind.
    requests: RequestCounts,
    /// Pauses that have ended, in wall-clock time.
    paused_total: Duration,
    /// Set while paused, so the pause is logged once. It stays set after the last waiting
    /// pull gave up (max_wait), until a pull is let through: see `waiting` for pulls held now.
    paused_since: Option<Instant>,
    /// Pulls waiting for this budget now: counted by [`Waiting`] guards.
    waiting: u64,
    /// Set once an answer showed fewer pulls left than this process alone could have spent:
    /// another process or client spends this budget too.
    shared: bool,
}

impl Budget {
    pub fn new(host: &str, reserve: u64) -> Self {
        Budget {
            host: host.to_string(),
            reserve: AtomicU64::new(reserve),
            state: Mutex::default(),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn reserve(&self) -> u64 {
        self.reserve.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a pull go now? If so it is counted as under way.
    pub fn try_take(&self) -> Gate {
        let now = Instant::now();
        let mut s = self.state();
        if s.resets_at.is_some_and(|at| now >= at) {
            s.remaining = None; // the window turned over: the old count no longer holds
            s.resets_at = None;
        }
        match s.remaining {
            Some(available) if available <= self.reserve() => {
                let wait = match s.resets_at {
                    Some(at) => at
                        .saturating_duration_since(now)
                        .saturating_add(AFTER_RESET),
                    None => probe_interval(s.window),
                };
                if s.paused_since.is_none() {
                    s.paused_since = Some(now);
                    let resumes = match s.resets_at {
                        Some(_) => format!(
                            "in {}, when the registry says the budget resets",
                            secs(wait)
                        ),
                        None => format!(
                            "when a HEAD probe (free, about every {}) shows budget again",
                            secs(probe_interval_base(s.window))
                        ),
                    };
                    warn!(
                        registry = %self.host,
                        remaining = s.remaining.unwrap_or(0),
                        limit = s.limit.map_or_else(|| "unknown".to_string(), |l| l.to_string()),
                        window = s.window.map_or_else(|| "unknown".to_string(), secs),
                        reserve = self.reserve(),
                        %resumes,
                        "pull budget spent: pausing this registry's pulls"
                    );
                }
                Gate::Wait(wait)
            }
            _ => {
                let ticket = Ticket {
                    sent: s.sent + 1,
                    unanswered: s.unanswered,
                };
                s.sent += 1;
                s.unanswered += 1;
                s.remaining = s.remaining.map(|r| r.saturating_sub(1));
                if let Some(since) = s.paused_since.take() {
                    s.paused_total += now - since;
                    info!(registry = %self.host, paused = %secs(now - since), remaining = ?s.remaining, "pull budget available again: resuming");
                }
                Gate::Go(ticket)
            }
        }
    }

    /// Whether the estimate is close enough to the reserve that pulls by other processes since
    /// it was made could have spent what is left: then each pull is checked first.
    pub fn near_bottom(&self) -> bool {
        let s = self.state();
        let margin = s.limit.map_or(NEAR_BOTTOM, |l| (l / 10).max(NEAR_BOTTOM));
        s.remaining
            .is_some_and(|r| r <= self.reserve().saturating_add(margin))
    }

    /// A short random pause to take, then look again, when only one pull is left above the
    /// reserve of a budget someone else spends too: the pull they may be about to take.
    pub fn last_pull_pause(&self) -> Option<Duration> {
        let s = self.state();
        let last = s.remaining == Some(self.reserve().saturating_add(1));
        (last && s.shared).then(|| jittered(LAST_PULL_PAUSE))
    }

    /// Near the bottom, one pull at a time: held from the HEAD that refreshes the estimate
    /// until the pull it allowed is answered.
    pub async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refreshing.lock().await
    }

    /// A ticket for a request that is not a pull (a HEAD): the pulls sent so far.
    pub fn ticket(&self) -> Ticket {
        let s = self.state();
        Ticket {
            sent: s.sent,
            unanswered: s.unanswered,
        }
    }

    /// Records what a response to a request sent with `ticket` said of the budget.
    pub fn observe(&self, info: &RateLimitInfo, ticket: Ticket) {
        let mut s = self.state();
        Self::observe_locked(&mut s, info, ticket);
    }

    fn observe_locked(s: &mut State, info: &RateLimitInfo, then: Ticket) {
        if !info.is_known() && info.reset.is_none() {
            return;
        }
        let now = Instant::now();
        if let Some(reported) = info.remaining {
            // Pulls sent after the request were not counted in its answer; pulls unanswered
            // when it went out may not have been either: count both against it.
            let sent_since = s.sent.saturating_sub(then.sent);
            let counted = reported.saturating_sub(sent_since + then.unanswered);
            // With none of this process's pulls under way before or since, a count below its
            // own means someone else spends the budget too.
            let settled = sent_since == 0 && then.unanswered == 0 && s.unanswered == 0;
            if settled && s.remaining.is_some_and(|own| counted < own) {
                s.shared = true;
            }
            s.remaining = Some(counted);
            s.resets_at = None;
        }
        s.limit = info.limit.or(s.limit);
        s.window = info.window.or(s.window);
        if let Some(reset) = info.reset {
            s.resets_at = now.checked_add(reset);
        }
    }

    /// A pull let through by [`Budget::try_take`] was answered.
    /// Every ticket from `try_take` must end here, answered or not.
    pub fn finish(&self, info: &RateLimitInfo, outcome: PullOutcome, ticket: Ticket) {
        let mut s = self.state();
        s.unanswered = s.unanswered.saturating_sub(1);
        Self::observe_locked(&mut s, info, ticket);
        match outcome {
            PullOutcome::Served => s.pulls += 1,
            PullOutcome::Refused => {
                s.refused += 1;
                // Refused for budget: without a reset time, Retry-After is the next best.
                if s.remaining == Some(0) && s.resets_at.is_none() {
                    s.resets_at = info.retry_after.and_then(|d| Instant::now().checked_add(d));
                }
            }
            PullOutcome::Failed => {}
        }
    }

    /// What the pause is for, as a max_wait message reads it.
    pub fn describe(&self) -> String {
        let s = self.state();
        let limit = s.limit.map_or_else(|| "?".to_string(), |l| l.to_string());
        let window = s.window.map_or_else(|| "?".to_string(), secs);
        format!(
            "{}'s pull budget ({} of {limit} per {window} left, reserve {})",
            self.host,
            s.remaining.unwrap_or(0),
            self.reserve()
        )
    }

    /// Whether this registry's pulls are paused now, and until when.
    fn pause(&self) -> Option<Pause> {
        let s = self.state();
        let since = s.paused_since?;
        let now = Instant::now();
        let paused_for = now.saturating_duration_since(since);
        Some(Pause {
            registry: self.host.clone(),
            paused_for,
            resumes_in: s.resets_at.map(|at| at.saturating_duration_since(now)),
            at_the_latest_in: s.window.map(|w| w.saturating_sub(paused_for)),
            checked_every: probe_interval_base(s.window),
        })
    }

    /// Counts a pull as waiting for this budget until the guard is dropped: hold it from the
    /// first [`Gate::Wait`] until the pull goes or gives up. Unlike a pause, which lasts until
    /// a pull goes, this falls to zero once nothing waits, so it says whether the budget is
    /// holding work back now.
    pub fn waiting(&self) -> Waiting<'_> {
        self.state().waiting += 1;
        Waiting { budget: self }
    }

    /// Counts one tag-list request to this registry.
    pub fn count_tag_list(&self) {
        self.state().tag_lists += 1;
    }

    /// Counts one request of any kind to this registry.
    pub fn count_request(&self, kind: Kind) {
        self.state().requests.count(kind);
    }

    pub fn usage(&self) -> RegistryUsage {
        let s = self.state();
        RegistryUsage {
            registry: self.host.clone(),
            pulls: s.pulls,
            refused: s.refused,
            paused: s.paused_total
                + s.paused_since
                    .map_or(Duration::ZERO, |since| since.elapsed()),
            remaining: s.remaining,
            limit: s.limit,
            window: s.window,
            resets_in: s
                .resets_at
                .map(|at| at.saturating_duration_since(Instant::now())),
            tag_lists: s.tag_lists,
            waiting: s.waiting,
            requests: s.requests,
        }
    }
}

/// A pull counted as waiting for its registry's budget (see [`Budget::waiting`]).
#[derive(Debug)]
pub struct Waiting<'b> {
    budget: &'b Budget,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.budget.state();
        s.waiting = s.waiting.saturating_sub(1);
    }
}

fn probe_interval_base(window: Option<Duration>) -> Duration {
    window.map_or(DEFAULT_PROBE, |w| (w / 10).clamp(MIN_PROBE, MAX_PROBE))
}

/// Jittered, and never longer than the window itself.
fn probe_interval(window: Option<Duration>) -> Duration {
    let interval = jittered(probe_interval_base(window));
    window.map_or(interval, |w| interval.min(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(remaining: u64, window: u64) -> RateLimitInfo {
        RateLimitInfo {
            limit: Some(5),
            remaining: Some(remaining),
            window: Some(Duration::from_secs(window)),
            ..RateLimitInfo::default()
        }
    }

    #[test]
    fn unknown_budgets_never_block() {
        let b = Budget::new("r.io", 0);
        for _ in 0..100 {
            assert!(matches!(b.try_take(), Gate::Go(_)));
        }
    }

    fn go(b: &Budget) -> Ticket {
        match b.try_take() {
            Gate::Go(ticket) => ticket,
            Gate::Wait(w) => panic!("expected to go, told to wait {w:?}"),
        }
    }

    #[test]
    fn pulls_under_way_count_against_the_last_known_remaining() {
        let b = Budget::new("r.io", 0);
        b.observe(&said(2, 10), b.ticket());
        let first = go(&b);
        let second = go(&b);
        assert!(
            matches!(b.try_take(), Gate::Wait(_)),
            "two under way, two left: no third"
        );
        b.finish(&said(1, 10), PullOutcome::Served, first);
        assert!(
            matches!(b.try_take(), Gate::Wait(_)),
            "one still under way, one left"
        );
        b.finish(&said(0, 10), PullOutcome::Served, second);
        let Gate::Wait(wait) = b.try_take() else {
            panic!("budget spent")
        };
        assert!(
            wait >= Duration::from_millis(500) && wait <= Duration::from_millis(1500),
            "{wait:?}"
        );
        assert_eq!(b.usage().pulls, 2);
    }

    #[test]
    fn waiting_counts_the_pulls_held_now_and_falls_when_they_give_up_though_the_pause_stays() {
        let b = Budget::new("r.io", 0);
        b.observe(&said(0, 600), b.ticket());
        assert!(matches!(b.try_take(), Gate::Wait(_)));
        let (first, second) = (b.waiting(), b.waiting());
        assert_eq!(b.usage().waiting, 2);
        drop(first);
        assert_eq!(b.usage().waiting, 1);
        drop(second);
        // Both gave up (max_wait): nothing is held back now, though the budget is still spent
        // and the pause lasts until a pull goes.
        assert_eq!(b.usage().waiting, 0);
        assert!(b.pause().is_some());
    }

    #[test]
    fn a_pause_says_when_the_budget_is_back_as_well_as_the_registry_said() {
        let b = Budget::new("r.io", 0);
        assert_eq!(b.pause(), None);
        b.observe(&said(0, 600), b.ticket());
        assert!(matches!(b.try_take(), Gate::Wait(_)));
        let pause = b.pause().expect("paused");
        assert_eq!(pause.resumes_in, None, "no reset time was said");
        let latest = pause.at_the_latest_in.expect("the window bounds the wait");
        assert!(latest <= Duration::from_secs(600) && latest > Duration::from_secs(590));
        assert_eq!(pause.checked_every, Duration::from_secs(60));

        b.observe(
            &RateLimitInfo {
                reset: Some(Duration::from_secs(30)),
                ..said(0, 600)
            },
            b.ticket(),
        );
        let pause = b.pause().expect("still paused");
        let resumes = pause.resumes_in.expect("a reset time was said");
        assert!(resumes <= Duration::from_secs(30) && resumes > Duration::from_secs(25));
    }

    #[test]
    fn a_late_answer_to_an_early_request_does_not_raise_the_count() {
        let b = Budget::new("r.io", 0);
        b.observe(&said(3, 10), b.ticket());
        let probe = b.ticket(); // a HEAD goes out…
        let pulls = [go(&b), go(&b), go(&b)]; // …then three GETs, answered first
        for (ticket, left) in pulls.into_iter().zip([2, 1, 0]) {
            b.finish(&said(left, 10), PullOutcome::Served, ticket);
        }
        b.observe(&said(3, 10), probe); // the HEAD's answer arrives last, saying 3
        assert!(
            matches!(b.try_take(), Gate::Wait(_)),
            "three pulls were sent since that HEAD"
        );
    }

    #[test]
    fn the_reserve_is_left_unspent() {
        let b = Budget::new("r.io", 3);
        b.observe(&said(4, 60), b.ticket());
        let ticket = go(&b);
        b.finish(&said(3, 60), PullOutcome::Served, ticket);
        assert!(matches!(b.try_take(), Gate::Wait(_)));
    }

    #[test]
    fn a_known_reset_is_waited_for_and_then_the_count_is_forgotten() {
        let b = Budget::new("r.io", 0);
        b.observe(
            &RateLimitInfo {
                remaining: Some(0),
                reset: Some(Duration::from_millis(30)),
                ..RateLimitInfo::default()
            },
            b.ticket(),
        );
        let Gate::Wait(wait) = b.try_take() else {
            panic!("spent")
        };
        assert!(
            wait <= Duration::from_millis(30) + AFTER_RESET && wait >= AFTER_RESET,
            "{wait:?}"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(
            matches!(b.try_take(), Gate::Go(_)),
            "past the reset, the old count no longer holds"
        );
    }

    #[test]
    fn a_refusal_with_retry_after_sets_the_reset() {
        let b = Budget::new("r.io", 0);
        let ticket = go(&b);
        b.finish(
            &RateLimitInfo {
                remaining: Some(0),
                retry_after: Some(Duration::from_secs(42)),
                ..RateLimitInfo::default()
            },
            PullOutcome::Refused,
            ticket,
        );
        let Gate::Wait(wait) = b.try_take() else {
            panic!("refused")
        };
        assert!(
            wait > Duration::from_secs(41) && wait <= Duration::from_secs(43),
            "{wait:?}"
        );
        assert_eq!(b.usage().refused, 1);
    }

    #[test]
    fn near_the_bottom_means_within_a_tenth_of_the_limit_or_five_of_the_reserve() {
        let b = Budget::new("r.io", 2);
        assert!(!b.near_bottom(), "unknown budgets are not near any bottom");
        let said = |remaining, limit| RateLimitInfo {
            limit: Some(limit),
            remaining: Some(remaining),
            ..RateLimitInfo::default()
        };
        b.observe(&said(8, 20), b.ticket());
        assert!(!b.near_bottom());
        b.observe(&said(7, 20), b.ticket());
        assert!(b.near_bottom(), "reserve 2 + 5");
        b.observe(&said(13, 100), b.ticket());
        assert!(!b.near_bottom());
        b.observe(&said(12, 100), b.ticket());
        assert!(b.near_bottom(), "reserve 2 + a tenth of 100");
        b.observe(&said(900, 1000), b.ticket());
        assert!(!b.near_bottom());
    }

    #[test]
    fn the_last_pull_of_a_budget_spent_by_others_too_waits_for_a_second_look() {
        let said = |remaining| RateLimitInfo {
            limit: Some(10),
            remaining: Some(remaining),
            ..RateLimitInfo::default()
        };
        let b = Budget::new("r.io", 0);
        b.observe(&said(3), b.ticket());
        let pull = go(&b);
        b.finish(&said(2), PullOutcome::Served, pull);
        let pull = go(&b);
        b.finish(&said(1), PullOutcome::Served, pull);
        assert_eq!(b.last_pull_pause(), None, "only this process spends it");
        // A probe with nothing under way finds one pull fewer than this process left.
        b.observe(&said(5), b.ticket());
        b.observe(&said(3), b.ticket());
        assert_eq!(b.last_pull_pause(), None, "not the last pull yet");
        b.observe(&said(1), b.ticket());
        let pause = b
            .last_pull_pause()
            .expect("the last pull of a shared budget");
        assert!(pause >= LAST_PULL_PAUSE / 2 && pause <= LAST_PULL_PAUSE * 3 / 2);
    }

    #[test]
    fn probes_are_bounded_by_the_window() {
        for window in [1, 5, 10, 600, 21600, 10_000_000] {
            let w = Duration::from_secs(window);
            for _ in 0..20 {
                let p = probe_interval(Some(w));
                assert!(
                    p <= w && p >= MIN_PROBE / 2 && p <= MAX_PROBE * 3 / 2,
                    "{window}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn budgets_are_per_registry_with_their_own_reserve() {
        let budgets = Budgets::new(
            1,
            BTreeMap::from([("registry-1.docker.io".to_string(), 10)]),
        );
        let hub = budgets.of("registry-1.docker.io");
        hub.observe(&said(10, 60), hub.ticket());
        assert!(matches!(hub.try_take(), Gate::Wait(_)));
        let ghcr = budgets.of("ghcr.io");
        ghcr.observe(&said(10, 60), ghcr.ticket());
        assert!(matches!(ghcr.try_take(), Gate::Go(_)));
        assert!(Arc::ptr_eq(&hub, &budgets.of("registry-1.docker.io")));
        // A reloaded config changes the reserve of a budget already in use.
        budgets.set_reserves(0, BTreeMap::new());
        assert!(matches!(hub.try_take(), Gate::Go(_)));
    }

    #[test]
    fn a_head_answered_before_a_pull_was_counted_but_arriving_after_it_does_not_raise_the_estimate()
    {
        // The 429 CI caught: one pull left; a pull goes out, then a probe HEAD. The registry
        // answers the HEAD (still 1 left), then counts and answers the pull (0 left), but the
        // pull's answer reaches us first. The HEAD's late "1" must not reopen the budget.
        let b = Budget::new("r.io", 0);
        b.observe(&said(1, 10), b.ticket());
        let pull = go(&b);
        let head = b.ticket();
        b.finish(&said(0, 10), PullOutcome::Served, pull);
        b.observe(&said(1, 10), head);
        assert!(
            matches!(b.try_take(), Gate::Wait(_)),
            "the HEAD went out while that pull was unanswered"
        );
        // A probe sent once nothing is under way is believed.
        b.observe(&said(5, 10), b.ticket());
        assert!(matches!(b.try_take(), Gate::Go(_)));
    }

    #[test]
    fn a_head_answered_before_an_earlier_pull_was_counted_does_not_raise_the_estimate() {
        // The 429 the benchmark-style test caught: a pull is sent, then a HEAD; the registry
        // answers the HEAD before it counts the pull, so the HEAD reports one too many.
        let b = Budget::new("r.io", 0);
        b.observe(&said(2, 10), b.ticket());
        let Gate::Go(first) = b.try_take() else {
            panic!("budget left")
        };
        let head = b.ticket();
        b.observe(&said(2, 10), head); // the pull is not counted yet
        let Gate::Go(second) = b.try_take() else {
            panic!("one pull is surely left")
        };
        assert!(
            matches!(b.try_take(), Gate::Wait(_)),
            "two pulls sent against a budget of 2: no third"
        );
        b.finish(&said(1, 10), PullOutcome::Served, first);
        b.finish(&said(0, 10), PullOutcome::Served, second);
        assert!(matches!(b.try_take(), Gate::Wait(_)));
    }
}
