//! `GET /`: the daemon's status as a page for people, rendered from the same [`Status`]
//! snapshot `/healthz` serializes.
//!
//! One self-contained HTML document: its CSS inline (allowed by hash in [`CSP`], which
//! forbids everything else: no script, image, font, frame or form, nothing fetched from
//! anywhere), refreshed by `<meta http-equiv="refresh">`, laid out to wrap on a phone's
//! 375 px. Every text from the config or a registry goes through [`escaped`]: one line,
//! clipped as [`crate::untrusted`] clips it for `/healthz`, then HTML-escaped. The page is
//! bounded: [`MIRRORS`] mirrors, [`FAILURES`] failures each, [`REGISTRIES`] registries, each
//! text clipped, the rest counted in an "and N more".

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::daemon::status::{MirrorStatus, PauseStatus, RegistryStatus, RunStatus, Stamp, Status};
use crate::registry::waiting::secs;
use crate::untrusted;

/// How often the page reloads itself.
pub const REFRESH: Duration = Duration::from_secs(30);

/// The most mirrors the page shows (failing ones first); the rest are counted.
pub const MIRRORS: usize = 100;

/// The most failures of one mirror's last run the page quotes; `/healthz` has more.
pub const FAILURES: usize = 5;

/// The most source registries the page shows.
pub const REGISTRIES: usize = 50;

/// The most characters of a failure line the page shows (`/healthz` has up to 2,000).
pub const LINE: usize = 500;

const STYLE: &str = "\
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--run:#0969da;--dim:#6e7781}
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;padding:1rem;max-width:62rem}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}h3{font-size:1rem;margin:0}
p,li,dd,dt,h3,code{overflow-wrap:anywhere}
.muted,.when{color:var(--dim)}
.card{border:1px solid #8884;border-left:.35rem solid var(--dim);border-radius:.4rem;padding:.6rem .8rem;margin:0 0 .75rem}
.card.ok{border-left-color:var(--ok)}.card.failed,.card.paused{border-left-color:var(--bad)}
.card.immutable{border-left-color:var(--warn)}
.badge{display:inline-block;font-size:.8rem;font-weight:600;padding:0 .45rem;border-radius:1rem;border:1px solid currentColor;margin-left:.3rem}
.badge.ok{color:var(--ok)}.badge.failed,.badge.paused{color:var(--bad)}.badge.immutable{color:var(--warn)}.badge.running{color:var(--run)}
dl{display:grid;grid-template-columns:minmax(6rem,max-content) 1fr;gap:.15rem .8rem;margin:.5rem 0 0}
dt{color:var(--dim)}dd{margin:0;min-width:0}
ul.failures{margin:.5rem 0 0;padding-left:1.1rem}ul.failures li{margin:.2rem 0}
.reason{font:600 .8rem ui-monospace,monospace;color:var(--bad);margin-right:.35rem}
.error{color:var(--bad)}
@media (max-width:30rem){dl{grid-template-columns:1fr}dt{margin-top:.3rem}}
";

/// The page's `Content-Security-Policy`: nothing but its own inline style, by hash.
pub static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
});

/// `text` fit to place in HTML: one line of at most `max` characters as
/// [`untrusted::line`] shows it (control characters escaped, clipped with a count of what
/// was cut), then `&`, `<`, `>`, `"` and `'` written as character references.
pub fn escaped(text: &str, max: usize) -> String {
    let shown = untrusted::line(text, max);
    let mut out = String::with_capacity(shown.len());
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page.
pub fn render(status: &Status) -> String {
    let mut page = String::with_capacity(16 * 1024);
    head(&mut page, status);
    page.push_str("<main>\n<section id=\"mirrors\">\n<h2>Mirrors</h2>\n");
    if status.mirrors.is_empty() {
        page.push_str("<p class=\"muted\">No mirror is configured.</p>\n");
    }
    let mut mirrors: Vec<&MirrorStatus> = status.mirrors.iter().collect();
    // Problems first: a page of a hundred mirrors must not hide its one failure.
    mirrors.sort_by_key(|m| severity(m));
    for mirror in mirrors.iter().take(MIRRORS) {
        mirror_card(&mut page, mirror, status.taken);
    }
    more(&mut page, status.mirrors.len(), MIRRORS, "mirrors");
    page.push_str("</section>\n<section id=\"registries\">\n<h2>Source registries</h2>\n");
    if status.registries.is_empty() {
        page.push_str("<p class=\"muted\">No pull yet.</p>\n");
    }
    for registry in status.registries.iter().take(REGISTRIES) {
        registry_card(&mut page, registry, status.taken);
    }
    more(&mut page, status.registries.len(), REGISTRIES, "registries");
    page.push_str(
        "</section>\n</main>\n<footer><p class=\"muted\">The same as JSON: \
         <a href=\"healthz\">/healthz</a>; metrics: <a href=\"metrics\">/metrics</a>.</p>\
         </footer>\n</body>\n</html>\n",
    );
    page
}

/// Everything up to `<main>`: the title says how many mirrors fail, for a tab or a
/// bookmark; the header says when the page was taken and when it refreshes.
fn head(page: &mut String, status: &Status) {
    let failing = status.mirrors.iter().filter(|m| severity(m) == 0).count();
    let title = match failing {
        0 => "regmirror: ok".to_string(),
        n => format!("regmirror: {n} failing"),
    };
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{}\">\n<title>{title}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>regmirror{}</h1>\n\
         <p class=\"muted\">{} · config <code>{}</code> · taken {} · refreshes every {} s</p>\n",
        REFRESH.as_secs(),
        match status.status {
            "ok" => String::new(),
            other => format!(
                " <span class=\"badge failed\">{}</span>",
                escaped(other, 20)
            ),
        },
        summary(status),
        escaped(&status.config, untrusted::TEXT),
        time(Stamp(status.taken), status.taken),
        REFRESH.as_secs(),
    );
    if let Some(error) = &status.config_error {
        let _ = writeln!(
            page,
            "<p class=\"error\" id=\"config-error\">The config on disk is refused, the \
             previous one stays in force: {}</p>",
            escaped(error, untrusted::TEXT)
        );
    }
    page.push_str("</header>\n");
}

