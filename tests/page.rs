//! The status page at `GET /`, in a real browser: the daemon mirrors against real registries
//! (one image mirrored, one missing upstream, one stopped by a Docker Hub look-alike's pull
//! budget), headless chromium loads the page, and the test reads back the DOM the browser
//! built. A screenshot at a phone's width is kept in `target/test-output/status-page.png`.

mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::browser::{dump_dom, screenshot};
use harness::daemon::{eventually, health, http, server_address, start_daemon, PATIENCE};
use harness::hub::{HeaderStyle, PullLimit, PullLimitOptions};
use harness::*;

/// Where a test's pictures are kept: `target/test-output/`.
fn test_output() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = target
        .parent()
        .expect("the target directory")
        .join("test-output");
    std::fs::create_dir_all(&dir).expect("create target/test-output");
    dir
}

/// Waits until every mirror in `/healthz` has finished a run, and returns the JSON.
fn after_first_runs(daemon: &Spawned, base: &str, mirrors: usize) -> serde_json::Value {
    eventually(daemon, "every mirror's first run shows in /healthz", || {
        health(base)["mirrors"].as_array().is_some_and(|all| {
            all.len() == mirrors && all.iter().all(|m| m["last_run"].is_object())
        })
    });
    health(base)
}

/// `/healthz`'s entry for the mirror named `name`.
fn mirror<'a>(health: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    health["mirrors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no mirror {name} in {health}"))
}

/// The `<article>` of the mirror or registry named `name` in `dom`.
fn card<'a>(dom: &'a str, name: &str) -> &'a str {
    let at = dom
        .find(&format!("<span class=\"name\">{name}</span>"))
        .unwrap_or_else(|| panic!("no card named {name}:\n{dom}"));
    let start = dom[..at].rfind("<article").expect("its article");
    let end = at + dom[at..].find("</article>").expect("its end");
    &dom[start..end]
}

