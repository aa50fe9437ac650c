//! One pass: its plan (every image, tag rules applied to fresh listings), then every image
//! of the plan, and the report it ends with.
//!
//! [`Runner::prepare`] makes a pass of a config, adding the SSM parameter's images when the
//! pass runs its mirror; `--once` and the daemon both start there, so the list fails them
//! alike (see `listed.rs`).
//!
//! [`plan`] lists the repositories of mirrors with tag rules and turns what they select into
//! jobs. Images are then compared all at once (the registry layer bounds the HEADs in flight
//! per registry) and copied up to `defaults.concurrency` at a time, each in its own task: one
//! that fails (or even panics) is recorded and the others carry on. The [`Report`] lists
//! every result in config order and ends with the summary line.

mod compare;
mod listed;
mod plan;
mod price;
mod prune;
pub mod record;
mod report;

pub use compare::HeadPasses;
pub use listed::{LastListed, Pass};
pub use plan::{Claim, Claims, Plan};
pub use report::{Compared, Failed, ImageResult, PerTarget, Problem, Report, Selected};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::{Config, Job};
use crate::copy::blobs::BlobLedger;
use crate::copy::{self, CopyError, Outcome, PassContext};
use crate::reference::ImageRef;
use crate::registry::limits::Deadlines;
use crate::registry::ratelimit::{Budgets, RegistryUsage};
use crate::registry::waiting::{secs, WaitRefused, Waiter, Whole};
use crate::registry::Registries;
use crate::store::layout::OciLayout;
use crate::store::Stores;

/// What a person watching a pass sees counted: images planned, and done by outcome.
#[derive(Debug, Default)]
pub struct Tally {
    pub planned: AtomicUsize,
    pub mirrored: AtomicUsize,
    pub unchanged: AtomicUsize,
    pub skipped: AtomicUsize,
    /// Upstream moved where the target refuses to move its tag.
    pub immutable: AtomicUsize,
    pub failed: AtomicUsize,
    /// Target tags prune deleted.
    pub pruned: AtomicUsize,
}

