//! The price of a dry run's plan: per source registry, the pulls the copies would spend,
//! against the budget the registry last announced (in the headers of the free HEADs the dry
//! run made), and how long the pass would take at that budget.
//!
//! A content wanted by several tags or targets is pulled once per pass, so it is priced once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use super::report::Report;
use crate::copy::{Outcome, Price};
use crate::reference::api_host;
use crate::registry::ratelimit::Budgets;
use crate::registry::waiting::secs;

/// What the copies of a dry run would cost one source registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPrice {
    pub registry: String,
    pub pulls: u64,
    /// How sure: exact only when every copy's price was.
    pub estimate: Price,
    /// The budget as the registry last announced it.
    pub remaining: Option<u64>,
    pub limit: Option<u64>,
    pub window: Option<Duration>,
}

impl RegistryPrice {
    /// How long the pulls would take at the announced budget: none when they fit in what is
    /// left; `None` when the registry announced no limit.
    pub fn takes(&self) -> Option<Duration> {
        let (remaining, limit, window) = (self.remaining?, self.limit?, self.window?);
        if self.pulls <= remaining {
            return Some(Duration::ZERO);
        }
        let windows = (self.pulls - remaining).div_ceil(limit.max(1));
        Some(window.saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX)))
    }
}

/// `registry-1.docker.io: needs 212 pulls; it has 96 of 100 per 6 h: about 12 h at that budget`.
impl fmt::Display for RegistryPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: needs {}",
            self.registry,
            pulls_said(with_pulls(self.estimate, self.pulls))
        )?;
        match (self.remaining, self.limit, self.window, self.takes()) {
            (Some(remaining), Some(limit), Some(window), Some(takes)) => {
                write!(f, "; it has {remaining} of {limit} per {}", secs(window))?;
                match takes.is_zero() {
                    true => write!(f, ": within its budget now"),
                    false => write!(f, ": about {} at that budget", secs(takes)),
                }
            }
            _ => write!(f, "; it announced no pull limit"),
        }
    }
}

/// `3 pulls`, `about 9 pulls`, `at least 1 pull`.
pub fn pulls_said(price: Price) -> String {
    let n = price.pulls();
    let noun = if n == 1 { "pull" } else { "pulls" };
    match price {
        Price::Exact(_) => format!("{n} {noun}"),
        Price::About(_) => format!("about {n} {noun}"),
        Price::AtLeast(_) => format!("at least {n} {noun}"),
    }
}

/// `estimate`'s kind with `pulls` as its number.
fn with_pulls(estimate: Price, pulls: u64) -> Price {
    match estimate {
        Price::Exact(_) => Price::Exact(pulls),
        Price::About(_) => Price::About(pulls),
        Price::AtLeast(_) => Price::AtLeast(pulls),
    }
}

/// The weaker of two estimates: at least beats about beats exact.
fn weaker(a: Price, b: Price) -> Price {
    match (a, b) {
        (Price::AtLeast(_), _) | (_, Price::AtLeast(_)) => Price::AtLeast(0),
        (Price::About(_), _) | (_, Price::About(_)) => Price::About(0),
        _ => Price::Exact(0),
    }
}

/// The price of `report`'s copies per source registry, each content counted once, with the
/// budgets `budgets` hold now.
pub fn per_registry(report: &Report, budgets: &Budgets) -> Vec<RegistryPrice> {
    let mut seen = HashSet::new();
    let mut by_registry: BTreeMap<String, (u64, Price)> = BTreeMap::new();
    for r in &report.results {
        let Ok(Outcome::WouldCopy { digest, price, .. }) = &r.outcome else {
            continue;
        };
        let content = (
            r.job.source.registry.clone(),
            digest.clone(),
            r.job.choice.clone(),
        );
        if !seen.insert(content) {
            continue;
        }
        let entry = by_registry
            .entry(r.job.source.registry.clone())
            .or_insert((0, Price::Exact(0)));
        entry.0 += price.pulls();
        entry.1 = weaker(entry.1, *price);
    }
    by_registry
        .into_iter()
        .map(|(registry, (pulls, estimate))| {
            let usage = budgets.of(api_host(&registry)).usage();
            RegistryPrice {
                registry,
                pulls,
                estimate: with_pulls(estimate, pulls),
                remaining: usage.remaining,
                limit: usage.limit,
                window: usage.window,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(pulls: u64, remaining: u64) -> RegistryPrice {
        RegistryPrice {
            registry: "registry-1.docker.io".to_string(),
            pulls,
            estimate: Price::Exact(pulls),
            remaining: Some(remaining),
            limit: Some(100),
            window: Some(Duration::from_secs(6 * 3600)),
        }
    }

    #[test]
    fn a_price_past_the_budget_waits_whole_windows() {
        assert_eq!(price(50, 96).takes(), Some(Duration::ZERO));
        assert_eq!(price(212, 96).takes(), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(price(196, 96).takes(), Some(Duration::from_secs(6 * 3600)));
        let shown = price(212, 96).to_string();
        assert!(
            shown.starts_with("registry-1.docker.io: needs 212 pulls; it has 96 of 100 per "),
            "{shown}"
        );
        let unlimited = RegistryPrice {
            limit: None,
            ..price(3, 0)
        };
        assert_eq!(unlimited.takes(), None);
        assert!(
            unlimited.to_string().ends_with("announced no pull limit"),
            "{unlimited}"
        );
    }

    #[test]
    fn estimates_say_how_sure_they_are() {
        assert_eq!(pulls_said(Price::Exact(1)), "1 pull");
        assert_eq!(pulls_said(Price::About(9)), "about 9 pulls");
        assert_eq!(pulls_said(Price::AtLeast(2)), "at least 2 pulls");
        assert_eq!(weaker(Price::Exact(1), Price::About(3)), Price::About(0));
        assert_eq!(
            weaker(Price::AtLeast(1), Price::About(3)),
            Price::AtLeast(0)
        );
    }
}
