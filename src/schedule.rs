//! When a mirror runs: a cron expression in a time zone.
//!
//! Accepted forms are crontab's: 5 fields (`0 3 * * *`), 6 with seconds first
//! (`*/30 * * * * *`), and the `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` shorthands.
//! When both day-of-month and day-of-week are restricted, either matching is enough, as in
//! crontab. Times are computed in the mirror's own zone (UTC unless `timezone` says), so
//! `0 3 * * *` in Europe/Berlin stays at 03:00 local across daylight-saving changes.
//!
//! Parsing and matching are croner's, the engine tokio-cron-scheduler itself uses; the daemon
//! sleeps until [`Schedule::next_after`] instead of going through tokio-cron-scheduler, whose
//! jobs fix a zone's UTC offset when they are created (an hour off after each DST change) and
//! read day-of-month and day-of-week together.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed cron expression and the zone it is read in. Cheap to clone: the parsed pattern
/// is shared (10,000 images on the default schedule hold one).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written in mirrors.toml, for messages and comparisons.
    expression: std::sync::Arc<str>,
    cron: std::sync::Arc<Cron>,
    zone: Tz,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parses `expression`, read in `zone`. The error says what is wrong and what is accepted.
    pub fn parse(expression: &str, zone: Tz) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        let shorthand = expression.trim_start().starts_with('@');
        if !shorthand && !(5..=6).contains(&fields) {
            return Err(format!(
                "schedule {expression:?} has {fields} fields; write 5 (minute hour day month weekday, as in crontab), 6 (with seconds first), or @hourly, @daily, @weekly, @monthly, @yearly"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| format!("schedule {expression:?} is not a valid cron expression: {e}"))?;
        // An expression that never matches (`0 0 31 2 *`) would leave a mirror silently idle.
        if cron
            .find_next_occurrence(&Utc::now().with_timezone(&zone), false)
            .is_err()
        {
            return Err(format!("schedule {expression:?} never runs"));
        }
        Ok(Schedule {
            expression: expression.trim().into(),
            cron: cron.into(),
            zone,
        })
    }

    /// Reads a zone name from the tz database, such as `Europe/Berlin` or `UTC`.
    pub fn zone(name: &str) -> Result<Tz, String> {
        Tz::from_str(name).map_err(|_| {
            format!("unknown time zone {name:?}: use a tz database name such as \"UTC\" or \"Europe/Berlin\"")
        })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Tz>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
    }

    /// The next `n` runs after `after`, in the schedule's zone.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut times = Vec::with_capacity(n);
        let mut at = after;
        while times.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    at = next.with_timezone(&Utc);
                    times.push(next);
                }
                None => break,
            }
        }
        times
    }
    /// The longest time between two consecutive runs from `after` on, looking a week ahead
    /// (at least one gap, at most [`GAP_RUNS`] runs): what "twice its schedule" means to an
    /// alert. A week covers a weekday-only schedule's weekend and a daylight-saving change;
    /// `None` for a schedule with fewer than two runs left.
    pub fn longest_gap(&self, after: DateTime<Utc>) -> Option<std::time::Duration> {
        let horizon = after + chrono::Duration::days(7);
        let mut previous = self.next_after(after)?.with_timezone(&Utc);
        let mut longest = None;
        for _ in 1..GAP_RUNS {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            let next = next.with_timezone(&Utc);
            let gap = (next - previous).to_std().unwrap_or_default();
            longest = longest.max(Some(gap));
            if next > horizon {
                break;
            }
            previous = next;
        }
        longest
    }
}

/// The most runs [`Schedule::longest_gap`] looks at: a week of a schedule every few seconds
/// would be over 100,000, and such a schedule's gaps are all alike.
const GAP_RUNS: usize = 1000;

