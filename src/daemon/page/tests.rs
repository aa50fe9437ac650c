use std::collections::BTreeMap;

use chrono::TimeZone;

use super::*;
use crate::daemon::status::{Failure, TagsStatus};

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn at(offset_secs: i64) -> Stamp {
    Stamp(noon() + chrono::TimeDelta::seconds(offset_secs))
}

fn run(failures: &[(&str, Option<&'static str>)]) -> RunStatus {
    RunStatus {
        started: at(-12 * 60 - 3),
        finished: at(-12 * 60),
        result: if failures.is_empty() { "ok" } else { "failed" },
        mirrored: 1,
        unchanged: 4,
        failed: failures.len(),
        pruned: 0,
        errors: failures
            .iter()
            .map(|(line, reason)| Failure {
                line: line.to_string(),
                reason: *reason,
            })
            .collect(),
        failed_by_reason: BTreeMap::new(),
        immutable: 0,
        immutable_images: Vec::new(),
        tags: None,
    }
}

fn mirror(name: &str, last_run: Option<RunStatus>) -> MirrorStatus {
    MirrorStatus {
        name: name.to_string(),
        schedule: Some("\"*/5 * * * *\" (UTC)".to_string()),
        next_run: Some(at(4 * 60)),
        running: false,
        last_run,
        last_success: None,
    }
}

fn registry(name: &str, paused: Option<PauseStatus>) -> RegistryStatus {
    RegistryStatus {
        registry: name.to_string(),
        pulls: 100,
        refused: 1,
        remaining: Some(0),
        limit: Some(100),
        window_seconds: Some(21600),
        resets: None,
        paused,
    }
}

fn status(mirrors: Vec<MirrorStatus>, registries: Vec<RegistryStatus>) -> Status {
    Status {
        status: "ok",
        config: "/etc/regmirror/mirrors.toml".to_string(),
        config_error: None,
        mirrors,
        registries,
        taken: noon(),
    }
}

/// Every tag name that opens an element in `page`, in order.
fn elements(page: &str) -> Vec<String> {
    page.split('<')
        .skip(1)
        .filter(|rest| !rest.starts_with('/') && !rest.starts_with('!'))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .collect()
}

/// The elements the page is made of; anything else came from a text left unescaped.
const OWN_ELEMENTS: &[&str] = &[
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "code",
    "main", "section", "article", "span", "dl", "dt", "dd", "time", "ul", "li", "footer", "a",
];

#[test]
fn escaped_writes_markup_and_quotes_as_text() {
    assert_eq!(
        escaped("<script>alert(1)</script>", 200),
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    );
    assert_eq!(
        escaped("a\" onmouseover='x' & b", 200),
        "a&quot; onmouseover=&#39;x&#39; &amp; b"
    );
    // An entity in the input is shown as written, not decoded.
    assert_eq!(escaped("&lt;b&gt;", 200), "&amp;lt;b&amp;gt;");
    assert_eq!(escaped("tag 标签 é", 200), "tag 标签 é");
}

#[test]
fn escaped_shows_control_characters_as_escapes_on_one_line() {
    let shown = escaped("ok\r\n<b>forged</b>\x1b[2K\u{202e}\0", 200);
    assert_eq!(
        shown,
        "ok\\r\\n&lt;b&gt;forged&lt;/b&gt;\\u{1b}[2K\\u{202e}\\u{0}"
    );
    assert!(!shown.chars().any(char::is_control));
}

#[test]
fn escaped_clips_a_huge_name_as_healthz_does() {
    let huge = format!("<{}", "\"".repeat(2 << 20));
    let shown = escaped(&huge, untrusted::NAME);
    let clipped = untrusted::line(&huge, untrusted::NAME);
    assert!(clipped.ends_with(&format!("… ({} more characters)", (2 << 20) + 1 - 200)));
    assert_eq!(
        shown,
        format!("&lt;{}{}", "&quot;".repeat(199), &clipped[200..])
    );
    assert!(shown.len() < 1400, "{}", shown.len());
}

#[test]
fn the_page_shows_each_mirror_its_counts_failures_with_reasons_and_next_run() {
    let failing = run(&[
        ("src/app:2 → dst/app:2: manifest unknown", Some("not_found")),
        ("src/app:3 → dst/app:3: connection refused", None),
    ]);
    let mut by_reason = failing.clone();
    by_reason.failed_by_reason = BTreeMap::from([("not_found", 1), ("unreachable", 1)]);
    let page = render(&status(
        vec![
            mirror("nginx:stable", Some(run(&[]))),
            mirror("app", Some(by_reason)),
            mirror("new", None),
        ],
        Vec::new(),
    ));
    assert!(
        page.contains("<title>regmirror: 1 failing</title>"),
        "{page}"
    );
    assert!(
        page.contains("3 mirrors: 1 failed, 1 not run yet, 1 ok"),
        "{page}"
    );
    // The failing mirror comes first.
    let app = page.find(">app<").unwrap();
    assert!(app < page.find(">nginx:stable<").unwrap(), "{page}");
    assert!(
        page.contains("1 mirrored · 4 unchanged · 2 failed"),
        "{page}"
    );
    assert!(page.contains(
        "<span class=\"reason\">not_found</span>src/app:2 → dst/app:2: manifest unknown</li>"
    ));
    assert!(page.contains("<li class=\"failure\">src/app:3 → dst/app:3: connection refused</li>"));
    assert!(page.contains(
        "1 <span class=\"reason\">not_found</span> · 1 <span class=\"reason\">unreachable</span>"
    ));
    assert!(page.contains(
        "<time datetime=\"2026-03-01T11:48:00Z\">2026-03-01 11:48:00 UTC</time> \
         <span class=\"when\">(12 min ago)</span>, took 3 s"
    ));
    assert!(page.contains("<dd class=\"next-run\"><time datetime=\"2026-03-01T12:04:00Z\">"));
    assert!(page.contains("(in 4 min)"), "{page}");
    assert!(
        page.contains("<dd class=\"last-run\">none yet</dd>"),
        "{page}"
    );
    assert!(page.contains("No pull yet."), "{page}");
}

#[test]
fn a_mirror_with_tag_rules_and_no_schedule_says_so() {
    let mut tagged = run(&[]);
    tagged.tags = Some(TagsStatus {
        listed: 40,
        selected: 3,
        selected_tags: vec!["1.2.0".into()],
    });
    let mut on_demand = mirror("team/app", Some(tagged));
    on_demand.schedule = None;
    on_demand.next_run = None;
    on_demand.running = true;
    let page = render(&status(vec![on_demand], Vec::new()));
    assert!(page.contains("3 of 40 tags selected"), "{page}");
    assert!(page.contains("on POST /sync only: no schedule"), "{page}");
    assert!(
        page.contains("<span class=\"badge running\">running</span>"),
        "{page}"
    );
    assert!(page.contains("1 mirror: 1 ok; 1 running"), "{page}");
}

#[test]
fn a_registry_shows_its_budget_and_a_pause_in_words() {
    let waiting = |resumes, at_the_latest| PauseStatus {
        since: at(-120),
        resumes,
        at_the_latest,
        checked_every_seconds: 900,
    };
    let mut reset = registry("ghcr.io", Some(waiting(Some(at(3600)), Some(at(21480)))));
    reset.resets = Some(at(3600));
    let page = render(&status(
        Vec::new(),
        vec![
            registry("registry-1.docker.io", Some(waiting(None, Some(at(7860))))),
            reset,
            registry("quay.io", Some(waiting(None, None))),
            RegistryStatus {
                remaining: None,
                limit: None,
                window_seconds: None,
                ..registry("gcr.io", None)
            },
        ],
    ));
    assert!(page.contains("0 of 100 pulls left per 6 h"), "{page}");
    assert!(page.contains(
        "paused: pull budget spent; next pull <time datetime=\"2026-03-01T14:11:00Z\">\
         2026-03-01 14:11:00 UTC</time> <span class=\"when\">(in 2 h 11 min)</span> at the \
         latest, sooner if a check (every 15 min) finds budget"
    ));
    assert!(
        page.contains("the registry says it resets, next pull <time"),
        "{page}"
    );
    assert!(page.contains("<dd class=\"resets\"><time datetime=\"2026-03-01T13:00:00Z\">"));
    assert!(page.contains("paused since <time datetime=\"2026-03-01T11:58:00Z\">"));
    assert!(
        page.contains("not announced: pulls are never held back"),
        "{page}"
    );
    assert!(page.contains("100 pulls, 1 refused (HTTP 429) since the daemon started"));
    assert_eq!(
        page.matches("<span class=\"badge paused\">paused</span>")
            .count(),
        3
    );
}

#[test]
fn hostile_names_and_texts_never_become_markup() {
    let hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>\"'&";
    let mut failing = run(&[(hostile, Some("refused"))]);
    failing.immutable = 1;
    failing.immutable_images = vec![hostile.to_string()];
    let mut bad = mirror(hostile, Some(failing));
    bad.schedule = Some(hostile.to_string());
    let mut page_status = status(vec![bad], vec![registry(hostile, None)]);
    page_status.config = hostile.to_string();
    page_status.config_error = Some(hostile.to_string());
    page_status.status = "<b>stopping</b>";
    let page = render(&page_status);
    let own: Vec<String> = elements(&page)
        .into_iter()
        .filter(|e| !OWN_ELEMENTS.contains(&e.as_str()))
        .collect();
    assert!(own.is_empty(), "elements from text: {own:?}\n{page}");
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{page}"
    );
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;"),
        "{page}"
    );
}

