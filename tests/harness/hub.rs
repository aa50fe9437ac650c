//! Docker Hub's behaviour toward clients, as proxy rules in front of a real registry.
//!
//! [`BearerAuth`] is the token flow Docker Hub, GHCR and Quay use: `/v2/` answers 401 with
//! `WWW-Authenticate: Bearer realm=…,service=…`, the client fetches a token from the realm
//! (with basic credentials, or anonymously), and sends it as `Authorization: Bearer …`. The
//! registry behind the proxy is open; the proxy is what insists on tokens.
//!
//! [`PullLimit`] is Docker Hub's pull limit: a budget of manifest GETs per window, rate-limit
//! headers on manifest responses, 429 `TOOMANYREQUESTS` past the budget, and optionally random
//! 429s on any request. Its [`PullLog`] records what it saw and decided, for the test to check
//! how a client paced itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::proxy::{Action, RequestInfo, Rule};

/// Tokens issued so far, and how often the token endpoint was asked.
#[derive(Debug, Default)]
pub struct TokenLog {
    pub issued: Vec<String>,
    pub requests: usize,
}

impl TokenLog {
    /// A fresh token, recorded as issued, with the JSON answer a token endpoint gives for it.
    pub fn issue(&mut self) -> (String, serde_json::Value) {
        let token = format!("tok-{:032x}", rand::random::<u128>());
        self.issued.push(token.clone());
        let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 });
        (token, body)
    }
}

/// The bearer-token flow. Add it first, so it answers before any other rule forwards.
#[derive(Debug)]
pub struct BearerAuth {
    realm: String,
    /// `Basic …` header value the token endpoint requires; `None` issues tokens to anyone.
    required: Option<String>,
    log: Arc<Mutex<TokenLog>>,
}

impl BearerAuth {
    /// Tokens from `http://<proxy_host>/token`, for `credentials` or (when `None`) anyone.
    pub fn new(
        proxy_host: &str,
        credentials: Option<(&str, &str)>,
    ) -> (Self, Arc<Mutex<TokenLog>>) {
        use base64::Engine;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let log = Arc::new(Mutex::new(TokenLog::default()));
        let rule = BearerAuth {
            realm: format!("http://{proxy_host}/token"),
            required: credentials
                .map(|(user, pass)| format!("Basic {}", encode(&format!("{user}:{pass}")))),
            log: log.clone(),
        };
        (rule, log)
    }

    /// Tokens from `realm`, a token server elsewhere that issues them into the returned log
    /// (see [`TokenLog::issue`]); this rule only checks that requests carry one.
    pub fn with_realm(realm: &str) -> (Self, Arc<Mutex<TokenLog>>) {
        let log = Arc::new(Mutex::new(TokenLog::default()));
        let rule = BearerAuth {
            realm: realm.to_owned(),
            required: None,
            log: log.clone(),
        };
        (rule, log)
    }

    fn challenge(&self, request: &RequestInfo) -> Action {
        let scope = match request
            .path
            .strip_prefix("/v2/")
            .and_then(|p| p.split_once('/'))
        {
            Some(_) if request.path.contains("/manifests/") || request.path.contains("/blobs/") => {
                let repo = request.path["/v2/".len()..]
                    .split(['/', '?'])
                    .take_while(|part| *part != "manifests" && *part != "blobs")
                    .collect::<Vec<_>>()
                    .join("/");
                format!(",scope=\"repository:{repo}:pull\"")
            }
            _ => String::new(),
        };
        let mut action = Action::error(401, "UNAUTHORIZED", "authentication required");
        if let Action::Respond { headers, .. } = &mut action {
            headers.push((
                "www-authenticate".into(),
                format!(
                    "Bearer realm=\"{}\",service=\"registry.sim\"{scope}",
                    self.realm
                ),
            ));
        }
        action
    }
}