/// `3 mirrors: 1 failed, 2 ok; 1 running`.
fn summary(status: &Status) -> String {
    let mut counts = [0usize; 4];
    for mirror in &status.mirrors {
        counts[usize::from(severity(mirror))] += 1;
    }
    let parts: Vec<String> = ["failed", "immutable", "not run yet", "ok"]
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
    let running = status.mirrors.iter().filter(|m| m.running).count();
    let mut summary = count(status.mirrors.len(), "mirror");
    if !parts.is_empty() {
        let _ = write!(summary, ": {}", parts.join(", "));
    }
    if running > 0 {
        let _ = write!(summary, "; {running} running");
    }
    summary
}

/// 0 failed, 1 immutable, 2 never run, 3 ok.
fn severity(mirror: &MirrorStatus) -> u8 {
    match mirror.last_run.as_ref().map(|r| r.result) {
        Some("failed") => 0,
        Some("immutable") => 1,
        None => 2,
        Some(_) => 3,
    }
}

fn mirror_card(page: &mut String, mirror: &MirrorStatus, now: DateTime<Utc>) {
    let result = mirror.last_run.as_ref().map_or("never", |r| r.result);
    let _ = write!(
        page,
        "<article class=\"card mirror {result}\">\n<h3><span class=\"name\">{}</span>\
         <span class=\"badge {result}\">{}</span>{}</h3>\n<dl>\n",
        escaped(&mirror.name, untrusted::NAME),
        match result {
            "never" => "not run yet",
            other => other,
        },
        if mirror.running {
            "<span class=\"badge running\">running</span>"
        } else {
            ""
        },
    );
    match &mirror.last_run {
        Some(run) => last_run(page, run, now),
        None => row(page, "last-run", "Last run", "none yet".to_string()),
    }
    if let Some(success) = mirror.last_success {
        row(page, "last-success", "Last success", time(success, now));
    }
    let next = match (mirror.next_run, &mirror.schedule) {
        (Some(next), _) => time(next, now),
        (None, Some(_)) => {
            "none: the schedule has no further run, or the daemon is stopping".to_string()
        }
        (None, None) => "on POST /sync only: no schedule".to_string(),
    };
    row(page, "next-run", "Next run", next);
    if let Some(schedule) = &mirror.schedule {
        let shown = format!("<code>{}</code>", escaped(schedule, untrusted::TEXT));
        row(page, "schedule", "Schedule", shown);
    }
    page.push_str("</dl>\n");
    if let Some(run) = &mirror.last_run {
        failures(page, run);
    }
    page.push_str("</article>\n");
}

fn last_run(page: &mut String, run: &RunStatus, now: DateTime<Utc>) {
    let took = (run.finished.0 - run.started.0)
        .to_std()
        .unwrap_or_default();
    let when = format!("{}, took {}", time(run.finished, now), rough(took));
    row(page, "last-run", "Last run", when);
    let mut counts = vec![
        format!("{} mirrored", run.mirrored),
        format!("{} unchanged", run.unchanged),
        format!("{} failed", run.failed),
    ];
    if run.immutable > 0 {
        counts.push(format!("{} immutable", run.immutable));
    }
    if run.pruned > 0 {
        counts.push(format!("{} pruned", run.pruned));
    }
    if let Some(tags) = &run.tags {
        counts.push(format!(
            "{} of {} tags selected",
            tags.selected, tags.listed
        ));
    }
    row(page, "counts", "Images", counts.join(" · "));
    if !run.failed_by_reason.is_empty() {
        let reasons: Vec<String> = run
            .failed_by_reason
            .iter()
            .map(|(reason, n)| format!("{n} <span class=\"reason\">{}</span>", escaped(reason, 40)))
            .collect();
        row(page, "reasons", "Failed by", reasons.join(" · "));
    }
}

