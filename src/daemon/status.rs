//! What the daemon shows of itself, taken as one snapshot: `GET /healthz` serializes it as
//! JSON and `GET /` renders it as a page ([`crate::daemon::page`]), so the two can never
//! disagree.
//!
//! Everything here is bounded when it is stored: a run keeps at most [`ERRORS`] failure lines
//! (each a report line, already clipped and escaped by [`crate::untrusted`]) and names at most
//! [`TAGS`] selected tags; the counts are always whole.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Serialize, Serializer};

use crate::registry::ratelimit::{Pause, RegistryUsage};
use crate::run::Report;

/// The most selected tags a run names (the count is always whole).
const TAGS: usize = 1000;

/// The most failures of a mirror's last run kept (`failed` counts them all), each a report
/// line of bounded length: a `/healthz` answer of a few hundred KiB at most.
pub const ERRORS: usize = 100;

/// The daemon, every mirror's last result and every source registry's budget, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `ok`, or `stopping` once SIGTERM arrived.
    pub status: &'static str,
    /// The path of mirrors.toml.
    pub config: String,
    /// Why the file on disk is not in force: its file, line and message, first line only (the
    /// snippet under it is for the log).
    pub config_error: Option<String>,
    pub mirrors: Vec<MirrorStatus>,
    /// Source registries pulled from, listed or waited on since the daemon started.
    pub registries: Vec<RegistryStatus>,
    /// When the snapshot was taken: what relative times count from.
    #[serde(skip)]
    pub taken: DateTime<Utc>,
}

/// One mirror: its schedule and its last run.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorStatus {
    pub name: String,
    /// `"0 3 * * *" (UTC)`; `None` for a mirror that runs on start and `POST /sync` only.
    pub schedule: Option<String>,
    pub next_run: Option<Stamp>,
    pub running: bool,
    pub last_run: Option<RunStatus>,
    /// When a run last ended with no failure and no image refused as immutable.
    pub last_success: Option<Stamp>,
}

/// How a mirror's last run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub started: Stamp,
    pub finished: Stamp,
    /// `ok`; `immutable` when no image failed but some were refused as immutable; `failed`.
    pub result: &'static str,
    pub mirrored: usize,
    pub unchanged: usize,
    /// Images and problems that failed, all of them.
    pub failed: usize,
    /// Target tags its prune deleted.
    pub pruned: usize,
    /// The first [`ERRORS`] failures.
    pub errors: Vec<Failure>,
    /// Failures by reason class, all of them counted (images refused as immutable under
    /// `immutable`); `reasons` in `/healthz`.
    #[serde(rename = "reasons")]
    pub failed_by_reason: BTreeMap<&'static str, usize>,
    /// Images whose upstream tag moved where the target refuses to move it.
    pub immutable: usize,
    /// The first [`ERRORS`] of them, each a line.
    pub immutable_images: Vec<String>,
    /// For a mirror with tag rules: what it listed and selected.
    pub tags: Option<TagsStatus>,
}

/// One failure of a run: its report line (`source → target: why`) and, when known, its
/// reason class (`auth`, `not_found`, `rate_limited`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub line: String,
    pub reason: Option<&'static str>,
}

/// `/healthz` shows a failure as its line, as it always has.
impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.line)
    }
}

/// What a mirror with tag rules listed and selected at its last run.
#[derive(Debug, Clone, Serialize)]
pub struct TagsStatus {
    pub listed: usize,
    pub selected: usize,
    /// Highest version first, at most [`TAGS`].
    pub selected_tags: Vec<String>,
}

/// A source registry's pull budget as last reported, and whether its pulls wait for it.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStatus {
    pub registry: String,
    /// Pulls served and refused (HTTP 429) since the daemon started.
    pub pulls: u64,
    pub refused: u64,
    /// Pulls left in the window, as last reported less the pulls sent since.
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    pub window_seconds: Option<u64>,
    /// When the registry said its budget resets.
    pub resets: Option<Stamp>,
    /// Set while its pulls wait for budget.
    pub paused: Option<PauseStatus>,
}

/// A registry whose pulls wait for its budget, in wall-clock times.
#[derive(Debug, Clone, Serialize)]
pub struct PauseStatus {
    pub since: Stamp,
    /// When the registry said its budget resets.
    pub resumes: Option<Stamp>,
    /// Without a reset time but with a window: the budget is back by then at the latest.
    pub at_the_latest: Option<Stamp>,
    /// How often a free HEAD checks for budget meanwhile.
    pub checked_every_seconds: u64,
}