impl Rule for BearerAuth {
    fn decide(&mut self, request: &RequestInfo) -> Option<Action> {
        if request.path.starts_with("/token") {
            let mut log = self.log.lock().unwrap();
            log.requests += 1;
            if let Some(required) = &self.required {
                if request.header("authorization") != Some(required.as_str()) {
                    return Some(Action::error(
                        401,
                        "UNAUTHORIZED",
                        "incorrect username or password",
                    ));
                }
            }
            let (_, body) = log.issue();
            return Some(Action::Respond {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.to_string().into_bytes(),
            });
        }
        let presented = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "));
        let valid =
            presented.is_some_and(|t| self.log.lock().unwrap().issued.iter().any(|i| i == t));
        if valid {
            None
        } else {
            Some(self.challenge(request))
        }
    }
}

/// Docker Hub's answer to a pull past the budget.
pub const TOO_MANY_REQUESTS: &str = "You have reached your pull rate limit. You may increase the \
     limit by authenticating and upgrading: https://www.docker.com/increase-rate-limits";

/// Which rate-limit headers [`PullLimit`] puts on manifest responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderStyle {
    /// None at all, as some authenticated Docker Hub accounts get.
    None,
    /// Docker Hub: `ratelimit-limit: L;w=W`, `ratelimit-remaining: R;w=W` and
    /// `docker-ratelimit-source: 127.0.0.1`.
    DockerHub,
    /// [`HeaderStyle::DockerHub`] plus `ratelimit-reset: S` (seconds until the window resets,
    /// as older IETF drafts send it).
    DockerHubWithReset,
    /// IETF draft: `RateLimit: limit=L, remaining=R, reset=S` and `RateLimit-Policy: L;w=W`.
    Ietf,
    /// GitHub: `X-RateLimit-Limit: L`, `X-RateLimit-Remaining: R`, `X-RateLimit-Reset: <epoch
    /// seconds>`.
    GitHub,
    /// [`HeaderStyle::DockerHubWithReset`], [`HeaderStyle::Ietf`] and [`HeaderStyle::GitHub`]
    /// at once (their names do not collide), to test which one a client believes.
    All,
}

/// Whether and how a 429 says when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// No `Retry-After` (Docker Hub sends none).
    None,
    /// `Retry-After: <delta-seconds>`.
    Seconds,
    /// `Retry-After: <IMF-fixdate>`, e.g. `Wed, 21 Oct 2015 07:28:00 GMT`.
    HttpDate,
}

/// How [`PullLimit`] behaves. Tests usually set `limit` and `window` and take the rest from
/// [`Default`].
#[derive(Debug, Clone)]
pub struct PullLimitOptions {
    /// Pulls (manifest GETs) allowed per window. Default 10, Docker Hub's anonymous limit.
    pub limit: u32,
    /// Length of the fixed window, which starts at the first pull. Default one hour.
    pub window: Duration,
    /// Rate-limit headers on manifest responses. Default [`HeaderStyle::DockerHub`].
    pub headers: HeaderStyle,
    /// `Retry-After` on 429s (budget and flaky alike). Default [`RetryAfter::None`].
    pub retry_after: RetryAfter,
    /// Share (0.0 to 1.0) of all requests answered 429 at random, pulls or not. Default 0.0.
    pub flaky_share: f64,
    /// What `Retry-After` says on a flaky 429: no window is involved, so the test picks.
    /// Rounded up to whole seconds. Default 1 s.
    pub flaky_retry_after: Duration,
    /// Seeds the flaky draws: the same seed and the same sequence of requests give the same
    /// refusals. Default 0.
    pub seed: u64,
    /// The first this many manifest requests (HEAD or GET) are refused like flaky ones,
    /// whatever the draws say: for a test of retries that must not depend on how concurrent
    /// requests happen to interleave with the seeded draws. Default 0.
    pub refuse_first_manifest_requests: usize,
    /// Pulls charged to the budget after each one served, as another client on the same
    /// account (another shard, a CI job) would spend them: seen by the client under test only
    /// in the headers of its next answer. Default 0.
    pub other_client_pulls: u32,
}

