//! A live view of a pass for a person at a terminal.
//!
//! A first `--once` over fifty images, or one 2 GB image, would otherwise show nothing but log
//! lines until it ends. When stderr is a terminal and logs are text, the last lines of the
//! screen say where the pass is, redrawn a few times a second: images done of those planned,
//! by outcome; the copies under way with the bytes streamed and their rate; and, per registry
//! whose pulls wait for its budget, when the next pull goes, said plainly. Log lines are still
//! printed, above it ([`LogWriter`]). None of this reaches a file, a pipe or the journal: the
//! view exists only for a terminal, and never with `--log-format json`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Local};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tracing_subscriber::fmt::MakeWriter;

use crate::registry::limits::human_bytes;
use crate::registry::ratelimit::Pause;
use crate::registry::waiting::secs;
use crate::run::{Runner, Tally};

/// How often the view is redrawn.
const REDRAW: Duration = Duration::from_millis(250);
/// The span the transfer rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// The status lines below the log, or `None` where nobody watches: stderr not a terminal.
pub fn for_terminal() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
    Some(bar)
}

/// Log lines written above the status lines: the view steps aside for each.
#[derive(Debug, Clone)]
pub struct LogWriter(pub ProgressBar);

/// One log line on its way to stderr.
#[derive(Debug)]
pub struct Line(ProgressBar);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(self.0.clone())
    }
}

/// Redraws `bar` from `runner`'s pass until aborted, counting from `tally`.
pub fn watch(bar: ProgressBar, runner: &Runner, tally: Arc<Tally>) -> JoinHandle<()> {
    let registries = runner.registries.clone();
    let stores = runner.stores.clone();
    let slots = runner.slots.clone();
    let concurrency = runner.concurrency;
    tokio::spawn(async move {
        let mut samples: Vec<(Instant, u64)> = Vec::new();
        let mut shown = String::new();
        loop {
            let now = Instant::now();
            let bytes = stores.bytes_transferred();
            samples.push((now, bytes));
            samples.retain(|(at, _)| now.duration_since(*at) <= RATE_WINDOW);
            let rate = match samples.first() {
                Some((since, then)) if now > *since => {
                    (bytes - then) as f64 / now.duration_since(*since).as_secs_f64()
                }
                _ => 0.0,
            };
            let copying = concurrency.saturating_sub(slots.available_permits());
            let pass = Pass {
                copying,
                bytes,
                rate,
            };
            let status = status(&tally, &pass, &registries.pauses(), chrono::Local::now());
            // Redrawn only when it changed: a terminal over SSH gets a line now and then, not
            // a stream.
            if status != shown {
                bar.set_message(status.clone());
                shown = status;
            }
            tokio::time::sleep(REDRAW).await;
        }
    })
}

/// The copies of a pass, as the status line shows them.
struct Pass {
    /// Copies holding a concurrency slot.
    copying: usize,
    /// Bytes streamed so far.
    bytes: u64,
    /// Bytes per second over the last [`RATE_WINDOW`].
    rate: f64,
}

/// The status lines: the pass, then one per registry whose pulls wait.
fn status(tally: &Tally, pass: &Pass, pauses: &[Pause], now: DateTime<Local>) -> String {
    let planned = tally.planned.load(Ordering::Relaxed);
    let mut line = if planned == 0 {
        "planning: listing tags and reading the image list…".to_string()
    } else {
        let mut parts = Vec::new();
        for (count, what) in [
            (&tally.mirrored, "mirrored"),
            (&tally.unchanged, "unchanged"),
            (&tally.skipped, "skipped"),
            (&tally.immutable, "immutable"),
            (&tally.failed, "failed"),
        ] {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        let outcomes = if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        };
        format!("images {} of {planned}{outcomes}", tally.done())
    };
    if pass.copying > 0 {
        line.push_str(&format!(" · copying {}", pass.copying));
    }
    match tally.pruned.load(Ordering::Relaxed) {
        0 => {}
        1 => line.push_str(" · 1 tag pruned"),
        n => line.push_str(&format!(" · {n} tags pruned")),
    }
    if pass.bytes > 0 {
        line.push_str(&format!(" · {} streamed", human_bytes(pass.bytes)));
        if pass.rate >= 1.0 {
            line.push_str(&format!(" at {}/s", human_bytes(pass.rate as u64)));
        }
    }
    for pause in pauses {
        line.push('\n');
        line.push_str(&waiting(pause, now));
    }
    line
}

/// One paused registry, said plainly:
/// `registry-1.docker.io: pull budget spent, next pull at 14:05 (in 2 h 11 min)`.
fn waiting(pause: &Pause, now: DateTime<Local>) -> String {
    let registry = &pause.registry;
    match (pause.resumes_in, pause.at_the_latest_in) {
        (Some(wait), _) => format!(
            "{registry}: pull budget spent, next pull {}",
            when("at", wait, now)
        ),
        (None, Some(wait)) => format!(
            "{registry}: pull budget spent, next pull {}, sooner if a check (every {}) finds \
             budget",
            when("by", wait, now),
            secs(pause.checked_every)
        ),
        (None, None) => format!(
            "{registry}: pull budget spent {} ago, next pull when a check (every {}) finds budget",
            secs(pause.paused_for),
            secs(pause.checked_every)
        ),
    }
}

