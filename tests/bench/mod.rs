//! What the benchmark scenarios share: running a tool and measuring it, and turning the
//! measurements into BENCHMARKS.md's sections and summary rows.
//!
//! One test binary per scenario (`tests/bench_copy.rs`: 1 and 2, `tests/bench_big.rs`: 3,
//! `tests/bench_ratelimit.rs`: 4, `tests/bench_idle.rs`: 5, `tests/bench_tags.rs`: 6 and 7),
//! each declaring `mod harness;` and `mod bench;` and using what it needs. All of them are ignored by default: `scripts/bench`
//! runs them in release mode and assembles BENCHMARKS.md from what they write.
//!
//! - [`measure`]: a tool under GNU `/usr/bin/time` (exact peak RSS and CPU, wall time taken
//!   here), the regmirror and skopeo commands, the tools a run needs.
//! - [`report`]: medians, formatting, the per-target table ([`report::Row`]) and
//!   [`report::publish`], which appends to `$BENCH_OUT` and `$BENCH_SUMMARY`.
//! - [`Settings`]: sizes and rounds from the environment.
//!
//! Environment: `BENCH_OUT` (markdown sections are appended to it), `BENCH_SUMMARY` (one
//! table row per target is appended to it), `BENCH_ROUNDS` (timed rounds, default 3),
//! `BENCH_QUICK=1` (small sizes for a smoke run), and for finer control `BENCH_REPOS`,
//! `BENCH_LAYER_KIB` (scenarios 1 and 2), `BENCH_BIG_MIB` (scenario 3), `BENCH_CHECK_TAGS`
//! (scenario 5). `BENCH_REGMIRROR`: the regmirror binary to measure (see
//! [`measure::regmirror_in`]).

// Each benchmark binary uses a different subset, so unused items are expected.
#![allow(dead_code)]

pub mod measure;
pub mod report;

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// Sizes and rounds, from the environment (see the module comment).
#[derive(Debug)]
pub struct Settings {
    /// Timed rounds (`BENCH_ROUNDS`: 3, quick 2).
    pub rounds: usize,
    /// Repositories of scenarios 1 and 2 (`BENCH_REPOS`: 20, quick 4), 3 tags each.
    pub repos: usize,
    /// Bytes per layer in scenarios 1 and 2 (`BENCH_LAYER_KIB`: 1024, quick 64).
    pub layer_size: usize,
    /// Bytes of scenario 3's one layer (`BENCH_BIG_MIB`: 1024, quick 64).
    pub big_size: usize,
    /// Tags in scenario 5's `check` config (`BENCH_CHECK_TAGS`: 10,000, quick too).
    pub check_tags: usize,
    /// `BENCH_QUICK` set (and not `0`): reduced sizes, said so in each section.
    pub quick: bool,
}

impl Settings {
    pub fn from_env() -> Settings {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let pick = |name: &str, full: usize, small: usize| {
            env_usize(name).unwrap_or(if quick { small } else { full })
        };
        Settings {
            rounds: pick("BENCH_ROUNDS", 3, 2).max(1),
            repos: pick("BENCH_REPOS", 20, 4).max(1),
            layer_size: pick("BENCH_LAYER_KIB", 1024, 64) * KIB,
            big_size: pick("BENCH_BIG_MIB", 1024, 64) * MIB,
            check_tags: pick("BENCH_CHECK_TAGS", 10_000, 10_000).max(100),
            quick,
        }
    }
}

fn env_usize(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: not a number: {e}")),
    )
}