impl Default for PullLimitOptions {
    fn default() -> Self {
        PullLimitOptions {
            limit: 10,
            window: Duration::from_secs(3600),
            headers: HeaderStyle::DockerHub,
            retry_after: RetryAfter::None,
            flaky_share: 0.0,
            flaky_retry_after: Duration::from_secs(1),
            seed: 0,
            refuse_first_manifest_requests: 0,
            other_client_pulls: 0,
        }
    }
}

/// What [`PullLimit`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not refused: forwarded (manifest requests) or left to later rules (everything else).
    Passed,
    /// 429 because the pull budget was spent.
    OverLimit,
    /// 429 drawn at random by the flaky mode.
    Flaky,
}

impl Verdict {
    /// The status the rule answered with; `None` when the upstream answers.
    pub fn status(self) -> Option<u16> {
        match self {
            Verdict::Passed => None,
            Verdict::OverLimit | Verdict::Flaky => Some(429),
        }
    }
}

/// One request [`PullLimit`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    /// Path with query.
    pub path: String,
    /// A manifest GET: what Docker Hub counts (when not refused).
    pub pull: bool,
    pub verdict: Verdict,
}

/// 429s served, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refused {
    pub over_limit: usize,
    pub flaky: usize,
}

impl Refused {
    pub fn total(self) -> usize {
        self.over_limit + self.flaky
    }
}

/// The pull budget and the record of requests, shared by the rule and the test.
#[derive(Debug)]
struct Ledger {
    limit: u32,
    window: Duration,
    /// When the current window started; `None` until a pull starts one.
    started: Option<Instant>,
    /// Pulls served in the current window.
    used: u32,
    seen: Vec<Seen>,
}

impl Ledger {
    /// Forgets a window that has run out, so a pull at `now` starts a fresh one.
    fn roll(&mut self, now: Instant) {
        if self
            .started
            .is_some_and(|started| now >= started + self.window)
        {
            self.started = None;
            self.used = 0;
        }
    }

    fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }

    /// Time until the budget is whole again; a full window while none is running.
    fn reset_in(&self, now: Instant) -> Duration {
        self.started
            .map_or(self.window, |started| (started + self.window) - now)
    }
}

/// The test's handle on a [`PullLimit`]: what it saw and decided, and its budget now.
#[derive(Debug, Clone)]
pub struct PullLog(Arc<Mutex<Ledger>>);

impl PullLog {
    /// Every request the rule saw, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }

    /// Manifest GETs forwarded, i.e. pulls charged, over all windows.
    pub fn pulls_served(&self) -> usize {
        let ledger = self.0.lock().unwrap();
        let served = |s: &&Seen| s.pull && s.verdict == Verdict::Passed;
        ledger.seen.iter().filter(served).count()
    }

    /// 429s answered, by cause.
    pub fn refused(&self) -> Refused {
        let ledger = self.0.lock().unwrap();
        let count = |verdict| ledger.seen.iter().filter(|s| s.verdict == verdict).count();
        Refused {
            over_limit: count(Verdict::OverLimit),
            flaky: count(Verdict::Flaky),
        }
    }

    /// For each 429, in order, how long until the same method and path came again: how long
    /// the client waited before retrying. A refusal never retried has no entry.
    pub fn retry_gaps(&self) -> Vec<Duration> {
        self.retry_gaps_where(|_| true)
    }

    /// [`PullLog::retry_gaps`] for the refused requests that `refused` picks.
    pub fn retry_gaps_where(&self, refused: impl Fn(&Seen) -> bool) -> Vec<Duration> {
        let ledger = self.0.lock().unwrap();
        let seen = &ledger.seen;
        seen.iter()
            .enumerate()
            .filter(|(_, s)| s.verdict != Verdict::Passed && refused(s))
            .filter_map(|(i, refused)| {
                let again = seen[i + 1..]
                    .iter()
                    .find(|s| s.method == refused.method && s.path == refused.path)?;
                Some(again.at - refused.at)
            })
            .collect()
    }

