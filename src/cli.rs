//! The command line: what users type, and what each command does with the library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::ProgressBar;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, Job, Overrides};
use crate::daemon;
use crate::daemon::signals;
use crate::exit::Exit;
use crate::logging::LogFormat;
use crate::progress;
use crate::run::{Claims, Runner, Tally};
use crate::shard::{Shard, ShardError};

/// The config file read when neither `--config` nor `REGMIRROR_CONFIG` names one.
pub const DEFAULT_CONFIG: &str = "mirrors.toml";
/// What messages call the config of a run with no file (`--ssm-parameter` and `--target`).
const NO_FILE: &str = "(command line)";

/// Keeps exact copies of container images in a registry you control.
#[derive(Debug, Parser)]
#[command(name = "regmirror", version, about, long_about = None)]
pub struct Cli {
    /// The config file [default: mirrors.toml; optional with --ssm-parameter].
    #[arg(long, short = 'c', env = "REGMIRROR_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Also mirror the images listed in this AWS SSM parameter (StringList, String or
    /// SecureString), read at the start of every pass.
    #[arg(
        long,
        env = "REGMIRROR_SSM_PARAMETER",
        global = true,
        value_name = "NAME"
    )]
    pub ssm_parameter: Option<String>,

    /// Where images go, REGISTRY[/PREFIX]: overrides defaults.target.
    #[arg(
        long,
        env = "REGMIRROR_TARGET",
        global = true,
        value_name = "REGISTRY[/PREFIX]"
    )]
    pub target: Option<String>,

    /// Mirror only shard I of N (1-based), split by a stable hash of each target reference,
    /// so N scheduled tasks can share one list.
    #[arg(
        long,
        env = "REGMIRROR_SHARD",
        global = true,
        value_name = "I/N",
        conflicts_with_all = ["shards", "shard_index_env"]
    )]
    pub shard: Option<Shard>,

    /// Split the images between N tasks like --shard, this task's index read from the variable
    /// --shard-index-env names, counted from 0 (the Kubernetes Indexed Job form).
    #[arg(
        long,
        env = "REGMIRROR_SHARDS",
        global = true,
        value_name = "N",
        requires = "shard_index_env",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub shards: Option<u32>,

    /// The environment variable holding this task's shard index, 0 to N-1: JOB_COMPLETION_INDEX
    /// in a Kubernetes Indexed Job, AWS_BATCH_JOB_ARRAY_INDEX in an AWS Batch array job.
    #[arg(
        long,
        env = "REGMIRROR_SHARD_INDEX_ENV",
        global = true,
        value_name = "VAR",
        requires = "shards"
    )]
    pub shard_index_env: Option<String>,

    /// Run one pass over every image, then exit (0 all mirrored, 1 some failed, 2 bad config).
    /// Without it regmirror runs as a daemon, each mirror on its schedule.
    #[arg(long)]
    pub once: bool,

    /// Compare only: print what would be copied, copy nothing, spend no pulls. Implies --once.
    #[arg(long)]
    pub dry_run: bool,

    /// With --once: compare every tag by HEAD, whatever Docker Hub's tag API lists. A run
    /// remembers nothing of the last, so a scheduled job bounds how long the API's lag can
    /// hide a moved tag by passing this on some of its runs (the daemon has head_every).
    #[arg(long)]
    pub verify_heads: bool,

    /// How `--once` and `--dry-run` print their report on stdout: `text` for people, or
    /// `json`, the report file's document (the plan with its price, in a dry run).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// After each pass, write what it did as JSON to FILE (replaced atomically): every
    /// image's source, target, digest, outcome and reason; totals; pruned tags; registries.
    #[arg(long, value_name = "FILE", env = "REGMIRROR_REPORT")]
    pub report: Option<PathBuf>,

    /// No status lines at the bottom of the terminal during --once (they are shown only when
    /// stderr is a terminal and logs are text).
    #[arg(long)]
    pub no_progress: bool,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Less log detail (-q warnings, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and print the plan (each source → target); exit 0 or 2.
    Check,
    /// Print (or write under --out) the settings that make container runtimes pull mirrored
    /// images from the mirror by their upstream names: containerd, CRI-O/podman/skopeo,
    /// BuildKit, Docker. Needs defaults.layout = "registry"; exit 0 or 2.
    Clients {
        /// Write each file under this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

impl Cli {
    /// Whether a `--once` pass may show its status lines, should stderr be a terminal.
    pub fn wants_progress(&self) -> bool {
        self.command.is_none()
            && (self.once || self.dry_run)
            && self.log_format == LogFormat::Text
            && !self.no_progress
    }

    pub fn verbosity(&self) -> i8 {
        self.verbose.min(4) as i8 - self.quiet.min(4) as i8
    }

    /// This task's shard, from `--shard I/N`, or from `--shards N` and the 0-based index in the
    /// variable `--shard-index-env` names (clap has made sure those two come together).
    pub fn shard(&self) -> Result<Option<Shard>, ShardError> {
        match (self.shard, self.shards, &self.shard_index_env) {
            (Some(shard), _, _) => Ok(Some(shard)),
            (None, Some(count), Some(var)) => {
                let value = std::env::var_os(var).map(|v| v.to_string_lossy().into_owned());
                Shard::from_zero_based(var, value.as_deref(), count).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// Runs what the command line asks for. Reports go to stdout, errors and logs to stderr.
/// Runs what `cli` asks; `view` is the terminal's status lines for a `--once` pass.
pub async fn execute(cli: Cli, view: Option<ProgressBar>) -> Exit {
    let shard = match cli.shard() {
        Ok(shard) => shard,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadConfig;
        }
    };
    let overrides = Overrides {
        target: cli.target.clone(),
        ssm_parameter: cli.ssm_parameter.clone(),
    };
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    // With the image list in SSM and the target on the command line, no file is needed.
    let file_less = cli.config.is_none() && overrides.ssm_parameter.is_some() && !path.exists();
    let loaded = if file_less {
        Config::from_bytes(Path::new(NO_FILE), b"", &overrides)
    } else {
        Config::load(&path, &overrides)
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadConfig;
        }
    };
    match cli.command {
        Some(Command::Check) => {
            print!("{}", plan(&config, chrono::Utc::now()));
            if let Some(shard) = shard {
                let share = config
                    .jobs
                    .iter()
                    .filter(|job| shard.includes(&job.target.to_string()))
                    .count();
                let from = match (&cli.shard_index_env, cli.shard) {
                    (Some(var), None) => format!(" ({var}={}, counted from 0)", shard.index - 1),
                    _ => String::new(),
                };
                println!(
                    "shard {shard}{from}: {share} of these {} images, and its share of the tags \
                     that rules select at each run",
                    config.jobs.len()
                );
            }
            Exit::Success
        }
        Some(Command::Clients { out }) => clients(&config, out.as_deref()),
        None if cli.once || cli.dry_run => {
            let stop = CancellationToken::new();
            if let Err(e) = signals::stop_on_terminate(stop.clone()) {
                eprintln!("error: cannot install signal handlers: {e}");
                return Exit::SomeFailed;
            }
            let printed = Printed {
                output: cli.output,
                report_file: cli.report.as_deref(),
            };
            let how = How {
                dry_run: cli.dry_run,
                verify_heads: cli.verify_heads,
            };
            once(config, shard, how, printed, stop, view).await
        }
        None if cli.verify_heads => {
            eprintln!(
                "error: --verify-heads goes with --once or --dry-run; the daemon compares by HEAD \
                 every head_every"
            );
            Exit::BadConfig
        }
        None => daemon::run(config, overrides, shard, cli.report.clone()).await,
    }
}

/// How a `--once` pass's report reaches people and machines.
struct Printed<'a> {
    output: Output,
    /// `--report`.
    report_file: Option<&'a Path>,
}

/// How a `--once` pass compares and copies.
struct How {
    /// `--dry-run`: compare only.
    dry_run: bool,
    /// `--verify-heads`: every tag by HEAD, no tag API.
    verify_heads: bool,
}

/// `--output`: the report on stdout as text or as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// One pass over the file's images and the SSM parameter's (this shard's share of them).
async fn once(
    config: Config,
    shard: Option<Shard>,
    How {
        dry_run,
        verify_heads,
    }: How,
    printed: Printed<'_>,
    stop: CancellationToken,
    view: Option<ProgressBar>,
) -> Exit {
    let mut runner = match Runner::new(&config, Arc::default(), stop) {
        Ok(runner) => runner,
        Err(e) => {
            eprintln!("error: {}: {e}", config.path.display());
            return Exit::BadConfig;
        }
    };
    if verify_heads {
        runner.head_passes = Arc::new(crate::run::HeadPasses::every_pass());
    }
    let every_mirror: Vec<usize> = (0..config.mirrors.len()).collect();
    // The SSM parameter is read here, as the daemon reads it for a run of its mirror.
    let mut pass = runner.prepare(Arc::new(config), every_mirror).await;
    if let Some(shard) = shard {
        info!(%shard, "mirroring one shard's share of the images");
    }
    let in_shard = |job: &Job| shard.is_none_or(|s| s.includes(&job.target.to_string()));
    let watching = view.map(|bar| {
        let tally = Arc::new(Tally::default());
        pass.runner.tally = Some(tally.clone());
        (bar.clone(), progress::watch(bar, &pass.runner, tally))
    });
    let (report, _) = pass.run(&Claims::new(), &in_shard, dry_run).await;
    if let Some((bar, redraw)) = watching {
        redraw.abort();
        bar.finish_and_clear();
    }
    let document = crate::run::record::document(&report, chrono::Utc::now());
    match printed.output {
        Output::Text => println!("{}", report.render()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&document).expect("a JSON value serialises")
        ),
    }
    if let Some(path) = printed.report_file {
        if let Err(e) = crate::run::record::write(path, &document) {
            eprintln!("error: --report {}: {e}", path.display());
            return Exit::SomeFailed;
        }
    }
    // An image refused as immutable is not what upstream has: the run did not do its job.
    if report.complete() {
        Exit::Success
    } else {
        Exit::SomeFailed
    }
}

/// `regmirror clients`: the runtime settings, printed or written under `out`.
fn clients(config: &Config, out: Option<&Path>) -> Exit {
    let settings = match crate::clients::settings(config) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {}: {e}", config.path.display());
            return Exit::BadConfig;
        }
    };
    let Some(dir) = out else {
        print!("{}", crate::clients::render(&settings));
        return Exit::Success;
    };
    match crate::clients::write(&settings, dir) {
        Ok(written) => {
            for path in written {
                println!("wrote {}", path.display());
            }
            for note in &settings.notes {
                println!("note: {note}");
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: --out {}: {e}", dir.display());
            Exit::BadConfig
        }
    }
}

/// What `check` prints: every mirror with its next three runs, and each image under it.
fn plan(config: &Config, now: chrono::DateTime<chrono::Utc>) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let by_rules = config
        .mirrors
        .iter()
        .filter(|m| m.selection.is_some())
        .count();
    let listed = match by_rules {
        0 => String::new(),
        n => format!(
            " and {} by tag rules",
            plural(n, "repository", "repositories")
        ),
    };
    let mut out = format!(
        "{}: {}{listed} in {}\n",
        config.path.display(),
        plural(config.jobs.len(), "image", "images"),
        plural(config.mirrors.len(), "mirror", "mirrors"),
    );
    let mut jobs_of: Vec<Vec<&crate::config::Job>> = vec![Vec::new(); config.mirrors.len()];
    for job in &config.jobs {
        jobs_of[job.mirror].push(job);
    }
    for (mirror, jobs) in config.mirrors.iter().zip(jobs_of) {
        let when = match &mirror.schedule {
            Some(schedule) => {
                let next: Vec<String> = schedule
                    .upcoming(now, 3)
                    .iter()
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
                    .collect();
                format!("{schedule}, next {}", next.join(", "))
            }
            None if mirror.run_on_start => {
                "no schedule: runs when the daemon starts and on POST /sync".to_string()
            }
            None => "no schedule and run_on_start = false: runs only on POST /sync".to_string(),
        };
        // The SSM parameter's mirror has no line: its name already says where it comes from.
        let place = match mirror.line {
            0 => String::new(),
            line => format!(" (line {line})"),
        };
        out.push_str(&format!("{}{place}: {when}\n", mirror.name));
        for job in jobs {
            out.push_str(&format!("  {} → {}\n", job.source, job.target));
        }
        if let Some(verify) = &mirror.choice.verify {
            out.push_str(&format!("  copied only when {verify}\n"));
        }
        if let Some(selection) = &mirror.selection {
            out.push_str(&format!(
                "  {}: tags listed at each run, selected by {} → {}\n",
                selection.source.repo(),
                selection.rules,
                selection.targets_shown()
            ));
        }
    }
    for (name, settings) in &config.registries {
        if let Some(ecr) = &settings.ecr {
            let region = ecr.region.as_deref().unwrap_or("of the AWS default chain");
            out.push_str(&format!(
                "{name}: Amazon ECR, region {region}: tokens from GetAuthorizationToken, \
                 missing repositories created\n"
            ));
        }
    }
    out
}
