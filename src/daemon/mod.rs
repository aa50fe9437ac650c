//! The daemon: every mirror on its own schedule, the config followed live, a clean stop.
//!
//! - Each mirror with a schedule has a timer task that sleeps until its next run and starts
//!   it. A mirror whose previous run is still going skips that run (logged and counted), so
//!   runs never pile up; runs of different mirrors go side by side, sharing one set of
//!   `defaults.concurrency` slots and one pull budget per registry.
//! - A changed mirrors.toml (seen by [`watch`]) or SIGHUP re-reads the file. A valid
//!   one replaces the config: mirrors are added, removed and rescheduled, runs under way finish
//!   with the config they started with, and new or changed mirrors run at once (when
//!   `run_on_start`). An invalid one is logged with its line and column and the previous
//!   config stays in force.
//! - SIGTERM/SIGINT stop the timers; each run lets its copies under way finish within
//!   `shutdown_grace` (see [`crate::run::Runner`]) and the process exits 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use chrono::{DateTime, Utc};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use self::metrics::Metrics;
use self::status::{MirrorStatus, RegistryStatus, RunStatus, Stamp, Status};
use crate::config::{Config, Job, Overrides, ServerSettings};
use crate::exit::Exit;
use crate::registry::ratelimit::Budgets;
use crate::run::{record, Claim, Claims, Report, Runner};
use crate::schedule::Schedule;
use crate::shard::Shard;

pub mod admission;
pub mod deliveries;
pub mod http;
pub mod metrics;
pub mod page;
pub mod server;
pub mod signals;
pub mod status;
pub mod systemd;
pub mod watch;
pub mod webhook;

/// The longest a timer sleeps before it looks at the wall clock again.
const WALL_CLOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the daemon until SIGTERM or SIGINT. `config` is the already validated first load.
pub async fn run(
    config: Config,
    overrides: Overrides,
    shard: Option<Shard>,
    report_file: Option<PathBuf>,
) -> Exit {
    let stop = CancellationToken::new();
    let mut hangups =
        match signals::stop_on_terminate(stop.clone()).and_then(|_| signals::hangups()) {
            Ok(hangups) => hangups,
            Err(e) => {
                error!(error = %e, "cannot install signal handlers");
                return Exit::SomeFailed;
            }
        };
    let path = config.path.clone();
    let server_settings = config.server.clone();
    let file_less = !path.is_file();
    let daemon = match Daemon::new(config, overrides, shard, report_file, stop.clone()) {
        Ok(daemon) => daemon,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return Exit::BadConfig;
        }
    };
    let server = match &server_settings {
        Some(settings) => {
            match server::start(settings.listen, daemon.clone(), stop.clone()).await {
                Ok(task) => Some(task),
                Err(e) => {
                    eprintln!(
                        "error: {}: server.listen: cannot listen on {}: {e}",
                        path.display(),
                        settings.listen
                    );
                    return Exit::BadConfig;
                }
            }
        }
        None => None,
    };
    let mut changes = match watch::changes(&path) {
        Ok(_) if file_less => None,
        Ok(changes) => Some(changes),
        Err(e) => {
            warn!(config = %path.display(), error = %e, "cannot watch the config file; edits apply on SIGHUP (systemctl reload regmirror)");
            None
        }
    };

    daemon.apply_mirrors("start");
    let config = daemon.config();
    if config.server.is_none() && config.mirrors.iter().all(|m| m.schedule.is_none()) {
        warn!("no mirror has a schedule and [server] is off: after the first run the daemon has nothing to do; set defaults.schedule, or run `regmirror --once` from a scheduler");
    }
    let status = daemon.status();
    info!(config = %path.display(), "{status}");
    systemd::ready(&status);

    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(()) = hangups.recv() => {
                if file_less {
                    info!("SIGHUP: there is no config file to re-read; the SSM parameter is read at every run");
                } else {
                    daemon.reload(true);
                }
            }
            Some(()) = next_change(&mut changes) => daemon.reload(false),
            _ = tick(&mut watchdog) => systemd::watchdog(),
        }
    }

    systemd::stopping();
    daemon.stop_timers();
    daemon.passes.close();
    let running = daemon.passes.len();
    if running > 0 {
        let grace = daemon.lock().config.shutdown_grace;
        info!(
            runs = running,
            grace = %crate::registry::waiting::secs(grace),
            "waiting for copies under way to finish"
        );
    }
    daemon.passes.wait().await;
    if let Some(server) = server {
        let _ = server.await;
    }
    info!("stopped");
    Exit::Success
}

