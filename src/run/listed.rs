//! A pass, ready to run: the one path by which `--once` and the daemon add the SSM
//! parameter's images to what a pass mirrors, so the two fail alike.
//!
//! A pass over the parameter's mirror (`ssm:NAME`; `--once` runs every mirror) reads the
//! parameter first and adds its entries as jobs under the default target. What goes wrong is
//! a problem of the pass: it fails (exit 1, or a failed run in `/healthz` and the metrics),
//! and the file's own images are mirrored all the same.
//! - A read that fails is one problem, `SSM parameter NAME: <AWS error>`; the pass goes on
//!   with the entries this process last read from that parameter: none in `--once`, the
//!   previous run's in the daemon.
//! - An entry that is no image reference, or would land on a target another image has, is
//!   one problem naming the entry; the other entries are mirrored.
//! - Registries the entries name that cannot be set up (Docker's config.json unreadable, say)
//!   are one problem, and the pass goes on without the list.

use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use super::{Claims, Problem, Report, Runner};
use crate::aws::ssm::{self, SsmSettings};
use crate::config::{ssm_mirror_name, Config, Job};
use crate::reason::Reason;
use crate::registry::Registries;

/// The entries of an SSM parameter at its last good read, for a pass whose read fails.
#[derive(Debug, Default)]
pub struct LastListed(Mutex<Option<(String, Vec<String>)>>);

impl LastListed {
    fn keep(&self, parameter: &str, entries: &[String]) {
        *self.lock() = Some((parameter.to_string(), entries.to_vec()));
    }

    /// What `parameter` listed at its last good read; nothing if it was never read, or if
    /// another parameter (before a reload) was read last.
    fn of(&self, parameter: &str) -> Vec<String> {
        match &*self.lock() {
            Some((read, entries)) if read == parameter => entries.clone(),
            _ => Vec::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<(String, Vec<String>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One pass, prepared by [`Runner::prepare`].
#[derive(Debug)]
pub struct Pass {
    /// The config with the SSM parameter's images added, when the pass reads it.
    pub config: Arc<Config>,
    /// A runner that knows every registry of `config`, sharing the slots, pull budgets and
    /// SSM memory of the one that prepared it.
    pub runner: Runner,
    /// The indexes in `config.mirrors` of the mirrors the pass runs.
    mirrors: Vec<usize>,
    /// What kept any of the SSM list from being mirrored: each a failure of the pass.
    problems: Vec<Problem>,
}

impl Runner {
    /// The pass over `mirrors` (indexes in `config.mirrors`): when the SSM parameter's mirror
    /// is among them, the parameter is read and its images added, its problems kept for the
    /// report (see the module's header).
    pub async fn prepare(&self, config: Arc<Config>, mirrors: Vec<usize>) -> Pass {
        let reads = config.ssm.as_ref().filter(|ssm| {
            let name = ssm_mirror_name(&ssm.parameter);
            mirrors.iter().any(|&i| config.mirrors[i].name == name)
        });
        let Some(ssm) = reads.cloned() else {
            return Pass {
                config,
                runner: self.clone(),
                mirrors,
                problems: Vec::new(),
            };
        };
        let (entries, mut problems) = self.read_list(&ssm).await;
        let listed = config
            .with_listed(&entries)
            .map_err(|e| e.to_string())
            .and_then(|(listed, entry_problems)| {
                let runner = self.sharing(&listed)?;
                Ok((listed, runner, entry_problems))
            });
        let parameter = &ssm.parameter;
        let (config, runner) = match listed {
            Ok((listed, runner, entry_problems)) => {
                problems.extend(entry_problems.into_iter().map(|p| {
                    Problem::new(Reason::Config, format!("SSM parameter {parameter}: {p}"))
                }));
                (Arc::new(listed), runner)
            }
            Err(e) => {
                problems.push(Problem::new(
                    Reason::Config,
                    format!(
                        "SSM parameter {parameter}: cannot set up the registries of its images: {e}"
                    ),
                ));
                (config, self.clone())
            }
        };
        for problem in &problems {
            warn!("{problem}");
        }
        Pass {
            config,
            runner,
            mirrors,
            problems,
        }
    }

    /// The parameter's entries, or, when it cannot be read, the entries last read and why.
    async fn read_list(&self, ssm: &SsmSettings) -> (Vec<String>, Vec<Problem>) {
        match ssm::read_list(ssm).await {
            Ok(entries) => {
                self.listed.keep(&ssm.parameter, &entries);
                (entries, Vec::new())
            }
            Err(e) => {
                let kept = self.listed.of(&ssm.parameter);
                if !kept.is_empty() {
                    warn!(kept = kept.len(), "going on with the SSM entries last read");
                }
                (kept, vec![Problem::new(e.class, e.to_string())])
            }
        }
    }

    /// A runner for `config`'s registries that shares this one's slots, pull budgets, SSM
    /// memory and tally.
    fn sharing(&self, config: &Config) -> Result<Runner, String> {
        let registries = Arc::new(Registries::new(config, self.registries.budgets())?);
        Ok(Runner {
            stores: Arc::new(super::stores_of(config, &registries)?),
            registries,
            ..self.clone()
        })
    }
}

impl Pass {
    /// Plans and mirrors the pass (see [`Runner::run`]); its own problems come first in the
    /// report.
    pub async fn run(
        &self,
        others: &Claims,
        keep: &(dyn Fn(&Job) -> bool + Sync),
        dry_run: bool,
    ) -> (Report, Claims) {
        let (mut report, claims) = self
            .runner
            .run(&self.config, &self.mirrors, others, keep, dry_run)
            .await;
        report.problems.splice(0..0, self.problems.iter().cloned());
        (report, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entries_last_read_are_those_of_the_parameter_asked_for() {
        let last = LastListed::default();
        assert!(last.of("/mirror/images").is_empty());
        last.keep("/mirror/images", &["nginx:1".to_string()]);
        assert_eq!(last.of("/mirror/images"), ["nginx:1"]);
        // After a reload names another parameter, the old one's entries are not its.
        assert!(last.of("/mirror/other").is_empty());
    }
}
