//! The plan of a pass: which images it mirrors.
//!
//! A mirror's fixed images (an `images` reference, a `[[mirror]]`'s exact `tags`) are known
//! from the config. A mirror with tag rules lists its source repository at every pass, so a
//! tag published upstream is mirrored by the next run without an edit or a restart, and its
//! rules pick from what the listing returns. Tags that leave the selection are left alone in
//! the target, unless the mirror prunes (see [`super::prune`]), which reads the listings kept
//! here.
//!
//! Listing is the only time two mirrors can turn out to want one target tag from different
//! sources (the config refuses it when both are written out). Such a tag is mirrored by
//! neither: both mirrors are named and the pass fails, while everything else is done.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use futures_util::{stream, FutureExt, StreamExt};
use tracing::{info, warn};

use super::report::{Problem, Selected};
use super::Runner;
use crate::config::{Config, Job, Mirror, TagSelection};
use crate::reason::Reason;
use crate::reference::ImageRef;
use crate::registry::tags::Listing;
use crate::registry::waiting::{WaitRefused, Waiter, Whole};
use crate::registry::{Failure, RegistryError};
use crate::selection::by_version_desc;
use crate::untrusted;

/// Repositories listed at once when several mirrors have tag rules.
const LISTINGS_AT_ONCE: usize = 4;

/// The most invalid tag names one problem line quotes.
const QUOTED_TAGS: usize = 3;

/// Who asked for a target tag, from which source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub mirror: String,
    pub line: usize,
    pub source: ImageRef,
}

/// Target references and the mirror that asked for each.
pub type Claims = BTreeMap<String, Claim>;

/// The images of one pass, and what stopped others from being planned.
#[derive(Debug, Default)]
pub struct Plan {
    pub jobs: Vec<Job>,
    /// Mirrors whose listing failed or whose rules selected nothing, and tags two mirrors
    /// claim: each a line for the report.
    pub problems: Vec<Problem>,
    /// What each mirror with rules listed and selected.
    pub selections: Vec<Selected>,
    /// Every target the planned mirrors asked for, contested ones included: the daemon keeps
    /// them so that other mirrors' later runs see these claims.
    pub claims: Claims,
    /// The tags each mirror with rules listed, by mirror index, for its prune: only listings
    /// that succeeded.
    pub listed: BTreeMap<usize, Vec<String>>,
}

impl Runner {
    /// Plans the mirrors of `config` at the indexes `mirrors`: their fixed images, and the
    /// tags their rules select from fresh listings. `others` are the targets other mirrors
    /// claim (the daemon's memory of their last runs); a target claimed from two sources is
    /// left out of the plan.
    pub async fn plan(&self, config: &Config, mirrors: &[usize], others: &Claims) -> Plan {
        let mut plan = Plan::default();
        let mut candidates: Vec<Job> = config
            .jobs
            .iter()
            .filter(|job| mirrors.contains(&job.mirror))
            .cloned()
            .collect();
        // Boxed, so the pass's future stays Send for the daemon's tasks.
        let listing_work: Vec<BoxFuture<'_, (usize, Result<Listing, RegistryError>)>> = mirrors
            .iter()
            .filter_map(|&i| config.mirrors[i].selection.as_ref().map(|s| (i, s)))
            .map(|(index, selection)| async move { (index, self.list(selection).await) }.boxed())
            .collect();
        let listings: Vec<_> = stream::iter(listing_work)
            .buffered(LISTINGS_AT_ONCE)
            .collect()
            .await;
        for (index, listing) in listings {
            let mirror = &config.mirrors[index];
            let selection = mirror.selection.as_ref().expect("listed for its selection");
            match listing {
                Ok(listing) => {
                    candidates.extend(select(mirror, index, selection, &listing, &mut plan));
                    if mirror.prune.is_some() {
                        plan.listed.insert(index, listing.tags);
                    }
                }
                Err(e) => plan.problems.push(listing_failed(mirror, selection, &e)),
            }
        }
        let (jobs, problems, claims) = settle_claims(&config.mirrors, candidates, others);
        plan.jobs = jobs;
        plan.problems.extend(problems);
        plan.claims = claims;
        plan
    }

