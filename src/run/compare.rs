//! What a pass asks tag APIs before it compares: for each source repository on a registry
//! with a `tag_api` (Docker Hub's by default), the digests listed for the tags the pass
//! compares there, so a target already holding a tag's listed digest needs no HEAD at the
//! source ([`crate::copy::listed`]).
//!
//! A repository is asked only when at least [`MIN_TAGS`] of its tags are compared (one tag
//! costs one request either way, and the API may lag). The API's listing may trail the
//! registry: a tag moved upstream whose listed digest is still the old one, the target's, is
//! not seen until the API shows the move. `head_every` bounds that: a repository's pass
//! compares every tag by HEAD at least that often, the clock starting when this process first
//! compares the repository (a `--once` run, which remembers nothing, uses the API unless
//! `--verify-heads` says otherwise).
//! Which tags exist stays the registry's own listing's word (the plan's `tags/list`); the API
//! is read only for digests.
//!
//! The API failing in any way (429, 5xx, a private repository it will not list, a changed
//! format, a bound passed) sends that repository back to HEADs for this pass: logged with the
//! reason, counted, never an image's failure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{stream, FutureExt, StreamExt};
use tracing::{info, warn};

use super::Runner;
use crate::config::{Job, TagApi};
use crate::copy::listed::ListedDigests;
use crate::reference::Repository;

/// Fewest tags of one repository compared in a pass for its tag API to be asked.
pub const MIN_TAGS: usize = 2;
/// Repositories asked at once.
const ASKED_AT_ONCE: usize = 4;

/// When each source repository was last compared by HEAD alone, for `head_every`; kept for
/// the life of the process (the daemon hands it from one config's runner to the next).
#[derive(Debug, Default)]
pub struct HeadPasses {
    last: Mutex<HashMap<String, Instant>>,
    /// Every pass by HEAD alone (`--verify-heads`).
    every_pass: bool,
}

impl HeadPasses {
    /// Every repository due at every pass: no tag API.
    pub fn every_pass() -> Self {
        HeadPasses {
            every_pass: true,
            ..HeadPasses::default()
        }
    }

    /// Whether `repository` is due a pass by HEAD alone (and if so, counts this as it). Its
    /// clock starts when it is first asked about.
    fn due(&self, repository: &str, every: Duration) -> bool {
        if self.every_pass {
            return true;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let since = *last.entry(repository.to_string()).or_insert(now);
        let due = now.duration_since(since) >= every;
        if due {
            last.insert(repository.to_string(), now);
        }
        due
    }
}

/// What asking the tag APIs came to for one pass.
#[derive(Debug, Default)]
pub(super) struct Asked {
    pub digests: ListedDigests,
    /// Repositories whose API failed, compared by HEAD instead.
    pub fallbacks: u64,
}

impl Runner {
    /// The digests tag APIs list for `jobs`' source tags, repository by repository.
    pub(super) async fn ask_tag_apis(&self, jobs: &[Job]) -> Asked {
        let mut wanted: BTreeMap<Repository, (TagApi, HashSet<String>)> = BTreeMap::new();
        for job in jobs.iter().filter(|job| job.source.digest.is_none()) {
            let (Some(api), Some(tag)) = (
                self.registries.tag_api(&job.source.registry),
                &job.source.tag,
            ) else {
                continue;
            };
            let entry = wanted
                .entry(job.source.repo())
                .or_insert_with(|| (api.clone(), HashSet::new()));
            entry.1.insert(tag.clone());
        }
        wanted.retain(|repository, (api, tags)| {
            if tags.len() < MIN_TAGS {
                return false;
            }
            let due = self
                .head_passes
                .due(&repository.to_string(), api.head_every);
            if due {
                info!(repository = %repository, tags = tags.len(), "comparing every tag by HEAD (head_every)");
            }
            !due
        });
        // Boxed, so the pass's future stays Send for the daemon's tasks.
        let asking: Vec<BoxFuture<'_, _>> = wanted
            .into_iter()
            .map(|(repository, (api, tags))| {
                async move {
                    let listed = self
                        .registries
                        .tag_api_digests(&api, &repository, &tags)
                        .await;
                    (repository, tags.len(), listed)
                }
                .boxed()
            })
            .collect();
        let asking = stream::iter(asking)
            .buffer_unordered(ASKED_AT_ONCE)
            .collect::<Vec<_>>();
        // Shutdown does not wait for a listing that only spares HEADs.
        let asked = tokio::select! {
            asked = asking => asked,
            () = self.stop.cancelled() => Vec::new(),
        };
        let mut by_repository = HashMap::new();
        let mut fallbacks = 0;
        for (repository, wanted, listed) in asked {
            match listed {
                Ok(listed) => {
                    info!(
                        repository = %repository,
                        pages = listed.pages,
                        listed = listed.digests.len(),
                        of = wanted,
                        left_out = listed.left_out,
                        "tag API read"
                    );
                    by_repository.insert(repository, listed.digests);
                }
                Err(e) => {
                    fallbacks += 1;
                    warn!(repository = %repository, reason = e.kind(), error = %e, "tag API not used: comparing by HEAD");
                }
            }
        }
        let mut digests = HashMap::new();
        for job in jobs {
            let listed = by_repository.get(&job.source.repo());
            let tag = job
                .source
                .tag
                .as_ref()
                .filter(|_| job.source.digest.is_none());
            if let Some(digest) = listed.zip(tag).and_then(|(listed, tag)| listed.get(tag)) {
                digests.insert(ListedDigests::key(&job.source), digest.clone());
            }
        }
        Asked {
            digests: ListedDigests::new(digests),
            fallbacks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_due_a_head_pass_once_its_interval_has_passed_since_first_seen() {
        let passes = HeadPasses::default();
        assert!(!passes.due("r/a", Duration::from_secs(3600)));
        assert!(passes.due("r/b", Duration::ZERO), "0: every pass by HEAD");
        assert!(passes.due("r/b", Duration::ZERO));
        assert!(!passes.due("r/a", Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(passes.due("r/a", Duration::from_millis(10)));
        assert!(
            !passes.due("r/a", Duration::from_millis(10)),
            "just counted"
        );
    }
}