    /// Pulls left in the budget now (the whole limit once a window has run out).
    pub fn remaining(&self) -> u32 {
        let mut ledger = self.0.lock().unwrap();
        ledger.roll(Instant::now());
        ledger.remaining()
    }

    /// When the current window started, if one is running.
    pub fn window_started(&self) -> Option<Instant> {
        let mut ledger = self.0.lock().unwrap();
        ledger.roll(Instant::now());
        ledger.started
    }
}

/// Docker Hub's pull limit as a proxy rule.
///
/// A pull is a manifest GET; HEADs, blobs, tokens and everything else are free. `limit` pulls
/// are allowed per *fixed* window of `window` that starts at the first pull and ends `window`
/// later; the next pull after that starts a new one. (Docker Hub's window slides; a fixed one
/// makes "when does a pull succeed again" exact in tests.) Past the budget a manifest GET gets
/// Docker Hub's 429 `TOOMANYREQUESTS`, with the rate-limit headers saying 0 remaining and, if
/// asked, a `Retry-After` of the time until the window ends, rounded up to whole seconds.
/// Every manifest response, GET or HEAD, served or refused, carries the chosen headers.
///
/// A refused request is not a pull. A forwarded manifest GET is charged whatever the upstream
/// answers, since the rule decides before the upstream does.
///
/// Add it after [`BearerAuth`] (which passes authorised requests on) and after any fault rule
/// meant for manifest requests: it forwards manifest requests itself, so rules after it never
/// see them. Requests answered by earlier rules (token requests, 401 challenges) are neither
/// seen nor counted.
#[derive(Debug)]
pub struct PullLimit {
    options: PullLimitOptions,
    ledger: Arc<Mutex<Ledger>>,
    rng: StdRng,
    /// Manifest requests still to refuse under `refuse_first_manifest_requests`.
    to_refuse: usize,
}

impl PullLimit {
    pub fn new(options: PullLimitOptions) -> (Self, PullLog) {
        assert!(options.limit > 0, "a limit of 0 pulls refuses everything");
        assert!(
            !options.window.is_zero(),
            "the window must be longer than 0"
        );
        assert!(
            (0.0..=1.0).contains(&options.flaky_share),
            "flaky_share is a share, between 0 and 1"
        );
        let ledger = Arc::new(Mutex::new(Ledger {
            limit: options.limit,
            window: options.window,
            started: None,
            used: 0,
            seen: Vec::new(),
        }));
        let rule = PullLimit {
            rng: StdRng::seed_from_u64(options.seed),
            to_refuse: options.refuse_first_manifest_requests,
            options,
            ledger: Arc::clone(&ledger),
        };
        (rule, PullLog(ledger))
    }

    /// The rate-limit headers for `remaining` pulls left and the window ending in `reset_in`.
    fn rate_headers(&self, remaining: u32, reset_in: Duration) -> Vec<(String, String)> {
        let limit = self.options.limit;
        let window = ceil_secs(self.options.window);
        let reset = ceil_secs(reset_in);
        let docker = || {
            vec![
                ("ratelimit-limit".to_owned(), format!("{limit};w={window}")),
                (
                    "ratelimit-remaining".to_owned(),
                    format!("{remaining};w={window}"),
                ),
                ("docker-ratelimit-source".to_owned(), "127.0.0.1".to_owned()),
            ]
        };
        let reset_header = || vec![("ratelimit-reset".to_owned(), reset.to_string())];
        let ietf = || {
            vec![
                (
                    "ratelimit".to_owned(),
                    format!("limit={limit}, remaining={remaining}, reset={reset}"),
                ),
                ("ratelimit-policy".to_owned(), format!("{limit};w={window}")),
            ]
        };
        let github = || {
            let epoch = (SystemTime::now() + reset_in)
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970");
            vec![
                ("x-ratelimit-limit".to_owned(), limit.to_string()),
                ("x-ratelimit-remaining".to_owned(), remaining.to_string()),
                ("x-ratelimit-reset".to_owned(), ceil_secs(epoch).to_string()),
            ]
        };
        match self.options.headers {
            HeaderStyle::None => Vec::new(),
            HeaderStyle::DockerHub => docker(),
            HeaderStyle::DockerHubWithReset => [docker(), reset_header()].concat(),
            HeaderStyle::Ietf => ietf(),
            HeaderStyle::GitHub => github(),
            HeaderStyle::All => [docker(), reset_header(), ietf(), github()].concat(),
        }
    }