#[test]
fn the_status_page_shows_runs_failures_next_runs_and_a_paused_budget_in_a_browser() {
    let free = Registry::start();
    Image::single(Flavor::Oci, 2, 4096).push(&free, "app", "1");
    // Three pulls (the index, two children) against a budget of two: the second child waits
    // for the budget past max_wait, and the registry stays paused.
    let upstream = Registry::start();
    Image::multi_arch(Flavor::Docker, &["linux/amd64", "linux/arm64"], 1, 1024)
        .push(&upstream, "lib/tool", "1");
    let hub = Proxy::start(upstream.host());
    let (limit, _log) = PullLimit::new(PullLimitOptions {
        limit: 2,
        window: Duration::from_secs(3600),
        headers: HeaderStyle::DockerHubWithReset,
        ..PullLimitOptions::default()
    });
    hub.add_rule(limit);
    let target = Registry::start();
    let sandbox = Sandbox::new();
    let (free_host, hub_host) = (free.host(), hub.host());
    sandbox.write_config(&format!(
        "images = [\"{free_host}/app:1\", \"{free_host}/gone:1\", \"{hub_host}/lib/tool:1\"]\n\
         [defaults]\ntarget = \"{}\"\nschedule = \"0 3 * * *\"\n\
         [rate_limit]\nmax_wait = \"2s\"\n[server]\nlisten = \"127.0.0.1:0\"\n",
        target.host()
    ));
    let mut daemon = start_daemon(&sandbox);
    let base = format!("http://{}", server_address(&mut daemon));
    let health = after_first_runs(&daemon, &base, 3);

    let loaded = dump_dom(&format!("{base}/"));
    let dom = &loaded.dom;
    assert!(
        !loaded.log.contains("Content Security Policy"),
        "the browser refused part of the page:\n{}",
        loaded.log
    );
    assert!(dom.contains("<title>regmirror: 2 failing</title>"), "{dom}");
    assert!(dom.contains("3 mirrors: 2 failed, 1 ok"), "{dom}");

    let app = card(dom, &format!("{free_host}/app:1"));
    assert!(app.contains("1 mirrored · 0 unchanged · 0 failed"), "{app}");
    assert!(app.contains("<span class=\"badge ok\">ok</span>"), "{app}");
    let next = mirror(&health, &format!("{free_host}/app:1"))["next_run"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.ends_with("T03:00:00Z"), "{health}");
    assert!(
        app.contains(&format!(
            "<dd class=\"next-run\"><time datetime=\"{next}\">"
        )),
        "the next run, {next}: {app}"
    );
    assert!(app.contains("<span class=\"when\">(in "), "{app}");

    let gone = card(dom, &format!("{free_host}/gone:1"));
    assert!(
        gone.contains("0 mirrored · 0 unchanged · 1 failed"),
        "{gone}"
    );
    assert!(
        gone.contains(&format!(
            "<li class=\"failure\"><span class=\"reason\">not_found</span>{free_host}/gone:1 → {}/gone:1: not_found: ",
            target.host()
        )),
        "{gone}"
    );

    let tool = card(dom, &format!("{hub_host}/lib/tool:1"));
    assert!(
        tool.contains("0 mirrored · 0 unchanged · 1 failed"),
        "{tool}"
    );
    let failure = mirror(&health, &format!("{hub_host}/lib/tool:1"))["last_run"]["errors"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(failure.contains("pull budget"), "{failure}");
    assert!(
        tool.contains("max_wait") && tool.contains("pull budget"),
        "{tool}"
    );
    assert!(
        tool.contains("<span class=\"reason\">rate_limited</span>"),
        "{tool}"
    );

    let budget = card(dom, hub_host);
    assert!(
        budget.contains("<span class=\"badge paused\">paused</span>"),
        "{budget}"
    );
    assert!(budget.contains("0 of 2 pulls left per 1 h"), "{budget}");
    assert!(
        budget.contains("paused: pull budget spent; the registry says it resets, next pull"),
        "{budget}"
    );
    let registry = health["registries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["registry"] == hub_host)
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(registry["remaining"], 0, "{health}");
    assert!(registry["paused"]["resumes"].is_string(), "{health}");

    let picture = test_output().join("status-page.png");
    screenshot(&format!("{base}/"), &picture, (375, 800));
    let png = std::fs::read(&picture).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (width, height) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((width, height), (375, 800), "the window's size");
    assert!(png.len() > 10_000, "a blank picture: {} bytes", png.len());
    println!("status page screenshot: {}", picture.display());
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}

#[test]
fn the_page_is_served_alone_and_says_so_in_its_headers() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "images = [\"127.0.0.1:9/app:1\"]\n[defaults]\ntarget = \"127.0.0.1:9/m\"\n\
         run_on_start = false\n[server]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut daemon = start_daemon(&sandbox);
    let base = format!("http://{}", server_address(&mut daemon));
    for path in ["/", "/index.html"] {
        let answer = http().get(format!("{base}{path}")).send().unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            answer.headers()[name]
                .to_str()
                .unwrap_or_else(|_| panic!("{name}"))
                .to_string()
        };
        assert_eq!(header("content-type"), "text/html; charset=utf-8");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("cache-control"), "no-store");
        let policy = header("content-security-policy");
        assert!(
            policy.starts_with("default-src 'none'; style-src 'sha256-"),
            "{policy}"
        );
        let page = answer.text().unwrap();
        assert!(
            page.contains("<span class=\"name\">127.0.0.1:9/app:1</span>"),
            "{page}"
        );
        assert!(
            page.contains("<dd class=\"last-run\">none yet</dd>"),
            "{page}"
        );
        for external in [
            "src=", "http://", "https://", "<script", "<link", "@import", "url(",
        ] {
            assert!(!page.contains(external), "{external} in {page}");
        }
    }
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}

#[test]
fn a_hostile_mirror_name_and_registry_message_inject_no_markup() {
    let source = Registry::start();
    Image::single(Flavor::Oci, 1, 1024).push(&source, "app", "1");
    let proxy = Proxy::start(source.host());
    // The HEAD goes through (a HEAD has no body to carry a message); the GET is refused.
    proxy.add_rule(|request: &RequestInfo| {
        request.is_manifest_get().then(|| {
            Action::error(
                403,
                "DENIED",
                "<b id=\"injected-text\">pwned</b><script>document.title=1</script>",
            )
        })
    });
    let target = Registry::start();
    let sandbox = Sandbox::new();
    sandbox.write_config(&format!(
        "[defaults]\ntarget = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\n[[mirror]]\n\
         name = '<img id=\"injected-name\" src=\"x\"><script>document.title=2</script>'\n\
         source = \"{}/app:1\"\n",
        target.host(),
        proxy.host()
    ));
    let mut daemon = start_daemon(&sandbox);
    let base = format!("http://{}", server_address(&mut daemon));
    after_first_runs(&daemon, &base, 1);

    let loaded = dump_dom(&format!("{base}/"));
    let dom = &loaded.dom;
    assert!(dom.contains("<title>regmirror: 1 failing</title>"), "{dom}");
    // An element serializes as `<tag`, a text's `<` as `&lt;`: the browser made none of them.
    for element in ["<img", "<script", "<b "] {
        assert!(
            !dom.contains(element),
            "the browser built {element}…>:\n{dom}"
        );
    }
    assert!(
        dom.contains("&lt;img id=\"injected-name\" src=\"x\"&gt;&lt;script&gt;"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;b id=\"injected-text\"&gt;pwned&lt;/b&gt;"),
        "{dom}"
    );
    daemon.terminate();
    daemon.wait(PATIENCE).assert_success();
}