/// `at 14:05 (in 2 h 11 min)`: the time of day `wait` from `now`, or only `in …` for a wait
/// no clock can add (the parser caps what a registry announces; this does not rely on it).
fn when(preposition: &str, wait: Duration, now: DateTime<Local>) -> String {
    let at = chrono::TimeDelta::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait));
    match at {
        // Seconds matter only when the wait is short.
        Some(at) if wait < Duration::from_secs(600) => {
            format!(
                "{preposition} {} (in {})",
                at.format("%H:%M:%S"),
                secs(wait)
            )
        }
        Some(at) => format!("{preposition} {} (in {})", at.format("%H:%M"), secs(wait)),
        None => format!("in {}", secs(wait)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn pause(resumes_in: Option<u64>, at_the_latest_in: Option<u64>) -> Pause {
        Pause {
            registry: "registry-1.docker.io".into(),
            paused_for: Duration::from_secs(125),
            resumes_in: resumes_in.map(Duration::from_secs),
            at_the_latest_in: at_the_latest_in.map(Duration::from_secs),
            checked_every: Duration::from_secs(600),
        }
    }

    #[test]
    fn the_status_says_where_the_pass_is() {
        let noon = Local.with_ymd_and_hms(2026, 11, 26, 11, 54, 0).unwrap();
        let tally = Tally::default();
        let idle = Pass {
            copying: 0,
            bytes: 0,
            rate: 0.0,
        };
        assert_eq!(
            status(&tally, &idle, &[], noon),
            "planning: listing tags and reading the image list…"
        );
        tally.planned.store(50, Ordering::Relaxed);
        tally.mirrored.store(5, Ordering::Relaxed);
        tally.unchanged.store(16, Ordering::Relaxed);
        tally.immutable.store(1, Ordering::Relaxed);
        tally.failed.store(1, Ordering::Relaxed);
        tally.pruned.store(2, Ordering::Relaxed);
        let busy = Pass {
            copying: 3,
            bytes: 412 << 20,
            rate: 38.0 * (1 << 20) as f64,
        };
        let shown = status(&tally, &busy, &[pause(Some(7860), None)], noon);
        assert_eq!(
            shown,
            "images 23 of 50: 5 mirrored, 16 unchanged, 1 immutable, 1 failed · copying 3 · \
             2 tags pruned · 412 MiB streamed \
             at 38 MiB/s\n\
             registry-1.docker.io: pull budget spent, next pull at 14:05 (in 2 h 11 min)"
        );
    }

    #[test]
    fn a_wait_says_when_the_next_pull_goes_as_well_as_it_is_known() {
        let noon = Local.with_ymd_and_hms(2026, 11, 26, 11, 54, 0).unwrap();
        assert_eq!(
            waiting(&pause(Some(95), Some(20_000)), noon),
            "registry-1.docker.io: pull budget spent, next pull at 11:55:35 (in 1 min 35 s)"
        );
        assert_eq!(
            waiting(&pause(None, Some(7860)), noon),
            "registry-1.docker.io: pull budget spent, next pull by 14:05 (in 2 h 11 min), sooner \
             if a check (every 10 min) finds budget"
        );
        assert_eq!(
            waiting(&pause(None, None), noon),
            "registry-1.docker.io: pull budget spent 2 min 5 s ago, next pull when a check \
             (every 10 min) finds budget"
        );
    }

    #[test]
    fn a_wait_no_clock_can_add_is_said_without_a_time_of_day() {
        // What `ratelimit-remaining: 0;w=10000000000000` made of the view before windows were
        // capped: `DateTime + TimeDelta overflowed`.
        let noon = Local.with_ymd_and_hms(2026, 11, 26, 11, 54, 0).unwrap();
        let absurd = 10_000_000_000_000;
        assert_eq!(
            waiting(&pause(None, Some(absurd)), noon),
            "registry-1.docker.io: pull budget spent, next pull in 2777777777 h 46 min, sooner \
             if a check (every 10 min) finds budget"
        );
        assert_eq!(
            waiting(&pause(Some(u64::MAX), None), noon),
            format!(
                "registry-1.docker.io: pull budget spent, next pull in {}",
                secs(Duration::from_secs(u64::MAX))
            )
        );
        let week = crate::registry::ratelimit::MAX_WINDOW.as_secs();
        assert_eq!(
            waiting(&pause(None, Some(week)), noon),
            "registry-1.docker.io: pull budget spent, next pull by 11:54 (in 168 h), sooner if a \
             check (every 10 min) finds budget"
        );
    }
}