/// The first [`FAILURES`] failures and immutable images of a run, each with its reason
/// when it has one.
fn failures(page: &mut String, run: &RunStatus) {
    if run.errors.is_empty() && run.immutable_images.is_empty() {
        return;
    }
    page.push_str("<ul class=\"failures\">\n");
    for failure in run.errors.iter().take(FAILURES) {
        page.push_str("<li class=\"failure\">");
        if let Some(reason) = failure.reason {
            let _ = write!(
                page,
                "<span class=\"reason\">{}</span>",
                escaped(reason, 40)
            );
        }
        let _ = writeln!(page, "{}</li>", escaped(&failure.line, LINE));
    }
    more(page, run.failed, FAILURES, "failures (see /healthz)");
    for image in run.immutable_images.iter().take(FAILURES) {
        let _ = writeln!(
            page,
            "<li class=\"immutable\"><span class=\"reason\">immutable</span>{}</li>",
            escaped(image, LINE)
        );
    }
    more(
        page,
        run.immutable,
        FAILURES,
        "immutable images (see /healthz)",
    );
    page.push_str("</ul>\n");
}

fn registry_card(page: &mut String, registry: &RegistryStatus, now: DateTime<Utc>) {
    let state = if registry.paused.is_some() {
        "paused"
    } else {
        "ok"
    };
    let _ = write!(
        page,
        "<article class=\"card registry {state}\">\n<h3><span class=\"name\">{}</span>{}</h3>\n<dl>\n",
        escaped(&registry.registry, untrusted::NAME),
        if registry.paused.is_some() {
            "<span class=\"badge paused\">paused</span>"
        } else {
            ""
        },
    );
    let window = registry
        .window_seconds
        .map(|w| format!(" per {}", secs(Duration::from_secs(w))))
        .unwrap_or_default();
    let budget = match (registry.remaining, registry.limit) {
        (Some(left), Some(limit)) => format!("{left} of {limit} pulls left{window}"),
        (Some(left), None) => format!("{left} pulls left{window}"),
        (None, Some(limit)) => {
            format!("{limit} pulls{window}; none counted since the window turned")
        }
        (None, None) => "not announced: pulls are never held back".to_string(),
    };
    row(page, "budget", "Budget", budget);
    if let Some(resets) = registry.resets {
        row(page, "resets", "Resets", time(resets, now));
    }
    if let Some(pause) = &registry.paused {
        row(page, "pause", "Pulls", paused(pause, now));
    }
    let spent = format!(
        "{} pulls, {} refused (HTTP 429) since the daemon started",
        registry.pulls, registry.refused
    );
    row(page, "spent", "Spent", spent);
    page.push_str("</dl>\n</article>\n");
}

/// A paused registry said plainly, as the progress view says it.
fn paused(pause: &PauseStatus, now: DateTime<Utc>) -> String {
    let every = secs(Duration::from_secs(pause.checked_every_seconds));
    match (pause.resumes, pause.at_the_latest) {
        (Some(at), _) => format!(
            "paused: pull budget spent; the registry says it resets, next pull {}",
            time(at, now)
        ),
        (None, Some(at)) => format!(
            "paused: pull budget spent; next pull {} at the latest, sooner if a check (every \
             {every}) finds budget",
            time(at, now)
        ),
        (None, None) => format!(
            "paused since {}: pull budget spent; next pull when a check (every {every}) finds \
             budget",
            time(pause.since, now)
        ),
    }
}

/// One `<dt>`/`<dd>` pair; `html` is already escaped.
fn row(page: &mut String, class: &str, term: &str, html: String) {
    let _ = writeln!(page, "<dt>{term}</dt><dd class=\"{class}\">{html}</dd>");
}

/// `and 12 more mirrors`, when `total` is over `shown`.
fn more(page: &mut String, total: usize, shown: usize, what: &str) {
    if total > shown {
        let _ = writeln!(
            page,
            "<p class=\"more muted\">and {} more {what}</p>",
            total - shown
        );
    }
}

/// `<time datetime="2026-03-01T03:00:00Z">2026-03-01 03:00:00 UTC</time> (in 4 min)`.
fn time(at: Stamp, now: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{at}\">{}</time> <span class=\"when\">({})</span>",
        at.0.format("%Y-%m-%d %H:%M:%S UTC"),
        relative(at.0, now)
    )
}

/// `in 4 min`, `12 min ago`, `now`.
fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (at - now).num_seconds();
    let span = rough(Duration::from_secs(seconds.unsigned_abs()));
    match seconds {
        0 => "now".to_string(),
        s if s > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

/// `12 s`, `4 min`, `2 h 11 min`, `3 d 4 h`: whole units, as a glance reads them.
fn rough(d: Duration) -> String {
    let s = d.as_secs();
    let (big, small, names) = match s {
        0..=59 => return format!("{s} s"),
        60..=3599 => return format!("{} min", s / 60),
        3600..=86_399 => (s / 3600, (s % 3600) / 60, ("h", "min")),
        _ => (s / 86_400, (s % 86_400) / 3600, ("d", "h")),
    };
    match small {
        0 => format!("{big} {}", names.0),
        _ => format!("{big} {} {small} {}", names.0, names.1),
    }
}

fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests;
