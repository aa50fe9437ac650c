//! What a pass did: a result per image, the problems of mirrors as a whole (a listing that
//! failed, rules that selected nothing, a tag two mirrors claim), and what each registry
//! spent; rendered for a person as a line per thing that needs attention and one summary line.
//!
//! A pass is complete when every image the user asked for holds what upstream has: nothing
//! failed, and no upstream tag moved where the target refuses to move it
//! ([`Outcome::Immutable`]). That is what the exit code, `/healthz` and the metrics' last
//! success say.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Job;
use crate::copy::{CopyError, Outcome};
use crate::reason::Reason;
use crate::registry::ratelimit::RegistryUsage;
use crate::registry::waiting::secs;
use crate::untrusted;

/// The most characters of one problem or failure reason in a report line (and in
/// `/healthz`'s `errors`): each quotes a few clipped names or texts of a registry's, so this
/// only bounds what nothing else has.
const MAX_REASON: usize = 2_000;

/// `text` as a report shows it: on one line, control characters escaped, clipped.
fn shown(text: &str) -> String {
    untrusted::line(text, MAX_REASON)
}

/// The result of one image.
#[derive(Debug)]
pub struct ImageResult {
    pub job: Job,
    pub outcome: Result<Outcome, Failed>,
}

/// Why an image was not mirrored, typed from where it failed up to the report.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failed {
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// Its copy was under way at shutdown and the grace period ended first.
    #[error("abandoned at shutdown: the grace period ended before it was done; the target tag was not moved")]
    Abandoned,
    /// The copy task panicked, or its result went missing: regmirror's own fault.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl Failed {
    /// The class of this failure, for reports, metrics and alerts.
    pub fn reason(&self) -> Reason {
        match self {
            Failed::Copy(e) => e.reason(),
            Failed::Abandoned => Reason::Stopped,
            Failed::Internal(_) => Reason::Internal,
        }
    }
}

/// A failure that is no one image's: a mirror's listing, its rules, two mirrors wanting one
/// tag, the SSM list, a prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    /// One line naming the mirror (or SSM parameter) and saying what happened.
    pub message: String,
}

impl Problem {
    pub fn new(reason: Reason, message: impl Into<String>) -> Problem {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What one mirror with tag rules found when it listed its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The mirror's name.
    pub mirror: String,
    /// Tags the repository listed.
    pub listed: usize,
    /// The tags the rules selected (its exact `tags` not among them), highest version first.
    pub selected: Vec<String>,
}

/// Why prune deletes a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneWhy {
    /// An exact tag its source no longer lists.
    GoneUpstream,
    /// A tag the rules name but no longer select.
    NotSelected,
    /// A signature, attestation or SBOM tag of a digest pruned with no tag left naming it.
    Referrer,
}

impl PruneWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            PruneWhy::GoneUpstream => "gone upstream",
            PruneWhy::NotSelected => "no longer selected",
            PruneWhy::Referrer => "describes a pruned digest",
        }
    }
}

/// A target tag prune deleted (or, in a dry run, would delete).
#[derive(Debug, Clone)]
pub struct PrunedTag {
    pub mirror: String,
    /// The tag, pinned to the digest it pointed at.
    pub image: crate::reference::ImageRef,
    pub why: PruneWhy,
    /// `false` in a dry run.
    pub deleted: bool,
}

/// Everything a pass did, in config order.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<ImageResult>,
    /// Failures that are no one image's: each a line naming its mirror (or SSM parameter) and
    /// why. Any of them makes the pass a failure.
    pub problems: Vec<Problem>,
    /// What each mirror with tag rules listed and selected.
    pub selections: Vec<Selected>,
    /// Target tags prune deleted, or would delete in a dry run.
    pub pruned: Vec<PrunedTag>,
    /// In a dry run: what the copies would cost each source registry, against its budget.
    pub prices: Vec<super::price::RegistryPrice>,
    /// Pulls spent, tags listed, time waited and requests sent, per registry.
    pub usage: Vec<RegistryUsage>,
    /// How source tags were compared.
    pub compared: Compared,
    pub elapsed: Duration,
    pub dry_run: bool,
}

