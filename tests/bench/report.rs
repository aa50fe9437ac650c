//! Statistics and formatting: medians of the measured runs, numbers as BENCHMARKS.md shows
//! them, the per-target table, and [`publish`], which prints a scenario's section and appends
//! it to `$BENCH_OUT`, its summary rows to `$BENCH_SUMMARY`.

use std::fs;
use std::io::Write as _;
use std::path::PathBuf;

use super::measure::Measured;
use super::{KIB, MIB};

/// The median, or `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

/// Wall times of the runs, in seconds.
pub fn secs(runs: &[Measured]) -> Vec<f64> {
    runs.iter().map(|r| r.took.as_secs_f64()).collect()
}

/// Peak RSS of the runs that report one, in MiB.
pub fn rss_mib(runs: &[Measured]) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.peak_rss_kib)
        .map(|kib| kib as f64 / 1024.0)
        .collect()
}

/// User plus system CPU of the runs that report it, in seconds.
pub fn cpu_secs(runs: &[Measured]) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.cpu)
        .map(|d| d.as_secs_f64())
        .collect()
}

/// A duration in seconds with enough digits for both 3 ms and 30 s.
pub fn fmt_secs(s: f64) -> String {
    if s < 0.1 {
        format!("{:.1} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// The median as [`fmt_secs`] shows it, `–` for none.
pub fn fmt_median_secs(values: &[f64]) -> String {
    median(values).map_or("–".to_owned(), fmt_secs)
}

/// Every round's value, comma-separated, in `unit`.
pub fn fmt_list(values: &[f64], unit: fn(f64) -> String) -> String {
    values
        .iter()
        .map(|v| unit(*v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// MiB with one decimal.
pub fn fmt_mib(m: f64) -> String {
    format!("{m:.1} MiB")
}

/// A size in GiB, MiB or KiB, whichever reads best.
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= MIB as f64 * 1024.0 {
        format!("{:.2} GiB", b / (MIB as f64 * 1024.0))
    } else if b >= MIB as f64 {
        format!("{:.1} MiB", b / MIB as f64)
    } else {
        format!("{:.0} KiB", b / KIB as f64)
    }
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

/// Exit codes of the runs, shortened when they all agree.
pub fn exits(runs: &[Measured]) -> String {
    let each: Vec<String> = runs
        .iter()
        .map(|r| match (r.timed_out, r.code) {
            (true, _) => "timeout".to_owned(),
            (false, Some(code)) => code.to_string(),
            (false, None) => "signal".to_owned(),
        })
        .collect();
    if each.iter().all(|e| e == &each[0]) {
        format!("{} × {}", each.len(), each[0])
    } else {
        each.join(", ")
    }
}

/// One row of the per-target tables: scenario, tool, median, rounds, ratio, target, met?
pub struct Row<'a> {
    pub scenario: &'a str,
    pub tool: &'a str,
    pub median: String,
    pub rounds: String,
    /// Against what the target is measured (`1` for the tool compared with), or `–`.
    pub ratio: String,
    /// Empty for a row shown for comparison only.
    pub target: &'a str,
    /// Whether the target is met; `None` for no target, and then no summary row.
    pub met: Option<bool>,
}

const ROW_HEADER: &str = "| scenario | tool | median | rounds | ratio | target | met? |\n\
                          |---|---|---|---|---|---|---|\n";

impl Row<'_> {
    fn render(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            self.scenario,
            self.tool,
            self.median,
            self.rounds,
            self.ratio,
            if self.target.is_empty() {
                "–"
            } else {
                self.target
            },
            self.met.map_or("–", yes_no)
        )
    }

    /// The line for BENCHMARKS.md's summary: scenario, measured, target, met?
    fn summary(&self) -> Option<String> {
        let met = self.met?;
        let ratio = if self.ratio == "–" || self.ratio.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.ratio)
        };
        Some(format!(
            "| {} | {}: {}{ratio} | {} | {} |\n",
            self.scenario,
            self.tool,
            self.median,
            self.target,
            yes_no(met)
        ))
    }
}

/// The per-target table: its header and one line per row.
pub fn render_rows(rows: &[Row]) -> String {
    let mut out = String::from(ROW_HEADER);
    for row in rows {
        out.push_str(&row.render());
    }
    out
}

/// Appends to the file named by `$name`, if set.
pub fn append_env_file(name: &str, text: &str) {
    let Some(path) = std::env::var_os(name) else {
        return;
    };
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).expect("create the output's directory");
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Prints a scenario's section and appends it to `$BENCH_OUT`, its summary rows to
/// `$BENCH_SUMMARY`.
pub fn publish(section: &str, rows: &[Row]) {
    println!("{section}");
    append_env_file("BENCH_OUT", &format!("{section}\n"));
    let summary: String = rows.iter().filter_map(Row::summary).collect();
    append_env_file("BENCH_SUMMARY", &summary);
}
