//! The daemon's Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Per mirror: images by result, bytes copied, runs and their duration, the last success, the
//! failed runs in a row, and for mirrors with tag rules the tags listed and selected by the last
//! run; for scheduled mirrors, the longest gap of the schedule and when it began. Per registry,
//! read from the pull budgets when scraped: pulls spent, pulls refused with 429, tag-list
//! requests, seconds paused, pulls waiting now and the last `remaining`/`limit` the registry
//! announced, and every request by kind (`head`, `get`, `blob`, `push`, `list`, `token`,
//! `tag_api`…). Per mirror, how its source tags were compared: by a tag API's listed digest or
//! by HEAD, and the tag API failures that sent a repository back to HEADs. Whether the last config reload was applied. Label values are mirror names and
//! registry hosts from mirrors.toml, never credentials.
//!
//! The alerts in deploy/prometheus/regmirror-alerts.yml read these: a mirror's per-mirror
//! gauges are removed with the mirror, so no alert fires for a mirror no longer configured.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::copy::Outcome;
use crate::registry::ratelimit::RegistryUsage;
use crate::run::Report;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabel {
    mirror: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    mirror: String,
    /// A reason class (`crate::reason::Reason`): `auth`, `not_found`, `rate_limited`…
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabels {
    mirror: String,
    /// `mirrored`, `unchanged`, `skipped`, `immutable` or `failed` (for runs: `success` or
    /// `failed`).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabel {
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    registry: String,
    /// `head`, `get`, `blob`, `push`, `delete`, `list`, `referrers`, `ping`, `token`,
    /// `tag_api` (see `crate::registry::requests::Kind`).
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComparedLabels {
    mirror: String,
    /// `api`: by a tag API's listed digest, no HEAD at the source; `head`: by HEAD.
    by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabel {
    /// `applied` or `refused`.
    result: &'static str,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    images: Family<ImageLabels, Counter>,
    bytes: Family<MirrorLabel, Counter>,
    runs: Family<ImageLabels, Counter>,
    skipped: Family<MirrorLabel, Counter>,
    durations: Family<MirrorLabel, Histogram>,
    last_success: Family<MirrorLabel, Gauge<f64, AtomicU64>>,
    /// Failed runs since the last success: "failing N runs in a row" is a comparison.
    failed_in_a_row: Family<MirrorLabel, Gauge>,
    /// The longest gap between a scheduled mirror's runs: "no success for twice its schedule".
    schedule_interval: Family<MirrorLabel, Gauge<f64, AtomicU64>>,
    /// When a mirror's schedule began (start, or the reload that added or rescheduled it): the
    /// clock for a mirror that has not succeeded since.
    schedule_start: Family<MirrorLabel, Gauge<f64, AtomicU64>>,
    reloads: Family<ReloadLabel, Counter>,
    /// 1 while the config in force is the file's, 0 after a refused reload: the counter alone
    /// cannot tell a file fixed since from one still broken.
    reload_ok: Gauge,
    pulls: Family<RegistryLabel, Counter>,
    refused: Family<RegistryLabel, Counter>,
    paused: Family<RegistryLabel, Counter<f64, AtomicU64>>,
    remaining: Family<RegistryLabel, Gauge>,
    limit: Family<RegistryLabel, Gauge>,
    waiting: Family<RegistryLabel, Gauge>,
    tag_lists: Family<RegistryLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
    compared: Family<ComparedLabels, Counter>,
    tag_api_fallbacks: Family<MirrorLabel, Counter>,
    tags_listed: Family<MirrorLabel, Gauge>,
    tags_selected: Family<MirrorLabel, Gauge>,
    pruned: Family<MirrorLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    /// Registry totals already added to the counters: the budgets hold process totals, the
    /// counters only ever grow by the difference.
    seen: Mutex<HashMap<String, RegistryUsage>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("regmirror");
        let m = Metrics {
            images: Family::default(),
            bytes: Family::default(),
            runs: Family::default(),
            skipped: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0])
            }),
            last_success: Family::default(),
            failed_in_a_row: Family::default(),
            schedule_interval: Family::default(),
            schedule_start: Family::default(),
            reloads: Family::default(),
            reload_ok: Gauge::default(),
            pulls: Family::default(),
            refused: Family::default(),
            paused: Family::default(),
            remaining: Family::default(),
            limit: Family::default(),
            waiting: Family::default(),
            tag_lists: Family::default(),
            requests: Family::default(),
            compared: Family::default(),
            tag_api_fallbacks: Family::default(),
            tags_listed: Family::default(),
            tags_selected: Family::default(),
            pruned: Family::default(),
            failures: Family::default(),
            seen: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "images",
            "Images handled, by mirror and result (mirrored, unchanged, skipped, immutable: \
             upstream moved where the target refuses to move the tag, failed)",
            m.images.clone(),
        );
        registry.register_with_unit(
            "copied",
            "Blob bytes copied into the target, by mirror",
            Unit::Bytes,
            m.bytes.clone(),
        );
        registry.register(
            "runs",
            "Runs of a mirror, by result (success: no image failed or refused as immutable)",
            m.runs.clone(),
        );
        registry.register(
            "skipped_runs",
            "Scheduled runs skipped because the mirror's previous run was still going",
            m.skipped.clone(),
        );
        registry.register_with_unit(
            "run_duration",
            "How long a run of a mirror took",
            Unit::Seconds,
            m.durations.clone(),
        );
        registry.register_with_unit(
            "last_success_timestamp",
            "When a run of the mirror last ended with no image failed or refused as immutable \
             (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "consecutive_failed_runs",
            "Runs of the mirror that failed since its last success (0 after a success)",
            m.failed_in_a_row.clone(),
        );
        registry.register_with_unit(
            "schedule_interval",
            "Longest gap between two runs of a scheduled mirror, looking a week ahead",
            Unit::Seconds,
            m.schedule_interval.clone(),
        );
        registry.register_with_unit(
            "schedule_start_timestamp",
            "When the daemon began running the mirror on its schedule: at start, or the reload \
             that added or rescheduled it (Unix time)",
            Unit::Seconds,
            m.schedule_start.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by result (applied, refused)",
            m.reloads.clone(),
        );
        m.reload_ok.set(1);
        registry.register(
            "config_last_reload_successful",
            "1 while the config in force is the file's, 0 after a reload was refused",
            m.reload_ok.clone(),
        );
        registry.register(
            "pulls",
            "Manifest GETs served by a source registry (Docker Hub's unit of rate limiting)",
            m.pulls.clone(),
        );
        registry.register(
            "pulls_refused",
            "Manifest GETs a registry refused with HTTP 429",
            m.refused.clone(),
        );
        registry.register_with_unit(
            "ratelimit_paused",
            "Time pulls from a registry were paused to stay within its budget",
            Unit::Seconds,
            m.paused.clone(),
        );
        registry.register(
            "ratelimit_remaining",
            "Pulls a registry last said are left in its window (estimate after our own pulls)",
            m.remaining.clone(),
        );
        registry.register(
            "ratelimit_limit",
            "Pulls a registry allows per window, as it last announced",
            m.limit.clone(),
        );
        registry.register(
            "ratelimit_waiting_pulls",
            "Pulls waiting for a registry's budget now (0 once they went or gave up)",
            m.waiting.clone(),
        );
        registry.register(
            "tag_list_requests",
            "Tag-list requests sent to a registry (not pulls; retries and pages included)",
            m.tag_lists.clone(),
        );
        registry.register(
            "registry_requests",
            "Requests sent to a registry, by kind (head, get, blob, push, delete, list, \
             referrers, ping, token, tag_api); retries included",
            m.requests.clone(),
        );
        registry.register(
            "compared_tags",
            "Source tags a mirror compared with its targets, by how (api: the digest a tag API \
             listed, no HEAD at the source; head: a HEAD at the source)",
            m.compared.clone(),
        );
        registry.register(
            "tag_api_fallbacks",
            "Repositories of a mirror whose tag API failed in a run (429, 5xx, format), compared \
             by HEAD instead",
            m.tag_api_fallbacks.clone(),
        );
        registry.register(
            "tags_listed",
            "Tags the source repository of a mirror with tag rules listed at its last run",
            m.tags_listed.clone(),
        );
        registry.register(
            "tags_selected",
            "Tags the rules of a mirror selected at its last run",
            m.tags_selected.clone(),
        );
        registry.register(
            "failures",
            "Failures by reason class: failed images, and failures of a mirror as a whole \
             (a listing, its rules, its prune)",
            m.failures.clone(),
        );
        registry.register(
            "pruned_tags",
            "Target tags prune deleted, by mirror (signatures of pruned digests included)",
            m.pruned.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Records a finished run of `mirror`.
    pub fn record_run(&self, mirror: &str, report: &Report, ended_unix: f64) {
        let label = MirrorLabel {
            mirror: mirror.to_string(),
        };
        let image = |result| ImageLabels {
            mirror: mirror.to_string(),
            result,
        };
        for r in &report.results {
            match &r.outcome {
                Ok(Outcome::Mirrored { stats, .. }) => {
                    self.images.get_or_create(&image("mirrored")).inc();
                    self.bytes.get_or_create(&label).inc_by(stats.bytes_copied);
                }
                Ok(Outcome::Unchanged { .. }) => {
                    self.images.get_or_create(&image("unchanged")).inc();
                }
                Ok(Outcome::WouldCopy { .. }) => {}
                Ok(Outcome::Skipped { .. }) => {
                    self.images.get_or_create(&image("skipped")).inc();
                }
                Ok(Outcome::Immutable { .. }) => {
                    self.images.get_or_create(&image("immutable")).inc();
                }
                Err(_) => {
                    self.images.get_or_create(&image("failed")).inc();
                }
            }
        }
        for (reason, count) in report.reasons() {
            let labels = FailureLabels {
                mirror: mirror.to_string(),
                reason: reason.as_str(),
            };
            self.failures.get_or_create(&labels).inc_by(count as u64);
        }
        for (by, count) in [
            ("api", report.compared.by_api),
            ("head", report.compared.by_head),
        ] {
            let labels = ComparedLabels {
                mirror: mirror.to_string(),
                by,
            };
            self.compared.get_or_create(&labels).inc_by(count);
        }
        self.tag_api_fallbacks
            .get_or_create(&label)
            .inc_by(report.compared.api_fallbacks);
        let pruned = report
            .pruned
            .iter()
            .filter(|p| p.deleted && p.mirror == mirror)
            .count();
        self.pruned.get_or_create(&label).inc_by(pruned as u64);
        for selected in report.selections.iter().filter(|s| s.mirror == mirror) {
            self.tags_listed
                .get_or_create(&label)
                .set(selected.listed as i64);
            self.tags_selected
                .get_or_create(&label)
                .set(selected.selected.len() as i64);
        }
        let success = report.complete();
        self.runs
            .get_or_create(&image(if success { "success" } else { "failed" }))
            .inc();
        self.durations
            .get_or_create(&label)
            .observe(report.elapsed.as_secs_f64());
        if success {
            self.last_success.get_or_create(&label).set(ended_unix);
            self.failed_in_a_row.get_or_create(&label).set(0);
        } else {
            self.failed_in_a_row.get_or_create(&label).inc();
        }
    }

    /// Records that `mirror` runs on a schedule whose longest gap is `interval` from
    /// `start_unix` on; `None` for a mirror without a schedule (or with no further runs),
    /// which no staleness alert can judge.
    pub fn record_schedule(&self, mirror: &str, interval: Option<Duration>, start_unix: f64) {
        let label = MirrorLabel {
            mirror: mirror.to_string(),
        };
        match interval {
            Some(interval) => {
                self.schedule_interval
                    .get_or_create(&label)
                    .set(interval.as_secs_f64());
                self.schedule_start.get_or_create(&label).set(start_unix);
            }
            None => {
                self.schedule_interval.remove(&label);
                self.schedule_start.remove(&label);
            }
        }
    }

    /// Drops the gauges of a mirror no longer configured, so no alert fires for it. Its
    /// counters stay: they only ever grow.
    pub fn forget_mirror(&self, mirror: &str) {
        let label = MirrorLabel {
            mirror: mirror.to_string(),
        };
        self.record_schedule(mirror, None, 0.0);
        self.failed_in_a_row.remove(&label);
        self.last_success.remove(&label);
        self.tags_listed.remove(&label);
        self.tags_selected.remove(&label);
    }

    pub fn record_skipped(&self, mirror: &str) {
        self.skipped
            .get_or_create(&MirrorLabel {
                mirror: mirror.to_string(),
            })
            .inc();
    }

    pub fn record_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&ReloadLabel { result }).inc();
        self.reload_ok.set(i64::from(applied));
    }

    /// The text a scrape gets, with registry figures brought up to `usage` (process totals).
    pub fn render(&self, usage: &[RegistryUsage]) -> String {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for now in usage {
                let label = RegistryLabel {
                    registry: now.registry.clone(),
                };
                let before = seen.get(&now.registry);
                let grew = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(0));
                self.pulls
                    .get_or_create(&label)
                    .inc_by(grew(now.pulls, before.map(|b| b.pulls)));
                self.refused
                    .get_or_create(&label)
                    .inc_by(grew(now.refused, before.map(|b| b.refused)));
                self.tag_lists
                    .get_or_create(&label)
                    .inc_by(grew(now.tag_lists, before.map(|b| b.tag_lists)));
                let requests_before = before.map(|b| b.requests).unwrap_or_default();
                for (kind, grew) in now.requests.since(&requests_before).by_kind() {
                    if grew > 0 {
                        let labels = RequestLabels {
                            registry: now.registry.clone(),
                            kind,
                        };
                        self.requests.get_or_create(&labels).inc_by(grew);
                    }
                }
                let paused_before = before.map_or(Duration::ZERO, |b| b.paused);
                self.paused
                    .get_or_create(&label)
                    .inc_by(now.paused.saturating_sub(paused_before).as_secs_f64());
                self.waiting.get_or_create(&label).set(now.waiting as i64);
                if let Some(remaining) = now.remaining {
                    self.remaining.get_or_create(&label).set(remaining as i64);
                }
                if let Some(limit) = now.limit {
                    self.limit.get_or_create(&label).set(limit as i64);
                }
                seen.insert(now.registry.clone(), now.clone());
            }
        }
        let mut out = String::new();
        text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Report {
        Report {
            problems: vec![crate::run::Problem::new(
                crate::reason::Reason::Unreachable,
                "listing failed",
            )],
            ..Report::default()
        }
    }

    fn line<'a>(text: &'a str, start: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(start)).collect()
    }

    #[test]
    fn failed_runs_in_a_row_count_up_and_a_success_sets_them_back_to_zero() {
        let m = Metrics::default();
        let runs = |m: &Metrics| m.render(&[]);
        let gauge = "regmirror_consecutive_failed_runs{mirror=\"app\"}";
        m.record_run("app", &failed(), 1.0);
        m.record_run("app", &failed(), 2.0);
        assert_eq!(line(&runs(&m), gauge), [format!("{gauge} 2").as_str()]);
        let by_reason = "regmirror_failures_total{mirror=\"app\",reason=\"unreachable\"}";
        assert_eq!(
            line(&runs(&m), by_reason),
            [format!("{by_reason} 2").as_str()]
        );
        m.record_run("app", &Report::default(), 3.0);
        assert_eq!(line(&runs(&m), gauge), [format!("{gauge} 0").as_str()]);
        m.record_run("app", &failed(), 4.0);
        assert_eq!(line(&runs(&m), gauge), [format!("{gauge} 1").as_str()]);
    }

    #[test]
    fn a_schedule_shows_its_gap_and_start_until_the_mirror_loses_it_or_is_removed() {
        let m = Metrics::default();
        m.record_schedule("app", Some(Duration::from_secs(3600)), 1700000000.0);
        m.record_run("app", &Report::default(), 1700000100.0);
        m.record_run("app", &failed(), 1700000200.0);
        let text = m.render(&[]);
        for expected in [
            "regmirror_schedule_interval_seconds{mirror=\"app\"} 3600.0",
            "regmirror_schedule_start_timestamp_seconds{mirror=\"app\"} 1700000000.0",
            "regmirror_last_success_timestamp_seconds{mirror=\"app\"} 1700000100.0",
            "regmirror_consecutive_failed_runs{mirror=\"app\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected}\n{text}");
        }
        m.record_schedule("app", None, 0.0);
        let text = m.render(&[]);
        assert!(
            !text.contains("regmirror_schedule_interval_seconds{"),
            "{text}"
        );
        assert!(
            text.contains("regmirror_consecutive_failed_runs{"),
            "{text}"
        );
        m.forget_mirror("app");
        let text = m.render(&[]);
        for gone in [
            "regmirror_consecutive_failed_runs{",
            "regmirror_last_success_timestamp_seconds{",
        ] {
            assert!(!text.contains(gone), "{gone} left\n{text}");
        }
        assert!(
            text.contains("regmirror_runs_total{mirror=\"app\",result=\"failed\"} 1"),
            "counters stay\n{text}"
        );
    }

    #[test]
    fn the_last_reload_is_successful_until_one_is_refused_and_again_once_one_applies() {
        let m = Metrics::default();
        let gauge = "regmirror_config_last_reload_successful";
        assert_eq!(line(&m.render(&[]), gauge), [format!("{gauge} 1").as_str()]);
        m.record_reload(false);
        assert_eq!(line(&m.render(&[]), gauge), [format!("{gauge} 0").as_str()]);
        m.record_reload(true);
        assert_eq!(line(&m.render(&[]), gauge), [format!("{gauge} 1").as_str()]);
    }

    #[test]
    fn pulls_waiting_for_a_budget_show_and_fall_back_to_zero() {
        let m = Metrics::default();
        let usage = |waiting| RegistryUsage {
            registry: "hub.io".to_string(),
            pulls: 1,
            refused: 0,
            paused: Duration::from_secs(5),
            remaining: Some(0),
            limit: Some(1),
            window: None,
            resets_in: None,
            tag_lists: 0,
            waiting,
            requests: Default::default(),
        };
        let gauge = "regmirror_ratelimit_waiting_pulls{registry=\"hub.io\"}";
        assert_eq!(
            line(&m.render(&[usage(3)]), gauge),
            [format!("{gauge} 3").as_str()]
        );
        assert_eq!(
            line(&m.render(&[usage(0)]), gauge),
            [format!("{gauge} 0").as_str()]
        );
    }
}