/// How a pass compared its source tags with their targets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compared {
    /// By the digest a tag API listed: no HEAD at the source.
    pub by_api: u64,
    /// By a HEAD at the source.
    pub by_head: u64,
    /// Repositories whose tag API failed this pass, compared by HEAD instead.
    pub api_fallbacks: u64,
}

impl Report {
    /// Images that failed, and problems of whole mirrors.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.outcome.is_err()).count() + self.problems.len()
    }

    /// Images whose upstream tag moved where the target refuses to move it.
    pub fn immutable(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Ok(Outcome::Immutable { .. })))
            .count()
    }

    /// Whether every image holds what upstream has: nothing failed, nothing refused as
    /// immutable. The exit code is 0 only then.
    pub fn complete(&self) -> bool {
        self.failed() == 0 && self.immutable() == 0
    }

    /// Every image refused as immutable, as one line: `source → target: immutable in target:
    /// upstream moved <old> → <new>`.
    pub fn immutable_lines(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|r| match &r.outcome {
                Ok(Outcome::Immutable { was, upstream }) => Some(format!(
                    "{} → {}: {}",
                    r.job.source,
                    r.job.target,
                    moved(was, upstream)
                )),
                _ => None,
            })
            .collect()
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

    /// Per target registry: images copied (or that would be), unchanged, refused as
    /// immutable, failed.
    pub fn per_target_registry(&self) -> std::collections::BTreeMap<&str, PerTarget> {
        let mut counts = std::collections::BTreeMap::new();
        for r in &self.results {
            let entry: &mut PerTarget = counts.entry(r.job.target.registry.as_str()).or_default();
            match &r.outcome {
                Ok(Outcome::Mirrored { .. } | Outcome::WouldCopy { .. }) => entry.changed += 1,
                Ok(Outcome::Unchanged { .. } | Outcome::Skipped { .. }) => entry.unchanged += 1,
                Ok(Outcome::Immutable { .. }) => entry.immutable += 1,
                Err(_) => entry.failed += 1,
            }
        }
        counts
    }

    /// Every failure with its class, as one line each: the problems, then each failed image.
    pub fn failures(&self) -> Vec<(Reason, String)> {
        let images = self.results.iter().filter_map(|r| {
            let failed = r.outcome.as_ref().err()?;
            Some((
                failed.reason(),
                format!(
                    "{} → {}: {}: {}",
                    r.job.source,
                    r.job.target,
                    failed.reason(),
                    shown(&failed.to_string())
                ),
            ))
        });
        self.problems
            .iter()
            .map(|p| (p.reason, format!("{}: {}", p.reason, shown(&p.message))))
            .chain(images)
            .collect()
    }

    /// How many failures each class counts: failed images, problems, and images refused as
    /// immutable (not what upstream has either).
    pub fn reasons(&self) -> std::collections::BTreeMap<Reason, usize> {
        let mut counts = std::collections::BTreeMap::new();
        let images = self.results.iter().filter_map(|r| match &r.outcome {
            Err(failed) => Some(failed.reason()),
            Ok(Outcome::Immutable { .. }) => Some(Reason::Immutable),
            Ok(_) => None,
        });
        for reason in images.chain(self.problems.iter().map(|p| p.reason)) {
            *counts.entry(reason).or_default() += 1;
        }
        counts
    }

    /// The report for a person: a line per image that needs attention (every failure with its
    /// reason; in a dry run every image), then the summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for problem in &self.problems {
            let _ = writeln!(
                out,
                "FAILED      {}: {}",
                problem.reason,
                shown(&problem.message)
            );
        }
        let (mut changed, mut unchanged, mut skipped) = (0, 0, 0);
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
                    price,
                }) => {
                    changed += 1;
                    let now = now.as_deref().unwrap_or("nothing");
                    let _ = writeln!(
                        out,
                        "would copy  {source} → {target} ({digest}; target has {now}; {})",
                        super::price::pulls_said(*price)
                    );
                }
                Ok(Outcome::Mirrored { .. }) => changed += 1,
                Ok(Outcome::Skipped { reason }) => {
                    skipped += 1;
                    let _ = writeln!(out, "skipped     {source} → {target}: {}", shown(reason));
                }
                Ok(Outcome::Immutable { was, upstream }) => {
                    let _ = writeln!(
                        out,
                        "IMMUTABLE   {source} → {target} ({}): {}",
                        r.job.origin(),
                        moved(was, upstream)
                    );
                }
                Err(failed) => {
                    let _ = writeln!(
                        out,
                        "FAILED      {source} → {target} ({}): {}: {}",
                        r.job.origin(),
                        failed.reason(),
                        shown(&failed.to_string())
                    );
                }
            }
        }
        for p in &self.pruned {
            let verb = if p.deleted {
                "pruned     "
            } else {
                "would prune"
            };
            let _ = writeln!(
                out,
                "{verb} {} ({}; {})",
                p.image.named(),
                p.image.digest.as_deref().unwrap_or_default(),
                p.why.as_str()
            );
        }
        for p in &self.prices {
            let _ = writeln!(out, "{p}");
        }
        for u in self.usage.iter().filter(|u| u.budget_touched()) {
            let left = match (u.remaining, u.limit) {
                (Some(remaining), Some(limit)) => format!(", {remaining} of {limit} left"),
                (Some(remaining), None) => format!(", {remaining} left"),
                _ => String::new(),
            };
            let listed = match u.tag_lists {
                0 => String::new(),
                1 => ", 1 tag list request".to_string(),
                n => format!(", {n} tag list requests"),
            };
            let _ = writeln!(
                out,
                "{}: {} pulls, {} refused (HTTP 429), paused {}{left}{listed}",
                u.registry,
                u.pulls,
                u.refused,
                secs(u.paused)
            );
        }
        let Compared {
            by_api,
            by_head,
            api_fallbacks,
        } = self.compared;
        if by_api > 0 || api_fallbacks > 0 {
            let failed = match api_fallbacks {
                0 => String::new(),
                1 => "; the tag API failed for 1 repository, compared by HEAD".to_string(),
                n => format!("; the tag API failed for {n} repositories, compared by HEAD"),
            };
            let _ = writeln!(
                out,
                "compared {} tags: {by_api} by the tag API's digests, {by_head} by HEAD{failed}",
                by_api + by_head
            );
        }
        let verb = if self.dry_run {
            "would copy"
        } else {
            "mirrored"
        };
        // With several target registries, each gets its own count.
        let per_target = self.per_target_registry();
        if per_target.len() > 1 {
            for (registry, counts) in &per_target {
                let _ = writeln!(
                    out,
                    "to {registry}: {verb} {}, unchanged {}{}, failed {}",
                    counts.changed,
                    counts.unchanged,
                    some(counts.immutable, "immutable"),
                    counts.failed
                );
            }
        }
        let pruned = match (self.pruned.len(), self.dry_run) {
            (0, _) => String::new(),
            (n, false) => format!(", pruned {n}"),
            (n, true) => format!(", would prune {n}"),
        };
        let _ = write!(
            out,
            "{verb} {changed}, unchanged {unchanged}{}{}{pruned}, failed {} in {:.1} s",
            some(skipped, "skipped"),
            some(self.immutable(), "immutable"),
            self.failed(),
            self.elapsed.as_secs_f64()
        );
        out
    }
}

/// What one target registry got in a pass, by image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PerTarget {
    /// Copied, or in a dry run would be.
    pub changed: usize,
    /// Already up to date, or skipped (no platform wanted).
    pub unchanged: usize,
    /// Upstream moved; the target refuses to move its tag.
    pub immutable: usize,
    pub failed: usize,
}

/// `, <what> <n>` for a count shown only when there is something to count.
fn some(n: usize, what: &str) -> String {
    match n {
        0 => String::new(),
        n => format!(", {what} {n}"),
    }
}

/// The words for an image refused as immutable, the same in the report, `/healthz` and logs.
pub fn moved(was: &str, upstream: &str) -> String {
    format!(
        "immutable in target: upstream moved {} → {}",
        untrusted::line(was, untrusted::NAME),
        untrusted::line(upstream, untrusted::NAME)
    )
}
