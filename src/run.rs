//! One pass over every image of the config, and the report it ends with.
//!
//! Images are mirrored up to `defaults.concurrency` at a time, each in its own task: one that
//! fails (or even panics) is recorded and the others carry on. The [`Report`] lists every
//! result in config order and ends with the summary line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::{Config, Job};
use crate::copy::blobs::BlobLedger;
use crate::copy::{self, CopyError, Outcome, PassContext};
use crate::registry::ratelimit::{Budgets, RegistryUsage};
use crate::registry::waiting::{secs, Waiter};
use crate::registry::Registries;

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

    /// Images copied (or that would be, in a dry run) and images already up to date.
    pub fn counts(&self) -> (usize, usize) {
        let changed = |r: &&ImageResult| {
            matches!(
                r.outcome,
                Ok(Outcome::Mirrored { .. } | Outcome::WouldCopy { .. })
            )
        };
        let unchanged = |r: &&ImageResult| matches!(r.outcome, Ok(Outcome::Unchanged { .. }));
        (
            self.results.iter().filter(changed).count(),
            self.results.iter().filter(unchanged).count(),
        )
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
                        "FAILED      {source} → {target} ({}): {reason}",
                        r.job.origin()
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

/// What every pass of one process shares: registry clients and pull budgets, the
/// concurrency slots, and the shutdown signal.
#[derive(Debug, Clone)]
pub struct Runner {
    pub registries: Arc<Registries>,
    /// `defaults.concurrency` slots, shared by passes that run at the same time.
    pub slots: Arc<Semaphore>,
    pub max_wait: Duration,
    /// Cancelled on SIGTERM/SIGINT: no image starts after it, waits end, and copies under way
    /// get `grace` to finish before they are abandoned.
    pub stop: CancellationToken,
    pub grace: Duration,
}

impl Runner {
    /// A runner for `config`'s registries; `budgets` carries pull budgets over from earlier
    /// configs of the same process.
    pub fn new(
        config: &Config,
        budgets: Arc<Budgets>,
        stop: CancellationToken,
    ) -> Result<Runner, String> {
        Ok(Runner {
            registries: Arc::new(Registries::new(config, budgets)?),
            slots: Arc::new(Semaphore::new(config.concurrency)),
            max_wait: config.rate_limit.max_wait,
            stop,
            grace: config.shutdown_grace,
        })
    }

    /// Mirrors `jobs` once (compares only, when `dry_run`).
    pub async fn pass(&self, jobs: &[Job], dry_run: bool) -> Report {
        let started = Instant::now();
        let usage_before = self.registries.usage();
        let ctx = PassContext {
            registries: self.registries.clone(),
            ledger: Arc::new(BlobLedger::default()),
            dry_run,
        };
        let mut tasks = JoinSet::new();
        let mut task_index = HashMap::new();
        for (index, job) in jobs.iter().cloned().enumerate() {
            let (ctx, slots, stop) = (ctx.clone(), self.slots.clone(), self.stop.clone());
            let max_wait = self.max_wait;
            let span = tracing::info_span!("image", source = %job.source, target = %job.target);
            let handle = tasks.spawn(
                async move {
                    let waiter = match Waiter::start(slots, max_wait, stop).await {
                        Ok(waiter) => waiter,
                        Err(refused) => return Err(format!("not started: {refused}")),
                    };
                    let image_started = Instant::now();
                    let outcome = copy::mirror(&ctx, &job, &waiter).await;
                    log_outcome(&outcome, image_started.elapsed());
                    outcome.map_err(|e| e.to_string())
                }
                .instrument(span),
            );
            task_index.insert(handle.id(), index);
        }

        let mut outcomes: Vec<Option<Result<Outcome, String>>> = vec![None; jobs.len()];
        let mut deadline = None;
        loop {
            let joined = tokio::select! {
                joined = tasks.join_next_with_id() => joined,
                _ = self.stop.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + self.grace);
                    continue;
                }
                _ = sleep_until_some(deadline) => {
                    warn!(
                        unfinished = tasks.len(),
                        grace = %secs(self.grace),
                        "shutdown grace period over: abandoning the copies still under way (their tags were not moved)"
                    );
                    tasks.abort_all();
                    deadline = None;
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (id, outcome) = match joined {
                Ok((id, outcome)) => (id, outcome),
                Err(e) if e.is_cancelled() => (
                    e.id(),
                    Err("abandoned at shutdown: the grace period ended before it was done; the target tag was not moved".to_string()),
                ),
                Err(e) => {
                    warn!(error = %e, "an image task ended abnormally");
                    (e.id(), Err("internal error: the copy task panicked".to_string()))
                }
            };
            if let Some(&index) = task_index.get(&id) {
                outcomes[index] = Some(outcome);
            }
        }
        let results = jobs
            .iter()
            .cloned()
            .zip(outcomes)
            .map(|(job, outcome)| ImageResult {
                job,
                outcome: outcome
                    .unwrap_or_else(|| Err("internal error: the copy task was lost".to_string())),
            })
            .collect();
        Report {
            results,
            usage: usage_since(&usage_before, self.registries.usage()),
            elapsed: started.elapsed(),
            dry_run,
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What registries did between two readings of their usage (other passes running at the same
/// time in the daemon count too: budgets are per registry, not per pass).
fn usage_since(before: &[RegistryUsage], after: Vec<RegistryUsage>) -> Vec<RegistryUsage> {
    after
        .into_iter()
        .map(|mut now| {
            if let Some(then) = before.iter().find(|u| u.registry == now.registry) {
                now.pulls -= then.pulls.min(now.pulls);
                now.refused -= then.refused.min(now.refused);
                now.paused = now.paused.saturating_sub(then.paused);
            }
            now
        })
        .filter(|u| u.pulls > 0 || u.refused > 0 || !u.paused.is_zero())
        .collect()
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
