//! Logs to stderr: readable text for people, one JSON object per line for CloudWatch and
//! journald pipelines. `RUST_LOG` wins over `-v`/`-q` when set.
//!
//! `-v` and `-vv` raise regmirror's own level only (debug, trace); other crates stay at info,
//! since their trace (the file watcher's, the HTTP stack's) is a flood that can feed itself
//! when stderr is a file in the watched directory. `RUST_LOG` can still ask for theirs.

use std::io::IsTerminal;

use indicatif::ProgressBar;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

use crate::progress::LogWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `verbosity` is `-v` count minus `-q` count; with `view`,
/// the terminal's status lines, each log line is printed above them.
pub fn init(format: LogFormat, verbosity: i8, view: Option<ProgressBar>) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbosity {
            i8::MIN..=-2 => "error",
            -1 => "warn",
            0 => "warn,regmirror=info",
            1 => "info,regmirror=debug",
            _ => "info,regmirror=trace",
        }),
    };
    // Colour only for a person at a terminal: journald and log files get plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let writer = match view {
        Some(bar) => BoxMakeWriter::new(LogWriter(bar)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        // No module path in JSON: its key, `target`, would read as the image's target.
        LogFormat::Json => builder
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