/// A moment, shown in UTC to the second (`2026-03-01T03:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(pub DateTime<Utc>);

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl RunStatus {
    /// What the daemon keeps of mirror `name`'s run from `started` to `finished`.
    pub fn of(
        name: &str,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        report: &Report,
    ) -> Self {
        let (mirrored, unchanged) = report.counts();
        let failures = report.failures();
        let immutable = report.immutable_lines();
        RunStatus {
            started: Stamp(started),
            finished: Stamp(finished),
            result: match (failures.len(), immutable.len()) {
                (0, 0) => "ok",
                (0, _) => "immutable",
                _ => "failed",
            },
            mirrored,
            unchanged,
            failed: failures.len(),
            pruned: report
                .pruned
                .iter()
                .filter(|p| p.deleted && p.mirror == name)
                .count(),
            errors: failures
                .into_iter()
                .take(ERRORS)
                .map(|(reason, line)| Failure {
                    line,
                    reason: Some(reason.as_str()),
                })
                .collect(),
            failed_by_reason: report
                .reasons()
                .into_iter()
                .map(|(reason, n)| (reason.as_str(), n))
                .collect(),
            immutable: immutable.len(),
            immutable_images: immutable.into_iter().take(ERRORS).collect(),
            tags: report
                .selections
                .iter()
                .find(|s| s.mirror == name)
                .map(|tags| TagsStatus {
                    listed: tags.listed,
                    selected: tags.selected.len(),
                    selected_tags: tags.selected.iter().take(TAGS).cloned().collect(),
                }),
        }
    }
}

impl RegistryStatus {
    /// `usage` as of `now`, with `pause` when its pulls are waiting.
    pub fn of(usage: RegistryUsage, pause: Option<&Pause>, now: DateTime<Utc>) -> Self {
        RegistryStatus {
            pulls: usage.pulls,
            refused: usage.refused,
            remaining: usage.remaining,
            limit: usage.limit,
            window_seconds: usage.window.map(|w| w.as_secs()),
            resets: usage.resets_in.and_then(|d| later(now, d)),
            paused: pause.map(|pause| PauseStatus {
                since: earlier(now, pause.paused_for),
                resumes: pause.resumes_in.and_then(|d| later(now, d)),
                at_the_latest: pause.at_the_latest_in.and_then(|d| later(now, d)),
                checked_every_seconds: pause.checked_every.as_secs(),
            }),
            registry: usage.registry,
        }
    }
}

/// `now` plus `d`; `None` past what a clock can show (the header parser caps what a registry
/// announces; this does not rely on it).
fn later(now: DateTime<Utc>, d: Duration) -> Option<Stamp> {
    let d = TimeDelta::from_std(d).ok()?;
    now.checked_add_signed(d).map(Stamp)
}

fn earlier(now: DateTime<Utc>, d: Duration) -> Stamp {
    let d = TimeDelta::from_std(d).unwrap_or(TimeDelta::zero());
    Stamp(now.checked_sub_signed(d).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn healthz_shows_failures_as_lines_and_times_to_the_second() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 3, 0, 0).unwrap();
        let failure = Failure {
            line: "a → b: refused".to_string(),
            reason: Some("refused"),
        };
        let json = serde_json::json!({"at": Stamp(at), "errors": [failure]});
        assert_eq!(
            json,
            serde_json::json!({"at": "2026-03-01T03:00:00Z", "errors": ["a → b: refused"]})
        );
    }

    #[test]
    fn a_registrys_pause_and_reset_become_wall_clock_times() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let usage = RegistryUsage {
            registry: "registry-1.docker.io".to_string(),
            pulls: 100,
            refused: 0,
            paused: Duration::from_secs(120),
            remaining: Some(0),
            limit: Some(100),
            window: Some(Duration::from_secs(21600)),
            resets_in: Some(Duration::from_secs(3600)),
            tag_lists: 0,
            waiting: 1,
            requests: Default::default(),
        };
        let pause = Pause {
            registry: usage.registry.clone(),
            paused_for: Duration::from_secs(120),
            resumes_in: Some(Duration::from_secs(3600)),
            at_the_latest_in: Some(Duration::from_secs(21480)),
            checked_every: Duration::from_secs(900),
        };
        let status = RegistryStatus::of(usage, Some(&pause), now);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["window_seconds"], 21600);
        assert_eq!(json["resets"], "2026-03-01T13:00:00Z");
        assert_eq!(json["paused"]["since"], "2026-03-01T11:58:00Z");
        assert_eq!(json["paused"]["resumes"], "2026-03-01T13:00:00Z");
        assert_eq!(json["paused"]["at_the_latest"], "2026-03-01T17:58:00Z");
        assert_eq!(json["paused"]["checked_every_seconds"], 900);
        // A wait no clock can add is left out rather than wrapped.
        assert_eq!(later(now, Duration::MAX), None);
    }
}
