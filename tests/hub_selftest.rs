//! Proves the Docker Hub pull-limit simulator ([`PullLimit`]) behaves as Docker Hub does, so a
//! pacing test that fails points at regmirror: manifest GETs spend a budget that comes back
//! after the window, HEADs and blobs are free, refusals look like Docker Hub's, `Retry-After`
//! says when to come back, the flaky mode refuses the share asked (and the first manifest
//! requests, when told to), and it works behind the bearer-token flow.

mod harness;

use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::hub::{http_date, TOO_MANY_REQUESTS};
use harness::remote::ACCEPT;
use harness::*;
use reqwest::blocking::Response;

/// A registry holding `library/app:v1`, behind a proxy whose last rule is a [`PullLimit`].
struct Hub {
    proxy: Proxy,
    log: PullLog,
    /// A blob of the image, for checking blob GETs are free.
    blob: String,
    /// Kept alive for the proxy to forward to.
    _registry: Registry,
}

impl Hub {
    fn start(options: PullLimitOptions) -> Hub {
        let registry = Registry::start();
        let pushed = Image::single(Flavor::Oci, 1, 256).push(&registry, "library/app", "v1");
        let proxy = Proxy::start(registry.host());
        let (rule, log) = PullLimit::new(options);
        proxy.add_rule(rule);
        Hub {
            proxy,
            log,
            blob: pushed.blobs[0].0.clone(),
            _registry: registry,
        }
    }

    fn send(&self, method: &str, path: &str) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        client()
            .request(method, format!("http://{}{path}", self.proxy.host()))
            .header("accept", ACCEPT)
            .send()
            .unwrap()
    }

    /// A pull.
    fn get(&self) -> Response {
        self.send("GET", MANIFEST)
    }

    fn head(&self) -> Response {
        self.send("HEAD", MANIFEST)
    }

    fn get_blob(&self) -> Response {
        self.send("GET", &format!("/v2/library/app/blobs/{}", self.blob))
    }
}

const MANIFEST: &str = "/v2/library/app/manifests/v1";

const TOO_MANY_BODY: &str = "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"You have \
     reached your pull rate limit. You may increase the limit by authenticating and upgrading: \
     https://www.docker.com/increase-rate-limits\"}]}";

/// One client for the whole binary: building a blocking client starts a runtime thread, which
/// costs more than the requests themselves.
fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    })
}

fn header(response: &Response, name: &str) -> Option<String> {
    let value = response.headers().get(name)?;
    Some(value.to_str().unwrap().to_owned())
}

fn status(response: &Response) -> u16 {
    response.status().as_u16()
}

fn epoch_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn options(limit: u32, window_secs: u64) -> PullLimitOptions {
    PullLimitOptions {
        limit,
        window: Duration::from_secs(window_secs),
        ..PullLimitOptions::default()
    }
}

fn sleep_until(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

#[test]
fn pulls_past_the_budget_get_429_until_the_window_resets() {
    let hub = Hub::start(options(3, 2));
    let head = hub.head();
    assert_eq!(status(&head), 200);
    assert_eq!(header(&head, "ratelimit-limit").unwrap(), "3;w=2");
    assert_eq!(header(&head, "ratelimit-remaining").unwrap(), "3;w=2");
    assert_eq!(
        header(&head, "docker-ratelimit-source").unwrap(),
        "127.0.0.1"
    );
    assert!(head.headers().contains_key("docker-content-digest"));
    assert_eq!(hub.log.window_started(), None, "a HEAD starts no window");

    let mut window_start = None;
    for remaining in [2, 1, 0] {
        let response = hub.get();
        window_start.get_or_insert_with(|| hub.log.window_started().unwrap());
        assert_eq!(status(&response), 200);
        assert_eq!(
            header(&response, "ratelimit-remaining").unwrap(),
            format!("{remaining};w=2")
        );
        assert_eq!(header(&response, "ratelimit-limit").unwrap(), "3;w=2");
        assert!(response.text().unwrap().contains("schemaVersion"));
        // HEADs in between are free.
        assert_eq!(status(&hub.head()), 200);
    }
    assert_eq!(hub.log.remaining(), 0);

    let refused = hub.get();
    assert_eq!(status(&refused), 429);
    assert_eq!(
        header(&refused, "content-type").unwrap(),
        "application/json"
    );
    assert_eq!(header(&refused, "ratelimit-remaining").unwrap(), "0;w=2");
    assert_eq!(header(&refused, "ratelimit-limit").unwrap(), "3;w=2");
    assert_eq!(
        header(&refused, "retry-after"),
        None,
        "Docker Hub sends none"
    );
    assert_eq!(refused.text().unwrap(), TOO_MANY_BODY);

    // Out of pulls, HEADs and blobs still work.
    let head = hub.head();
    assert_eq!(status(&head), 200);
    assert_eq!(header(&head, "ratelimit-remaining").unwrap(), "0;w=2");
    assert_eq!(status(&hub.get_blob()), 200);
    assert_eq!(status(&hub.send("GET", "/v2/")), 200);

    sleep_until(window_start.unwrap() + Duration::from_secs(2) + Duration::from_millis(50));
    assert_eq!(hub.log.remaining(), 3);
    let again = hub.get();
    assert_eq!(status(&again), 200);
    assert_eq!(header(&again, "ratelimit-remaining").unwrap(), "2;w=2");

    assert_eq!(hub.log.pulls_served(), 4);
    let refused = hub.log.refused();
    assert_eq!((refused.over_limit, refused.flaky), (1, 0));
    assert_eq!(hub.log.retry_gaps().len(), 1);
    let seen = hub.log.seen();
    assert_eq!(seen.iter().filter(|s| s.pull).count(), 5);
    assert!(seen
        .iter()
        .filter(|s| !s.pull)
        .all(|s| s.verdict == Verdict::Passed));
    let statuses: Vec<u16> = hub
        .proxy
        .requests()
        .iter()
        .filter(|r| r.is_manifest_get())
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 200]);
}

