//! Exact mirrors: after a pass, the target tags a mirror no longer wants are deleted.
//!
//! A mirror with `prune` owns, in each of its target repositories, the tags its rules *name*
//! ([`TagRules::names`]) and its exact tags (a `[[mirror]]`'s `tags`, an `images` reference).
//! Of those, it deletes the ones its rules no longer select (gone upstream, fallen out of
//! `latest`) and the exact tags its source no longer lists. Tags it does not name, tags
//! another mirror names (by its rules or as an exact tag, whether or not it has run) or asked
//! for, and other repositories are never touched.
//!
//! Deleting is the most dangerous thing a mirror does, and an upstream outage looks like a
//! repository that lost its tags. So, in this order:
//! - nothing is pruned from a listing that failed (a bound reached is a failure), or that came
//!   back empty, or whose rules selected nothing;
//! - a mirror that would delete more than its limits (`prune_max_tags`, and `prune_max_percent`
//!   of the managed tags in that repository) deletes nothing: the tags are named, and the pass
//!   fails;
//! - content a kept tag names is never deleted: a registry that deletes only by digest
//!   (distribution 2.8) is asked to only when no kept tag names the digest;
//! - a pruned digest's signatures, attestations and SBOMs (cosign's `sha256-<hex>.*` tags, the
//!   referrers fallback tag) go before it, unless a kept tag still names that digest;
//! - `--dry-run` deletes nothing and says what it would;
//! - a registry with deletes disabled is named once per pass, not once per tag.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use tracing::{info, warn};

use super::plan::{place, Claims, Plan};
use super::report::{Problem, PruneWhy, PrunedTag};
use super::Runner;
use crate::config::{Config, Job, Mirror, Prune};
use crate::reason::Reason;
use crate::reference::{ImageRef, Repository};
use crate::registry::waiting::{Waiter, Whole};
use crate::registry::{Failure, RegistryError};
use crate::selection::{is_referrer_tag, TagRules};

/// A repository of more tags than this has only its candidates read before a prune, so a
/// registry that deletes only by digest keeps them (it cannot be told no other tag names one).
const MAX_TAGS_READ: usize = 10_000;

/// What a prune did, for the report.
#[derive(Debug, Default)]
pub struct Pruning {
    pub pruned: Vec<PrunedTag>,
    pub problems: Vec<Problem>,
}

/// What one mirror manages in one target repository.
#[derive(Debug, Default)]
struct Managed<'a> {
    /// Its rules, when their listing can be trusted, and the tags they selected.
    rules: Option<(&'a TagRules, BTreeSet<&'a str>)>,
    /// Its exact tags, and whether each is still upstream (`None`: no listing to tell).
    exact: BTreeMap<String, Option<bool>>,
}

impl Managed<'_> {
    fn names(&self, tag: &str) -> bool {
        self.rules
            .as_ref()
            .is_some_and(|(rules, _)| rules.names(tag))
            || self.exact.contains_key(tag)
    }

    /// Why `tag`, which it names, goes; `None` if it stays. A tag both an exact tag and
    /// named by the rules stays if either keeps it.
    fn why(&self, tag: &str) -> Option<PruneWhy> {
        let exact = match self.exact.get(tag) {
            Some(Some(false)) => Some(PruneWhy::GoneUpstream),
            Some(_) => return None,
            None => None,
        };
        let rules = match &self.rules {
            Some((rules, selected)) if rules.names(tag) => match selected.contains(tag) {
                true => return None,
                false => Some(PruneWhy::NotSelected),
            },
            _ => None,
        };
        exact.or(rules)
    }
}

/// What a repository's prune comes to.
#[derive(Debug)]
enum Found {
    /// These tags go, each after its signatures.
    Delete(Vec<Deletion>),
    /// More would go than the limits allow: these tags, of the `managed` the mirror names.
    HeldBack { tags: Vec<String>, managed: usize },
}