impl fmt::Display for Schedule {
    /// `"0 3 * * *" (Europe/Berlin)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.expression, self.zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn utc(expr: &str) -> Schedule {
        Schedule::parse(expr, Tz::UTC).unwrap()
    }

    fn next(s: &Schedule, after: &str) -> String {
        s.next_after(at(after)).unwrap().to_rfc3339()
    }

    #[test]
    fn crontab_five_fields_run_at_second_zero() {
        let s = utc("0 3 * * *");
        assert_eq!(
            next(&s, "2026-11-22T10:00:00Z"),
            "2026-11-23T03:00:00+00:00"
        );
        assert_eq!(
            s.upcoming(at("2026-11-22T10:00:00Z"), 3)
                .iter()
                .map(|t| t.to_rfc3339())
                .collect::<Vec<_>>(),
            [
                "2026-11-23T03:00:00+00:00",
                "2026-11-24T03:00:00+00:00",
                "2026-11-25T03:00:00+00:00"
            ]
        );
        // Strictly after: a run at exactly 03:00 is followed by the next day's.
        assert_eq!(
            next(&s, "2026-11-23T03:00:00Z"),
            "2026-11-24T03:00:00+00:00"
        );
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let s = utc("*/30 * * * * *");
        assert_eq!(
            next(&s, "2026-11-22T10:00:05Z"),
            "2026-11-22T10:00:30+00:00"
        );
        assert_eq!(
            next(&utc("*/2 * * * * *"), "2026-11-22T10:00:01Z"),
            "2026-11-22T10:00:02+00:00"
        );
    }

    #[test]
    fn shorthands() {
        for (expr, expected) in [
            ("@hourly", "2026-11-22T11:00:00+00:00"),
            ("@daily", "2026-11-23T00:00:00+00:00"),
            ("@weekly", "2026-11-29T00:00:00+00:00"), // a Sunday
            ("@monthly", "2026-12-01T00:00:00+00:00"),
            ("@yearly", "2027-01-01T00:00:00+00:00"),
        ] {
            assert_eq!(next(&utc(expr), "2026-11-22T10:20:00Z"), expected, "{expr}");
        }
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_crontab() {
        // The 13th, or any Friday: 2026-11-27 is a Friday, before December 13th.
        let s = utc("0 0 13 * 5");
        assert_eq!(
            next(&s, "2026-11-22T00:00:00Z"),
            "2026-11-27T00:00:00+00:00"
        );
    }

    #[test]
    fn local_time_holds_across_daylight_saving_changes() {
        let berlin = Schedule::zone("Europe/Berlin").unwrap();
        let s = Schedule::parse("0 3 * * *", berlin).unwrap();
        // Summer time starts on 2026-03-29: 03:00 CET is 02:00 UTC, 03:00 CEST is 01:00 UTC.
        let runs: Vec<_> = s
            .upcoming(at("2026-03-27T12:00:00Z"), 3)
            .iter()
            .map(|t| t.with_timezone(&Utc).to_rfc3339())
            .collect();
        assert_eq!(
            runs,
            [
                "2026-03-28T02:00:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T01:00:00+00:00"
            ]
        );
        let local = s.next_after(Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap());
        assert_eq!(local.unwrap().format("%H:%M %Z").to_string(), "03:00 CEST");
    }

    #[test]
    fn the_longest_gap_looks_a_week_ahead_so_weekends_and_clock_changes_count() {
        let gap = |s: &Schedule, after: &str| s.longest_gap(at(after)).unwrap().as_secs();
        assert_eq!(gap(&utc("@hourly"), "2026-11-22T10:20:00Z"), 3600);
        // Weekdays only, seen from a Tuesday: Friday to Monday is the gap that counts.
        assert_eq!(gap(&utc("0 3 * * 1-5"), "2026-11-24T10:00:00Z"), 3 * 86400);
        // December 1st to January 1st: one gap is enough, however far it reaches.
        assert_eq!(gap(&utc("@monthly"), "2026-11-22T10:20:00Z"), 31 * 86400);
        // Every two seconds: bounded by the runs looked at, not a week of them.
        assert_eq!(gap(&utc("*/2 * * * * *"), "2026-11-22T10:00:01Z"), 2);
        // Summer time ends on 2026-10-25 in Berlin: 03:00 comes 25 hours after the last.
        let berlin = Schedule::parse("0 3 * * *", Schedule::zone("Europe/Berlin").unwrap());
        assert_eq!(gap(&berlin.unwrap(), "2026-10-22T12:00:00Z"), 25 * 3600);
    }

    #[test]
    fn refusals_say_what_is_accepted() {
        for (expr, expected) in [
            ("0 3 * *", "has 4 fields; write 5"),
            ("0 0 3 * * * 2027", "has 7 fields"),
            ("61 * * * *", "not a valid cron expression"),
            ("@fortnightly", "not a valid cron expression"),
            ("0 0 31 2 *", "never runs"),
            ("", "has 0 fields"),
        ] {
            let err = Schedule::parse(expr, Tz::UTC).unwrap_err();
            assert!(err.contains(expected), "{expr:?}: {err}");
        }
        let err = Schedule::zone("Mars/Olympus").unwrap_err();
        assert!(err.contains("unknown time zone \"Mars/Olympus\""), "{err}");
    }
}