async fn next_change(changes: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The state of a running daemon, shared with the timers and the HTTP endpoint.
#[derive(Debug)]
pub struct Daemon {
    stop: CancellationToken,
    /// The command line's `--target`/`--ssm-parameter`, applied to every reload.
    overrides: Overrides,
    /// `--shard`: only this share of every mirror's images.
    shard: Option<Shard>,
    /// `--report`: where each run's report document is written.
    report_file: Option<PathBuf>,
    /// Pull budgets for the life of the process, whatever the config says meanwhile.
    budgets: Arc<Budgets>,
    pub metrics: Metrics,
    /// Every run under way, so shutdown can wait for them.
    passes: TaskTracker,
    state: Mutex<State>,
    /// Handed to timers, which must not keep the daemon alive.
    me: Weak<Daemon>,
}

#[derive(Debug)]
struct State {
    config: Arc<Config>,
    runner: Runner,
    /// The bytes of mirrors.toml last read, to tell a real edit from a touch.
    text: Vec<u8>,
    mirrors: BTreeMap<String, MirrorState>,
    /// Why the file on disk is not in force, while it is not.
    reload_error: Option<String>,
}

#[derive(Debug, Default)]
struct MirrorState {
    schedule: Option<Schedule>,
    timer: Option<AbortHandle>,
    /// Its images as `source → target`, to notice a reload that changes them.
    images: Vec<String>,
    next_run: Option<DateTime<Utc>>,
    running: bool,
    last: Option<RunStatus>,
    last_success: Option<DateTime<Utc>>,
    /// The targets its last run asked for (see [`Daemon::claims_besides`]).
    claims: Claims,
}

/// What a request to run a mirror now came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    Now,
    AlreadyRunning,
    ShuttingDown,
}