/// One tag to delete.
#[derive(Debug)]
struct Deletion {
    /// Its tag, pinned to the digest it points at.
    image: ImageRef,
    /// The managed tag it goes with: itself, or the pruned tag a signature tag describes.
    owner: ImageRef,
    why: PruneWhy,
    /// No tag that stays names its digest.
    alone: bool,
}

impl Runner {
    /// Prunes the target repositories of the mirrors at `mirrors` that have `prune`, after a
    /// pass planned as `plan`. `claimed`: the targets other mirrors asked for in the daemon's
    /// earlier runs. `keep` says which targets are this process's (its shard).
    pub(crate) async fn prune(
        &self,
        config: &Config,
        mirrors: &[usize],
        plan: &Plan,
        claimed: &Claims,
        keep: &(dyn Fn(&Job) -> bool + Sync),
        dry_run: bool,
    ) -> Pruning {
        let mut pruning = Pruning::default();
        let Ok(waiter) = Waiter::new(self.slots.clone(), self.max_wait, self.stop.clone()) else {
            return pruning; // shutting down: nothing is started
        };
        // Registries that refused a delete as not allowed, and how many tags they kept.
        let mut refused_at: BTreeMap<String, usize> = BTreeMap::new();
        for &index in mirrors {
            let mirror = &config.mirrors[index];
            let Some(limits) = mirror.prune else {
                continue;
            };
            for (repository, managed) in self
                .managed(config, index, plan, &waiter, &mut pruning)
                .await
            {
                // Another mirror's: asked for this pass, in the daemon's earlier runs, or named
                // by its config.
                let others = OthersNaming::of(config, index, &repository);
                let claims = |tag: &str| {
                    // A name that makes no reference is never this mirror's to delete.
                    let Ok(target) = repository.tagged(tag).map(|t| t.to_string()) else {
                        return true;
                    };
                    let theirs = |claims: &Claims| {
                        claims.get(&target).is_some_and(|c| c.mirror != mirror.name)
                    };
                    theirs(&plan.claims) || theirs(claimed) || others.names(tag)
                };
                let found = self
                    .candidates(&repository, &managed, &claims, limits, &waiter)
                    .await;
                let deletions = match found {
                    Ok(Some(Found::Delete(deletions))) => deletions,
                    Ok(Some(Found::HeldBack { tags, managed })) => {
                        let message = held_back(mirror, &repository, &tags, managed, limits);
                        pruning.problems.push(Problem::new(Reason::Config, message));
                        continue;
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        let message = format!(
                            "{}: not pruned: cannot read {repository}: {e}",
                            place(mirror)
                        );
                        pruning.problems.push(Problem::new(e.reason(), message));
                        continue;
                    }
                };
                // A tag and its signatures go to the shard of the tag.
                let deletions: Vec<Deletion> = deletions
                    .into_iter()
                    .filter(|d| keep(&prune_job(&d.owner, index)))
                    .collect();
                for deletion in deletions {
                    let deleted = match dry_run {
                        true => Ok(false),
                        false => self
                            .delete(&deletion, &mut refused_at, &waiter)
                            .await
                            .map(|()| true),
                    };
                    match deleted {
                        Ok(deleted) => {
                            if deleted {
                                info!(mirror = %mirror.name, tag = %deletion.image, why = deletion.why.as_str(), "pruned");
                                if let Some(tally) = &self.tally {
                                    tally.pruned.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            pruning.pruned.push(PrunedTag {
                                mirror: mirror.name.clone(),
                                image: deletion.image,
                                why: deletion.why,
                                deleted,
                            });
                        }
                        Err(Some(e)) => pruning.problems.push(Problem::new(
                            e.reason(),
                            format!("{}: cannot prune {}: {e}", place(mirror), deletion.image),
                        )),
                        Err(None) => {} // not allowed there: said once, below
                    }
                }
            }
        }
        for (registry, kept) in refused_at {
            pruning.problems.push(Problem::new(Reason::Refused, format!(
                "{registry} does not allow deletes: {kept} tag(s) prune would delete are kept \
                 (allow deletes there, such as distribution's storage.delete.enabled, or set prune = false)"
            )));
        }
        pruning
    }

    /// What mirror `index` manages in each of its target repositories: its rules, if their
    /// listing succeeded, was not empty and selected something; its exact tags, each with
    /// whether its source repository still lists it.
    async fn managed<'a>(
        &self,
        config: &'a Config,
        index: usize,
        plan: &'a Plan,
        waiter: &Waiter,
        pruning: &mut Pruning,
    ) -> BTreeMap<Repository, Managed<'a>> {
        let mirror = &config.mirrors[index];
        let mut managed: BTreeMap<Repository, Managed<'a>> = BTreeMap::new();
        if let Some(selection) = &mirror.selection {
            let listed = plan.listed.get(&index);
            let selected: BTreeSet<&str> = listed
                .map(|tags| selection.rules.select(tags).into_iter().collect())
                .unwrap_or_default();
            if selected.is_empty() {
                // Failed, empty, or nothing selected: said by the plan already.
                info!(mirror = %mirror.name, "not pruned: its listing failed or selected nothing");
            } else {
                for target in &selection.targets {
                    managed.entry(target.clone()).or_default().rules =
                        Some((&selection.rules, selected.clone()));
                }
            }
        }
        let exact: Vec<&Job> = config
            .jobs
            .iter()
            .filter(|job| {
                job.mirror == index && job.source.tag.is_some() && job.source.digest.is_none()
            })
            .collect();
        let sources: BTreeSet<Repository> = exact.iter().map(|job| job.source.repo()).collect();
        let mut upstream: BTreeMap<Repository, BTreeSet<String>> = BTreeMap::new();
        for source in sources {
            match self.list_repository(&source, waiter).await {
                Ok(tags) if !tags.is_empty() => {
                    upstream.insert(source, tags.into_iter().collect());
                }
                Ok(_) => {
                    warn!(mirror = %mirror.name, source = %source, "not pruned: the source lists no tags");
                }
                Err(e) => pruning.problems.push(Problem::new(
                    e.reason(),
                    format!("{}: not pruned: cannot list {source}: {e}", place(mirror)),
                )),
            }
        }
        for job in exact {
            let tag = job.source.tag.clone().expect("filtered on a tag");
            let listed = upstream
                .get(&job.source.repo())
                .map(|tags| tags.contains(&tag));
            managed
                .entry(job.target.repo())
                .or_default()
                .exact
                .insert(tag, listed);
        }
        managed
    }