#[test]
fn retry_after_seconds_is_the_time_until_the_window_resets() {
    let hub = Hub::start(PullLimitOptions {
        headers: HeaderStyle::DockerHubWithReset,
        retry_after: RetryAfter::Seconds,
        ..options(1, 2)
    });
    let served = hub.get();
    assert_eq!(status(&served), 200);
    assert_eq!(
        header(&served, "retry-after"),
        None,
        "only 429s say when to retry"
    );
    let reset: u64 = header(&served, "ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=2).contains(&reset), "{reset}");
    let ends = hub.log.window_started().unwrap() + Duration::from_secs(2);

    let refused = hub.get();
    assert_eq!(status(&refused), 429);
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    let left = ends.saturating_duration_since(Instant::now()).as_secs_f64();
    assert!(
        (1..=2).contains(&retry_after) && retry_after as f64 >= left,
        "Retry-After {retry_after} with {left} s left"
    );
    assert_eq!(
        header(&refused, "ratelimit-reset").unwrap(),
        retry_after.to_string()
    );

    // Waiting as told is enough.
    thread::sleep(Duration::from_secs(retry_after));
    assert_eq!(status(&hub.get()), 200);
    let gaps = hub.log.retry_gaps();
    assert_eq!(gaps.len(), 1);
    assert!(gaps[0] >= Duration::from_secs(retry_after), "{gaps:?}");
    assert_eq!(hub.log.pulls_served(), 2);
}

#[test]
fn retry_after_http_date_names_the_second_the_window_resets() {
    let hub = Hub::start(PullLimitOptions {
        retry_after: RetryAfter::HttpDate,
        ..options(1, 2)
    });
    assert_eq!(status(&hub.get()), 200);
    let before = epoch_secs(SystemTime::now());
    let refused = hub.get();
    assert_eq!(status(&refused), 429);
    let date = header(&refused, "retry-after").unwrap();
    // The window ends within 2 s, rounded up to the next whole second.
    let retry_at = (before..=before + 4)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .find(|time| http_date(*time) == date)
        .unwrap_or_else(|| panic!("Retry-After {date:?} is not within 3 s of {before}"));
    assert!(epoch_secs(retry_at) > before, "{date} is in the past");

    let wait = retry_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    thread::sleep(wait);
    assert_eq!(status(&hub.get()), 200, "waiting until {date} is enough");
}

#[test]
fn http_dates_are_imf_fixdates() {
    let at = |secs| http_date(UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(at(1_445_412_480), "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
    assert_eq!(at(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_millis(1_445_412_480_999)),
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
}

#[test]
fn flaky_mode_refuses_about_the_share_asked_on_any_request() {
    let hub = Hub::start(PullLimitOptions {
        retry_after: RetryAfter::Seconds,
        flaky_share: 0.25,
        flaky_retry_after: Duration::from_secs(2),
        seed: 7,
        ..options(1000, 3600)
    });
    let blob = format!("/v2/library/app/blobs/{}", hub.blob);
    let kinds = [
        ("GET", "/v2/"),
        ("GET", MANIFEST),
        ("HEAD", MANIFEST),
        ("GET", blob.as_str()),
    ];
    let mut refused = [0; 4];
    let mut pulls = 0;
    for round in 0..50 {
        for (kind, (method, path)) in kinds.iter().enumerate() {
            let response = hub.send(method, path);
            match status(&response) {
                429 => {
                    refused[kind] += 1;
                    assert_eq!(header(&response, "retry-after").unwrap(), "2");
                    assert_eq!(header(&response, "ratelimit-remaining"), None);
                    if *method == "GET" {
                        assert_eq!(response.text().unwrap(), TOO_MANY_BODY);
                    }
                }
                200 => pulls += usize::from(kind == 1),
                other => panic!("round {round}: {method} {path} answered {other}"),
            }
        }
    }
    // 200 draws at 0.25: 50 expected, standard deviation about 6.
    let total: usize = refused.iter().sum();
    assert!((20..=80).contains(&total), "{refused:?}");
    assert!(
        refused.iter().all(|&n| n > 0),
        "every kind is refused: {refused:?}"
    );
    let log = hub.log.refused();
    assert_eq!((log.flaky, log.over_limit), (total, 0));
    assert_eq!(hub.log.pulls_served(), pulls, "refused GETs are not pulls");
    assert_eq!(hub.log.remaining(), 1000 - pulls as u32);
}

#[test]
fn flaky_draws_follow_the_seed_and_the_share() {
    let request = RequestInfo {
        method: "GET".into(),
        path: "/v2/".into(),
        headers: Vec::new(),
    };
    let draws = |seed: u64, share: f64| -> Vec<bool> {
        let (mut rule, _log) = PullLimit::new(PullLimitOptions {
            flaky_share: share,
            seed,
            ..PullLimitOptions::default()
        });
        (0..10_000)
            .map(|_| rule.decide(&request).is_some())
            .collect()
    };
    let refused = |draws: &[bool]| draws.iter().filter(|&&r| r).count();
    let first = draws(1, 0.2);
    // Standard deviation 40: these bounds are 7 of them away.
    assert!(
        (1700..=2300).contains(&refused(&first)),
        "{}",
        refused(&first)
    );
    assert_eq!(first, draws(1, 0.2), "same seed, same refusals");
    assert_ne!(first, draws(2, 0.2));
    assert_eq!(refused(&draws(3, 0.0)), 0);
    assert_eq!(refused(&draws(3, 1.0)), 10_000);
}

#[test]
fn the_first_manifest_requests_can_be_refused_whatever_the_draws() {
    let request = |method: &str, path: &str| RequestInfo {
        method: method.into(),
        path: path.into(),
        headers: Vec::new(),
    };
    let (mut rule, log) = PullLimit::new(PullLimitOptions {
        refuse_first_manifest_requests: 2,
        ..options(1000, 3600)
    });
    let blob = format!("/v2/library/app/blobs/sha256:{}", "0".repeat(64));
    let mut answers = Vec::new();
    for (method, path) in [
        ("GET", "/v2/"),
        ("GET", blob.as_str()),
        ("HEAD", MANIFEST),
        ("GET", MANIFEST),
        ("HEAD", MANIFEST),
        ("GET", MANIFEST),
    ] {
        let status = match rule.decide(&request(method, path)) {
            Some(Action::Respond { status, .. }) => Some(status),
            Some(Action::ForwardWithHeaders(_)) | None => None,
            Some(other) => panic!("{method} {path}: {other:?}"),
        };
        answers.push(status);
    }
    assert_eq!(
        answers,
        [None, None, Some(429), Some(429), None, None],
        "exactly the first two manifest requests are refused, blobs and the ping never"
    );
    assert_eq!(log.refused().flaky, 2);
    assert_eq!(log.pulls_served(), 1, "a refused GET is no pull");
}

#[test]
fn ietf_github_silent_and_combined_header_styles() {
    let registry = Registry::start();
    Image::single(Flavor::Docker, 1, 128).push(&registry, "library/app", "v1");
    let with_style = |headers| {
        let proxy = Proxy::start(registry.host());
        let (rule, log) = PullLimit::new(PullLimitOptions {
            headers,
            ..options(2, 30)
        });
        proxy.add_rule(rule);
        (proxy, log)
    };
    let get = |proxy: &Proxy| {
        client()
            .get(format!("http://{}{MANIFEST}", proxy.host()))
            .header("accept", ACCEPT)
            .send()
            .unwrap()
    };
    let rate_headers = |response: &Response| -> Vec<String> {
        let mut names: Vec<String> = response
            .headers()
            .keys()
            .map(|name| name.as_str().to_owned())
            .filter(|name| name.contains("ratelimit"))
            .collect();
        names.sort();
        names
    };

    let (ietf, _log) = with_style(HeaderStyle::Ietf);
    let response = get(&ietf);
    assert_eq!(rate_headers(&response), ["ratelimit", "ratelimit-policy"]);
    let value = header(&response, "ratelimit").unwrap();
    let reset: u64 = value
        .strip_prefix("limit=2, remaining=1, reset=")
        .unwrap_or_else(|| panic!("{value}"))
        .parse()
        .unwrap();
    assert!((29..=30).contains(&reset), "{value}");
    assert_eq!(header(&response, "ratelimit-policy").unwrap(), "2;w=30");
    get(&ietf);
    let refused = get(&ietf);
    assert_eq!(status(&refused), 429);
    let value = header(&refused, "ratelimit").unwrap();
    assert!(value.starts_with("limit=2, remaining=0, reset="), "{value}");

    let (github, _log) = with_style(HeaderStyle::GitHub);
    let now = epoch_secs(SystemTime::now());
    let response = get(&github);
    assert_eq!(
        rate_headers(&response),
        [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset"
        ]
    );
    assert_eq!(header(&response, "x-ratelimit-limit").unwrap(), "2");
    assert_eq!(header(&response, "x-ratelimit-remaining").unwrap(), "1");
    let reset: u64 = header(&response, "x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (now + 29..=now + 32).contains(&reset),
        "{reset} vs now {now}"
    );

    let (silent, log) = with_style(HeaderStyle::None);
    let statuses: Vec<u16> = (0..3).map(|_| status(&get(&silent))).collect();
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the budget holds without headers"
    );
    let response = get(&silent);
    assert!(rate_headers(&response).is_empty());
    assert!(!response.headers().contains_key("docker-ratelimit-source"));
    assert_eq!(log.refused().over_limit, 2);

    let (all, _log) = with_style(HeaderStyle::All);
    get(&all);
    get(&all);
    let refused = get(&all);
    assert_eq!(status(&refused), 429);
    assert_eq!(
        rate_headers(&refused).len(),
        9,
        "{:?}",
        rate_headers(&refused)
    );
    assert_eq!(header(&refused, "ratelimit-remaining").unwrap(), "0;w=30");
    assert_eq!(header(&refused, "x-ratelimit-remaining").unwrap(), "0");
    let reset = header(&refused, "ratelimit-reset").unwrap();
    assert!(header(&refused, "ratelimit")
        .unwrap()
        .ends_with(&format!("remaining=0, reset={reset}")));
}

#[test]
fn pull_limit_counts_only_what_passes_bearer_auth() {
    let registry = Registry::start();
    Image::single(Flavor::Oci, 1, 128).push(&registry, "library/app", "v1");
    let proxy = Proxy::start(registry.host());
    let (auth, tokens) = BearerAuth::new(proxy.host(), None);
    let (limit, log) = PullLimit::new(options(1, 60));
    proxy.add_rule(auth);
    proxy.add_rule(limit);
    let url = format!("http://{}{MANIFEST}", proxy.host());

    let anonymous = client().get(&url).header("accept", ACCEPT).send().unwrap();
    assert_eq!(status(&anonymous), 401);
    assert_eq!(header(&anonymous, "ratelimit-remaining"), None);
    let token: serde_json::Value = client()
        .get(format!(
            "http://{}/token?scope=repository:library/app:pull",
            proxy.host()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["token"].as_str().unwrap();
    let pull = || {
        client()
            .get(&url)
            .header("accept", ACCEPT)
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let served = pull();
    assert_eq!(status(&served), 200);
    assert_eq!(header(&served, "ratelimit-remaining").unwrap(), "0;w=60");
    let refused = pull();
    assert_eq!(status(&refused), 429);
    assert_eq!(refused.text().unwrap(), TOO_MANY_BODY);
    assert!(TOO_MANY_BODY.contains(TOO_MANY_REQUESTS));

    // The 401 and the token request were answered by BearerAuth: never seen, never charged.
    let seen: Vec<_> = log.seen().iter().map(|s| s.verdict).collect();
    assert_eq!(seen, [Verdict::Passed, Verdict::OverLimit]);
    assert_eq!(log.pulls_served(), 1);
    assert_eq!(tokens.lock().unwrap().requests, 1);
    let statuses: Vec<u16> = proxy.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 200, 200, 429]);
}