impl Daemon {
    fn new(
        config: Config,
        overrides: Overrides,
        shard: Option<Shard>,
        report_file: Option<PathBuf>,
        stop: CancellationToken,
    ) -> Result<Arc<Daemon>, String> {
        let budgets = Arc::new(Budgets::default());
        let runner = Runner::new(&config, budgets.clone(), stop.clone())?;
        let text = std::fs::read(&config.path).unwrap_or_default();
        Ok(Arc::new_cyclic(|me| Daemon {
            stop,
            overrides,
            shard,
            report_file,
            budgets,
            metrics: Metrics::default(),
            passes: TaskTracker::new(),
            state: Mutex::new(State {
                config: Arc::new(config),
                runner,
                text,
                mirrors: BTreeMap::new(),
                reload_error: None,
            }),
            me: me.clone(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.lock().config.clone()
    }

    /// `[server]` as the config in force has it (tokens may change with a reload).
    pub fn server_settings(&self) -> Option<ServerSettings> {
        self.lock().config.server.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// One line for the log and `systemctl status`.
    fn status(&self) -> String {
        let state = self.lock();
        let scheduled = state
            .mirrors
            .values()
            .filter(|m| m.schedule.is_some())
            .count();
        let next = state.mirrors.values().filter_map(|m| m.next_run).min();
        let mut status = format!(
            "running: {} ({scheduled} scheduled), {}",
            plural(state.config.mirrors.len(), "mirror"),
            plural(state.config.jobs.len(), "image")
        );
        let by_rules = state
            .config
            .mirrors
            .iter()
            .filter(|m| m.selection.is_some())
            .count();
        if by_rules > 0 {
            status.push_str(&format!(
                " and {} by tag rules",
                match by_rules {
                    1 => "1 repository".to_string(),
                    n => format!("{n} repositories"),
                }
            ));
        }
        if let Some(next) = next {
            status.push_str(&format!(", next run {}", Stamp(next)));
        }
        if let Some(e) = &state.reload_error {
            let first_line = e.lines().next().unwrap_or_default();
            status.push_str(&format!("; config on disk refused: {first_line}"));
        }
        status
    }

    /// Re-reads mirrors.toml: on SIGHUP (`forced`), or when the watcher saw the directory
    /// change, in which case an unchanged file is left alone.
    fn reload(&self, forced: bool) {
        if self.is_stopping() {
            return;
        }
        let path = self.config().path.clone();
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            // Editors that replace the file leave a moment without one; the rename that ends
            // it is seen too.
            Err(e) if !forced && e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.refuse(&format!("cannot read {}: {e}", path.display()), Vec::new());
                return;
            }
        };
        if !forced && text == self.lock().text {
            return;
        }
        systemd::reloading();
        let loaded = Config::from_bytes(&path, &text, &self.overrides)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                let runner = Runner::new(&config, self.budgets.clone(), self.stop.clone())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((config, runner))
            });
        let (config, mut runner) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.refuse(&e, text);
                systemd::ready(&self.status());
                return;
            }
        };
        {
            let mut state = self.lock();
            if config.server.as_ref().map(|s| s.listen)
                != state.config.server.as_ref().map(|s| s.listen)
            {
                warn!("server.listen changed: it applies after a restart (systemctl restart regmirror)");
            }
            if config.concurrency == state.config.concurrency {
                // Runs under way and new ones share one set of slots.
                runner.slots = state.runner.slots.clone();
            }
            // A read of the SSM parameter that fails after a reload goes on with the entries
            // read before it.
            runner.listed = state.runner.listed.clone();
            // head_every counts from the last pass by HEAD, whatever reloads came between.
            runner.head_passes = state.runner.head_passes.clone();
            state.config = Arc::new(config);
            state.runner = runner;
            state.text = text;
            state.reload_error = None;
        }
        self.metrics.record_reload(true);
        self.apply_mirrors("reload");
        let status = self.status();
        info!(config = %path.display(), "config reloaded; {status}");
        systemd::ready(&status);
    }

    fn refuse(&self, reason: &str, text: Vec<u8>) {
        error!("config not reloaded, the previous one stays in force: {reason}");
        self.metrics.record_reload(false);
        let mut state = self.lock();
        state.reload_error = Some(reason.to_string());
        // Remember the broken text, so the watcher does not report it again until it changes.
        state.text = text;
    }

    /// Brings timers in line with the config in force, and starts the mirrors that are new
    /// or whose images changed, if they run on start.
    fn apply_mirrors(&self, why: &'static str) {
        let mut to_start = Vec::new();
        let (mut added, mut removed, mut rescheduled) = (Vec::new(), Vec::new(), Vec::new());
        let now = Utc::now();
        // Each distinct schedule's longest gap, worked out once: thousands of mirrors share a
        // handful of schedules.
        let mut gaps: Vec<(Schedule, Option<std::time::Duration>)> = Vec::new();
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let config = state.config.clone();
            for (index, mirror) in config.mirrors.iter().enumerate() {
                let mut images: Vec<String> = config
                    .jobs
                    .iter()
                    .filter(|job| job.mirror == index)
                    .map(|job| format!("{} → {}", job.source, job.target))
                    .collect();
                if let Some(selection) = &mirror.selection {
                    images.push(format!(
                        "{} by {} → {}",
                        selection.source.repo(),
                        selection.rules,
                        selection.targets_shown()
                    ));
                }
                let known = state.mirrors.contains_key(&mirror.name);
                let entry = state.mirrors.entry(mirror.name.clone()).or_default();
                if !known {
                    added.push(mirror.name.clone());
                } else if entry.schedule != mirror.schedule {
                    rescheduled.push(mirror.name.clone());
                }
                if !known || entry.schedule != mirror.schedule {
                    if let Some(timer) = entry.timer.take() {
                        timer.abort();
                    }
                    entry.schedule = mirror.schedule.clone();
                    entry.next_run = None;
                    let mut gap = None;
                    if let Some(schedule) = &mirror.schedule {
                        entry.timer = Some(self.spawn_timer(&mirror.name, schedule.clone()));
                        entry.next_run = schedule.next_after(now).map(|t| t.with_timezone(&Utc));
                        gap = match gaps.iter().find(|(s, _)| s == schedule) {
                            Some((_, gap)) => *gap,
                            None => {
                                let gap = schedule.longest_gap(now);
                                gaps.push((schedule.clone(), gap));
                                gap
                            }
                        };
                    }
                    self.metrics
                        .record_schedule(&mirror.name, gap, unix_seconds(now));
                }
                if (!known || entry.images != images) && mirror.run_on_start {
                    to_start.push(mirror.name.clone());
                }
                entry.images = images;
            }
            state.mirrors.retain(|name, entry| {
                let kept = config.mirrors.iter().any(|m| &m.name == name);
                if !kept {
                    if let Some(timer) = entry.timer.take() {
                        timer.abort();
                    }
                    self.metrics.forget_mirror(name);
                    removed.push(name.clone());
                }
                kept
            });
        }
        if why == "reload" && !(added.is_empty() && removed.is_empty() && rescheduled.is_empty()) {
            info!(?added, ?removed, ?rescheduled, "mirrors changed");
        }
        for name in to_start {
            self.start(&name, why);
        }
    }

    /// A task that starts `name` at every run of `schedule`, until aborted.
    fn spawn_timer(&self, name: &str, schedule: Schedule) -> AbortHandle {
        let (me, name) = (self.me.clone(), name.to_string());
        let span = tracing::info_span!("mirror", mirror = %name);
        tokio::spawn(
            async move {
                let mut after = Utc::now();
                loop {
                    let Some(next) = schedule.next_after(after) else {
                        warn!(%schedule, "the schedule has no further runs");
                        return;
                    };
                    let next = next.with_timezone(&Utc);
                    // Slept in short steps against the wall clock: tokio's timers run on the
                    // monotonic clock, which stops during a suspend and ignores clock steps.
                    while let Ok(wait) = (next - Utc::now()).to_std() {
                        if wait.is_zero() {
                            break;
                        }
                        tokio::time::sleep(wait.min(WALL_CLOCK_CHECK)).await;
                    }
                    // The next run is computed after this one even if the clock reads a
                    // moment early, so a run never fires twice.
                    after = next.max(Utc::now());
                    let Some(daemon) = me.upgrade() else { return };
                    if let Some(entry) = daemon.lock().mirrors.get_mut(&name) {
                        entry.next_run = schedule.next_after(after).map(|t| t.with_timezone(&Utc));
                    }
                    daemon.start(&name, "schedule");
                }
            }
            .instrument(span),
        )
        .abort_handle()
    }

    fn stop_timers(&self) {
        for entry in self.lock().mirrors.values_mut() {
            if let Some(timer) = entry.timer.take() {
                timer.abort();
            }
            entry.next_run = None;
        }
    }

    /// Starts a run of the mirror `name` now, unless one is under way. `None` if there is no
    /// such mirror.
    pub fn start(&self, name: &str, why: &'static str) -> Option<Started> {
        let mut state = self.lock();
        let config = state.config.clone();
        let runner = state.runner.clone();
        let entry = state.mirrors.get_mut(name)?;
        if self.is_stopping() || self.passes.is_closed() {
            return Some(Started::ShuttingDown);
        }
        if entry.running {
            info!(
                mirror = name,
                why, "previous run still going: skipping this one"
            );
            self.metrics.record_skipped(name);
            return Some(Started::AlreadyRunning);
        }
        entry.running = true;
        drop(state);
        let (me, name) = (self.me.clone(), name.to_string());
        // A root span: a run started by the mirror's timer would otherwise sit inside the
        // timer's own `mirror` span, and every line would name the mirror twice.
        let span = tracing::info_span!(parent: None, "mirror", mirror = %name);
        self.passes.spawn(
            async move {
                let started = Utc::now();
                let Some(daemon) = me.upgrade() else { return };
                let Some(index) = config.mirrors.iter().position(|m| m.name == name) else {
                    daemon.finish(&name, started, &Report::default());
                    return;
                };
                let others = daemon.claims_besides(&name, &config);
                info!(why, "run started");
                // For the SSM parameter's mirror, the parameter is read here, as `--once` reads it.
                let pass = runner.prepare(config, vec![index]).await;
                let in_shard = |job: &Job| daemon.in_shard(job);
                let (report, claims) = pass.run(&others, &in_shard, false).await;
                daemon.remember_claims(&name, claims);
                daemon.finish(&name, started, &report);
            }
            .instrument(span),
        );
        Some(Started::Now)
    }

    /// Whether `job` is in this process's shard (every job without `--shard`).
    fn in_shard(&self, job: &Job) -> bool {
        self.shard
            .is_none_or(|s| s.includes(&job.target.to_string()))
    }

    /// The targets mirrors other than `name` claim: their fixed images in `config`, and what
    /// their last runs selected.
    fn claims_besides(&self, name: &str, config: &Config) -> Claims {
        let mut claims: Claims = config
            .jobs
            .iter()
            .filter(|job| config.mirrors[job.mirror].name != name)
            .map(|job| {
                (
                    job.target.to_string(),
                    Claim {
                        mirror: config.mirrors[job.mirror].name.clone(),
                        line: job.line,
                        source: job.source.clone(),
                    },
                )
            })
            .collect();
        let state = self.lock();
        for (mirror, last) in &state.mirrors {
            if mirror != name {
                for (target, claim) in &last.claims {
                    claims
                        .entry(target.clone())
                        .or_insert_with(|| claim.clone());
                }
            }
        }
        claims
    }

    /// Keeps what a run of `name` asked for, for the other mirrors' runs to see.
    fn remember_claims(&self, name: &str, claims: Claims) {
        if let Some(entry) = self.lock().mirrors.get_mut(name) {
            entry.claims = claims;
        }
    }

    fn finish(&self, name: &str, started: DateTime<Utc>, report: &Report) {
        let finished = Utc::now();
        let last = RunStatus::of(name, started, finished, report);
        info!(
            mirrored = last.mirrored,
            unchanged = last.unchanged,
            immutable = last.immutable,
            failed = last.failed,
            secs = (report.elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "run finished"
        );
        if let Some(path) = &self.report_file {
            if let Err(e) = record::write(path, &record::document(report, finished)) {
                warn!(path = %path.display(), error = %e, "cannot write the report file");
            }
        }
        let mut state = self.lock();
        self.metrics
            .record_run(name, report, unix_seconds(finished));
        // Under the lock, so a reload cannot remove the mirror in between: a run that ends
        // after its mirror was removed leaves no gauge behind for an alert to see.
        if !state.mirrors.contains_key(name) {
            self.metrics.forget_mirror(name);
        }
        if let Some(entry) = state.mirrors.get_mut(name) {
            entry.running = false;
            if report.complete() {
                entry.last_success = Some(finished);
            }
            entry.last = Some(last);
        }
    }

    /// Pull totals of every registry since the process started.
    pub fn usage(&self) -> Vec<crate::registry::ratelimit::RegistryUsage> {
        self.budgets.usage()
    }

    /// The daemon, every mirror's last result and every source registry's budget, taken at
    /// once: what `GET /healthz` answers and `GET /` shows.
    pub fn snapshot(&self) -> Status {
        let taken = Utc::now();
        let pauses = self.budgets.pauses();
        let registries = self
            .budgets
            .usage()
            .into_iter()
            // Source registries' budgets: a registry only HEADed or pushed to has none to show.
            .filter(|usage| usage.budget_touched())
            .map(|usage| {
                let pause = pauses.iter().find(|p| p.registry == usage.registry);
                RegistryStatus::of(usage, pause, taken)
            })
            .collect();
        let state = self.lock();
        let mirrors = state
            .config
            .mirrors
            .iter()
            .filter_map(|mirror| {
                let entry = state.mirrors.get(&mirror.name)?;
                Some(MirrorStatus {
                    name: mirror.name.clone(),
                    schedule: mirror.schedule.as_ref().map(|s| s.to_string()),
                    next_run: entry.next_run.map(Stamp),
                    running: entry.running,
                    last_run: entry.last.clone(),
                    last_success: entry.last_success.map(Stamp),
                })
            })
            .collect();
        Status {
            status: if self.is_stopping() { "stopping" } else { "ok" },
            config: state.config.path.display().to_string(),
            config_error: state
                .reload_error
                .as_deref()
                .and_then(|e| e.lines().next())
                .map(str::to_string),
            mirrors,
            registries,
            taken,
        }
    }
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