    /// Every tag of `repository`, within the listing's deadlines.
    async fn list_repository(
        &self,
        repository: &Repository,
        waiter: &Waiter,
    ) -> Result<Vec<String>, RegistryError> {
        let listing = self
            .stores
            .of(&repository.registry)
            .list_tags(repository, waiter);
        match waiter.within_deadline(Whole::Listing, listing).await {
            Ok(listing) => listing.map(|l| l.tags),
            Err(overdue) => Err(RegistryError::with(
                "list tags",
                repository,
                Failure::Overdue(overdue),
            )),
        }
    }

    /// The tags of `repository` that `managed` says go, none that `claims` says another
    /// mirror asked for, each after its digest's signatures; and how many tags it manages
    /// there. `None`: nothing to prune (or no such repository yet).
    async fn candidates(
        &self,
        repository: &Repository,
        managed: &Managed<'_>,
        claims: &(dyn Fn(&str) -> bool + Sync),
        limits: Prune,
        waiter: &Waiter,
    ) -> Result<Option<Found>, RegistryError> {
        let tags = match self.list_repository(repository, waiter).await {
            Ok(tags) => tags,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let named: Vec<&str> = tags
            .iter()
            .map(String::as_str)
            .filter(|t| !is_referrer_tag(t) && managed.names(t))
            .collect();
        let going: BTreeMap<&str, PruneWhy> = named
            .iter()
            .filter(|t| !claims(t))
            .filter_map(|t| Some((*t, managed.why(t)?)))
            .collect();
        if going.is_empty() {
            return Ok(None);
        }
        // The limits judge the whole prune (before the shards share it, so all of them hold
        // back together), and before a HEAD is spent on a prune that will not happen.
        if !limits.allows(going.len(), named.len()) {
            return Ok(Some(Found::HeldBack {
                tags: going.keys().map(|t| t.to_string()).collect(),
                managed: named.len(),
            }));
        }
        // What every tag points at, to know which digests stay named; in a repository too
        // large to read whole, only the candidates (then none is `alone`).
        let whole = tags.len() <= MAX_TAGS_READ;
        let read: Vec<&str> = tags
            .iter()
            .map(String::as_str)
            .filter(|t| going.contains_key(t) || (whole && !is_referrer_tag(t)))
            .collect();
        let digests = self.digests(repository, &read, waiter).await?;
        let staying: BTreeSet<&str> = digests
            .iter()
            .filter(|(tag, _)| !going.contains_key(tag.as_str()))
            .filter_map(|(_, image)| image.digest.as_deref())
            .collect();
        let mut deletions = Vec::new();
        for (tag, why) in going {
            let Some((image, digest)) = digests
                .get(tag)
                .and_then(|image| Some((image, image.digest.as_deref()?)))
            else {
                continue; // gone since it was listed
            };
            let alone = whole && !staying.contains(digest);
            if !staying.contains(digest) {
                let hex = digest
                    .split_once(':')
                    .map(|(_, hex)| hex)
                    .unwrap_or_default();
                let describing: Vec<&str> = tags
                    .iter()
                    .map(String::as_str)
                    .filter(|t| describes(t, hex))
                    .collect();
                let signed = self.digests(repository, &describing, waiter).await?;
                for signature in signed.into_values() {
                    deletions.push(Deletion {
                        image: signature,
                        owner: image.clone(),
                        why: PruneWhy::Referrer,
                        alone: whole,
                    });
                }
            }
            deletions.push(Deletion {
                image: image.clone(),
                owner: image.clone(),
                why,
                alone,
            });
        }
        Ok(Some(Found::Delete(deletions)))
    }

    /// Each of `tags` of `repository`, pinned to the digest it points at (by HEAD, in the
    /// user's own store); tags gone meanwhile are left out.
    async fn digests(
        &self,
        repository: &Repository,
        tags: &[&str],
        waiter: &Waiter,
    ) -> Result<BTreeMap<String, ImageRef>, RegistryError> {
        let store = self.stores.of(&repository.registry);
        let heads = tags.iter().filter_map(|tag| {
            let image = repository.tagged(tag).ok()?;
            Some(async move {
                let digest = store.manifest_digest(&image, waiter).await?;
                Ok(digest.map(|d| (tag.to_string(), image.pinned(&d))))
            })
        });
        join_all(heads)
            .await
            .into_iter()
            .filter_map(Result::transpose)
            .collect()
    }

    /// Deletes one tag. `Err(None)`: its registry does not allow deletes (counted in
    /// `refused_at`, which also spares that registry further tries this pass).
    async fn delete(
        &self,
        deletion: &Deletion,
        refused_at: &mut BTreeMap<String, usize>,
        waiter: &Waiter,
    ) -> Result<(), Option<RegistryError>> {
        let registry = &deletion.image.registry;
        if let Some(kept) = refused_at.get_mut(registry) {
            *kept += 1;
            return Err(None);
        }
        let store = self.stores.of(registry);
        match store
            .delete_tag(&deletion.image, deletion.alone, waiter)
            .await
        {
            // Absent: gone already (by digest, with another tag of this prune).
            Ok(_) => Ok(()),
            Err(e) if matches!(e.failure, Failure::Unsupported(_)) => {
                refused_at.insert(registry.clone(), 1);
                Err(None)
            }
            Err(e) => Err(Some(e)),
        }
    }
}

/// What the mirrors of a config other than one name in one repository, whether or not they
/// have run yet: their exact tags there, and the rules of those that select into it.
struct OthersNaming<'a> {
    rules: Vec<&'a TagRules>,
    exact: HashSet<&'a str>,
}