    /// Lists a selection's source repository, within `max_wait` and the listing's overall
    /// deadline, holding no copy slot.
    async fn list(&self, selection: &TagSelection) -> Result<Listing, RegistryError> {
        let waiter = Waiter::new(self.slots.clone(), self.max_wait, self.stop.clone()).map_err(
            |refused| {
                let reason = match refused {
                    WaitRefused::ShuttingDown => Reason::Stopped,
                    WaitRefused::TooLong { .. } => Reason::Timeout,
                };
                let why = refused.to_string();
                RegistryError::with(
                    "list tags",
                    selection.source.repo(),
                    Failure::GaveUp { why, reason },
                )
            },
        )?;
        let repository = selection.source.repo();
        let store = self.stores.of(&repository.registry);
        let listing = store.list_tags(&repository, &waiter);
        waiter
            .within_deadline(Whole::Listing, listing)
            .await
            .unwrap_or_else(|overdue| {
                Err(RegistryError::with(
                    "list tags",
                    repository,
                    Failure::Overdue(overdue),
                ))
            })
    }
}

/// The jobs of the tags `listing` offers that `mirror`'s rules select; problems (nothing
/// selected, tags that make no valid reference) go into `plan`. Names the listing left out
/// as not tags are warned of.
fn select(
    mirror: &Mirror,
    index: usize,
    selection: &TagSelection,
    listing: &Listing,
    plan: &mut Plan,
) -> Vec<Job> {
    let chosen = selection.rules.select(&listing.tags);
    let mut jobs = Vec::with_capacity(chosen.len());
    let mut invalid = Vec::new();
    let mut tags_selected = Vec::new();
    for tag in &chosen {
        match selection.jobs(tag, index, mirror.line, &mirror.choice) {
            Ok(tag_jobs) => {
                jobs.extend(tag_jobs);
                tags_selected.push(tag.to_string());
            }
            // Quoted as Rust quotes a string: control characters escaped.
            Err(_) => invalid.push(format!("{:?}", untrusted::clip(tag, untrusted::NAME))),
        }
    }
    let repository = selection.source.repo();
    if listing.left_out.count > 0 {
        // Not tags, so nothing the rules could have mirrored: said, not failed.
        warn!(
            mirror = %mirror.name,
            left_out = listing.left_out.count,
            "{}: {repository} lists {} names that are not valid tags, left out: {}",
            mirror.name,
            listing.left_out.count,
            listing.left_out
        );
    }
    info!(
        mirror = %mirror.name,
        listed = listing.tags.len(),
        selected = tags_selected.len(),
        requests = listing.requests,
        "{}: {} tags listed, {} selected",
        mirror.name,
        listing.tags.len(),
        tags_selected.len()
    );
    plan.selections.push(Selected {
        mirror: mirror.name.clone(),
        listed: listing.tags.len(),
        selected: {
            tags_selected.sort_by(|a, b| by_version_desc(a, b));
            tags_selected
        },
    });
    if !invalid.is_empty() {
        let shown: Vec<_> = invalid.iter().take(QUOTED_TAGS).cloned().collect();
        let more = invalid.len().saturating_sub(QUOTED_TAGS);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        plan.problems.push(Problem::new(
            Reason::InvalidUpstream,
            format!(
                "{}: {repository} lists names that are not valid tags, left out: {}{more}",
                place(mirror),
                shown.join(", ")
            ),
        ));
    }
    if chosen.is_empty() {
        plan.problems.push(Problem::new(
            Reason::Config,
            format!(
                "{}: the rules ({}) select none of the {} tags {repository} lists",
                place(mirror),
                selection.rules,
                listing.tags.len()
            ),
        ));
    }
    jobs
}

/// The report's line for a listing that failed.
fn listing_failed(mirror: &Mirror, selection: &TagSelection, e: &RegistryError) -> Problem {
    let repository = selection.source.repo();
    let message = match &e.failure {
        Failure::NotFound => format!(
            "{}: repository {repository} does not exist (its tag list answered 404)",
            place(mirror)
        ),
        _ => format!(
            "{}: cannot list the tags of {repository}: {e}",
            place(mirror)
        ),
    };
    Problem::new(e.reason(), message)
}

/// `mirror nginx (line 12)`.
pub(super) fn place(mirror: &Mirror) -> String {
    named(&mirror.name, mirror.line)
}

fn named(mirror: &str, line: usize) -> String {
    match line {
        0 => format!("mirror {mirror}"),
        line => format!("mirror {mirror} (line {line})"),
    }
}