    /// Docker Hub's 429, plus `headers` and the configured `Retry-After` for `retry_in`.
    fn refusal(&self, mut headers: Vec<(String, String)>, retry_in: Duration) -> Action {
        match self.options.retry_after {
            RetryAfter::None => {}
            RetryAfter::Seconds => {
                headers.push(("retry-after".into(), ceil_secs(retry_in).to_string()));
            }
            RetryAfter::HttpDate => {
                // HTTP-dates have whole seconds: round up, so waiting until then is enough.
                let at = SystemTime::now() + retry_in;
                let since_epoch = at.duration_since(UNIX_EPOCH).expect("clock after 1970");
                let at = match since_epoch.subsec_nanos() {
                    0 => at,
                    nanos => at + Duration::from_nanos(1_000_000_000 - u64::from(nanos)),
                };
                headers.push(("retry-after".into(), http_date(at)));
            }
        }
        let mut action = Action::error(429, "TOOMANYREQUESTS", TOO_MANY_REQUESTS);
        if let Action::Respond { headers: own, .. } = &mut action {
            own.extend(headers);
        }
        action
    }
}

impl Rule for PullLimit {
    fn decide(&mut self, request: &RequestInfo) -> Option<Action> {
        let now = Instant::now();
        let pull = request.is_manifest_get();
        let drawn =
            self.options.flaky_share > 0.0 && self.rng.random_bool(self.options.flaky_share);
        let forced = self.to_refuse > 0 && (pull || request.is_manifest_head());
        if forced {
            self.to_refuse -= 1;
        }
        let flaky = drawn || forced;
        let mut ledger = self.ledger.lock().unwrap();
        ledger.roll(now);
        let (verdict, action) = if flaky {
            // An edge limiter that knows nothing of the budget: no rate-limit headers.
            let action = self.refusal(Vec::new(), self.options.flaky_retry_after);
            (Verdict::Flaky, Some(action))
        } else if pull && ledger.remaining() == 0 {
            let reset_in = ledger.reset_in(now);
            let action = self.refusal(self.rate_headers(0, reset_in), reset_in);
            (Verdict::OverLimit, Some(action))
        } else if pull || request.is_manifest_head() {
            if pull {
                ledger.started.get_or_insert(now);
                ledger.used += 1;
            }
            let headers = self.rate_headers(ledger.remaining(), ledger.reset_in(now));
            if pull {
                // The other client pulls right after this answer was written.
                ledger.used = (ledger.used + self.options.other_client_pulls).min(ledger.limit);
            }
            (Verdict::Passed, Some(Action::ForwardWithHeaders(headers)))
        } else {
            (Verdict::Passed, None)
        };
        ledger.seen.push(Seen {
            at: now,
            method: request.method.clone(),
            path: request.path.clone(),
            pull,
            verdict,
        });
        action
    }
}

/// Whole seconds in `duration`, rounded up.
fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// `time` as an HTTP-date (IMF-fixdate), e.g. `Wed, 21 Oct 2015 07:28:00 GMT`; fractions of a
/// second are dropped.
pub fn http_date(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (a Thursday), after Howard Hinnant's
    // `civil_from_days`: eras of 400 years, years starting on 1 March.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}