impl<'a> OthersNaming<'a> {
    fn of(config: &'a Config, index: usize, repository: &Repository) -> Self {
        let rules = config
            .mirrors
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .filter_map(|(_, m)| m.selection.as_ref())
            .filter(|s| s.targets.contains(repository))
            .map(|s| &s.rules)
            .collect();
        let exact = config
            .jobs
            .iter()
            .filter(|job| job.mirror != index && job.target.repo() == *repository)
            .filter_map(|job| job.target.tag.as_deref())
            .collect();
        OthersNaming { rules, exact }
    }

    fn names(&self, tag: &str) -> bool {
        self.exact.contains(tag) || self.rules.iter().any(|rules| rules.names(tag))
    }
}

/// Whether `tag` describes the manifest whose digest's hex is `hex`: the referrers fallback
/// tag `sha256-<hex>` or cosign's `sha256-<hex>.sig`, `.att`, `.sbom`.
fn describes(tag: &str, hex: &str) -> bool {
    is_referrer_tag(tag)
        && tag.split_once('-').is_some_and(|(_, rest)| {
            rest == hex || rest.strip_prefix(hex).is_some_and(|s| s.starts_with('.'))
        })
}

/// A job standing for a pruned target, for the shard filter (which reads its target).
fn prune_job(image: &ImageRef, mirror: usize) -> Job {
    Job {
        source: image.clone(),
        target: image.clone(),
        line: 0,
        listed_in: None,
        mirror,
        choice: Default::default(),
    }
}