impl Tally {
    fn record(&self, outcome: &Result<Outcome, Failed>) {
        let counter = match outcome {
            Ok(Outcome::Mirrored { .. } | Outcome::WouldCopy { .. }) => &self.mirrored,
            Ok(Outcome::Unchanged { .. }) => &self.unchanged,
            Ok(Outcome::Skipped { .. }) => &self.skipped,
            Ok(Outcome::Immutable { .. }) => &self.immutable,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Images done, by any outcome.
    pub fn done(&self) -> usize {
        [
            &self.mirrored,
            &self.unchanged,
            &self.skipped,
            &self.immutable,
            &self.failed,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Images under way at once, comparing or copying (copies are further held to
/// `defaults.concurrency`): enough to keep [`crate::registry::HEADS_PER_REGISTRY`] HEADs in
/// flight to a few registries, few enough that a pass over 100,000 tags holds little memory.
const IMAGES_IN_FLIGHT: usize = 128;

/// What every pass of one process shares: registry clients and pull budgets, the
/// concurrency slots, and the shutdown signal.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The registries' clients, budgets and pauses.
    pub registries: Arc<Registries>,
    /// Where images are read and written: the registries, through one interface.
    pub stores: Arc<Stores>,
    /// `defaults.concurrency` slots, shared by passes that run at the same time.
    pub slots: Arc<Semaphore>,
    /// The number of `slots`: copies under way are `concurrency` less those available.
    pub concurrency: usize,
    pub max_wait: Duration,
    /// Cancelled on SIGTERM/SIGINT: no image starts after it, waits end, and copies under way
    /// get `grace` to finish before they are abandoned.
    pub stop: CancellationToken,
    pub grace: Duration,
    /// Counted as images finish, when someone watches (the terminal's progress view).
    pub tally: Option<Arc<Tally>>,
    /// The SSM parameter's entries last read, for a pass whose read fails; the daemon hands
    /// it from one config's runner to the next.
    pub listed: Arc<LastListed>,
    /// `verify`'s verdicts by image and signature digest, so an image refused once is not
    /// pulled again until its signatures change.
    pub verdicts: Arc<copy::Verdicts>,
    /// When each source repository was last compared by HEAD alone (`head_every`).
    pub head_passes: Arc<HeadPasses>,
}

impl Runner {
    /// A runner for `config`'s registries; `budgets` carries pull budgets over from earlier
    /// configs of the same process.
    pub fn new(
        config: &Config,
        budgets: Arc<Budgets>,
        stop: CancellationToken,
    ) -> Result<Runner, String> {
        let registries = Arc::new(Registries::new(config, budgets)?);
        Ok(Runner {
            stores: Arc::new(stores_of(config, &registries)?),
            registries,
            slots: Arc::new(Semaphore::new(config.concurrency)),
            concurrency: config.concurrency,
            max_wait: config.rate_limit.max_wait,
            stop,
            grace: config.shutdown_grace,
            tally: None,
            listed: Arc::default(),
            verdicts: Arc::default(),
            head_passes: Arc::default(),
        })
    }

    /// Plans the mirrors of `config` at the indexes `mirrors` (see [`Runner::plan`]) and
    /// mirrors the planned images that `keep` keeps (a shard's share). Returns the report,
    /// with what listing cost counted in, and the targets the plan claimed.
    pub(crate) async fn run(
        &self,
        config: &Config,
        mirrors: &[usize],
        others: &Claims,
        keep: &(dyn Fn(&Job) -> bool + Sync),
        dry_run: bool,
    ) -> (Report, Claims) {
        let started = Instant::now();
        let usage_before = self.registries.usage();
        let plan = self.plan(config, mirrors, others).await;
        let planned = plan.jobs.len();
        let jobs: Vec<Job> = plan.jobs.iter().filter(|job| keep(job)).cloned().collect();
        if let Some(tally) = &self.tally {
            tally.planned.fetch_add(jobs.len(), Ordering::Relaxed);
        }
        if jobs.len() < planned {
            info!(images = jobs.len(), of = planned, "this shard's share");
        }
        let mut report = self.pass(&jobs, dry_run).await;
        // After the copies: a tag that replaces a pruned one is in place first.
        let pruning = self
            .prune(config, mirrors, &plan, others, keep, dry_run)
            .await;
        report.problems = plan.problems;
        report.problems.extend(pruning.problems);
        report.pruned = pruning.pruned;
        report.selections = plan.selections;
        if dry_run {
            report.prices = price::per_registry(&report, &self.registries.budgets());
        }
        report.usage = usage_since(&usage_before, self.registries.usage());
        report.elapsed = started.elapsed();
        (report, plan.claims)
    }

    /// Mirrors `jobs` once (compares only, when `dry_run`).
    pub async fn pass(&self, jobs: &[Job], dry_run: bool) -> Report {
        let started = Instant::now();
        let usage_before = self.registries.usage();
        let asked = self.ask_tag_apis(jobs).await;
        let comparisons: Arc<copy::listed::Comparisons> = Arc::default();
        let ctx = PassContext {
            stores: self.stores.clone(),
            ledger: Arc::new(BlobLedger::default()),
            manifests: Arc::default(),
            listings: Arc::default(),
            dry_run,
            verdicts: self.verdicts.clone(),
            listed: Arc::new(asked.digests),
            comparisons: comparisons.clone(),
        };
        let mut tasks = JoinSet::new();
        let mut task_index = HashMap::new();
        // One task per source image, with all its targets: the source is read once for them.
        let mut pending = groups(jobs).into_iter();
        let mut outcomes: Vec<Option<Result<Outcome, Failed>>> = vec![None; jobs.len()];
        let mut deadline = None;
        loop {
            // Images start as others end, so memory follows IMAGES_IN_FLIGHT, not the job count.
            while tasks.len() < IMAGES_IN_FLIGHT && !self.stop.is_cancelled() {
                let Some(group) = pending.next() else {
                    break;
                };
                let (ctx, slots, stop) = (ctx.clone(), self.slots.clone(), self.stop.clone());
                let max_wait = self.max_wait;
                let source = jobs[group[0]].source.clone();
                let choice = jobs[group[0]].choice.clone();
                let targets: Vec<ImageRef> =
                    group.iter().map(|&i| jobs[i].target.clone()).collect();
                let span = match targets.as_slice() {
                    [target] => tracing::info_span!("image", source = %source, target = %target),
                    _ => tracing::info_span!("image", source = %source, targets = targets.len()),
                };
                let handle = tasks.spawn(
                    async move {
                        let waiter = match Waiter::new(slots, max_wait, stop) {
                            Ok(waiter) => waiter,
                            Err(refused) => {
                                let refused = Failed::Copy(CopyError::NotStarted(refused));
                                return targets.iter().map(|_| Err(refused.clone())).collect();
                            }
                        };
                        let image_started = Instant::now();
                        let copying = copy::mirror(&ctx, &source, &targets, &choice, &waiter);
                        let outcomes = match waiter.within_deadline(Whole::Image, copying).await {
                            Ok(outcomes) => outcomes,
                            Err(overdue) => targets
                                .iter()
                                .map(|_| Err(CopyError::Overdue(overdue.clone())))
                                .collect(),
                        };
                        let took = image_started.elapsed();
                        for (target, outcome) in targets.iter().zip(&outcomes) {
                            log_outcome(target, targets.len() > 1, outcome, took);
                        }
                        outcomes
                            .into_iter()
                            .map(|o| o.map_err(Failed::from))
                            .collect::<Vec<_>>()
                    }
                    .instrument(span),
                );
                task_index.insert(handle.id(), group);
            }
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
            let Some(joined) = joined else {
                // Nothing under way: every image is done, or shutdown stopped the rest.
                for index in pending.by_ref().flatten() {
                    outcomes[index] = Some(Err(Failed::Copy(CopyError::NotStarted(
                        WaitRefused::ShuttingDown,
                    ))));
                }
                break;
            };
            let (id, group_outcomes) = match joined {
                Ok((id, outcomes)) => (id, outcomes.into_iter().map(Some).collect::<Vec<_>>()),
                Err(e) => {
                    let why = if e.is_cancelled() {
                        Failed::Abandoned
                    } else {
                        warn!(error = %e, "an image task ended abnormally");
                        Failed::Internal("the copy task panicked")
                    };
                    let count = task_index.get(&e.id()).map_or(0, Vec::len);
                    (e.id(), vec![Some(Err(why)); count])
                }
            };
            if let Some(group) = task_index.get(&id) {
                for (&index, outcome) in group.iter().zip(group_outcomes) {
                    if let (Some(tally), Some(outcome)) = (&self.tally, &outcome) {
                        tally.record(outcome);
                    }
                    outcomes[index] = outcome;
                }
            }
        }
        let results = jobs
            .iter()
            .cloned()
            .zip(outcomes)
            .map(|(job, outcome)| ImageResult {
                job,
                outcome: outcome.unwrap_or(Err(Failed::Internal("the copy task was lost"))),
            })
            .collect();
        let (by_api, by_head) = comparisons.counts();
        Report {
            results,
            compared: Compared {
                by_api,
                by_head,
                api_fallbacks: asked.fallbacks,
            },
            usage: usage_since(&usage_before, self.registries.usage()),
            elapsed: started.elapsed(),
            dry_run,
            ..Report::default()
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

/// The stores of a pass over `config`: its registries, and the OCI image layouts it names,
/// those it writes locked for as long as the stores live (another process writing one is
/// refused here, before anything is attempted).
fn stores_of(config: &Config, registries: &Arc<Registries>) -> Result<Stores, String> {
    let mut stores = Stores::new(
        registries.clone(),
        Deadlines::for_max_wait(config.rate_limit.max_wait),
    );
    for (name, written) in config.layouts() {
        let layout: Arc<dyn crate::store::Store> = OciLayout::open(&name, written)?;
        stores = stores.with(name, layout);
    }
    Ok(stores)
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
                now.tag_lists -= then.tag_lists.min(now.tag_lists);
                now.requests = now.requests.since(&then.requests);
            }
            now
        })
        .filter(|u| {
            u.pulls > 0
                || u.refused > 0
                || !u.paused.is_zero()
                || u.tag_lists > 0
                || u.requests.total() > 0
        })
        .collect()
}

/// The indexes of `jobs` by source image, in the order sources first appear: each group is
/// mirrored by one task, reading its source once for all its targets.
fn groups(jobs: &[Job]) -> Vec<Vec<usize>> {
    let mut by_source: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        // By the canonical name: `nginx:1` and `docker.io/library/nginx:1` are one image;
        // copied with one choice of platforms and referrers.
        let source = format!(
            "{} {:?} {}",
            job.source,
            job.choice.platforms.as_ref().map(ToString::to_string),
            job.choice.referrers
        );
        match by_source.get(&source) {
            Some(&group) => groups[group].push(index),
            None => {
                by_source.insert(source, groups.len());
                groups.push(vec![index]);
            }
        }
    }
    groups
}

/// One log line per image result; with several targets, each line names its target.
fn log_outcome(
    target: &ImageRef,
    name_it: bool,
    outcome: &Result<Outcome, CopyError>,
    took: Duration,
) {
    let _target = name_it.then(|| tracing::info_span!("target", target = %target).entered());
    let secs = (took.as_secs_f64() * 100.0).round() / 100.0;
    match outcome {
        Ok(Outcome::Unchanged { digest }) => info!(%digest, secs, "unchanged"),
        Ok(Outcome::WouldCopy {
            digest,
            target,
            price,
        }) => {
            info!(%digest, target_digest = target.as_deref().unwrap_or("none"), pulls = price.pulls(), estimate = price.kind(), "would copy")
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
            referrers = stats.referrers,
            "mirrored"
        ),
        Ok(Outcome::Skipped { reason }) => info!(reason = %reason, "skipped"),
        Ok(Outcome::Immutable { was, upstream }) => {
            warn!(%was, %upstream, secs, "immutable in target: upstream moved")
        }
        Err(e) => warn!(reason = %e.reason(), error = %e, secs, "failed"),
    }
}