/// Drops the same image asked twice, and every target claimed from two different sources
/// (here or in `others`), with a problem naming both claimants. Returns the jobs, the
/// problems and every claim the candidates made.
fn settle_claims(
    mirrors: &[Mirror],
    candidates: Vec<Job>,
    others: &Claims,
) -> (Vec<Job>, Vec<Problem>, Claims) {
    /// A target two sources want: who claimed it first, and who else.
    struct Contest {
        first: Claim,
        rivals: Vec<Claim>,
    }
    let mut claims = Claims::new();
    let mut contests: BTreeMap<String, Contest> = BTreeMap::new();
    let mut jobs = Vec::with_capacity(candidates.len());
    for job in candidates {
        let target = job.target.to_string();
        let claim = Claim {
            mirror: mirrors[job.mirror].name.clone(),
            line: job.line,
            source: job.source.clone(),
        };
        if let Some(contest) = contests.get_mut(&target) {
            if contest.first.source != claim.source {
                contest.rivals.push(claim.clone());
            }
            claims.entry(target).or_insert(claim);
            continue;
        }
        let earlier = claims.get(&target).or_else(|| {
            others
                .get(&target)
                .filter(|other| other.mirror != claim.mirror)
        });
        match earlier {
            Some(earlier) if earlier.source == claim.source => {} // asked twice: copied once
            Some(earlier) => {
                let first = earlier.clone();
                claims.entry(target.clone()).or_insert(claim.clone());
                contests.insert(
                    target,
                    Contest {
                        first,
                        rivals: vec![claim],
                    },
                );
            }
            None => {
                claims.insert(target, claim);
                jobs.push(job);
            }
        }
    }
    jobs.retain(|job| !contests.contains_key(&job.target.to_string()));
    let who = |c: &Claim| named(&c.mirror, c.line);
    let mut problems = Vec::new();
    for (target, contest) in &contests {
        for rival in &contest.rivals {
            warn!(%target, first = %contest.first.mirror, second = %rival.mirror, "two mirrors select one target tag from different sources: skipped");
            problems.push(Problem::new(Reason::Config, format!(
                "{target}: {} selects it from {} and {} from {}: two sources for one tag, so neither is copied",
                who(&contest.first),
                contest.first.source,
                who(rival),
                rival.source
            )));
        }
    }
    (jobs, problems, claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(name: &str, line: usize) -> Mirror {
        Mirror {
            name: name.to_string(),
            schedule: None,
            run_on_start: true,
            line,
            selection: None,
            choice: Default::default(),
            prune: None,
        }
    }

    fn job(source: &str, target: &str, mirror: usize, line: usize) -> Job {
        Job {
            source: ImageRef::parse(source).unwrap(),
            target: ImageRef::parse(target).unwrap(),
            line,
            listed_in: None,
            mirror,
            choice: Default::default(),
        }
    }

    fn targets(jobs: &[Job]) -> Vec<String> {
        jobs.iter().map(|j| j.target.to_string()).collect()
    }

    #[test]
    fn a_tag_two_sources_claim_is_copied_by_neither_and_both_are_named() {
        let mirrors = [mirror("one", 2), mirror("two", 8)];
        let candidates = vec![
            job("a.io/x/app:1", "r.io/app:1", 0, 2),
            job("a.io/x/app:2", "r.io/app:2", 0, 2),
            job("b.io/y/app:2", "r.io/app:2", 1, 8),
            job("b.io/y/app:3", "r.io/app:3", 1, 8),
            // The same image asked twice is copied once and contests nothing.
            job("b.io/y/app:3", "r.io/app:3", 1, 9),
        ];
        let (jobs, problems, claims) = settle_claims(&mirrors, candidates, &Claims::new());
        assert_eq!(targets(&jobs), ["r.io/app:1", "r.io/app:3"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.starts_with(
                "r.io/app:2: mirror one (line 2) selects it from a.io/x/app:2 and mirror two (line 8) from b.io/y/app:2"
            ),
            "{problems:?}"
        );
        assert_eq!(
            claims.len(),
            3,
            "contested targets are claimed too: {claims:?}"
        );
    }

    #[test]
    fn claims_of_other_mirrors_runs_contest_this_one() {
        let mirrors = [mirror("one", 2), mirror("two", 8)];
        let mut others = Claims::new();
        others.insert(
            "r.io/app:2".to_string(),
            Claim {
                mirror: "one".to_string(),
                line: 2,
                source: ImageRef::parse("a.io/x/app:2").unwrap(),
            },
        );
        // A claim of this very mirror from an earlier run contests nothing.
        others.insert(
            "r.io/app:3".to_string(),
            Claim {
                mirror: "two".to_string(),
                line: 8,
                source: ImageRef::parse("c.io/old/app:3").unwrap(),
            },
        );
        let candidates = vec![
            job("b.io/y/app:2", "r.io/app:2", 1, 8),
            job("b.io/y/app:3", "r.io/app:3", 1, 8),
        ];
        let (jobs, problems, claims) = settle_claims(&mirrors, candidates, &others);
        assert_eq!(targets(&jobs), ["r.io/app:3"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(
            claims["r.io/app:2"].mirror, "two",
            "so mirror one sees it next time"
        );
    }
}
