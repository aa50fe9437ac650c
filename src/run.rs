//! One pass over every image of the config, and the report it ends with.
//!
//! Images are mirrored up to `defaults.concurrency` at a time, each in its own task: one that
//! fails (or even panics) is recorded and the others carry on. The [`Report`] lists every
//! result in config order and ends with the summary line.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use crate::blobs::BlobLedger;
use crate::config::{Config, Job};
use crate::copy::{self, CopyError, Outcome, PassContext};
use crate::ratelimit::RegistryUsage;
use crate::registry::Registries;
use crate::waiting::{secs, Waiter};

/// The result of one image.
#[derive(Debug)]
pub struct ImageResult {
    pub job: Job,
    pub outcome: Result<Outcome, String>,
}

/// Everything a pass did, in config order.
#[derive(Debug)]
pub struct Report {
    pub results: Vec<ImageResult>,
    /// Pulls spent and time waited, per registry pulled from.
    pub usage: Vec<RegistryUsage>,
    pub elapsed: Duration,
    pub dry_run: bool,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_err()).count()
    }

    /// The report for a person: a line per image that needs attention (every failure with its
    /// reason; in a dry run every image), then the summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let (mut changed, mut unchanged) = (0, 0);
        for r in &self.results {
            let (source, target) = (&r.job.source, &r.job.target);
            match &r.outcome {
                Ok(Outcome::Unchanged { .. }) => {
                    unchanged += 1;
                    if self.dry_run {
                        let _ = writeln!(out, "unchanged   {source} → {target}");
                    }
                }
                Ok(Outcome::WouldCopy {
                    digest,
                    target: now,
                }) => {
                    changed += 1;
                    let now = now.as_deref().unwrap_or("nothing");
                    let _ = writeln!(
                        out,
                        "would copy  {source} → {target} ({digest}; target has {now})"
                    );
                }
                Ok(Outcome::Mirrored { .. }) => changed += 1,
                Err(reason) => {
                    let _ = writeln!(
                        out,
                        "FAILED      {source} → {target} (line {}): {reason}",
                        r.job.line
                    );
                }
            }
        }
        for u in &self.usage {
            let left = match (u.remaining, u.limit) {
                (Some(remaining), Some(limit)) => format!(", {remaining} of {limit} left"),
                (Some(remaining), None) => format!(", {remaining} left"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{}: {} pulls, {} refused (HTTP 429), paused {}{left}",
                u.registry,
                u.pulls,
                u.refused,
                secs(u.paused)
            );
        }
        let verb = if self.dry_run {
            "would copy"
        } else {
            "mirrored"
        };
        let _ = write!(
            out,
            "{verb} {changed}, unchanged {unchanged}, failed {} in {:.1} s",
            self.failed(),
            self.elapsed.as_secs_f64()
        );
        out
    }
}

/// Mirrors every image of `config` once (compares only, when `dry_run`).
pub async fn run_pass(config: &Config, dry_run: bool) -> Result<Report, String> {
    let started = Instant::now();
    let ctx = PassContext {
        registries: Arc::new(Registries::new(config)?),
        ledger: Arc::new(BlobLedger::default()),
        dry_run,
    };
    let slots = Arc::new(Semaphore::new(config.concurrency));
    let max_wait = config.rate_limit.max_wait;
    let mut tasks = JoinSet::new();
    for (index, job) in config.jobs.iter().cloned().enumerate() {
        let (ctx, slots) = (ctx.clone(), slots.clone());
        let span = tracing::info_span!("image", source = %job.source, target = %job.target);
        tasks.spawn(
            async move {
                let waiter = Waiter::start(slots, max_wait).await;
                let image_started = Instant::now();
                let outcome = copy::mirror(&ctx, &job, &waiter).await;
                log_outcome(&outcome, image_started.elapsed());
                (index, outcome.map_err(|e| e.to_string()))
            }
            .instrument(span),
        );
    }

    let mut outcomes: Vec<Option<Result<Outcome, String>>> = vec![None; config.jobs.len()];
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, (index, outcome))) => outcomes[index] = Some(outcome),
            Err(e) => warn!(error = %e, "an image task ended abnormally"),
        }
    }
    let results = config
        .jobs
        .iter()
        .cloned()
        .zip(outcomes)
        .map(|(job, outcome)| ImageResult {
            job,
            outcome: outcome
                .unwrap_or_else(|| Err("internal error: the copy task panicked".to_string())),
        })
        .collect();
    Ok(Report {
        results,
        usage: ctx.registries.usage(),
        elapsed: started.elapsed(),
        dry_run,
    })
}

/// One log line per image result.
fn log_outcome(outcome: &Result<Outcome, CopyError>, took: Duration) {
    let secs = (took.as_secs_f64() * 100.0).round() / 100.0;
    match outcome {
        Ok(Outcome::Unchanged { digest }) => info!(%digest, secs, "unchanged"),
        Ok(Outcome::WouldCopy { digest, target }) => {
            info!(%digest, target_digest = target.as_deref().unwrap_or("none"), "would copy")
        }
        Ok(Outcome::Mirrored { digest, stats }) => info!(
            %digest,
            secs,
            pulls = stats.pulls,
            manifests = stats.manifests_pushed,
            blobs_copied = stats.blobs_copied,
            blobs_mounted = stats.blobs_mounted,
            blobs_present = stats.blobs_present,
            bytes = stats.bytes_copied,
            "mirrored"
        ),
        Err(e) => warn!(error = %e, secs, "failed"),
    }
}