/// The most tags a held-back prune names.
const NAMED_HELD_BACK: usize = 10;

/// The problem of a prune over its limits.
fn held_back(
    mirror: &Mirror,
    repository: &Repository,
    chosen: &[String],
    managed: usize,
    limits: Prune,
) -> String {
    let more = match chosen.len().saturating_sub(NAMED_HELD_BACK) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "{}: prune held back, nothing deleted: it would delete {} of the {managed} tags it manages \
         in {repository}, over its limits (prune_max_tags = {}, prune_max_percent = {}): {}{more}. \
         A source that lost its tags in an outage looks like this; raise the limits if it is meant",
        place(mirror),
        chosen.len(),
        limits.max_tags,
        limits.max_percent,
        chosen[..chosen.len().min(NAMED_HELD_BACK)].join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_described_by_its_fallback_tag_and_cosign_tags_only() {
        let hex = "ab".repeat(32);
        assert!(describes(&format!("sha256-{hex}"), &hex));
        assert!(describes(&format!("sha256-{hex}.sig"), &hex));
        assert!(describes(&format!("sha256-{hex}.att"), &hex));
        assert!(!describes(&format!("sha256-{hex}x"), &hex));
        assert!(!describes(&format!("sha256-{}.sig", "cd".repeat(32)), &hex));
        assert!(!describes("1.0", &hex));
    }

    #[test]
    fn the_limits_take_a_count_and_a_share_and_always_allow_one() {
        let limits = Prune {
            max_tags: 3,
            max_percent: 50,
        };
        assert!(limits.allows(1, 1), "one of one");
        assert!(limits.allows(2, 4));
        assert!(!limits.allows(3, 4), "over half");
        assert!(!limits.allows(4, 100), "over the count");
        assert!(limits.allows(3, 100));
    }
}