#[test]
fn the_page_is_bounded_whatever_the_daemon_holds() {
    // Quotes, each written as six bytes, in every text at its longest.
    let name = "\"".repeat(10_000);
    let line = "<".repeat(2_000);
    let failures: Vec<(&str, Option<&'static str>)> =
        (0..100).map(|_| (line.as_str(), None)).collect();
    let mut worst = run(&failures);
    worst.failed = 50_000;
    worst.immutable = 50_000;
    worst.immutable_images = vec![line.clone(); 100];
    let mirrors = (0..1_000)
        .map(|_| mirror(&name, Some(worst.clone())))
        .collect();
    let registries = (0..1_000).map(|_| registry(&name, None)).collect();
    let page = render(&status(mirrors, registries));
    // About 2.3 MB: what README's "Limits and safety" promises.
    assert!(page.len() < 5 << 19, "{} bytes, over 2.5 MiB", page.len());
    assert!(page.contains("and 900 more mirrors"));
    assert!(page.contains("and 950 more registries"));
    assert!(page.contains("and 49995 more failures (see /healthz)"));
    assert!(page.contains("and 49995 more immutable images (see /healthz)"));
    assert_eq!(
        page.matches("<li class=\"failure\">").count(),
        MIRRORS * FAILURES
    );
}

#[test]
fn the_policy_allows_the_pages_own_style_and_nothing_else() {
    let page = render(&status(Vec::new(), Vec::new()));
    let style = &page[page.find("<style>").unwrap() + 7..page.find("</style>").unwrap()];
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style));
    assert!(
        CSP.contains(&format!("style-src 'sha256-{hash}'")),
        "{}",
        *CSP
    );
    assert!(CSP.starts_with("default-src 'none';"), "{}", *CSP);
    assert!(
        !CSP.contains("unsafe") && !CSP.contains("script-src"),
        "{}",
        *CSP
    );
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
    assert!(page.contains("<meta name=\"viewport\" content=\"width=device-width"));
    assert_eq!(page.matches("<script").count(), 0);
}

#[test]
fn times_read_as_people_say_them() {
    let now = noon();
    let later = |s: i64| now + chrono::TimeDelta::seconds(s);
    assert_eq!(relative(now, now), "now");
    assert_eq!(relative(later(12), now), "in 12 s");
    assert_eq!(relative(later(-12 * 60 - 59), now), "12 min ago");
    assert_eq!(relative(later(4 * 60), now), "in 4 min");
    assert_eq!(
        relative(later(2 * 3600 + 11 * 60 + 5), now),
        "in 2 h 11 min"
    );
    assert_eq!(relative(later(-6 * 3600), now), "6 h ago");
    assert_eq!(relative(later(3 * 86_400 + 4 * 3600), now), "in 3 d 4 h");
    assert_eq!(relative(later(-86_400), now), "1 d ago");
}
